"""Plan and drive a run: which (arm, round) pairs are missing, how they group into tasks, and the
driver loop that sends tasks to an executor and saves each result the moment it arrives."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from .config import Config, check_config, resolve, resolved_options
from .data.pairs import check_pool_sizes
from .data.sources import describe
from .device import resolve_device
from .executors import default_workers, execute
from .messages import say
from .models import MODELS, get_model_class
from .models.layers import forward_flops
from .plugins import load_plugins
from .progress import Progress
from .provenance import versions
from .rundir import RunDir
from .train import load_kernels, source_for, stack_group, train_rounds


def train_task(config: Config, arm: str, rounds: list[int], checkpoint_dir: str | None = None,
               progress: Callable[[str, float], None] | None = None) -> list[dict]:
    """Train one arm (a model, or a variant of ``config.variants``) for the given rounds in this
    process and return their result records: what executors map over tasks. A record's "model"
    is the arm's name.

    A fresh worker knows only the built-in models, so the config's plugins are imported first.
    With ``checkpoint_dir``, each round's model is saved there as ``{arm}-r{round}.pt``.
    """
    from .checkpoint import save_trained

    load_plugins(config.plugins)
    point = config.variants.get(arm)
    model_name, arm_config = resolve(config, arm)
    report = (lambda k: progress(arm, k)) if progress is not None else None
    trained = train_rounds(arm_config, model_name, rounds, report)
    for t in trained:
        t.record["model"] = arm
        if point is not None:
            t.record["point"] = point
        if checkpoint_dir is not None:
            save_trained(Path(checkpoint_dir) / f"{arm}-r{t.record['round']}.pt", t,
                         arm_config.to_dict(), source_for(arm_config).info())
    return [t.record for t in trained]


def arm_flops(config: Config, arm: str) -> int:
    """One pair's forward FLOPs through ``arm``'s model (one evaluation pass of it, here)."""
    return forward_flops(get_model_class(resolve(config, arm)[0])())


def plan(config: Config, todo: list[tuple[str, int]], rounds_per_task: int | None = None,
         all_rounds: bool = False) -> list[tuple[str, list[int]]]:
    """Group the (arm, round) pairs still to run into tasks of rounds trained together.

    The reference engine trains one round per task. The stacked engine trains ``rounds_per_task``
    rounds, by default as many as ``train.stack_group`` finds worthwhile to stack on a CPU,
    or every round of the arm (``all_rounds``, on a GPU). A round's numbers do not depend on
    which rounds it is stacked with (its data, batches, initialisation and dropout masks come
    from its own seeds), so the grouping is not part of the config. A task weighs its arm's
    FLOPs per pair (one evaluation pass of the model here) x epochs x rounds.
    """
    tasks, cost = [], {}
    arms = list(dict.fromkeys(m for m, _ in todo))
    for arm in arms:
        rounds = [r for m, r in todo if m == arm]
        model, cfg = resolve(config, arm)
        cost[arm] = arm_flops(config, arm) * cfg.epochs
        if cfg.engine == "reference":
            size = 1
        elif rounds_per_task or all_rounds:
            size = rounds_per_task or len(rounds)
        else:
            size = stack_group(cfg, resolve_device(cfg.device), get_model_class(model)())
        tasks += [(arm, rounds[i:i + size]) for i in range(0, len(rounds), size)]
    # Round-major: a run stopped early holds whole rounds of every arm, which pair up. Within a
    # round the longest task first, so that the run does not end on one long task while the
    # other workers have nothing left to do.
    order = {m: i for i, m in enumerate(arms)}
    return sorted(tasks, key=lambda t: (t[1][0], -cost[t[0]] * len(t[1]), order[t[0]]))


def prepare(config: Config) -> dict:
    """Check ``config`` and resolve what it leaves open (data source, device) in place: every
    check that can refuse the run, before anything is written. Returns the run's manifest."""
    check_config(config, list(MODELS))
    source = source_for(config)
    check_pool_sizes(source, config.pairs)
    device = resolve_device(config.device)
    load_kernels(config, device)
    # Workers must load exactly this source, not re-run the auto fallback on their own machine.
    config.data = source.name
    config.data_dir = source.location if source.name == "mnist" else None
    config.test_dir = source.test_location
    resolved = {}
    for arm in config.models:
        model, cfg = resolve(config, arm)
        resolved[arm] = resolved_options(cfg, get_model_class(model))
    return {"config": config.to_dict(), "resolved": resolved, "source": source.info(),
            "device": str(device), "versions": versions()}


def run_experiment(config: Config, out: str | os.PathLike, executor: str = "serial",
                   workers: int | None = None, progress: bool = True,
                   command: Iterable[str] | None = None, say: Callable = say,
                   save_checkpoints: bool = False, rounds_per_task: int | None = None,
                   ray_address: str | None = None, when_idle: Callable[[], None] | None = None) -> list[dict]:
    """Run every missing (arm, round) of ``config`` into ``out`` and return all results.

    With ``save_checkpoints``, each round's model is saved as ``out/checkpoints/{arm}-r{round}.pt``.
    ``rounds_per_task`` overrides how many rounds the stacked engine trains together (see ``plan``).
    ``when_idle`` is called once, when a worker has no task left: the caller's own work after
    the run (the report) can get ready then, on the core the run no longer uses.
    """
    run = RunDir(out, say=say)
    run.check_usable()
    manifest = prepare(config)
    manifest["command"] = list(command) if command is not None else None
    gpus = _gpus(manifest["device"])
    n = workers or 1
    if executor == "process":
        n = workers or default_workers(config.threads, gpus)
        if not gpus and n * config.threads > (os.cpu_count() or 1):
            say(f"digitcmp: {n} workers x {config.threads} threads on {os.cpu_count()} cores: "
                "threads will compete and every training slows down")
    with run.locked():
        results = run.open(manifest)
        say(f"digitcmp: data: {describe(manifest['source'])}")
        asked = [(m, r) for m in config.models for r in range(config.rounds)]
        done = {(r["model"], r["round"]) for r in results} & set(asked)
        todo = [key for key in asked if key not in done]
        if done:
            say(f"digitcmp: resuming {run.path}: {len(done)} of {len(asked)} rounds already done")
        tasks = plan(config, todo, rounds_per_task, all_rounds=bool(gpus))
        epochs = {arm: resolve(config, arm)[1].epochs for arm in config.models}

        todo_count = {arm: sum(m == arm for m, _ in todo) for arm in config.models}
        bar = Progress(todo_count, epochs, functools.partial(arm_flops, config), len(done), len(asked),
                       bar=progress, say=say)
        ckpt_dir = str(run.path / "checkpoints") if save_checkpoints else None
        remaining = len(tasks)
        try:
            for finished in execute(train_task, tasks, config, executor, workers, ckpt_dir, ray_address,
                                    gpus, bar.epochs_done, say):
                for res in finished:
                    run.append(res)
                    results.append(res)
                    bar.round_done(res)
                remaining -= 1
                if when_idle is not None and remaining < n:
                    when_idle()
                    when_idle = None
        finally:
            bar.close()
    return results


def _gpus(device: str) -> int:
    """How many GPUs the tasks share: all visible CUDA devices when training on CUDA."""
    if not device.startswith("cuda"):
        return 0
    import torch

    return torch.cuda.device_count()

