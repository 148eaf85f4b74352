"""Executors: run a task function over (arm, rounds) tasks one after another, in local worker
processes, or on Ray, yielding each task's results as it finishes.

The task function is passed in (``experiment.train_task``), so this module knows nothing of
training; it calls ``fn(config, arm, rounds, checkpoint_dir, progress)``, where
``progress(arm, k)`` tells the driver that k more round-epochs of ``arm`` are done (the progress
bar moves within a round).
Workers never write the run directory: their results come back to the driver.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator

from .errors import ExecutorError
from .messages import say

EXECUTORS = ("serial", "process", "ray")
Task = tuple[str, list[int]]

_progress_queue = None  # in a worker process: where progress reports go


def execute(fn: Callable, tasks: list[Task], config, executor: str = "serial",
            workers: int | None = None, checkpoint_dir: str | None = None,
            ray_address: str | None = None, gpus: int = 0,
            progress: Callable[[str, float], None] | None = None,
            say: Callable = say) -> Iterator[list[dict]]:
    """Yield ``fn``'s results for each (arm, rounds) task as it finishes, in any order.
    ``gpus``: GPUs the tasks train on (0 for the CPU); one process worker each by default."""
    if executor == "serial":
        for arm, rounds in tasks:
            yield fn(config, arm, rounds, checkpoint_dir, progress)
    elif executor == "process":
        yield from execute_process(fn, tasks, config, workers, checkpoint_dir, gpus, progress)
    elif executor == "ray":
        yield from execute_ray(fn, tasks, config, workers, checkpoint_dir, ray_address, gpus, say=say)
    else:
        raise ExecutorError(f"unknown executor {executor!r}; choose {', '.join(EXECUTORS)}")


def default_workers(threads: int, gpus: int) -> int:
    """Local workers when not told: one per GPU, else one per ``threads`` cores."""
    return gpus or max(1, (os.cpu_count() or 1) // threads)


def execute_process(fn: Callable, tasks: list[Task], config, workers: int | None,
                    checkpoint_dir: str | None, gpus: int,
                    progress: Callable[[str, float], None] | None) -> Iterator[list[dict]]:
    """``execute`` on local worker processes (started as ``start_method`` says). Each worker
    exits if the driver dies, so none is left orphaned."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context(start_method(config.threads, gpus))
    workers = min(workers or default_workers(config.threads, gpus), len(tasks)) or 1
    reports, gpu_ids = ctx.Queue(), ctx.Queue()
    for i in range(workers if gpus else 0):
        gpu_ids.put(i % gpus)
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(os.getpid(), reports, gpu_ids if gpus else None))
    # The first submit starts the workers (all of them, when forked): the relay thread comes
    # after, so that no thread of ours is copied mid-step into a forked worker.
    futures = [pool.submit(fn, config, arm, rounds, checkpoint_dir, _report if progress else None)
               for arm, rounds in tasks]
    relay = threading.Thread(target=_relay, args=(reports, progress), daemon=True)
    relay.start()
    finished = False
    try:
        for fut in as_completed(futures):
            yield fut.result()
        finished = True
    except BrokenProcessPool:
        raise ExecutorError("a worker process died (killed, or out of memory?); finished rounds "
                            "are saved: rerun the same command to resume") from None
    finally:
        if not finished:
            # Stopping early (an error, Ctrl-C): do not wait for the rounds in flight, whose
            # results could not be saved anyway.
            for fut in futures:
                fut.cancel()
            for p in list((getattr(pool, "_processes", None) or {}).values()):
                with contextlib.suppress(Exception):
                    p.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        reports.put(None)
        relay.join(timeout=5)


def start_method(threads: int, gpus: int) -> str:
    """How local workers start: "fork" where that is safe, else "spawn".

    A forked worker starts with what the driver has loaded (torch, digitcmp, the data, the C
    kernels); a spawned one imports torch again first, over a second per worker on a small
    machine, and finalises it again on exit. Forking is safe for training on the CPU on one
    thread per worker, on Linux: PyTorch's OpenMP thread pool does not survive a fork, but one
    thread never enters it (PyTorch's DataLoader workers rely on the same). Elsewhere workers
    are spawned: CUDA cannot be used in a forked child, macOS's system libraries are not
    fork-safe, and a driver that runs Ray has threads of its own in flight."""
    if sys.platform.startswith("linux") and not gpus and threads == 1 and "ray" not in sys.modules:
        return "fork"
    return "spawn"


def _init_worker(driver: int, reports, gpu_ids) -> None:
    """Runs first in every worker: where to send progress, which GPU to use, and a watchdog
    that ends the worker when the driver is gone (killed with -9, say)."""
    global _progress_queue
    _progress_queue = reports
    if gpu_ids is not None:  # before torch initialises CUDA in this process
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_ids.get())

    def watch():
        import time

        while os.getppid() == driver:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _report(arm: str, k: float) -> None:
    _progress_queue.put((arm, k))


