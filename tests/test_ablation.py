import pytest
import torch

from digitcmp import ablation
from digitcmp.cli import main
from digitcmp.config import Config
from digitcmp.train import train_rounds


def test_every_arm_gets_identical_data_in_a_round():
    cfg = ablation.ablation_config(Config(data="embedded", pairs=20, epochs=1), weights=(0.0, 3.0))
    assert cfg.models == ["separate", "separate_aux", "siamese", "siamese_aux",
                          "siamese_aux@aux_weight=3"]
    datas = {arm: train_rounds(cfg, arm, [0, 1]) for arm in ablation.ARMS}
    for r in (0, 1):
        ref = datas["separate"][r].data
        for arm, out in datas.items():
            data = out[r].data
            for split in ("train", "test"):
                for f in ("input", "target", "classes"):
                    assert torch.equal(getattr(getattr(data, split), f), getattr(getattr(ref, split), f)), arm
    assert not torch.equal(datas["separate"][0].data.train.input, datas["separate"][1].data.train.input)


def fake_results(errs: dict[str, list[float]]) -> list[dict]:
    return [{"model": arm, "round": r, "test_error": e, "train_error": 0.0, "params": 1,
             "arch": arm, "aux_weight": float(ablation.ARMS[arm][1])}
            for arm, es in errs.items() for r, e in enumerate(es)]


def test_effects_are_paired_contrasts():
    errs = {"separate": [0.20, 0.22, 0.21], "separate_aux": [0.15, 0.18, 0.16],
            "siamese": [0.18, 0.19, 0.20], "siamese_aux": [0.10, 0.12, 0.11]}
    rows = {e["effect"]: e for e in ablation.effects(fake_results(errs))}
    sharing = rows["weight sharing (main effect)"]
    assert sharing["diffs"] == pytest.approx([-0.035, -0.045, -0.03])
    assert sharing["mean"] == pytest.approx(-0.11 / 3)
    aux = rows["auxiliary loss (main effect)"]
    assert aux["diffs"] == pytest.approx([-0.065, -0.055, -0.07])
    assert rows["interaction (aux effect with sharing - without)"]["diffs"] == pytest.approx(
        [-0.03, -0.03, -0.04])
    # A round missing one arm is not paired: it is left out of every effect.
    partial = fake_results(errs) + [{"model": "siamese", "round": 3, "test_error": 0.1,
                                     "train_error": 0.0}]
    assert ablation.effects(partial)[0]["n"] == 3


def test_cli_ablation_writes_effects_and_report(tmp_path, capsys):
    out = tmp_path / "abl"
    assert main(["ablation", "--data", "embedded", "--pairs", "40", "--epochs", "1", "--rounds", "2",
                 "--aux-weights", "0", "1", "3", "--executor", "serial", "--no-progress",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "weight sharing (main effect)" in text
    effects_md = (out / "effects.md").read_text()
    assert "| `separate` | no | no | 70,191 |" in effects_md
    assert "| 3 | `siamese_aux@aux_weight=3` | 2 |" in effects_md
    csv_lines = (out / "effects.csv").read_text().splitlines()
    assert csv_lines[0].startswith("kind,name,n,mean") and len(csv_lines) == 1 + 7 + 3
    report = (out / "report.md").read_text()
    assert "## Ablation" in report and "figures/paired_differences.png" in report
    assert (out / "figures" / "aux_weight_sweep.png").is_file()
    with pytest.raises(SystemExit):  # the ablation sets the aux weight per arm: no --aux-weight
        main(["ablation", "--aux-weight", "2", "--out", str(out)])
    assert "unrecognized arguments: --aux-weight" in capsys.readouterr().err


def test_sweep_groups_the_shared_arm_by_aux_weight():
    errs = {"separate": [0.2, 0.2], "separate_aux": [0.2, 0.2], "siamese": [0.3, 0.1],
            "siamese_aux": [0.1, 0.1]}
    rows = ablation.sweep(fake_results(errs))
    assert [(s["aux_weight"], s["arm"], s["rounds"]) for s in rows] == [
        (0.0, "siamese", 2), (1.0, "siamese_aux", 2)]
    assert rows[0]["test_error_mean"] == pytest.approx(0.2)
