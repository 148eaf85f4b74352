"""The report's figures (the study's Figs. 2-6, and the ablation's), drawn from a run's records.

Every figure is written as PNG (200 dpi), SVG (text kept as text, so it stays editable) and PDF,
with no time stamps or random ids, so the same results give the same bytes. Each model keeps
one colour across all figures, rounds are numbered from 0 as everywhere else, the study's
published values are marked where it has them, and every figure says its data and its number
of rounds.
"""

from __future__ import annotations

import io
import os
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, and no GUI backend imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from .files import atomic_write  # noqa: E402
from .models import MODELS, label  # noqa: E402
from .stats import by_model  # noqa: E402
from .study import claims, published  # noqa: E402

# SVG element ids are random unless salted; files carry a date and a version unless removed.
STYLE = {"svg.hashsalt": "digitcmp", "svg.fonttype": "none", "pdf.fonttype": 42, "figure.dpi": 100,
         "savefig.dpi": 200, "axes.grid": True, "grid.alpha": 0.3, "font.size": 10}
METADATA = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None},
            "pdf": {"CreationDate": None, "Creator": None, "Producer": None}}
FORMATS = ("png", "svg", "pdf")
STUDY = {"marker": "D", "color": "black", "s": 36, "zorder": 5}  # how the study's values look

# Figure name -> caption; report.md shows them in this order.
CAPTIONS = {
    "test_error_distribution": "Test error of every round, per model (box: quartiles and median; "
                               "dots: rounds; black diamond: the study's mean). The spread shows "
                               "how much one round can be trusted.",
    "error_mean_std": "Mean train and test error per model, error bars ± 1 standard deviation over "
                      "rounds, values written above the bars; black markers: the study's means "
                      "(its Figs. 2 and 3).",
    "errors_per_round": "Train (left) and test (right) error of each model in each round; dashed "
                        "lines: the study's means (its Figs. 5 and 6).",
    "learning_curves": "Per epoch, mean ± 1 standard deviation over rounds: the comparison's "
                       "cross-entropy (left; the auxiliary loss is not in it, so every model is "
                       "on the same scale), and the test error on a fixed subset of the test "
                       "pairs (right, solid) beside the error on the training batches as they "
                       "were trained (dashed); diamonds at the right: the study's test means, "
                       "in each model's colour (the study's Fig. 4, like with like).",
}
ABLATION_CAPTIONS = {
    "paired_differences": "Ablation: per-round difference in test error for each effect (dots, one "
                          "per round, same pairs for every arm); black: mean with its 95 % paired-t "
                          "interval; red cross: the study's claim. Below zero: the factor lowers "
                          "the error.",
    "aux_weight_sweep": "Ablation: test and train error of the shared arm against the weight of the "
                        "auxiliary digit loss (mean ± 1 standard deviation over rounds).",
}


def colours(models: list[str]) -> dict[str, str]:
    """One colour per model, fixed by registry order so it is the same in every run."""
    order = list(MODELS) + [m for m in models if m not in MODELS]
    palette = plt.get_cmap("tab10").colors
    return {m: matplotlib.colors.to_hex(palette[order.index(m) % 10]) for m in models}


def footnote(fig, about: str) -> None:
    """The data and rounds a figure shows, in small print under it."""
    fig.text(0.01, -0.01, textwrap.fill(about, 110), fontsize=7, color="dimgray", ha="left", va="top",
             gid="footnote")  # placed under everything else by save()


def model_ticks(ax, positions, groups) -> None:
    """The models' names under their positions, slanted when they would not fit side by side
    (the ablation's eight arms)."""
    names = [label(m) for m in groups]
    # A 9-point character is about 0.07 inch wide; leave each name a little room beside it.
    crowded = sum(0.07 * len(n) + 0.15 for n in names) > ax.get_position().width * ax.figure.get_figwidth()
    ax.set_xticks(positions, names, fontsize=9)
    if crowded:
        ax.tick_params(axis="x", labelrotation=30)
        for t in ax.get_xticklabels():
            t.set(ha="right", rotation_mode="anchor")


