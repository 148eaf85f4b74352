"""Tables for people and machines: summary.csv, summary.md (the study's Table III layout)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

from .experiment import RunError, read_rounds
from .files import atomic_write
from .models import label
from .stats import summarise

CSV_FIELDS = ["model", "params", "rounds", "train_error_mean", "train_error_std",
              "test_error_mean", "test_error_std"]


def pct(x: float) -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:.2f} %"


def summary_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    return buf.getvalue()


def table_iii(rows: list[dict]) -> str:
    """Markdown table in the layout of the study's Table III, errors in percent."""
    lines = [
        "| | " + " | ".join(label(r["model"]) for r in rows) + " |",
        "|---|" + "---:|" * len(rows),
        "| Model | " + " | ".join(f"`{r['model']}`" for r in rows) + " |",
        "| Nb of parameters | " + " | ".join(f"{r['params']:,}" for r in rows) + " |",
        "| Rounds | " + " | ".join(str(r["rounds"]) for r in rows) + " |",
    ]
    for split in ("train", "test"):
        name = split.capitalize()
        lines.append(f"| Average {split} error rate | "
                     + " | ".join(pct(r[f"{split}_error_mean"]) for r in rows) + " |")
        lines.append(f"| {name} error std. deviation | "
                     + " | ".join(pct(r[f"{split}_error_std"]) for r in rows) + " |")
    return "\n".join(lines) + "\n"


def write_summary(run_dir: str | os.PathLike, results: list[dict],
                  models: list[str] | None = None) -> str:
    """Write summary.csv and summary.md into the run directory; return the markdown table."""
    rows = summarise(results, models)
    table = table_iii(rows)
    atomic_write(Path(run_dir) / "summary.csv", summary_csv(rows))
    atomic_write(Path(run_dir) / "summary.md",
                 "# Table III: performance of the models\n\n" + table
                 + "\nErrors are the fraction of misclassified pairs; std. deviation is the sample"
                 " standard deviation over rounds (ddof=1), in percentage points.\n")
    return table


def load_run(run_dir: str | os.PathLike) -> tuple[dict, list[dict]]:
    """config.json and the finished rounds of a run directory, with clear errors."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    config_path = run_dir / "config.json"
    try:
        record = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise RunError(f"{config_path}: missing; is {run_dir} a digitcmp run directory?") from None
    except ValueError as e:
        raise RunError(f"{config_path}: not valid JSON ({e})") from None
    results = read_rounds(run_dir / "rounds.jsonl")
    if not results:
        raise RunError(f"{run_dir / 'rounds.jsonl'}: no finished rounds yet")
    return record, results


def write_report(run_dir: str | os.PathLike) -> tuple[Path, str]:
    """Summary tables, every figure and report.md for a (possibly partial) run directory.

    Returns the path of report.md and the Table III markdown."""
    from .ablation import is_ablation, write_effects
    from .plots import ABLATION_CAPTIONS, CAPTIONS, draw_ablation, draw_all

    run_dir = Path(run_dir)
    record, results = load_run(run_dir)
    config = record.get("config", {})
    models = config.get("models") or sorted({r["model"] for r in results})
    table = write_summary(run_dir, results, models)
    names = draw_all(results, models, run_dir / "figures")

    planned = config.get("rounds")
    done = {m: sum(r["model"] == m for r in results) for m in models}
    progress = ", ".join(f"{label(m)} {n}" + (f"/{planned}" if planned else "")
                         for m, n in done.items())
    partial = planned and any(n < planned for n in done.values())
    source = record.get("source", {})
    command = record.get("command")
    lines = [
        f"# digitcmp report: {run_dir.name}", "",
        f"Rounds finished per model: {progress}" + (" (partial run)" if partial else "") + ".", "",
        f"Data source: **{source.get('name', '?')}** ({source.get('location', '?')}).", "",
        "Command: `" + (" ".join(["digitcmp", *command[1:]]) if command else "unknown") + "`", "",
        "## Table III", "", table,
        "Errors are the share of misclassified test pairs; std. deviation is the sample standard "
        "deviation over rounds, in percentage points.", "",
        "## Figures", "",
    ]
    for name in names:
        lines += [f"![{name}](figures/{name}.png)", "", f"*{CAPTIONS[name]}*", ""]
    if is_ablation(results):
        effect_rows, sweep_rows, effects_md = write_effects(run_dir, results)
        lines += ["## Ablation: weight sharing x auxiliary loss", "", effects_md]
        for name in draw_ablation(effect_rows, sweep_rows, run_dir / "figures"):
            lines += [f"![{name}](figures/{name}.png)", "", f"*{ABLATION_CAPTIONS[name]}*", ""]
    lines += ["## Configuration", "", "| option | value |", "|---|---|"]
    lines += [f"| {k} | `{v}` |" for k, v in config.items()]
    versions = record.get("versions", {})
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    path = run_dir / "report.md"
    atomic_write(path, "\n".join(lines))
    return path, table
