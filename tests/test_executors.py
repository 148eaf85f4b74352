"""Serial, process and Ray executors give the same results; a dead Ray worker's task is retried;
no worker outlives its driver."""

import json
import os
import signal
import subprocess
import sys
import time
import types

import pytest
import torch

import worker_tasks
from conftest import TINY
from digitcmp import executors
from digitcmp.config import Config
from digitcmp.errors import ExecutorError
from digitcmp.experiment import run_experiment, train_task


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One local Ray (2 CPUs) for the module, which executors join instead of starting their own.
    Yields the path whose absence tells crash_plugin's model to kill its worker."""
    ray = pytest.importorskip("ray")
    marker = tmp_path_factory.mktemp("ray") / "died"
    # Ray's processes inherit this environment: workers find crash_plugin on the path and the
    # marker. (A runtime_env would do the same, but makes Ray start a second set of workers.)
    mp = pytest.MonkeyPatch()
    mp.setenv("PYTHONPATH", os.pathsep.join(sys.path))
    mp.setenv("DIGITCMP_TEST_MARKER", str(marker))
    try:
        try:
            # One attempt: a second costs ~2 min here when the first timed out, and the retry
            # itself is tested with a fake Ray below.
            executors.init_ray(attempts=1, num_cpus=2, include_dashboard=False, log_to_driver=False)
        except ExecutorError as e:
            # This project's 2-core VM is sometimes too slow for Ray's fixed start-up waits; that
            # is the machine, not digitcmp. Any other failure to start is a failure.
            if "timed out" not in str(e):
                raise
            pytest.skip(f"a local Ray timed out starting on this machine: {e}")
        yield marker
    finally:
        ray.shutdown()
        mp.undo()


def by_round(results):
    out = {}
    for rs in results:
        for r in rs:
            r.pop("seconds")
            out[(r["model"], r["round"])] = r
    return out


CFG = Config(**TINY, models=["baseline", "siamese_aux"], rounds=2)
TASKS = [("baseline", [0, 1]), ("siamese_aux", [0]), ("siamese_aux", [1])]


@pytest.fixture(scope="module")
def serial():
    results = by_round(executors.execute(train_task, TASKS, CFG))
    assert len(results) == 4
    return results


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_process_executor_gives_the_serial_results(serial, monkeypatch, method):
    # One worker process: a result depends only on (seed, round), not on which process, in what
    # order or how it started (each spawned worker costs a torch import).
    if method == "fork" and not sys.platform.startswith("linux"):
        pytest.skip("workers are forked on Linux only")
    monkeypatch.setattr(executors, "start_method", lambda threads, gpus: method)
    # The driver has run PyTorch's OpenMP pool on two threads, as speed.py's matmul does: a
    # worker forked from it and training on one thread must not hang on the pool's remains.
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    torch.randn(512, 512) @ torch.randn(512, 512)
    torch.set_num_threads(threads)
    assert by_round(executors.execute(train_task, TASKS, CFG, "process", workers=1)) == serial


def test_workers_are_forked_only_where_that_is_safe(monkeypatch):
    monkeypatch.setattr(executors.sys, "platform", "linux")
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    assert executors.start_method(threads=1, gpus=0) == "fork"
    assert executors.start_method(threads=2, gpus=0) == "spawn"  # OpenMP's pool after a fork
    assert executors.start_method(threads=1, gpus=1) == "spawn"  # CUDA after a fork
    monkeypatch.setitem(sys.modules, "ray", types.ModuleType("ray"))
    assert executors.start_method(threads=1, gpus=0) == "spawn"  # Ray's threads
    monkeypatch.delitem(sys.modules, "ray")
    monkeypatch.setattr(executors.sys, "platform", "darwin")
    assert executors.start_method(threads=1, gpus=0) == "spawn"


def test_progress_reports_come_back_from_worker_processes():
    told = []
    tasks = [("a", [0, 1]), ("b", [0])]
    results = list(executors.execute(worker_tasks.counter, tasks, Config(), "process", workers=2,
                                     progress=lambda arm, k: told.append((arm, k))))
    assert sorted(told) == [("a", 2), ("a", 2), ("b", 2)]
    assert {r["pid"] for rs in results for r in rs} != {os.getpid()}


