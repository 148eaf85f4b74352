import json
import multiprocessing as mp
import os

import pytest

from digitcmp.config import Config
from digitcmp.errors import RunDirError
from digitcmp.rundir import LOCK_NOTE, RunDir, load_run, read_manifest, read_rounds

GOOD = {"model": "m", "round": 0, "train_error": 0.1, "test_error": 0.2}


def line(**change) -> str:
    return json.dumps({**GOOD, **change})


def test_torn_last_line_is_dropped_and_cut(tmp_path):
    path = tmp_path / "rounds.jsonl"
    path.write_text(line() + "\n" + line()[:20])
    said = []
    assert len(read_rounds(path, cut_torn=True, say=said.append)) == 1
    assert path.read_text() == line() + "\n" and "dropped an unfinished line" in said[0]


@pytest.mark.parametrize("bad, message", [
    ("{oops", "malformed result line"),
    ("[1, 2]", "a list, not an object"),
    (json.dumps({"model": "m", "round": 0}), "missing field 'train_error'"),
    (line(round="0"), "round is '0'"),
    (line(round=-1), "round -1"),
    (line(model=3), "model is 3"),
    (line(test_error=1.5), "test_error is 1.5, not a fraction"),
    (line(train_error=True), "train_error is True"),
    (line(train_error=float("nan")), "train_error is nan"),  # json.dumps writes NaN
    (line(test_error=float("inf")), "test_error is inf"),
])
def test_malformed_lines_are_named(tmp_path, bad, message):
    path = tmp_path / "rounds.jsonl"
    path.write_text(line() + "\n" + bad + "\n" + line(round=1) + "\n")
    with pytest.raises(RunDirError, match=rf"rounds.jsonl:2: .*{message}"):
        read_rounds(path)


def test_duplicates_count_once_and_foreign_records_are_errors(tmp_path):
    path = tmp_path / "rounds.jsonl"
    path.write_text(line() + "\n" + line(test_error=0.9) + "\n")
    said = []
    [rec] = read_rounds(path, say=said.append)
    assert rec["test_error"] == 0.2 and "m round 0 appears twice" in said[0]
    config = Config(models=["m"], rounds=1)
    path.write_text(line() + "\n" + line(round=1) + "\n")
    with pytest.raises(RunDirError, match="rounds.jsonl:2: a result for m round 1, which"):
        read_rounds(path, config)
    path.write_text(line(model="other") + "\n")
    with pytest.raises(RunDirError, match="rounds.jsonl:1: a result for other round 0"):
        read_rounds(path, config)


@pytest.mark.parametrize("content, message", [
    ("[]", "not a digitcmp manifest"),
    ('"hello"', "not a digitcmp manifest"),
    ('{"config": null}', "not a digitcmp manifest"),
    ('{"config": {"rounds": "many"}}', "option 'rounds'"),
    ("{", "not valid JSON"),
])
def test_malformed_manifests_are_named(tmp_path, content, message):
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(RunDirError, match=f"config.json: .*{message}"):
        read_manifest(tmp_path / "config.json")


def test_load_run_errors(tmp_path):
    with pytest.raises(RunDirError, match="no such run directory"):
        load_run(tmp_path / "absent")
    with pytest.raises(RunDirError, match="config.json: missing"):
        load_run(tmp_path)


def manifest(**config) -> dict:
    return {"config": Config(**config).to_dict(), "resolved": {}}


def test_open_resumes_extends_and_refuses_another_config(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.locked():
        assert run.open(manifest(models=["baseline"], rounds=2)) == []
        run.append({**GOOD, "model": "baseline"})
    with run.locked():  # more rounds and another model extend the run
        assert len(run.open(manifest(models=["cnn"], rounds=3))) == 1
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert saved["models"] == ["baseline", "cnn"] and saved["rounds"] == 3
    with run.locked(), pytest.raises(RunDirError, match="epochs: 25 there, 2 now"):
        run.open(manifest(models=["cnn"], epochs=2))


def test_a_directory_that_is_not_a_run_is_never_written(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my own notes")
    with pytest.raises(RunDirError, match="not a digitcmp run directory"):
        with RunDir(mine).locked():
            pass
    assert os.listdir(mine) == ["report.md"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="not a directory"):
        RunDir(tmp_path / "file").check_usable()


def test_a_refused_run_leaves_no_directory_behind(tmp_path):
    with pytest.raises(RunDirError), RunDir(tmp_path / "new").locked():
        raise RunDirError("refused")
    assert not (tmp_path / "new").exists()


def _hold(path, ready, release):
    with RunDir(path).locked():
        ready.set()
        release.wait(30)


def test_a_second_writer_is_refused_naming_the_first(tmp_path):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(tmp_path / "run", ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(RunDirError, match=rf"in use by another digitcmp run \(PID {holder.pid}\)"):
            with RunDir(tmp_path / "run").locked():
                pass
    finally:
        release.set()
        holder.join(30)
    with RunDir(tmp_path / "run").locked():  # free again; the PID note went with the lock
        pass
    assert not (tmp_path / "run" / LOCK_NOTE).exists()


# Property-based: whatever the bytes of a run directory's files, reading them raises only
# RunDirError, and what is read obeys the record's contract.
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=5),
                    max_leaves=12)
RECORD = st.fixed_dictionaries({"model": st.sampled_from(["m", 3, None]),
                                "round": st.integers(-2, 3) | st.text(),
                                "train_error": st.floats() | st.integers(), "test_error": st.floats()})
FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(lines=st.lists(st.binary(max_size=40) | RECORD.map(lambda r: json.dumps(r).encode())
                      | JSON.map(lambda v: json.dumps(v).encode()), max_size=5))
def test_reading_any_rounds_file_raises_only_run_dir_errors(tmp_path, lines):
    path = tmp_path / "rounds.jsonl"
    path.write_bytes(b"\n".join(lines))
    try:
        records = read_rounds(path, Config(models=["m"], rounds=3), say=lambda *a: None)
    except RunDirError:
        return
    for r in records:
        assert isinstance(r["model"], str) and isinstance(r["round"], int) and 0 <= r["round"] < 3
        assert 0 <= r["test_error"] <= 1 and 0 <= r["train_error"] <= 1


@FAST
@given(value=JSON | st.fixed_dictionaries({"config": JSON}) | st.binary(max_size=40).map(repr))
def test_reading_any_manifest_raises_only_run_dir_errors(tmp_path, value):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(value) if not isinstance(value, str) else value)
    try:
        manifest, config = read_manifest(path)
    except RunDirError:
        return
    assert isinstance(manifest, dict) and isinstance(config, Config)


@FAST
@given(position=st.integers(0, 10**6), value=st.integers(0, 255))
def test_mutated_manifests_raise_only_run_dir_errors(tmp_path, position, value):
    raw = bytearray(json.dumps({"config": Config().to_dict(), "source": {"name": "embedded"}}).encode())
    raw[position % len(raw)] = value
    (tmp_path / "config.json").write_bytes(bytes(raw))
    try:
        read_manifest(tmp_path / "config.json")
    except RunDirError:
        pass
