"""``probcmp_small`` without one ingredient of its recipe each, to measure what each contributes.

    python benchmarks/accuracy.py --plugin probcmp_ingredients --model probcmp_small-no_jitter \\
        --out runs/no_jitter
    python benchmarks/probcmp_ingredients.py runs/probcmp_small runs/no_jitter [more runs ...]

Every variant is ``probcmp_small`` with one switch of ``models.probcmp.ProbCmpBase`` turned off;
``probcmp`` vs ``probcmp_small`` measures the ensemble. Imported (``--plugin``), this module
registers the variants. Run as a script, it pairs each variant run's rounds with the first
(base) run's rounds of the same seed and round -- the same training digits and test pairs -- and
prints the paired test-error differences (variant - base): positive means the ingredient helps.
"""

import argparse
from pathlib import Path

from digitcmp.models import register
from digitcmp.models.probcmp import ProbCmpSmall
from digitcmp.rundir import load_run
from digitcmp.stats import mean_std, paired

OFF = {"no_jitter": {"use_jitter": False}, "no_pair_loss": {"target_loss": False},
       "no_smoothing": {"label_smoothing": 0.0}, "no_one_cycle": {"one_cycle": False}}

for suffix, switches in OFF.items():
    name = f"probcmp_small-{suffix}"
    register(name)(type(name, (ProbCmpSmall,), {
        **switches, "label": f"ProbCmp small, {suffix.replace('_', ' ')}",
        "description": f"probcmp_small with {', '.join(switches)} off"}))

# What must agree between two runs for their rounds to pair: the same digits and test pairs.
PAIRING_KEYS = ("seed", "data", "data_dir", "test_dir", "pairs", "val_pairs")


def errors_by_round(run: Path) -> tuple[dict, dict[int, float]]:
    """A run directory's config and {round: test error} (the run must hold a single model)."""
    manifest, _, rounds = load_run(run)
    config = manifest["config"]
    models = {r["model"] for r in rounds}
    if len(models) != 1:
        raise SystemExit(f"{run}: expected the rounds of one model, found {sorted(models) or 'none'}")
    return config, {r["round"]: r["test_error"] for r in rounds}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base", type=Path, help="the run of probcmp_small (or any model) to compare against")
    p.add_argument("variants", type=Path, nargs="+", help="runs of the variants")
    args = p.parse_args(argv)
    base_cfg, base = errors_by_round(args.base)
    print("| variant | rounds | base | variant | difference (95 % CI) | Wilcoxon p | per round (pp) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for run in args.variants:
        cfg, errors = errors_by_round(run)
        differ = [k for k in PAIRING_KEYS if cfg.get(k) != base_cfg.get(k)]
        if differ:
            raise SystemExit(f"{run}: its rounds do not pair with {args.base}'s ({', '.join(differ)} differ)")
        common = sorted(set(errors) & set(base))
        if not common:
            raise SystemExit(f"{run}: no round in common with {args.base}")
        diffs = [100 * (errors[r] - base[r]) for r in common]
        s = paired(diffs)
        base_mean = mean_std([100 * base[r] for r in common])[0]
        variant_mean = mean_std([100 * errors[r] for r in common])[0]
        print(f"| {cfg['models'][0]} | {len(common)} | {base_mean:.2f} % | {variant_mean:.2f} % | "
              f"{s['mean']:+.2f} pp ({s['ci_low']:+.2f}, {s['ci_high']:+.2f}) | {s['wilcoxon_p']:.2f} | "
              f"{', '.join(f'{d:+.1f}' for d in diffs)} |")

if __name__ == "__main__":
    main()
