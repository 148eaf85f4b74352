"""Summary statistics of per-round results, and paired tests between arms."""

from __future__ import annotations

import numpy as np


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN for fewer than two values)."""
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else float("nan")


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float]:
    """A ``confidence`` interval for the mean of ``values`` (Student's t; NaN for fewer than two
    values, and a zero-width interval when they are all equal)."""
    from scipy import stats

    a = np.asarray(values, dtype=float)
    if len(a) < 2:
        return float("nan"), float("nan")
    if not a.std() > 0:
        return float(a.mean()), float(a.mean())
    low, high = stats.t.interval(confidence, len(a) - 1, loc=a.mean(), scale=stats.sem(a))
    return float(low), float(high)


def split_stats(records: list[dict], splits=("train", "test")) -> dict:
    """Mean and std over ``records`` of each split's error: ``{split}_error_mean`` and
    ``{split}_error_std`` (NaN where no record has the split)."""
    out = {}
    for split in splits:
        values = [r[f"{split}_error"] for r in records if r.get(f"{split}_error") is not None]
        m, s = mean_std(values) if values else (float("nan"), float("nan"))
        out.update({f"{split}_error_mean": m, f"{split}_error_std": s})
    return out


def by_model(results: list[dict], models: list[str] | None = None) -> dict[str, list[dict]]:
    """Each model's records sorted by round, models in ``models`` order, then any others."""
    groups: dict[str, list[dict]] = {}
    for r in sorted(results, key=lambda r: (r["model"], r["round"])):
        groups.setdefault(r["model"], []).append(r)
    order = [m for m in (models or []) if m in groups] + [m for m in groups if m not in (models or [])]
    return {m: groups[m] for m in order}


def summarise(results: list[dict], models: list[str] | None = None) -> list[dict]:
    """One row per model (in ``models`` order, then any others): Table III's numbers as fractions."""
    return [{"model": m, "params": rs[0].get("params"), "rounds": len(rs), **split_stats(rs)}
            for m, rs in by_model(results, models).items()]


def paired(diffs, confidence: float = 0.95) -> dict:
    """Paired comparison from per-round differences d_r = error(arm B) - error(arm A).

    Returns n, the mean difference, its ``confidence`` interval from the paired (one-sample) t
    test, the t test's p-value, and the two-sided Wilcoxon signed-rank p-value, which does not
    assume normal differences. Intervals and p-values are NaN when they are undefined (fewer
    than two rounds, or all differences zero).
    """
    from scipy import stats

    d = np.asarray(diffs, dtype=float)
    out = {"n": len(d), "mean": float(d.mean()) if len(d) else float("nan"),
           "ci_low": float("nan"), "ci_high": float("nan"), "t_p": float("nan"),
           "wilcoxon_p": float("nan")}
    if len(d) < 2 or not d.any():
        return out
    if d.std() > 0:  # a constant difference has no spread to build an interval from
        low, high = mean_ci(d, confidence)
        out.update(ci_low=low, ci_high=high, t_p=float(stats.ttest_1samp(d, 0.0).pvalue))
    out["wilcoxon_p"] = float(stats.wilcoxon(d).pvalue)
    return out
