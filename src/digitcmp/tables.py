"""Tables for people and machines: CSV files and markdown tables, Table III among them."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

from .files import atomic_write
from .models import label
from .stats import summarise

CSV_FIELDS = ["model", "params", "rounds", "train_error_mean", "train_error_std",
              "test_error_mean", "test_error_std"]


def missing(x) -> bool:
    """Whether a cell has no value (None or NaN)."""
    return x is None or (isinstance(x, float) and math.isnan(x))


def pct(x, digits: int = 2) -> str:
    """A fraction as a percentage for people, "–" when undefined."""
    return "–" if missing(x) else f"{100 * x:.{digits}f} %"


def csv_text(rows: list[dict], fields: list[str] | None = None) -> str:
    """Rows as CSV text; undefined values (None, NaN) as empty cells, not "nan"."""
    fields = fields or list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fields, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for row in rows:
        w.writerow({k: "" if missing(v) else v for k, v in row.items()})
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
    atomic_write(Path(run_dir) / "summary.csv", csv_text(rows, CSV_FIELDS))
    atomic_write(Path(run_dir) / "summary.md",
                 "# Table III: performance of the models\n\n" + table
                 + "\nErrors are the fraction of misclassified pairs; std. deviation is the sample"
                 " standard deviation over rounds (ddof=1), in percentage points.\n")
    return table
