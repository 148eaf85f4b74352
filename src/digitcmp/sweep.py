"""Sweeps: a grid over training options, each grid point an arm (a variant) trained for N rounds.

A sweep file is TOML with one table, ``[grid]``: ``model`` and any option of ``train.TUNABLE``,
each a list of values (every combination is a grid point) or a single value (the same for all):

    [grid]
    model = "siamese_aux"
    aux_weight = [0.3, 1, 3]
    lr = [5e-4, 1e-3]

Grid points run as ``Config.variants`` (see ``experiment``), so they resume, extend and go to any
executor like models do. The best point is chosen by mean *validation* error, never test error.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
import sys
from pathlib import Path

from .experiment import RunError
from .files import atomic_write
from .models import MODELS
from .stats import mean_std
from .train import option_problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

def point_name(point: dict) -> str:
    """A grid point's arm name, e.g. ``siamese_aux@aux_weight=3,lr=0.001``."""
    opts = ",".join(f"{k}={v:g}" for k, v in point.items() if k != "model")
    return f"{point['model']}@{opts}" if opts else point["model"]


def load_sweep(path: str | os.PathLike) -> dict[str, dict]:
    """Parse and check a sweep file; return its grid points as variants (arm name -> point)."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{path}: no such sweep file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: not valid TOML ({e})") from None
    extra = sorted(set(doc) - {"grid"})
    if extra:
        raise RunError(f"{path}: unknown key {extra[0]!r}; a sweep file holds one table, [grid]")
    grid = doc.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise RunError(f"{path}: [grid] is missing or empty; give model and options to sweep")
    if "model" not in grid:
        raise RunError(f"{path}: [grid] needs model (a name or a list of names)")
    axes = {}
    for key, values in grid.items():
        values = values if isinstance(values, list) else [values]
        if not values:
            raise RunError(f"{path}: [grid] {key} is an empty list")
        for v in values:
            if key == "model" and v not in MODELS:
                raise RunError(f"{path}: [grid] model {v!r} is not registered; known: {', '.join(MODELS)}")
            problem = option_problem(key, v) if key != "model" else None
            if problem:
                raise RunError(f"{path}: [grid] {problem}")
        axes[key] = [float(v) if key in ("lr", "weight_decay", "aux_weight") else v for v in values]
    points = [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]
    variants = {point_name(p): p for p in points}
    if len(variants) < len(points):
        raise RunError(f"{path}: [grid] lists a value twice")
    return variants


def sweep_rows(results: list[dict], variants: dict[str, dict]) -> list[dict]:
    """One row per grid point: its options, rounds, mean +- std of validation and test error,
    and ``best`` for the point with the lowest mean validation error."""
    rows = []
    for name, point in variants.items():
        rs = [r for r in results if r["model"] == name]
        if not rs:
            continue
        row = {"point": name, **point, "rounds": len(rs)}
        for split in ("val", "test"):
            values = [r[f"{split}_error"] for r in rs if f"{split}_error" in r]
            m, s = mean_std(values) if values else (math.nan, math.nan)
            row.update({f"{split}_error_mean": m, f"{split}_error_std": s})
        rows.append(row)
    scored = [r for r in rows if not math.isnan(r["val_error_mean"])]
    best = min(scored, key=lambda r: r["val_error_mean"]) if scored else None
    for r in rows:
        r["best"] = r is best
    return rows


def write_sweep(run_dir: str | os.PathLike, rows: list[dict]) -> str:
    """Write sweep.csv; return a markdown table of it."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()})
    atomic_write(Path(run_dir) / "sweep.csv", buf.getvalue())

    def pct(m, s):
        if math.isnan(m):
            return "–"
        return f"{100 * m:.2f}" + ("" if math.isnan(s) else f" ± {100 * s:.2f}")

    lines = ["| grid point | rounds | validation error (%) | test error (%) | |", "|---|---:|---:|---:|---|"]
    lines += [f"| `{r['point']}` | {r['rounds']} | {pct(r['val_error_mean'], r['val_error_std'])} | "
              f"{pct(r['test_error_mean'], r['test_error_std'])} | "
              f"{'best (validation)' if r['best'] else ''} |" for r in rows]
    return "\n".join(lines) + "\n"