def test_a_worker_exits_when_its_driver_is_killed(tmp_path):
    pid_file = tmp_path / "worker.pid"
    driver = subprocess.Popen(
        [sys.executable, "-c", "import worker_tasks; from digitcmp import executors, config; "
         f"list(executors.execute(worker_tasks.sleeper, [({str(pid_file)!r}, [0])], config.Config(), "
         "'process', workers=1))"],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        deadline = time.time() + 120
        while not pid_file.exists() and time.time() < deadline:
            time.sleep(0.2)
        worker = int(pid_file.read_text())
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        deadline = time.time() + 20
        while time.time() < deadline and _alive(worker):
            time.sleep(0.2)
        assert not _alive(worker), "the worker outlived its killed driver"
    finally:
        driver.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its new parent) is not alive.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def test_ray_tasks_ask_for_a_gpu_when_training_on_cuda():
    assert executors.ray_task_options(2, gpus=1) == {"num_cpus": 2, "num_gpus": 1, "max_retries": 0}
    assert executors.ray_task_options(1, gpus=0)["num_gpus"] == 0


# The Ray tests need the optional extra (pip install -e '.[ray]').
def test_ray_executor_gives_the_serial_results(local_ray, serial):
    assert by_round(executors.execute(train_task, TASKS, CFG, "ray")) == serial


def test_a_task_whose_worker_dies_is_retried(local_ray, tmp_path):
    import crash_plugin  # noqa: F401  (registers "dies_once" here; workers import it via plugins)

    said = []
    cfg = Config(**TINY, models=["dies_once"], rounds=2, engine="reference", plugins=["crash_plugin"])
    results = run_experiment(cfg, tmp_path / "run", executor="ray", progress=False, say=said.append)
    assert local_ray.exists()  # the first attempt really died
    assert sorted(r["round"] for r in results) == [0, 1]
    lines = [json.loads(x) for x in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    assert sorted(r["round"] for r in lines) == [0, 1]  # nothing lost, nothing twice
    assert any("1 task(s) retried" in s for s in said), said


@pytest.mark.parametrize("module", ["ray", "psutil"])  # the Ray extra brings both
def test_ray_missing_is_a_one_line_error(monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # import -> ImportError
    with pytest.raises(ExecutorError, match=r"pip install 'digitcmp\[ray\]'"):
        list(executors.execute(train_task, [("baseline", [0])], Config(**TINY), "ray"))


def test_a_failed_ray_start_is_a_clear_error(monkeypatch):
    pytest.importorskip("psutil")  # comes with the Ray extra
    calls = []

    def init(address=None, **kwargs):
        calls.append(address)
        raise Exception("The current node timed out during startup.")

    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(init=init, shutdown=lambda: None))
    with pytest.raises(ExecutorError, match=r"local Ray \(The current node.*'ray start --head'"):
        executors.init_ray()
    assert calls == [None, None]  # a local start is tried twice
    with pytest.raises(ExecutorError, match="join Ray at head:6379: The current node"):
        executors.init_ray("head:6379")
    assert calls == [None, None, "head:6379"]  # joining is not retried


def test_a_failed_ray_start_leaves_no_process_behind(monkeypatch):
    pytest.importorskip("psutil")  # comes with the Ray extra
    started = []

    def init(address=None, **kwargs):
        # What a local start that times out does: it has started some of Ray's processes.
        started.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]))
        raise Exception("The current node timed out during startup.")

    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(init=init, shutdown=lambda: None))
    try:
        with pytest.raises(ExecutorError):
            executors.init_ray()
        assert len(started) == 2
        assert all(p.poll() is not None for p in started)  # stopped (and reaped)
        assert bystander.poll() is None  # a child that was there before the start is left alone
    finally:
        for p in started + [bystander]:
            p.kill()
            p.wait()


def test_each_process_worker_takes_its_own_gpu(monkeypatch):
    import multiprocessing as mp

    ids = mp.get_context("spawn").Queue()
    ids.put(1)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(executors.threading, "Thread", lambda **kw: types.SimpleNamespace(start=lambda: None))
    executors._init_worker(os.getppid(), None, ids)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert executors.default_workers(threads=1, gpus=4) == 4
