"""report.md and what it shows: a run's tables (the study beside us), figures, per-epoch
metrics (epochs.csv), the layers of its models, its configuration and provenance."""

from __future__ import annotations

import os
from pathlib import Path

from .data.sources import describe
from .files import atomic_write
from .messages import say
from .models import MODELS, label
from .rundir import load_run
from .tables import csv_text, write_summary


def epoch_rows(results: list[dict]) -> list[dict]:
    """Every per-epoch metric of every round, one row each: the long format of epochs.csv
    (epochs counted from 1: the metric after that many passes over the training pairs)."""
    rows = []
    for r in sorted(results, key=lambda r: (r["model"], r["round"])):
        metrics = {"loss": r.get("train_loss") or [], **(r.get("curves") or {})}
        for metric, values in metrics.items():
            rows += [{"model": r["model"], "round": r["round"], "epoch": e, "metric": metric, "value": v}
                     for e, v in enumerate(values or [], 1)]
    return rows


def train_mode_table(results: list[dict], models: list[str]) -> list[str]:
    """report.md lines: each model's errors measured in training mode (dropout on, batch
    statistics) beside the eval-mode ones and the study's, if the records hold them."""
    from .stats import by_model, mean_std
    from .study import published
    from .tables import pct

    groups = {m: rs for m, rs in by_model(results, models).items()
              if all("train_mode_train_error" in r for r in rs)}
    if not groups:
        return []
    study = published()["models"]
    lines = ["## Errors measured in training mode", "",
             "Every round also counts its errors as if still training (dropout on, BatchNorm with the "
             "statistics of batches of --batch-size), as an error count that forgets `model.eval()` "
             "does: one explanation the study's train errors admit.", "",
             "| model | train error | in training mode | the study's | test error | in training mode "
             "| the study's |", "|---|---:|---:|---:|---:|---:|---:|"]
    for m, rs in groups.items():
        cells = [pct(mean_std([r[k] for r in rs])[0]) for k in
                 ("train_error", "train_mode_train_error", "test_error", "train_mode_test_error")]
        s = study.get(m, {})
        lines.append(f"| {label(m)} | {cells[0]} | {cells[1]} | {pct(s.get('train_error_mean'))} | "
                     f"{cells[2]} | {cells[3]} | {pct(s.get('test_error_mean'))} |")
    return lines + [""]


def layer_tables(models: list[str], arms: dict[str, str]) -> list[str]:
    """report.md lines: the layer table of each architecture the run trains."""
    from .models.layers import layer_table

    lines = []
    for arch in dict.fromkeys(arms.get(m, m) for m in models):
        lines += [f"### `{arch}`", ""]
        if arch in MODELS:
            lines += ["```", layer_table(MODELS[arch]()), "```", ""]
        else:
            lines += [f"Not drawn: `{arch}` is not registered here (load its plugin with --plugin).", ""]
    return lines


def import_drawing() -> None:
    """Import what drawing the figures and the statistics need (matplotlib, scipy): seconds,
    which a run spends while its last rounds train and a core is idle (``run_experiment``'s
    ``when_idle``), not after them."""
    from scipy import stats  # noqa: F401

    from . import plots  # noqa: F401


