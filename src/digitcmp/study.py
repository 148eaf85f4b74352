"""The study's published numbers (``study.toml``), and ours beside them."""

from __future__ import annotations

import functools
import sys
from importlib import resources

from .stats import mean_ci

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@functools.cache
def published() -> dict:
    """study.toml: the study's Table III per model (our model names) and its claims."""
    return tomllib.loads((resources.files("digitcmp") / "study.toml").read_text())


def compare(rows: list[dict], records: list[dict]) -> list[dict]:
    """For each summary row (``stats.summarise``) of a model the study has, one row per split:
    the study's mean and std, ours with a 95 % interval for our mean, and ours - study."""
    models = published()["models"]
    out = []
    for row in rows:
        study = models.get(row["model"])
        if study is None:
            continue
        for split in ("test", "train"):
            values = [r[f"{split}_error"] for r in records if r["model"] == row["model"]]
            low, high = mean_ci(values)
            ours = row[f"{split}_error_mean"]
            out.append({"model": row["model"], "study_model": study["name"], "split": split,
                        "study_mean": study[f"{split}_error_mean"], "study_std": study[f"{split}_error_std"],
                        "ours_mean": ours, "ours_std": row[f"{split}_error_std"], "ours_ci_low": low,
                        "ours_ci_high": high, "rounds": row["rounds"],
                        "difference": ours - study[f"{split}_error_mean"]})
    return out


def claims() -> dict[str, dict]:
    """The study's claims by the ablation effect each is about."""
    return {c["effect"]: c for c in published()["claims"].values()}
