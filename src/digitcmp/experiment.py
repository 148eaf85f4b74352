"""Rounds, seeds, the run directory and the executors that map ``run_rounds`` over tasks.

A run directory holds:
  config.json   the resolved config, the data source, package versions and the command line;
  rounds.jsonl  one JSON line per finished (model, round), appended and fsynced as it finishes;
  summary.csv / summary.md   Table III, rewritten (atomically) at the end of every run.

Only this driver process writes to the directory, so a worker that dies cannot corrupt it, and a
killed run loses at most the round in flight. Rerunning into the same directory resumes.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from . import __version__
from .files import atomic_write
from .models import MODELS, get_model_class
from .stacked import rounds_per_stack
from .train import Config, option_problem, resolve, run_rounds, source_for


class RunError(Exception):
    """A run directory cannot be used as asked; the message says which file and why."""


def versions() -> dict:
    import numpy
    import torch

    # str(): torch.__version__ is a TorchVersion, which weights-only checkpoint loading refuses.
    return {"digitcmp": __version__, "python": platform.python_version(),
            "torch": str(torch.__version__), "numpy": numpy.__version__, "platform": platform.platform()}


def read_rounds(path: str | os.PathLike, repair: bool = False) -> list[dict]:
    """Parse rounds.jsonl. A torn last line (a run killed mid-write) is dropped, and with
    ``repair`` cut from the file; any other malformed line is an error naming the line."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: no such file")
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    results, offset = [], 0
    for i, line in enumerate(lines, 1):
        last = i == len(lines)
        if line.strip():
            try:
                rec = json.loads(line)
                for key in ("model", "round", "train_error", "test_error"):
                    if key not in rec:
                        raise ValueError(f"missing field {key!r}")
            except ValueError as e:
                if last:  # no newline after it: the write was cut short
                    if repair:
                        with open(path, "r+b") as f:
                            f.truncate(offset)
                    print(f"digitcmp: {path}:{i}: dropped an unfinished line", file=sys.stderr)
                    break
                raise RunError(f"{path}:{i}: malformed result line ({e})") from None
            results.append(rec)
        offset += len(line) + 1
    return results


class RunDir:
    """The files of one run directory, written only by the driver."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.config_path = self.path / "config.json"
        self.rounds_path = self.path / "rounds.jsonl"

    def open(self, record: dict) -> list[dict]:
        """Create the directory, or check it belongs to the same protocol and return its rounds."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self.config_path.exists():
            try:
                old = json.loads(self.config_path.read_text())
            except ValueError as e:
                raise RunError(f"{self.config_path}: not valid JSON ({e})") from None
            # An option that an older digitcmp did not record had its default value then.
            new_cfg, old_cfg = record["config"], {**Config().to_dict(), **old.get("config", {})}
            diff = [k for k in new_cfg if k not in Config.EXTENT and new_cfg[k] != old_cfg.get(k)]
            # New variants extend the run like new models; a changed one would change its rounds.
            old_variants, new_variants = old_cfg.get("variants", {}), new_cfg.get("variants", {})
            if "variants" in diff and all(old_variants.get(k, v) == v for k, v in new_variants.items()):
                diff.remove("variants")
            if diff:
                details = ", ".join(f"{k}: {old_cfg.get(k)!r} there, {new_cfg[k]!r} now" for k in diff)
                raise RunError(f"{self.path} holds a run with another config ({details}); "
                               "use another --out or the same options")
            # Asking for more models or rounds extends the run; the record keeps the union.
            models = old_cfg.get("models", []) + [m for m in new_cfg["models"]
                                                  if m not in old_cfg.get("models", [])]
            record["config"] = dict(new_cfg, models=models,
                                    rounds=max(new_cfg["rounds"], old_cfg.get("rounds", 0)),
                                    variants={**old_variants, **new_variants})
        atomic_write(self.config_path, json.dumps(record, indent=2) + "\n")
        return read_rounds(self.rounds_path, repair=True) if self.rounds_path.exists() else []

    def append(self, result: dict) -> None:
        """Add one finished round; fsync so a crash right after keeps it."""
        with open(self.rounds_path, "a") as f:
            f.write(json.dumps(result) + "\n")
            f.flush()
            os.fsync(f.fileno())