def fig_test_error_distribution(groups, col, about):
    fig, ax = plt.subplots(figsize=(6.5, 4))
    data = [[100 * r["test_error"] for r in rs] for rs in groups.values()]
    box = ax.boxplot(data, widths=0.5, patch_artist=True, showfliers=False, medianprops={"color": "black"})
    for patch, m in zip(box["boxes"], groups, strict=True):
        patch.set(facecolor=col[m], alpha=0.35)
    rng = np.random.default_rng(0)  # fixed jitter: same input, same picture
    study = published()["models"]
    for i, (m, d) in enumerate(zip(groups, data, strict=True), 1):
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(d)), d, s=14, color=col[m], zorder=3,
                   edgecolor="black", linewidth=0.4)
        if m in study:
            ax.scatter([i + 0.33], [100 * study[m]["test_error_mean"]], **STUDY)
    model_ticks(ax, range(1, len(groups) + 1), groups)
    ax.set(ylabel="test error (%)", title="Test error over rounds")
    if any(m in study for m in groups):
        ax.legend(handles=[Line2D([], [], linestyle="", label="the study's mean",
                                  **{k: v for k, v in STUDY.items() if k in ("marker", "color")})],
                  loc="best", fontsize=8)  # a fixed corner can hide a whisker
    footnote(fig, about)
    return fig


def fig_error_mean_std(groups, col, about):
    # Bars with error bars rather than box plots: this figure answers the study's question
    # "what is the mean error and how much does it vary", with train and test side by side;
    # the full spread of each round is in test_error_distribution.
    fig, ax = plt.subplots(figsize=(7, 4.2))
    x = np.arange(len(groups))
    width = 0.38
    study = published()["models"]
    top = 0.0
    for k, split in enumerate(("train", "test")):
        errs = [np.array([r[f"{split}_error"] for r in rs]) * 100 for rs in groups.values()]
        means = np.array([e.mean() for e in errs])
        stds = np.array([e.std(ddof=1) if len(e) > 1 else 0.0 for e in errs])
        pos = x + (k - 0.5) * width
        ax.bar(pos, means, width, yerr=stds, capsize=4, color=[col[m] for m in groups],
               alpha=0.45 if split == "train" else 0.95, hatch="//" if split == "train" else None,
               edgecolor="black", linewidth=0.6)
        for p, mean, sd in zip(pos, means, stds, strict=True):  # a 0.01 % bar must not look missing
            ax.annotate(f"{mean:.2f}", (p, mean + sd), xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", fontsize=7)
        top = max(top, float((means + stds).max()))
        marks = [(p, 100 * study[m][f"{split}_error_mean"])
                 for p, m in zip(pos, groups, strict=True) if m in study]
        if marks:
            ax.scatter([p for p, _ in marks], [v for _, v in marks],
                       **{**STUDY, "marker": "v" if split == "train" else "D"})
            top = max(top, max(v for _, v in marks))
    ax.set_ylim(0, top * 1.3 + 0.5)  # headroom: the legend sits above the tallest bar or marker
    model_ticks(ax, x, groups)
    ax.set(ylabel="error (%)", title="Mean error ± std over rounds")
    handles = [Patch(facecolor="lightgray", edgecolor="black", hatch="//", alpha=0.6, label="train"),
               Patch(facecolor="gray", edgecolor="black", label="test")]
    if any(m in study for m in groups):
        handles += [Line2D([], [], linestyle="", marker="v", color="black", label="the study: train"),
                    Line2D([], [], linestyle="", marker="D", color="black", label="the study: test")]
    ax.legend(handles=handles, loc="upper left", fontsize=8, ncol=2)
    footnote(fig, about)
    return fig


def fig_errors_per_round(groups, col, about):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    study = published()["models"]
    for ax, split in zip(axes, ("train", "test"), strict=True):
        for m, rs in groups.items():
            ax.plot([r["round"] for r in rs], [100 * r[f"{split}_error"] for r in rs],
                    marker="o", ms=4, color=col[m], label=label(m))
            if m in study:
                ax.axhline(100 * study[m][f"{split}_error_mean"], color=col[m], linestyle="--", linewidth=1)
        ax.set(title=f"{split.capitalize()} error per round", xlabel="round", ylabel=f"{split} error (%)")
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles, labels = axes[0].get_legend_handles_labels()
    if any(m in study for m in groups):
        handles.append(Line2D([], [], color="gray", linestyle="--"))
        labels.append("the study's mean")
    # Below the panels, where it covers no round.
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(labels), 5),
               fontsize=8, frameon=False)
    footnote(fig, about)
    fig.texts[-1].set_y(-0.1)
    return fig


