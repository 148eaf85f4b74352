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
from .study import compare, published

CSV_FIELDS = ["model", "params", "rounds", "train_error_mean", "train_error_std", "train_error_ci_low",
              "train_error_ci_high", "test_error_mean", "test_error_std", "test_error_ci_low",
              "test_error_ci_high", "study_params", "study_train_error_mean", "study_train_error_std",
              "study_test_error_mean", "study_test_error_std", "train_error_diff", "test_error_diff"]


def missing(x) -> bool:
    """Whether a cell has no value (None or NaN)."""
    return x is None or (isinstance(x, float) and math.isnan(x))


def pct(x, digits: int = 2) -> str:
    """A fraction as a percentage for people, "–" when undefined."""
    return "–" if missing(x) else f"{100 * x:.{digits}f} %"


def pct_pm(mean, std, digits: int = 2) -> str:
    """Mean ± std of fractions as percentages: "19.30 ± 1.98 %"."""
    if missing(std):
        return pct(mean, digits)
    return "–" if missing(mean) else f"{100 * mean:.{digits}f} ± {100 * std:.{digits}f} %"


def pp(x, digits: int = 2) -> str:
    """A difference of fractions in signed percentage points, "–" when undefined."""
    return "–" if missing(x) else f"{100 * x:+.{digits}f} pp".replace("-", "−")


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
        "| Nb of parameters | " + " | ".join(f"{r['params']:,}" if isinstance(r["params"], int) else "–"
                                             for r in rows) + " |",
        "| Rounds | " + " | ".join(str(r["rounds"]) for r in rows) + " |",
    ]
    for split in ("train", "test"):
        name = split.capitalize()
        lines.append(f"| Average {split} error rate | "
                     + " | ".join(pct(r[f"{split}_error_mean"]) for r in rows) + " |")
        lines.append(f"| {name} error std. deviation | "
                     + " | ".join(pct(r[f"{split}_error_std"]) for r in rows) + " |")
    return "\n".join(lines) + "\n"


def study_table(comparison: list[dict]) -> str:
    """Markdown: the study's Table III beside ours, model by model, test and train error."""
    if not comparison:
        return ""
    lines = ["| model | error | the study (its Table III) | ours: mean ± std [95 % CI of the mean] "
             "| ours − study |", "|---|---|---:|---:|---:|"]
    for c in comparison:
        low, high = c["ours_ci_low"], c["ours_ci_high"]
        ci = "–" if missing(low) else f"{100 * low:.2f}, {100 * high:.2f}"
        lines.append(f"| {label(c['model'])} (study's {c['study_model']}) | {c['split']} | "
                     f"{pct_pm(c['study_mean'], c['study_std'])} | "
                     f"{pct_pm(c['ours_mean'], c['ours_std'])} [{ci}] | {pp(c['difference'])} |")
    return "\n".join(lines) + "\n"


def summary_rows(results: list[dict], models: list[str] | None = None) -> tuple[list[dict], list[dict]]:
    """Table III's rows (one per model, the study's numbers beside ours where it has the
    model) and the study comparison's rows (``study.compare``)."""
    rows = summarise(results, models)
    comparison = compare(rows, results)
    study = published()["models"]
    for row in rows:
        for c in (c for c in comparison if c["model"] == row["model"]):
            row[f"{c['split']}_error_ci_low"] = c["ours_ci_low"]
            row[f"{c['split']}_error_ci_high"] = c["ours_ci_high"]
            row[f"{c['split']}_error_diff"] = c["difference"]
        if row["model"] in study:
            s = study[row["model"]]
            row.update(study_params=s["params"], **{f"study_{k}": s[k] for k in
                                                    ("train_error_mean", "train_error_std",
                                                     "test_error_mean", "test_error_std")})
    return rows, comparison


def write_summary(run_dir: str | os.PathLike, results: list[dict],
                  models: list[str] | None = None) -> str:
    """Write summary.csv and summary.md into the run directory; return the markdown: Table III,
    then the study beside us."""
    rows, comparison = summary_rows(results, models)
    table = table_iii(rows)
    beside = study_table(comparison)
    if beside:
        table += "\nThe study beside us (test and train error):\n\n" + beside
    atomic_write(Path(run_dir) / "summary.csv", csv_text(rows, CSV_FIELDS))
    atomic_write(Path(run_dir) / "summary.md",
                 "# Table III: performance of the models\n\n" + table
                 + "\nErrors are the fraction of misclassified pairs; std. deviation is the sample"
                 " standard deviation over rounds (ddof=1); the 95 % interval is Student's t for "
                 "the mean over rounds; differences are in percentage points.\n")
    return table
