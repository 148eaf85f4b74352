import math

import pytest
import torch

from digitcmp import ablation
from digitcmp.cli import main
from digitcmp.models import MODELS, count_params
from digitcmp.stats import paired
from digitcmp.train import Config, train_rounds


def test_paired_statistics_against_known_values():
    # d = 1..5: mean 3, s = sqrt(2.5), t(0.975, 4) = 2.7764451 -> CI 3 -+ 1.9632432;
    # t = 4.2426, two-sided p = 0.013236; exact Wilcoxon: all 5 signs positive, p = 2 / 2^5.
    r = paired([1, 2, 3, 4, 5])
    assert r["n"] == 5 and r["mean"] == 3
    assert r["ci_low"] == pytest.approx(1.0367568, abs=1e-6)
    assert r["ci_high"] == pytest.approx(4.9632432, abs=1e-6)
    assert r["t_p"] == pytest.approx(0.0132356, abs=1e-6)
    assert r["wilcoxon_p"] == pytest.approx(0.0625)
    # Signs matter, not only magnitudes: one negative of rank 1 -> W+ = 14 of 15, p = 4 / 32.
    assert paired([-1, 2, 3, 4, 5])["wilcoxon_p"] == pytest.approx(0.125)
    # Undefined cases give NaN, not an exception.
    assert math.isnan(paired([0, 0, 0])["wilcoxon_p"]) and math.isnan(paired([0.1])["ci_low"])


def test_arms_are_parameter_matched_and_differ_only_in_the_factor():
    counts = {arm: count_params(MODELS[arm]()) for arm in ablation.ARMS}
    assert max(counts.values()) / min(counts.values()) <= 1.05
    assert all(abs(c - 70_000) / 70_000 < 0.05 for c in counts.values())
    assert {arm: MODELS[arm].default_aux_weight > 0 for arm in ablation.ARMS} == {
        arm: aux for arm, (_, aux) in ablation.ARMS.items()}
    assert len({MODELS[arm].default_lr for arm in ablation.ARMS}) == 1
    # The arms without aux loss are the arms with it, minus the loss: same init in a round.
    for plain, with_aux in (("siamese", "siamese_aux"), ("separate", "separate_aux")):
        torch.manual_seed(0)
        a = MODELS[plain]().state_dict()
        torch.manual_seed(0)
        b = MODELS[with_aux]().state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_every_arm_gets_identical_data_in_a_round():
    cfg = ablation.ablation_config(Config(data="embedded", pairs=20, epochs=1), weights=(0.0, 3.0))
    assert cfg.models == ["separate", "separate_aux", "siamese", "siamese_aux",
                          "siamese_aux@aux_weight=3"]
    datas = {arm: train_rounds(cfg, arm, [0, 1]) for arm in ablation.ARMS}
    for r in (0, 1):
        ref = datas["separate"][r][1]
        for arm, out in datas.items():
            data = out[r][1]
            for split in ("train", "test"):
                for f in ("input", "target", "classes"):
                    assert torch.equal(getattr(getattr(data, split), f), getattr(getattr(ref, split), f)), arm
    assert not torch.equal(datas["separate"][0][1].train.input, datas["separate"][1][1].train.input)


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
    assert main(["ablation", "--aux-weight", "2", "--out", str(out)]) == 2
    assert "--aux-weights" in capsys.readouterr().err


def test_sweep_groups_the_shared_arm_by_aux_weight():
    errs = {"separate": [0.2, 0.2], "separate_aux": [0.2, 0.2], "siamese": [0.3, 0.1],
            "siamese_aux": [0.1, 0.1]}
    rows = ablation.sweep(fake_results(errs))
    assert [(s["aux_weight"], s["arm"], s["rounds"]) for s in rows] == [
        (0.0, "siamese", 2), (1.0, "siamese_aux", 2)]
    assert rows[0]["test_error_mean"] == pytest.approx(0.2)