def _band(ax, epochs, values, colour, style="-"):
    """Mean ± std over rounds of per-epoch values (rounds x epochs)."""
    mean = values.mean(0)
    std = values.std(0, ddof=1) if len(values) > 1 else np.zeros_like(mean)
    ax.plot(epochs, mean, style, color=colour)
    ax.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.15, linewidth=0)


def curves(records: list[dict], key: str) -> np.ndarray | None:
    """rounds x epochs values of a per-epoch metric, or None if the records lack it."""
    rows = [r.get("curves", {}).get(key) for r in records]
    if not rows or any(not row for row in rows) or len({len(row) for row in rows}) != 1:
        return None
    return np.array(rows, dtype=float)


def fig_learning_curves(groups, col, about):
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    study = published()["models"]
    drawn = False
    for m, rs in groups.items():
        loss = curves(rs, "target_loss")
        if loss is not None:
            _band(left, np.arange(1, loss.shape[1] + 1), loss, col[m])
        test, train = curves(rs, "test_error"), curves(rs, "running_train_error")
        for values, style in ((test, "-"), (train, "--")):
            if values is not None:
                _band(right, np.arange(1, values.shape[1] + 1), 100 * values, col[m], style)
                drawn = True
        if test is not None and m in study:
            # In the model's colour: the three diamonds sit side by side, away from their curves.
            right.scatter([test.shape[1] + 0.6], [100 * study[m]["test_error_mean"]],
                          **STUDY | {"color": col[m], "edgecolors": "black", "linewidths": 0.8})
    left.set(xlabel="epoch", ylabel="target loss (cross-entropy of the comparison)",
             title="Target loss per epoch")
    right.set(xlabel="epoch", ylabel="error (%)", title="Error per epoch")
    if not drawn:
        right.text(0.5, 0.5, "no per-epoch errors in these records\n(written by digitcmp 0.1)",
                   ha="center", va="center", transform=right.transAxes, color="dimgray")
    handles = [Line2D([], [], color=col[m], label=label(m)) for m in groups]
    handles += [Line2D([], [], color="gray", linestyle="-", label="test (subset of the test pairs)"),
                Line2D([], [], color="gray", linestyle="--", label="train (batches, as trained)")]
    if any(m in study for m in groups):
        handles.append(Line2D([], [], linestyle="", marker="D", markerfacecolor="white",
                              markeredgecolor="black", label="the study's test mean (model's colour)"))
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4, fontsize=8,
               frameon=False)
    footnote(fig, about)
    return fig


FIGURES = {
    "test_error_distribution": fig_test_error_distribution,
    "error_mean_std": fig_error_mean_std,
    "errors_per_round": fig_errors_per_round,
    "learning_curves": fig_learning_curves,
}


