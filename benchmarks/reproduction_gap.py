"""Where the gap between our Table III and the study's comes from: hypothesis runs side by side.

    digitcmp reproduce --out runs/gap/default
    digitcmp reproduce --test-pool train --out runs/gap/test-pool-train    # and one run per hypothesis
    python benchmarks/reproduction_gap.py runs/gap/default runs/gap/test-pool-train [...]

The first run is the default protocol; each other changes one thing. For each run and model:
mean test and train error over rounds, their difference from the default run's (in percentage
points, with a 95 % paired-t interval where the runs share their pairs round by round), and the
study's value; and, from the default run's records, the errors measured in training mode
(dropout on, BatchNorm with batch statistics, batches of 100), which every round records beside
the eval-mode ones. Last line: ``explained=<models whose study train error lies within 1 pp of
the train-mode train error>/<models>``.
"""

import argparse
from pathlib import Path

from digitcmp.report import train_mode_table
from digitcmp.rundir import load_run
from digitcmp.stats import by_model, mean_std, paired
from digitcmp.study import published


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("default", type=Path)
    p.add_argument("hypotheses", type=Path, nargs="*")
    args = p.parse_args()
    study = published()["models"]
    runs = {d: load_run(d, say=lambda *a: None) for d in [args.default, *args.hypotheses]}
    base_manifest, base_config, base = runs[args.default]
    base_by = by_model(base)
    print("| run | model | test error | Δ test (pp) | train error | Δ train (pp) |")
    print("|---|---|---:|---:|---:|---:|")
    for run, (manifest, config, results) in runs.items():
        # Runs share their pairs round by round when the data and seed agree.
        same_pairs = all(manifest["config"].get(k) == base_manifest["config"].get(k)
                         for k in ("seed", "data", "test_dir", "test_pool", "pairs", "val_pairs"))
        for model, rs in by_model(results, config.models).items():
            cells = []
            for split in ("test", "train"):
                mean = mean_std([100 * r[f"{split}_error"] for r in rs])[0]
                ref = {r["round"]: r[f"{split}_error"] for r in base_by.get(model, [])}
                if run == args.default or not ref:
                    cells += [f"{mean:.2f} %", ""]
                    continue
                common = [r for r in rs if r["round"] in ref]
                delta = mean - mean_std([100 * ref[r["round"]] for r in common])[0]
                ci = ""
                s = paired([100 * (r[f"{split}_error"] - ref[r["round"]]) for r in common])
                if same_pairs and s["ci_low"] == s["ci_low"]:  # not NaN: the differences vary
                    ci = f" [{s['ci_low']:+.2f}, {s['ci_high']:+.2f}]"
                cells += [f"{mean:.2f} %", f"{delta:+.2f}{ci}"]
            print(f"| {run.name} | {model} | " + " | ".join(cells) + " |")
    print()
    print("\n".join(train_mode_table(base, base_config.models)))  # report.md's table, default run
    # Explained: the study's train error is what counting in training mode gives, within 1 pp.
    explained = sum(abs(mean_std([r["train_mode_train_error"] for r in rs])[0]
                        - study.get(model, {}).get("train_error_mean", float("nan"))) <= 0.01
                    for model, rs in base_by.items() if all("train_mode_train_error" in r for r in rs))
    print(f"explained={explained}/{len(base_by)}")


if __name__ == "__main__":
    main()
