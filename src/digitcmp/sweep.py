"""Sweeps: a grid over training options, each grid point an arm (a variant) trained for N rounds.

A sweep file is TOML with one table, ``[grid]``: ``model`` and any option of ``config.TUNABLE``,
each a list of values (every combination is a grid point) or a single value (the same for all):

    [grid]
    model = "siamese_aux"
    aux_weight = [0.3, 1, 3]
    lr = [5e-4, 1e-3]

Grid points run as ``Config.variants`` (see ``experiment``), so they resume, extend and go to any
executor like models do. The best point is chosen by mean *validation* error, never test error.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
from pathlib import Path

from .config import MAX_VARIANTS, arm_name, variant_problem
from .errors import ConfigError
from .files import atomic_write
from .models import MODELS
from .stats import split_stats
from .tables import csv_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def load_sweep(path: str | os.PathLike) -> dict[str, dict]:
    """Parse and check a sweep file; return its grid points as variants (arm name -> point)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a sweep file")
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such sweep file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    extra = sorted(set(doc) - {"grid"})
    if extra:
        raise ConfigError(f"{path}: unknown key {extra[0]!r}; a sweep file holds one table, [grid]")
    grid = doc.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"{path}: [grid] is missing or empty; give model and options to sweep")
    if "model" not in grid:
        raise ConfigError(f"{path}: [grid] needs model (a name or a list of names)")
    axes = {key: values if isinstance(values, list) else [values] for key, values in grid.items()}
    empty = next((k for k, v in axes.items() if not v), None)
    if empty:
        raise ConfigError(f"{path}: [grid] {empty} is an empty list")
    size = math.prod(len(v) for v in axes.values())
    if size > MAX_VARIANTS:
        raise ConfigError(f"{path}: [grid] has {size:,} points; at most {MAX_VARIANTS:,} "
                          "(split the grid into several sweeps)")
    points = [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]
    for p in points:
        problem = variant_problem(p, list(MODELS))
        if problem:
            raise ConfigError(f"{path}: [grid] {problem}")
    points = [{k: float(v) if k in ("lr", "weight_decay", "aux_weight") else v for k, v in p.items()}
              for p in points]
    variants = {arm_name(p["model"], p): p for p in points}
    if len(variants) < len(points):
        raise ConfigError(f"{path}: [grid] lists a value twice")
    return variants


def sweep_rows(results: list[dict], variants: dict[str, dict]) -> list[dict]:
    """One row per grid point: its options, rounds, mean +- std of validation and test error,
    and ``best`` for the point with the lowest mean validation error."""
    rows = []
    for name, point in variants.items():
        rs = [r for r in results if r["model"] == name]
        if not rs:
            continue
        rows.append({"point": name, **point, "rounds": len(rs), **split_stats(rs, ("val", "test"))})
    scored = [r for r in rows if not math.isnan(r["val_error_mean"])]
    best = min(scored, key=lambda r: r["val_error_mean"]) if scored else None
    for r in rows:
        r["best"] = r is best
    return rows


def write_sweep(run_dir: str | os.PathLike, rows: list[dict]) -> str:
    """Write sweep.csv; return a markdown table of it."""
    atomic_write(Path(run_dir) / "sweep.csv", csv_text(rows))

    def pct(m, s):
        if math.isnan(m):
            return "–"
        return f"{100 * m:.2f}" + ("" if math.isnan(s) else f" ± {100 * s:.2f}")

    lines = ["| grid point | rounds | validation error (%) | test error (%) | |", "|---|---:|---:|---:|---|"]
    lines += [f"| `{r['point']}` | {r['rounds']} | {pct(r['val_error_mean'], r['val_error_std'])} | "
              f"{pct(r['test_error_mean'], r['test_error_std'])} | "
              f"{'best (validation)' if r['best'] else ''} |" for r in rows]
    return "\n".join(lines) + "\n"