def execute(tasks: list[tuple[str, list[int]]], config: Config, executor: str = "serial",
            workers: int | None = None, checkpoint_dir: str | None = None,
            ray_address: str | None = None, say: Callable = print) -> Iterator[list[dict]]:
    """Yield the ``run_rounds`` results of each (model, rounds) task as it finishes, in any order."""
    if executor == "serial":
        for model, rounds in tasks:
            yield run_rounds(config, model, rounds, checkpoint_dir)
    elif executor == "process":
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        workers = workers or max(1, (os.cpu_count() or 1) // config.threads)
        # spawn, not fork: forking a process whose OpenMP pool is running can deadlock.
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(run_rounds, config, m, rounds, checkpoint_dir) for m, rounds in tasks]
            try:
                for fut in as_completed(futures):
                    yield fut.result()
            except BrokenProcessPool:
                raise RunError("a worker process died (killed, or out of memory?); finished rounds "
                               "are saved: rerun the same command to resume") from None
            finally:
                for fut in futures:
                    fut.cancel()
    elif executor == "ray":
        yield from execute_ray(tasks, config, workers, checkpoint_dir, ray_address, say=say)
    else:
        raise RunError(f"unknown executor {executor!r}; choose serial, process or ray")


def execute_ray(tasks: list[tuple[str, list[int]]], config: Config, workers: int | None,
                checkpoint_dir: str | None, address: str | None, retries: int = 3,
                say: Callable = print) -> Iterator[list[dict]]:
    """``execute`` on Ray: join ``address`` (or $RAY_ADDRESS), else start a local Ray.

    A task whose worker dies (killed, out of memory, node lost) is submitted again, up to
    ``retries`` times, and each retry is said. The driver resubmits rather than leaving it to
    Ray's own ``max_retries`` so that it can count and report them. Results only come back to
    this driver, which alone writes the run directory.
    """
    try:
        import psutil  # noqa: F401  (init_ray's; the Ray extra installs both)
        import ray
        from ray.exceptions import NodeDiedError, OutOfMemoryError, WorkerCrashedError
    except ImportError:
        raise RunError("--executor ray needs Ray: pip install 'digitcmp[ray]'") from None
    started = not ray.is_initialized()
    if started:
        address = address or os.environ.get("RAY_ADDRESS")
        # A local Ray gets --workers x threads CPUs (default: all cores); its workers get our
        # sys.path, so --plugin modules in the working directory import there too.
        init_ray(address=address, include_dashboard=False, log_to_driver=False,
                 num_cpus=None if address or not workers else workers * config.threads,
                 runtime_env=None if address else {"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path)}})
    remote = ray.remote(run_rounds).options(num_cpus=config.threads, max_retries=0)
    pending = {remote.remote(config, m, rounds, checkpoint_dir): (m, rounds, 0) for m, rounds in tasks}
    retried = 0
    try:
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            model, rounds, attempt = pending.pop(ref)
            try:
                result = ray.get(ref)
            except (WorkerCrashedError, NodeDiedError, OutOfMemoryError) as e:
                if attempt >= retries:
                    raise RunError(f"{model} rounds {rounds}: the worker died {attempt + 1} times; "
                                   f"last: {type(e).__name__}") from None
                retried += 1
                say(f"digitcmp: the worker running {model} rounds {rounds} died "
                    f"({type(e).__name__}); retry {attempt + 1} of {retries}")
                pending[remote.remote(config, model, rounds, checkpoint_dir)] = (model, rounds, attempt + 1)
                continue
            yield result
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if retried:
            say(f"digitcmp: {retried} task(s) retried after their worker died")
        if started:
            ray.shutdown()


def init_ray(address: str | None = None, attempts: int = 2, **kwargs) -> None:
    """``ray.init`` that turns a failed start or join into a RunError naming what failed.

    A local start is the fragile part on a slow machine: the raylet waits a fixed 15 s for its
    dashboard agent, a Python process that took 15 s just to import Ray's modules on this
    project's 2-core VM, to write its port files, and aborts if it has not, so the node never
    registers. A local start that fails is tried again (``attempts`` in all), after stopping the
    processes it had started; after that the message says how to start Ray once on its own and
    join it.
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
        raise RunError(f"could not join Ray at {address}: {error}")
    raise RunError(f"could not start a local Ray ({error}; {attempts} attempts). On a busy machine, "
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


def check_arms(config: Config) -> None:
    """Every name in config.models is a registered model or a well-formed variant of one."""
    unknown = [m for m in config.models if m not in MODELS and m not in config.variants]
    if unknown:
        raise RunError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    for name, spec in config.variants.items():
        if spec.get("model") not in MODELS:
            raise RunError(f"variant {name!r}: 'model' must be one of {', '.join(MODELS)}, "
                           f"got {spec.get('model')!r}")
        for key, value in spec.items():
            problem = option_problem(key, value) if key != "model" else None
            if problem:
                raise RunError(f"variant {name!r}: {problem}")


def plan(config: Config, todo: list[tuple[str, int]],
         stack: int | None = None) -> list[tuple[str, list[int]]]:
    """Group the (model, round) pairs still to run into tasks of rounds trained together.

    The reference engine trains one round per task. The stacked engine stacks ``stack`` rounds,
    by default as many as ``rounds_per_stack`` finds worthwhile for the model. A round's numbers
    do not depend on which rounds it is stacked with (its data, batches, initialisation and
    dropout masks come from its own seeds), so the grouping is not part of the config.
    """
    tasks = []
    for model in dict.fromkeys(m for m, _ in todo):
        rounds = [r for m, r in todo if m == model]
        arch, cfg = resolve(config, model)
        if cfg.engine == "reference":
            size = 1
        else:
            size = stack or rounds_per_stack(get_model_class(arch)(), cfg.batch_size)
        tasks += [(model, rounds[i:i + size]) for i in range(0, len(rounds), size)]
    # Round-major: a run stopped early holds whole rounds of every model, which pair up.
    order = {m: i for i, m in enumerate(dict.fromkeys(m for m, _ in todo))}
    return sorted(tasks, key=lambda t: (t[1][0], order[t[0]]))


def run_experiment(config: Config, out: str | os.PathLike, executor: str = "serial",
                   workers: int | None = None, progress: bool = True,
                   command: Iterable[str] | None = None, say: Callable = print,
                   save_checkpoints: bool = False, stack: int | None = None,
                   ray_address: str | None = None) -> list[dict]:
    """Run every missing (model, round) of ``config`` into ``out`` and return all results.

    With ``save_checkpoints``, each round's model is saved as ``out/checkpoints/{model}-r{round}.pt``.
    ``stack`` overrides how many rounds the stacked engine trains together (see ``plan``).
    """
    check_arms(config)
    source = source_for(config)
    # Workers must load exactly this source, not re-run the auto fallback on their own machine.
    config.data = source.name
    config.data_dir = source.location if source.name == "mnist" else None
    config.test_dir = source.test_location
    say(f"digitcmp: data source: {source.describe()}")
    run = RunDir(out)
    record = {"config": config.to_dict(), "source": source.info(), "versions": versions(),
              "command": list(command) if command is not None else None}
    results = run.open(record)
    done = {(r["model"], r["round"]) for r in results}
    tasks = [(m, r) for m in config.models for r in range(config.rounds) if (m, r) not in done]
    total = len(config.models) * config.rounds
    if done:
        say(f"digitcmp: resuming {run.path}: {total - len(tasks)} of {total} rounds already done")
    from tqdm import tqdm

    with tqdm(total=total, initial=total - len(tasks), unit="round", disable=not progress,
              dynamic_ncols=True) as bar:
        ckpt_dir = str(run.path / "checkpoints") if save_checkpoints else None
        for finished in execute(plan(config, tasks, stack), config, executor, workers, ckpt_dir,
                                ray_address, say):
            for res in finished:
                run.append(res)
                results.append(res)
                bar.set_postfix_str(f"{res['model']} r{res['round']} test {100 * res['test_error']:.1f}%")
                bar.update()
    return results