def _relay(reports, progress: Callable[[str, float], None] | None) -> None:
    """Driver side: hand the workers' progress reports to ``progress`` until told to stop."""
    while True:
        try:
            k = reports.get(timeout=1.0)
        except queue.Empty:
            continue
        except Exception:  # the queue broke (a worker terminated mid-write): no more reports
            return
        if k is None:
            return
        if progress is not None:
            progress(*k)


def execute_ray(fn: Callable, tasks: list[Task], config, workers: int | None, checkpoint_dir: str | None,
                address: str | None, gpus: int = 0, retries: int = 3,
                say: Callable = say) -> Iterator[list[dict]]:
    """``execute`` on Ray: join ``address`` (or $RAY_ADDRESS), else start a local Ray.

    A task whose worker dies (killed, out of memory, node lost) is submitted again, up to
    ``retries`` times, and each retry is said. The driver resubmits rather than leaving it to
    Ray's own ``max_retries`` so that it can count and report them. Each task asks Ray for
    ``config.threads`` CPUs, and one GPU when it trains on CUDA, so Ray places it on a GPU node.
    """
    try:
        import psutil  # noqa: F401  (init_ray's; the Ray extra installs both)
        import ray
        from ray.exceptions import NodeDiedError, OutOfMemoryError, WorkerCrashedError
    except ImportError:
        raise ExecutorError("--executor ray needs Ray: pip install 'digitcmp[ray]'") from None
    started = not ray.is_initialized()
    if started:
        address = address or os.environ.get("RAY_ADDRESS")
        # A local Ray gets --workers x threads CPUs (default: all cores); its workers get our
        # sys.path, so --plugin modules given as files import there too.
        init_ray(address=address, include_dashboard=False, log_to_driver=False,
                 num_cpus=None if address or not workers else workers * config.threads,
                 runtime_env=None if address else {"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path)}})
    remote = ray.remote(fn).options(**ray_task_options(config.threads, gpus))
    pending = {remote.remote(config, arm, rounds, checkpoint_dir, None): (arm, rounds, 0)
               for arm, rounds in tasks}
    retried = 0
    try:
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            arm, rounds, attempt = pending.pop(ref)
            try:
                result = ray.get(ref)
            except (WorkerCrashedError, NodeDiedError, OutOfMemoryError) as e:
                if attempt >= retries:
                    raise ExecutorError(f"{arm} rounds {rounds}: the worker died {attempt + 1} times; "
                                        f"last: {type(e).__name__}") from None
                retried += 1
                say(f"digitcmp: the worker running {arm} rounds {rounds} died "
                    f"({type(e).__name__}); retry {attempt + 1} of {retries}")
                pending[remote.remote(config, arm, rounds, checkpoint_dir, None)] = (arm, rounds, attempt + 1)
                continue
            except ray.exceptions.RayTaskError as e:  # the task raised: re-raise its own error
                raise e.as_instanceof_cause() from None
            yield result
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if retried:
            say(f"digitcmp: {retried} task(s) retried after their worker died")
        if started:
            ray.shutdown()


def ray_task_options(threads: int, gpus: int) -> dict:
    """What each training task asks Ray for: its threads as CPUs, and a GPU when it trains on one."""
    return {"num_cpus": threads, "num_gpus": 1 if gpus else 0, "max_retries": 0}


def init_ray(address: str | None = None, attempts: int = 2, **kwargs) -> None:
    """``ray.init`` that turns a failed start or join into an ExecutorError naming what failed.

    A local start is the fragile part on a slow machine: the raylet waits a fixed 15 s for its
    dashboard agent to write its port files, and aborts if it has not (importing the agent's
    modules alone can take that long on a busy 2-core machine), so the node never registers.
    A local start that fails is tried again (``attempts`` in all), after stopping the processes
    it had started; after that the message says how to start Ray once on its own and join it.
    """
    import psutil
    import ray

    me = psutil.Process()
    for _ in range(1 if address else attempts):
        before = set(me.children(recursive=True))
        try:
            ray.init(address=address, **kwargs)
            return
        except Exception as e:  # Ray raises bare Exception/ConnectionError for a failed start
            ray.shutdown()
            # A start that failed half-way leaves what it had started (GCS server, monitors,
            # dashboard) running as our children, unknown to ray.shutdown(); left alone, they
            # outlive this process's work and keep a parent like pytest from exiting.
            stop_processes([p for p in me.children(recursive=True) if p not in before])
            error = e
    if address:
        raise ExecutorError(f"could not join Ray at {address}: {error}")
    raise ExecutorError(f"could not start a local Ray ({error}; {attempts} attempts). On a busy machine, "
                        "start Ray once on its own ('ray start --head', again if it times out) and pass "
                        "--ray-address auto to every run")


def stop_processes(procs: list, grace: float = 5.0) -> None:
    """Terminate ``procs`` (psutil Processes), and kill those still alive ``grace`` s later."""
    import psutil

    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=grace)
