import json

import pytest

from digitcmp import experiment
from digitcmp.cli import main
from digitcmp.experiment import RunError, read_rounds, run_experiment
from digitcmp.train import Config

TINY = dict(data="embedded", pairs=50, epochs=1)


def run(out, **kw):
    cfg = Config(**{**TINY, "models": ["baseline"], "rounds": 2, **kw})
    return run_experiment(cfg, out, progress=False, say=lambda *a: None)


def lines(out):
    return (out / "rounds.jsonl").read_text().splitlines()


def test_run_dir_files_and_resume(tmp_path):
    results = run(tmp_path)
    assert sorted((r["model"], r["round"]) for r in results) == [("baseline", 0), ("baseline", 1)]
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["source"]["name"] == "embedded" and cfg["versions"]["torch"]
    assert len(lines(tmp_path)) == 2
    assert len(run(tmp_path)) == 2 and len(lines(tmp_path)) == 2  # nothing redone
    assert len(run(tmp_path, rounds=3)) == 3 and len(lines(tmp_path)) == 3  # extended


def test_plan_groups_rounds_by_engine_and_stack():
    todo = [("baseline", 0), ("baseline", 2), ("cnn", 1), ("baseline", 3)]
    # Round-major order, so that a run stopped early holds whole rounds of every model.
    assert experiment.plan(Config(engine="reference"), todo) == [
        ("baseline", [0]), ("cnn", [1]), ("baseline", [2]), ("baseline", [3])]
    assert experiment.plan(Config(), todo, stack=2) == [
        ("baseline", [0, 2]), ("cnn", [1]), ("baseline", [3])]
    # By default the MLP stacks (small activations) and the convnets do not.
    assert experiment.plan(Config(), todo) == [("baseline", [0, 2, 3]), ("cnn", [1])]


def test_config_mismatch_is_an_error(tmp_path):
    run(tmp_path, rounds=1)
    with pytest.raises(RunError, match="epochs: 1 there, 2 now"):
        run(tmp_path, rounds=1, epochs=2)


def test_interrupted_run_keeps_finished_rounds_and_resumes(tmp_path, monkeypatch):
    real = experiment.run_rounds
    calls = []

    def dies_on_second(config, model, rounds, checkpoint_dir=None):
        calls.append(rounds)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(config, model, rounds, checkpoint_dir)

    monkeypatch.setattr(experiment, "run_rounds", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, rounds=3, engine="reference")  # one round per task
    assert len(lines(tmp_path)) == 1
    monkeypatch.setattr(experiment, "run_rounds", real)
    results = run(tmp_path, rounds=3, engine="reference")
    assert sorted(r["round"] for r in results) == [0, 1, 2]


def test_torn_last_line_is_dropped_and_malformed_line_named(tmp_path):
    path = tmp_path / "rounds.jsonl"
    good = json.dumps({"model": "m", "round": 0, "train_error": 0.1, "test_error": 0.2})
    path.write_text(good + "\n" + good[:20])
    assert len(read_rounds(path, repair=True)) == 1
    assert path.read_text() == good + "\n"
    path.write_text(good + "\n{oops\n" + good + "\n")
    with pytest.raises(RunError, match=r"rounds.jsonl:2: malformed"):
        read_rounds(path)


def test_cli_reproduce_prints_table(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["reproduce", "--models", "baseline", "siamese_aux", "--rounds", "1", "--epochs",
                 "1", "--pairs", "50", "--data", "embedded", "--executor", "serial",
                 "--no-progress", "--save-checkpoints", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| Nb of parameters | 73,954 | 69,849 |" in text
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["baseline-r0.pt",
                                                                       "siamese_aux-r0.pt"]
    assert (out / "summary.csv").read_text().startswith("model,params,rounds,")
    assert "Average test error rate" in (out / "summary.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["reproduce", "--models", "nope"], "unknown model(s) nope"),
    (["reproduce", "--data", "mnist", "--data-dir", "{tmp}/absent"], "MNIST not found in"),
    (["reproduce", "--epochs", "0"], "expected a number >= 1"),
    (["--plugin", "no_such_module_xyz", "models"], "--plugin no_such_module_xyz"),
])
def test_cli_bad_input_is_a_clear_error(tmp_path, capsys, monkeypatch, argv, message):
    from digitcmp import data

    def no_network(directory, timeout):
        raise data.DataError("could not download (no network)")

    monkeypatch.setattr(data, "download_mnist", no_network)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv] + (
        ["--out", str(tmp_path / "o")] if argv[0] == "reproduce" else [])
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_cli_models_lists_counts(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "73,954" in out and "77,530" in out and "69,849" in out


def test_variants_are_named_arms_that_extend_a_run(tmp_path):
    fast = {"model": "baseline", "lr": 0.01}
    results = run(tmp_path, rounds=1, models=["baseline", "fast"], variants={"fast": fast})
    by_arm = {r["model"]: r for r in results}
    assert by_arm["fast"]["arch"] == "baseline" and by_arm["fast"]["lr"] == 0.01
    assert by_arm["baseline"]["lr"] == 5e-4
    # Another variant extends the run; redefining an existing one would change its rounds.
    more = {"fast": fast, "slow": {"model": "baseline", "lr": 1e-5}}
    assert len(run(tmp_path, rounds=1, models=["fast", "slow"], variants=more)) == 3
    with pytest.raises(RunError, match="variants"):
        run(tmp_path, rounds=1, models=["fast"], variants={"fast": {"model": "baseline", "lr": 0.1}})


@pytest.mark.parametrize("spec, message", [
    ({"model": "nope"}, "variant 'v': 'model' must be one of"),
    ({"model": "cnn", "learning_rate": 1}, "variant 'v': unknown option 'learning_rate'"),
    ({"model": "cnn", "epochs": 2.5}, "variant 'v': epochs must be a whole number"),
    ({"model": "cnn", "lr": "fast"}, "variant 'v': lr must be a number >= 0, got 'fast'"),
])
def test_bad_variant_is_named(tmp_path, spec, message):
    with pytest.raises(RunError, match=message):
        run(tmp_path, models=["v"], variants={"v": spec})
