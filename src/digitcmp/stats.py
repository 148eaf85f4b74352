"""Summary statistics of per-round results, and paired tests between arms."""

from __future__ import annotations

import numpy as np


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN for fewer than two values)."""
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else float("nan")


def summarise(results: list[dict], models: list[str] | None = None) -> list[dict]:
    """One row per model (in ``models`` order, then any others): Table III's numbers as fractions."""
    by_model: dict[str, list[dict]] = {}
    for r in sorted(results, key=lambda r: (r["model"], r["round"])):
        by_model.setdefault(r["model"], []).append(r)
    order = [m for m in (models or []) if m in by_model] + [m for m in by_model
                                                            if m not in (models or [])]
    rows = []
    for m in order:
        rs = by_model[m]
        tr_mean, tr_std = mean_std([r["train_error"] for r in rs])
        te_mean, te_std = mean_std([r["test_error"] for r in rs])
        rows.append({"model": m, "params": rs[0].get("params"), "rounds": len(rs),
                     "train_error_mean": tr_mean, "train_error_std": tr_std,
                     "test_error_mean": te_mean, "test_error_std": te_std})
    return rows


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
        t = stats.ttest_1samp(d, 0.0)
        ci = t.confidence_interval(confidence)
        out.update(ci_low=float(ci.low), ci_high=float(ci.high), t_p=float(t.pvalue))
    out["wilcoxon_p"] = float(stats.wilcoxon(d).pvalue)
    return out
