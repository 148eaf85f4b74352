import json
from pathlib import Path

import pytest

from digitcmp.cli import main
from digitcmp.errors import ConfigError
from digitcmp.sweep import load_sweep, sweep_rows

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sweep.toml"


def test_example_sweep_expands_to_its_grid():
    variants = load_sweep(EXAMPLE)
    assert len(variants) == 6
    assert variants["siamese_aux@aux_weight=3,lr=0.0005"] == {
        "model": "siamese_aux", "aux_weight": 3.0, "lr": 0.0005}


@pytest.mark.parametrize("text, message", [
    ("[grid]\nmodel = 'cnn'\nlearning_rate = [1]\n", "unknown option 'learning_rate'"),
    ("[grid]\nmodel = 'cnn'\nlr = ['fast']\n", "[grid] lr must be a finite number >= 0, got 'fast'"),
    ("[grid]\nmodel = [['cnn']]\n", "[grid] 'model' must be one of"),
    ("[grid]\nmodel = 'cnn'\nlr = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]\n"
     "epochs = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\nbatch_size = [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]\n",
     "[grid] has 1,100 points"),
    ("[grid]\nmodel = 'cnn'\nepochs = [2.5]\n", "[grid] epochs must be a whole number from 1"),
    ("[grid]\nmodel = 'cnn'\nlr = []\n", "[grid] lr is an empty list"),
    ("[grid]\n", "[grid] is missing or empty"),
    ("title = 'x'\n[grid]\nmodel = 'cnn'\n", "unknown key 'title'"),
    ("[grid]\nmodel = 'nope'\n", "[grid] 'model' must be one of baseline, cnn"),
    ("[grid\n", "not valid TOML"),
    ("[grid]\nmodel = 'cnn'\nlr = [1, 1.0]\n", "lists a value twice"),
])
def test_invalid_sweep_file_names_the_key(tmp_path, text, message):
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_sweep(path)


def test_best_point_is_chosen_on_validation_error_not_test_error():
    variants = {"a": {"model": "cnn", "lr": 0.1}, "b": {"model": "cnn", "lr": 0.2}}
    results = [{"model": "a", "round": r, "val_error": 0.10, "test_error": 0.30} for r in (0, 1)]
    results += [{"model": "b", "round": r, "val_error": 0.20, "test_error": 0.05} for r in (0, 1)]
    rows = sweep_rows(results, variants)
    assert [(r["point"], r["best"]) for r in rows] == [("a", True), ("b", False)]
    assert rows[1]["test_error_mean"] == pytest.approx(0.05)


def test_cli_sweep_runs_the_grid_and_writes_sweep_csv(tmp_path, capsys):
    sweep = tmp_path / "s.toml"
    sweep.write_text("[grid]\nmodel = 'baseline'\nlr = [1e-3, 1e-2]\n")
    out = tmp_path / "run"
    argv = ["sweep", str(sweep), "--rounds", "2", "--epochs", "1", "--pairs", "60", "--val-pairs",
            "20", "--data", "embedded", "--executor", "serial", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    lines = [json.loads(x) for x in (out / "rounds.jsonl").read_text().splitlines()]
    assert sorted((r["model"], r["round"]) for r in lines) == [
        ("baseline@lr=0.001", 0), ("baseline@lr=0.001", 1), ("baseline@lr=0.01", 0), ("baseline@lr=0.01", 1)]
    assert all(r["point"]["model"] == "baseline" and "val_error" in r for r in lines)
    csv_lines = (out / "sweep.csv").read_text().splitlines()
    assert csv_lines[0].startswith("point,model,lr,rounds,val_error_mean")
    assert sum(line.endswith(",True") for line in csv_lines) == 1
    assert "best (validation)" in capsys.readouterr().out
    assert main(argv) == 0  # resumes: nothing left to run
    assert len((out / "rounds.jsonl").read_text().splitlines()) == 4
    assert main(["sweep", str(tmp_path / "absent.toml"), "--out", str(out)]) == 2
    assert "no such sweep file" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path), "--out", str(out)]) == 2
    assert "is a directory, not a sweep file" in capsys.readouterr().err


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

VALUES = st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats() | st.text(max_size=12) | \
    st.sampled_from(["cnn", "baseline", "lr", "[grid]"])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(grid=st.dictionaries(st.sampled_from(["model", "lr", "epochs", "batch_size", "aux_weight", "x"]),
                            VALUES | st.lists(VALUES | st.lists(VALUES, max_size=2), max_size=4), max_size=5),
       junk=st.binary(max_size=30))
def test_any_sweep_file_raises_only_config_errors(tmp_path, grid, junk):
    import json

    # TOML of the grid (values as JSON literals where TOML takes them), or arbitrary bytes.
    lines = ["[grid]"] + [f"{k} = {json.dumps(v)}" for k, v in grid.items()]
    for i, text in enumerate(("\n".join(lines).encode(), junk)):
        path = tmp_path / f"s{i}.toml"
        path.write_bytes(text)
        try:
            variants = load_sweep(path)
        except ConfigError:
            continue
        assert variants and all(isinstance(p["model"], str) for p in variants.values())
