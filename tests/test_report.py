import json

import pytest

from conftest import synthetic_run
from digitcmp.cli import main
from digitcmp.errors import RunDirError
from digitcmp.plots import FIGURES
from digitcmp.report import write_report


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """One synthetic run with its report written (drawing figures is the slow part)."""
    run = synthetic_run(tmp_path_factory.mktemp("rendered") / "run")
    return run, write_report(run)[0].read_text()


def test_report_writes_every_file(rendered):
    run, report = rendered
    for name in FIGURES:
        for ext in ("png", "svg", "pdf"):
            assert (run / "figures" / f"{name}.{ext}").stat().st_size > 1000
        assert f"figures/{name}.png" in report
        svg = (run / "figures" / f"{name}.svg").read_text()
        assert "<text" in svg and "data: embedded" in svg  # text stays text, and says its data
    assert "| Nb of parameters | 1,000 | 2,000 | 3,000 |" in report
    assert "Data: embedded (test)." in report
    assert "`digitcmp reproduce --rounds 4`" in report
    assert (run / "summary.md").exists() and (run / "summary.csv").exists()
    assert "```" in report and "Total params: 77,530" in report  # the layer table of cnn
    assert "## Errors measured in training mode" in report


def test_the_study_stands_beside_us(rendered):
    run, report = rendered
    # siamese_aux's synthetic test errors: 0.14 + 0.01 r, r = 0..3 -> mean 15.50 %; the study 13.53 %.
    assert "| CNN + auxiliary loss (study's Model 3) | test | 13.53 ± 1.40 % | 15.50 ± 1.29 % " in report
    assert "| +1.97 pp |" in report
    header, *lines = (run / "summary.csv").read_text().splitlines()
    assert "study_test_error_mean" in header and "test_error_ci_low" in header
    row = dict(zip(header.split(","), lines[2].split(","), strict=True))
    assert float(row["study_test_error_mean"]) == 0.1353
    assert float(row["test_error_ci_low"]) < 0.155 < float(row["test_error_ci_high"])


def test_epochs_csv_is_long_format(rendered):
    run, _ = rendered
    header, *lines = (run / "epochs.csv").read_text().splitlines()
    assert header == "model,round,epoch,metric,value"
    values = {tuple(line.split(",")[:4]): float(line.split(",")[4]) for line in lines}
    assert values[("cnn", "2", "3", "test_error")] == pytest.approx(0.3 - 0.02 * 2 + 0.01 * 2)
    assert values[("baseline", "0", "1", "loss")] == 1.0  # epochs counted from 1
    # 3 models x 4 rounds x 3 epochs x (loss, target_loss, test_error, train_error)
    assert len(lines) == 3 * 4 * 3 * 4


def test_report_of_an_old_run_says_what_it_cannot_draw(tmp_path):
    run = synthetic_run(tmp_path / "old", curves=False)
    report = write_report(run)[0].read_text()
    assert "no per-epoch test error" in report and "in training mode" not in report
    assert (run / "figures" / "learning_curves.png").exists()


def test_report_is_byte_stable(rendered, tmp_path):
    a, b = rendered[0], synthetic_run(tmp_path / "b")
    write_report(b)
    for f in sorted((a / "figures").iterdir()):
        assert f.read_bytes() == (b / "figures" / f.name).read_bytes(), f.name


def test_report_on_partial_run_says_how_many_rounds(tmp_path):
    run = synthetic_run(tmp_path / "run", rounds=1, planned=15)
    text = write_report(run)[0].read_text()
    assert "Baseline 1/15" in text and "partial run" in text


def test_report_says_which_rounds_ran_the_c_kernels(tmp_path, rendered):
    assert "fused" not in rendered[1] and "direct" not in rendered[1]  # records from before the kernels
    run = synthetic_run(tmp_path / "run")
    records = [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines()]
    for r in records:
        r["fused_kernel"] = r["model"] in ("cnn", "siamese_aux")
        r["direct_conv"] = r["model"] == "cnn"
    (run / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    text = write_report(run)[0].read_text()
    cnn = sum(r["model"] == "cnn" for r in records)
    convnets = sum(r["model"] in ("cnn", "siamese_aux") for r in records)
    assert (f"(fused BatchNorm + max-pool + ReLU kernel in {convnets} of {len(records)} rounds) "
            f"(direct convolution kernels in {cnn} of {len(records)} rounds)") in text


def test_report_names_malformed_line(tmp_path, capsys):
    run = synthetic_run(tmp_path / "run")
    lines = (run / "rounds.jsonl").read_text().splitlines()
    lines[2] = '{"model": "cnn", "round": 1'
    (run / "rounds.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["report", str(run)]) == 2
    assert "rounds.jsonl:3: malformed" in capsys.readouterr().err


def test_report_missing_files(tmp_path):
    with pytest.raises(RunDirError, match="no such run directory"):
        write_report(tmp_path / "absent")
    run = synthetic_run(tmp_path / "run")
    (run / "rounds.jsonl").unlink()
    with pytest.raises(RunDirError, match="rounds.jsonl: no such file"):
        write_report(run)
