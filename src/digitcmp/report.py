"""Tables for people and machines: summary.csv, summary.md (the study's Table III layout)."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

from .experiment import atomic_write
from .models import MODELS
from .stats import summarise

CSV_FIELDS = ["model", "params", "rounds", "train_error_mean", "train_error_std",
              "test_error_mean", "test_error_std"]


def label(model: str) -> str:
    """How tables and figures name a model: the study's names for its three."""
    cls = MODELS.get(model)
    return cls.label or model if cls else model


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