def fig_paired_differences(effect_rows: list[dict], about: str):
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(effect_rows) + 1.8))
    rng = np.random.default_rng(0)
    claimed = claims()
    for i, e in enumerate(effect_rows):
        y = len(effect_rows) - 1 - i
        d = 100 * np.asarray(e["diffs"], dtype=float)
        ax.scatter(d, y + rng.uniform(-0.15, 0.15, len(d)), s=12, color="tab:blue", alpha=0.6, zorder=2)
        if not np.isnan(e["ci_low"]):
            ax.errorbar(100 * e["mean"], y, xerr=[[100 * (e["mean"] - e["ci_low"])],
                                                  [100 * (e["ci_high"] - e["mean"])]],
                        fmt="D", color="black", capsize=4, zorder=3)
        if e["effect"] in claimed:
            ax.scatter([100 * claimed[e["effect"]]["difference"]], [y], marker="x", s=60, color="red",
                       zorder=4, linewidth=2)
    ax.axvline(0, color="grey", linewidth=1)
    ax.set_yticks(range(len(effect_rows)), [e["effect"] for e in reversed(effect_rows)], fontsize=8)
    ax.set(xlabel="difference in test error (percentage points)",
           title=f"Paired differences per round (n = {effect_rows[0]['n']}), mean and 95 % CI")
    ax.legend(handles=[Line2D([], [], linestyle="", marker="x", color="red", label="the study's claim")],
              loc="lower right", fontsize=8)
    footnote(fig, about)
    return fig


def fig_aux_weight_sweep(sweep_rows: list[dict], about: str):
    fig, ax = plt.subplots(figsize=(6.5, 4))
    w = [s["aux_weight"] for s in sweep_rows]
    for split, style in (("test", "o-"), ("train", "s--")):
        ax.errorbar(w, [100 * s[f"{split}_error_mean"] for s in sweep_rows],
                    yerr=[100 * np.nan_to_num(s[f"{split}_error_std"]) for s in sweep_rows],
                    fmt=style, capsize=3, label=split)
    ax.set_xscale("symlog", linthresh=0.1)  # 0 is one of the weights
    ax.set(xlabel="auxiliary-loss weight", ylabel="error (%)",
           title=f"Aux-loss weight, shared arm (n = {sweep_rows[0]['rounds']} rounds)")
    ax.legend(loc="upper right", fontsize=8)  # loc="best" is slow over error bars
    footnote(fig, about)
    return fig


def save(fig, path_stem: Path) -> list[Path]:
    """The figure as PNG, SVG and PDF, written atomically; returns their paths."""
    # One tight bounding box for every format: bbox_inches="tight" lays the figure out again
    # for each format, and laying out text is most of the drawing time.
    fig.draw_without_rendering()
    note = next((t for t in fig.texts if t.get_gid() == "footnote"), None)
    if note is not None:  # under the lowest thing drawn: slanted model names, a legend below
        note.set_visible(False)
        lowest = fig.get_tightbbox().y0  # inches from the figure's bottom edge
        note.set_visible(True)
        note.set_y((lowest - 0.08) / fig.get_figheight())
    bbox = fig.get_tightbbox().padded(matplotlib.rcParams["savefig.pad_inches"])
    paths = []
    for ext in FORMATS:
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, metadata=METADATA[ext], bbox_inches=bbox)
        path = path_stem.with_suffix("." + ext)
        atomic_write(path, buf.getvalue())
        paths.append(path)
    plt.close(fig)
    return paths


def draw_all(results: list[dict], models: list[str], out_dir: str | os.PathLike, about: str) -> list[str]:
    """Draw every figure of FIGURES into out_dir; ``about`` names the data and the rounds.
    Returns the figure names drawn."""
    groups = {m: rs for m, rs in by_model(results, models).items() if rs}
    col = colours(list(groups))
    with matplotlib.rc_context(STYLE):
        for name, draw in FIGURES.items():
            save(draw(groups, col, about), Path(out_dir) / name)
    return list(FIGURES)


def draw_ablation(effect_rows: list[dict], sweep_rows: list[dict], out_dir: str | os.PathLike,
                  about: str) -> list[str]:
    """Draw the ablation's figures into out_dir; return their names."""
    names = ["paired_differences"] + (["aux_weight_sweep"] if len(sweep_rows) > 1 else [])
    with matplotlib.rc_context(STYLE):
        save(fig_paired_differences(effect_rows, about), Path(out_dir) / names[0])
        if len(names) > 1:
            save(fig_aux_weight_sweep(sweep_rows, about), Path(out_dir) / names[1])
    return names
