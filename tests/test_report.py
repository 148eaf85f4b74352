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
        for ext in ("png", "svg"):
            assert (run / "figures" / f"{name}.{ext}").stat().st_size > 1000
        assert f"figures/{name}.png" in report
    assert "| Nb of parameters | 1,000 | 2,000 | 3,000 |" in report
    assert "Data source: **embedded**" in report
    assert "`digitcmp reproduce --rounds 4`" in report
    assert (run / "summary.md").exists() and (run / "summary.csv").exists()


def test_report_is_byte_stable(rendered, tmp_path):
    a, b = rendered[0], synthetic_run(tmp_path / "b")
    write_report(b)
    for f in sorted((a / "figures").iterdir()):
        assert f.read_bytes() == (b / "figures" / f.name).read_bytes(), f.name


def test_report_on_partial_run_says_how_many_rounds(tmp_path):
    run = synthetic_run(tmp_path / "run", rounds=1, planned=15)
    text = write_report(run)[0].read_text()
    assert "Baseline 1/15" in text and "partial run" in text


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
