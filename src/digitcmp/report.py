"""report.md: a run directory's tables and figures with their captions, config and command."""

from __future__ import annotations

import os
from pathlib import Path

from .files import atomic_write
from .messages import say
from .models import label
from .rundir import load_run
from .tables import write_summary


def write_report(run_dir: str | os.PathLike, say=say) -> tuple[Path, str]:
    """Summary tables, every figure and report.md for a (possibly partial) run directory.

    Returns the path of report.md and the Table III markdown."""
    from .ablation import is_ablation, write_effects
    from .plots import ABLATION_CAPTIONS, CAPTIONS, draw_ablation, draw_all

    run_dir = Path(run_dir)
    manifest, cfg, results = load_run(run_dir, say=say)
    config = manifest["config"]
    models = cfg.models or sorted({r["model"] for r in results})
    table = write_summary(run_dir, results, models)
    names = draw_all(results, models, run_dir / "figures")

    planned = config.get("rounds")
    done = {m: sum(r["model"] == m for r in results) for m in models}
    progress = ", ".join(f"{label(m)} {n}" + (f"/{planned}" if planned else "")
                         for m, n in done.items())
    partial = planned and any(n < planned for n in done.values())
    source = manifest.get("source") if isinstance(manifest.get("source"), dict) else {}
    command = manifest.get("command")
    lines = [
        f"# digitcmp report: {run_dir.name}", "",
        f"Rounds finished per model: {progress}" + (" (partial run)" if partial else "") + ".", "",
        f"Data source: **{source.get('name', '?')}** ({source.get('location', '?')}).", "",
        "Command: `" + (" ".join(["digitcmp", *command[1:]]) if command else "unknown") + "`", "",
        "## Table III", "", table,
        "Errors are the share of misclassified test pairs; std. deviation is the sample standard "
        "deviation over rounds, in percentage points.", "",
        "## Figures", "",
    ]
    for name in names:
        lines += [f"![{name}](figures/{name}.png)", "", f"*{CAPTIONS[name]}*", ""]
    if is_ablation(results):
        effect_rows, sweep_rows, effects_md = write_effects(run_dir, results)
        lines += ["## Ablation: weight sharing x auxiliary loss", "", effects_md]
        for name in draw_ablation(effect_rows, sweep_rows, run_dir / "figures"):
            lines += [f"![{name}](figures/{name}.png)", "", f"*{ABLATION_CAPTIONS[name]}*", ""]
    lines += ["## Configuration", "", "| option | value |", "|---|---|"]
    lines += [f"| {k} | `{v}` |" for k, v in config.items()]
    versions = manifest.get("versions") if isinstance(manifest.get("versions"), dict) else {}
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    path = run_dir / "report.md"
    atomic_write(path, "\n".join(lines))
    return path, table