def write_report(run_dir: str | os.PathLike, say=say) -> tuple[Path, str]:
    """Summary tables, epochs.csv, every figure and report.md for a (possibly partial) run
    directory. Returns the path of report.md and the Table III markdown."""
    from .ablation import is_ablation, write_effects
    from .plots import ABLATION_CAPTIONS, CAPTIONS, draw_ablation, draw_all

    run_dir = Path(run_dir)
    manifest, cfg, results = load_run(run_dir, say=say)
    config = manifest["config"]
    models = cfg.models or sorted({r["model"] for r in results})
    table = write_summary(run_dir, results, models)
    epochs = epoch_rows(results)
    atomic_write(run_dir / "epochs.csv", csv_text(epochs, ["model", "round", "epoch", "metric", "value"]))
    source = manifest.get("source") if isinstance(manifest.get("source"), dict) else {}
    done = {m: sum(r["model"] == m for r in results) for m in models}
    about = f"data: {describe(source)}; rounds per model: {max(done.values())}, seed {cfg.seed}"
    names = draw_all(results, models, run_dir / "figures", about)

    partial = any(n < cfg.rounds for n in done.values())
    # The C kernels change float summation order (train.make_record): say how many rounds ran them.
    used = [(sum(r.get(field) is True for r in results), what) for field, what in
            (("fused_kernel", "fused BatchNorm + max-pool + ReLU kernel"),
             ("direct_conv", "direct convolution kernels"))]
    kernel = "".join(f" ({what} in {n} of {len(results)} rounds)" for n, what in used if n)
    command = manifest.get("command")
    lines = [
        f"# digitcmp report: {run_dir.name}", "",
        "Rounds finished per model: " + ", ".join(f"{label(m)} {n}/{cfg.rounds}" for m, n in done.items())
        + (" (partial run)" if partial else "") + ".", "",
        f"Data: {describe(source)}.", "",
        f"Engine: {cfg.engine}{kernel}, device: {manifest.get('device', cfg.device)}, "
        f"precision: {cfg.precision}, "
        f"seed {cfg.seed}.", "",
        "Command: `" + (" ".join(["digitcmp", *command[1:]]) if isinstance(command, list) and command
                        else "unknown") + "`", "",
        "## Table III", "", table,
        "Errors are the share of misclassified pairs; std. deviation is the sample standard deviation "
        "over rounds; the interval is a 95 % Student's t interval for our mean over rounds; "
        "differences are in percentage points.", "",
        "## Figures", "",
        "Each figure is also in `figures/` as SVG (editable text) and PDF.", "",
    ]
    for name in names:
        lines += [f"![{name}](figures/{name}.png)", "", f"*{CAPTIONS[name]}*", ""]
    if not any(r.get("curves", {}).get("test_error") for r in results):
        lines += ["These records have no per-epoch test error (they were written by an older digitcmp, "
                  "or with --curve-pairs 0): the learning curves show what the records hold.", ""]
    lines += train_mode_table(results, models)
    if is_ablation(results):
        effect_rows, sweep_rows, effects_md = write_effects(run_dir, results)
        lines += ["## Ablation: weight sharing x auxiliary loss", "", effects_md]
        for name in draw_ablation(effect_rows, sweep_rows, run_dir / "figures", about):
            lines += [f"![{name}](figures/{name}.png)", "", f"*{ABLATION_CAPTIONS[name]}*", ""]
    lines += ["## Per-epoch metrics", "",
              f"`epochs.csv`: {len(epochs):,} rows in long format (model, round, epoch, metric, value): "
              "`loss` (what was minimised), `target_loss`, `aux_loss`, `running_train_error` (on the "
              "training batches as they were trained), `test_error` and `val_error` (after the "
              "epoch, on the first --curve-pairs pairs).", ""]
    arms = {name: spec.get("model") for name, spec in cfg.variants.items()}
    lines += ["## Models", "", "Each layer's output shape for one pair (batch 1) and its parameters "
              "(the study's Tables I and II).", "", *layer_tables(models, arms)]
    resolved = manifest.get("resolved") if isinstance(manifest.get("resolved"), dict) else {}
    if resolved:
        keys = list(dict.fromkeys(k for v in resolved.values() if isinstance(v, dict) for k in v))
        lines += ["## What each model trained with", "", "| arm | " + " | ".join(keys) + " |",
                  "|---|" + "---|" * len(keys)]
        lines += [f"| `{arm}` | " + " | ".join(f"`{opts.get(k)}`" for k in keys) + " |"
                  for arm, opts in resolved.items() if isinstance(opts, dict)]
        lines.append("")
    lines += ["## Configuration", "", "| option | value |", "|---|---|"]
    lines += [f"| {k} | `{v}` |" for k, v in config.items()]
    versions = manifest.get("versions") if isinstance(manifest.get("versions"), dict) else {}
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    path = run_dir / "report.md"
    atomic_write(path, "\n".join(lines))
    return path, table
