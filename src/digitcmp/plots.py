"""The study's figures (Figs. 2-6), drawn from a run's per-round results.

Every figure is written as PNG and SVG with no timestamps or random ids in the files, so the
same results give the same bytes. Each model keeps one colour across all figures.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, and no GUI backend imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .files import atomic_write  # noqa: E402
from .models import MODELS, label  # noqa: E402
from .stats import by_model  # noqa: E402

# SVG element ids are random unless salted; PNG/SVG carry a date and version unless removed.
STABLE = {"svg.hashsalt": "digitcmp", "svg.fonttype": "path", "figure.dpi": 100,
          "savefig.dpi": 120, "axes.grid": True, "grid.alpha": 0.3, "font.size": 10}
METADATA = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None}}

# Figure name -> caption; report.md shows them in this order.
CAPTIONS = {
    "test_error_distribution": "Test error of every round, per model (box: quartiles and median; "
                               "dots: rounds). The spread shows how much one round can be trusted.",
    "error_mean_std": "Mean train and test error per model; error bars are +-1 standard deviation "
                      "over rounds (the study's Figs. 2 and 3).",
    "errors_per_round": "Train (left) and test (right) error of each model in each round "
                        "(the study's Figs. 5 and 6).",
    "loss_convergence": "Mean training loss per epoch over rounds, shaded +-1 standard deviation "
                        "(the study's Fig. 4). Models with an auxiliary loss train on a larger sum.",
}


def colours(models: list[str]) -> dict[str, str]:
    """One colour per model, fixed by registry order so it is the same in every run."""
    order = list(MODELS) + [m for m in models if m not in MODELS]
    palette = plt.get_cmap("tab10").colors
    return {m: matplotlib.colors.to_hex(palette[order.index(m) % 10]) for m in models}


def fig_errors_per_round(groups, col):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    for ax, split in zip(axes, ("train", "test"), strict=True):
        for m, rs in groups.items():
            ax.plot([r["round"] + 1 for r in rs], [100 * r[f"{split}_error"] for r in rs],
                    marker="o", ms=4, color=col[m], label=label(m))
        ax.set(title=f"{split.capitalize()} error per round", xlabel="round",
               ylabel=f"{split} error (%)")
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[1].legend(loc="best", fontsize=8)
    return fig


def fig_error_mean_std(groups, col):
    # Bars with error bars rather than box plots: this figure answers the study's question
    # "what is the mean error and how much does it vary", with train and test side by side;
    # the full spread of each round is in test_error_distribution.
    fig, ax = plt.subplots(figsize=(6.5, 4))
    x = np.arange(len(groups))
    width = 0.38
    for k, split in enumerate(("train", "test")):
        errs = [np.array([r[f"{split}_error"] for r in rs]) * 100 for rs in groups.values()]
        means = [e.mean() for e in errs]
        stds = [e.std(ddof=1) if len(e) > 1 else 0.0 for e in errs]
        ax.bar(x + (k - 0.5) * width, means, width, yerr=stds, capsize=4,
               color=[col[m] for m in groups], alpha=0.45 if split == "train" else 0.95,
               edgecolor="black", linewidth=0.6, label=split)
    ax.set_xticks(x, [label(m) for m in groups], fontsize=9)
    ax.set(ylabel="error (%)", title="Mean error +- std over rounds (light: train, dark: test)")
    return fig


def fig_loss_convergence(groups, col):
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for m, rs in groups.items():
        losses = np.array([r["train_loss"] for r in rs if r.get("train_loss")], dtype=float)
        if losses.ndim != 2 or not len(losses):
            continue
        epochs = np.arange(1, losses.shape[1] + 1)
        mean, std = losses.mean(0), losses.std(0, ddof=1) if len(losses) > 1 else 0 * losses[0]
        ax.plot(epochs, mean, color=col[m], label=label(m))
        ax.fill_between(epochs, mean - std, mean + std, color=col[m], alpha=0.2, linewidth=0)
    ax.set(xlabel="epoch", ylabel="training loss (mean over the epoch)",
           title="Convergence of the training loss")
    # Losses fall from the upper left, so the upper right is free; loc="best" would search the
    # shaded bands' many vertices, which matplotlib warns is slow.
    ax.legend(loc="upper right", fontsize=8)
    return fig


def fig_test_error_distribution(groups, col):
    fig, ax = plt.subplots(figsize=(6.5, 4))
    data = [[100 * r["test_error"] for r in rs] for rs in groups.values()]
    box = ax.boxplot(data, widths=0.5, patch_artist=True, showfliers=False,
                     medianprops={"color": "black"})
    for patch, m in zip(box["boxes"], groups, strict=True):
        patch.set(facecolor=col[m], alpha=0.35)
    rng = np.random.default_rng(0)  # fixed jitter: same input, same picture
    for i, (m, d) in enumerate(zip(groups, data, strict=True), 1):
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(d)), d, s=14, color=col[m], zorder=3,
                   edgecolor="black", linewidth=0.4)
    ax.set_xticks(range(1, len(groups) + 1), [label(m) for m in groups], fontsize=9)
    ax.set(ylabel="test error (%)", title="Test error over rounds")
    return fig


FIGURES = {
    "test_error_distribution": fig_test_error_distribution,
    "error_mean_std": fig_error_mean_std,
    "errors_per_round": fig_errors_per_round,
    "loss_convergence": fig_loss_convergence,
}


# The ablation's figures (drawn when a run holds the four ablation arms).
ABLATION_CAPTIONS = {
    "paired_differences": "Ablation: per-round difference in test error for each effect (dots, one "
                          "per round, same pairs for every arm); bar: mean with its 95 % paired-t "
                          "interval. Below zero: the factor lowers the error.",
    "aux_weight_sweep": "Ablation: test and train error of the shared arm against the weight of the "
                        "auxiliary digit loss (mean +- std over rounds).",
}


def fig_paired_differences(effect_rows: list[dict]):
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(effect_rows) + 1.6))
    rng = np.random.default_rng(0)
    for i, e in enumerate(effect_rows):
        y = len(effect_rows) - 1 - i
        d = 100 * np.asarray(e["diffs"], dtype=float)
        ax.scatter(d, y + rng.uniform(-0.15, 0.15, len(d)), s=12, color="tab:blue", alpha=0.6, zorder=2)
        if not np.isnan(e["ci_low"]):
            ax.errorbar(100 * e["mean"], y, xerr=[[100 * (e["mean"] - e["ci_low"])],
                                                  [100 * (e["ci_high"] - e["mean"])]],
                        fmt="D", color="black", capsize=4, zorder=3)
    ax.axvline(0, color="grey", linewidth=1)
    ax.set_yticks(range(len(effect_rows)), [e["effect"] for e in reversed(effect_rows)], fontsize=8)
    ax.set(xlabel="difference in test error (percentage points)",
           title="Paired differences per round, mean and 95 % CI")
    return fig


def fig_aux_weight_sweep(sweep_rows: list[dict]):
    fig, ax = plt.subplots(figsize=(6.5, 4))
    w = [s["aux_weight"] for s in sweep_rows]
    for split, style in (("test", "o-"), ("train", "s--")):
        ax.errorbar(w, [100 * s[f"{split}_error_mean"] for s in sweep_rows],
                    yerr=[100 * np.nan_to_num(s[f"{split}_error_std"]) for s in sweep_rows],
                    fmt=style, capsize=3, label=split)
    ax.set_xscale("symlog", linthresh=0.1)  # 0 is one of the weights
    ax.set(xlabel="auxiliary-loss weight", ylabel="error (%)", title="Aux-loss weight, shared arm")
    ax.legend(loc="upper right", fontsize=8)  # loc="best" is slow over error bars
    return fig


def draw_ablation(effect_rows: list[dict], sweep_rows: list[dict], out_dir: str | os.PathLike) -> list[str]:
    """Draw the ablation's figures into out_dir; return their names."""
    names = ["paired_differences"] + (["aux_weight_sweep"] if len(sweep_rows) > 1 else [])
    with matplotlib.rc_context(STABLE):
        save(fig_paired_differences(effect_rows), Path(out_dir) / names[0])
        if len(names) > 1:
            save(fig_aux_weight_sweep(sweep_rows), Path(out_dir) / names[1])
    return names


def save(fig, path_stem: Path) -> list[Path]:
    """PNG and SVG of ``fig``, written atomically; returns their paths."""
    # One tight bounding box for both formats: bbox_inches="tight" lays the figure out again for
    # each format, and laying out text is most of the drawing time.
    fig.draw_without_rendering()
    bbox = fig.get_tightbbox().padded(matplotlib.rcParams["savefig.pad_inches"])
    paths = []
    for ext in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, metadata=METADATA[ext], bbox_inches=bbox)
        path = path_stem.with_suffix("." + ext)
        atomic_write(path, buf.getvalue())
        paths.append(path)
    plt.close(fig)
    return paths


def draw_all(results: list[dict], models: list[str], out_dir: str | os.PathLike) -> list[str]:
    """Draw every figure of FIGURES into out_dir; return the figure names drawn."""
    groups = by_model(results, models)
    col = colours(list(groups))
    out_dir = Path(out_dir)
    with matplotlib.rc_context(STABLE):
        for name, draw in FIGURES.items():
            save(draw(groups, col), out_dir / name)
    return list(FIGURES)
