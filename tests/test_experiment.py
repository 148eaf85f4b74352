import json

import pytest

from conftest import tiny
from digitcmp import experiment
from digitcmp.config import Config
from digitcmp.errors import ConfigError, DataError, RunDirError
from digitcmp.experiment import plan, run_experiment


def run(out, **kw):
    return run_experiment(tiny(**kw), out, progress=False, say=lambda *a: None)


def lines(out):
    return (out / "rounds.jsonl").read_text().splitlines()


def test_run_dir_files_and_resume(tmp_path):
    results = run(tmp_path / "r")
    assert sorted((r["model"], r["round"]) for r in results) == [("baseline", 0), ("baseline", 1)]
    manifest = json.loads((tmp_path / "r" / "config.json").read_text())
    assert manifest["source"]["name"] == "embedded" and manifest["versions"]["torch"]
    assert manifest["device"] == "cpu" and manifest["resolved"]["baseline"]["lr"] == 5e-4
    assert len(lines(tmp_path / "r")) == 2
    assert len(run(tmp_path / "r")) == 2 and len(lines(tmp_path / "r")) == 2  # nothing redone
    assert len(run(tmp_path / "r", rounds=3)) == 3 and len(lines(tmp_path / "r")) == 3  # extended


def test_plan_groups_rounds_by_engine_and_stack():
    todo = [("baseline", 0), ("baseline", 2), ("cnn", 1), ("baseline", 3)]
    # Round-major order, so that a run stopped early holds whole rounds of every model.
    assert plan(Config(engine="reference"), todo) == [
        ("baseline", [0]), ("cnn", [1]), ("baseline", [2]), ("baseline", [3])]
    assert plan(Config(), todo, rounds_per_task=2) == [("baseline", [0, 2]), ("cnn", [1]), ("baseline", [3])]
    # By default the MLP stacks (small activations) and the convnets do not; on a GPU all stack.
    assert plan(Config(), todo) == [("baseline", [0, 2, 3]), ("cnn", [1])]
    assert plan(Config(), todo + [("cnn", 4)], all_rounds=True) == [("baseline", [0, 2, 3]), ("cnn", [1, 4])]


def test_plan_puts_the_longest_task_of_a_round_first():
    todo = [("baseline", 0), ("cnn", 0), ("siamese_aux", 0), ("baseline", 1), ("cnn", 1)]
    assert plan(Config(engine="reference"), todo) == [
        ("siamese_aux", [0]), ("cnn", [0]), ("baseline", [0]), ("cnn", [1]), ("baseline", [1])]


def test_when_idle_is_called_once_when_a_worker_runs_out_of_tasks(tmp_path):
    calls = []
    config = tiny(rounds=3, engine="reference")
    run_experiment(config, tmp_path / "r", workers=2, progress=False, say=lambda *a: None,
                   when_idle=lambda: calls.append(len(lines(tmp_path / "r"))))
    assert calls == [2]  # after the second of three one-round tasks: one left, for two workers


def test_config_mismatch_is_an_error(tmp_path):
    run(tmp_path, rounds=1)
    with pytest.raises(RunDirError, match="epochs: 1 there, 2 now"):
        run(tmp_path, rounds=1, epochs=2)


@pytest.mark.parametrize("change, error", [
    ({"pairs": 2501}, DataError), ({"batch_size": 1}, ConfigError), ({"val_pairs": 39}, ConfigError),
    ({"models": ["nope"]}, ConfigError), ({"lr": float("inf")}, ConfigError),
])
def test_a_refused_run_writes_nothing(tmp_path, change, error):
    with pytest.raises(error):
        run(tmp_path / "new", **change)
    assert not (tmp_path / "new").exists()
    run(tmp_path / "old", rounds=1)
    before = {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir() if p.is_file()}
    with pytest.raises(error):
        run(tmp_path / "old", rounds=1, **change)
    assert {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir() if p.is_file()} == before


def test_interrupted_run_keeps_finished_rounds_and_resumes(tmp_path, monkeypatch):
    real = experiment.train_task
    calls = []

    def dies_on_second(config, arm, rounds, checkpoint_dir=None, progress=None):
        calls.append(rounds)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(config, arm, rounds, checkpoint_dir, progress)

    monkeypatch.setattr(experiment, "train_task", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, rounds=3, engine="reference")  # one round per task
    assert len(lines(tmp_path)) == 1
    monkeypatch.setattr(experiment, "train_task", real)
    results = run(tmp_path, rounds=3, engine="reference")
    assert sorted(r["round"] for r in results) == [0, 1, 2]


def test_variants_are_named_arms_that_extend_a_run(tmp_path):
    fast = {"model": "baseline", "lr": 0.01}
    results = run(tmp_path, rounds=1, models=["baseline", "fast"], variants={"fast": fast})
    by_arm = {r["model"]: r for r in results}
    assert by_arm["fast"]["arch"] == "baseline" and by_arm["fast"]["lr"] == 0.01
    assert by_arm["fast"]["point"] == fast and by_arm["baseline"]["lr"] == 5e-4
    # Another variant extends the run; redefining an existing one would change its rounds.
    more = {"fast": fast, "slow": {"model": "baseline", "lr": 1e-5}}
    assert len(run(tmp_path, rounds=1, models=["fast", "slow"], variants=more)) == 3
    with pytest.raises(RunDirError, match="variants"):
        run(tmp_path, rounds=1, models=["fast"], variants={"fast": {"model": "baseline", "lr": 0.1}})


@pytest.mark.parametrize("spec, message", [
    ({"model": "nope"}, "variant 'v': 'model' must be one of"),
    ({"model": "cnn", "learning_rate": 1}, "variant 'v': unknown option 'learning_rate'"),
    ({"model": "cnn", "epochs": 2.5}, "variant 'v': epochs must be a whole number"),
    ({"model": "cnn", "lr": "fast"}, "variant 'v': lr must be a finite number >= 0, got 'fast'"),
])
def test_bad_variant_is_named(tmp_path, spec, message):
    with pytest.raises(ConfigError, match=message):
        run(tmp_path, models=["v"], variants={"v": spec})


def test_checkpoints_of_every_round(tmp_path):
    from digitcmp.checkpoint import load_checkpoint

    run_experiment(tiny(rounds=1, models=["baseline", "siamese_aux"]), tmp_path, progress=False,
                   say=lambda *a: None, save_checkpoints=True)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["baseline-r0.pt",
                                                                           "siamese_aux-r0.pt"]
    model, meta = load_checkpoint(tmp_path / "checkpoints" / "siamese_aux-r0.pt")
    assert meta["model"] == "siamese_aux" and meta["round"] == 0 and meta["device"] == "cpu"
