"""What each ingredient of probcmp's recipe contributes, and what candidate ingredients would.

    python benchmarks/accuracy.py --plugin probcmp_ingredients --model probcmp_small-no_jitter \\
        --out runs/no_jitter
    python benchmarks/probcmp_ingredients.py runs/probcmp_small runs/no_jitter [more runs ...]

Imported (``--plugin``), this module registers the variants: ``probcmp_small`` with one switch
of ``models.probcmp.ProbCmpBase`` turned off (what an ingredient contributes), and ``probcmp``
with one candidate turned on (elastic distortions, test-time augmentation, weight averaging,
more members). ``probcmp`` vs ``probcmp_small`` measures the ensemble. Run as a script, it pairs
each variant run's rounds with the first (base) run's rounds of the same seed and round -- the
same training digits, validation and test pairs -- and prints the paired differences (variant -
base) of ``--metric``: the validation error where the runs have one (choose on it), else the
test error. Positive means the variant is worse.
"""

import argparse
from pathlib import Path

from digitcmp.models import register
from digitcmp.models.probcmp import ProbCmp, ProbCmpSmall
from digitcmp.rundir import load_run
from digitcmp.stats import mean_std, paired

OFF = {"no_jitter": {"use_jitter": False}, "no_pair_loss": {"target_loss": False},
       "no_smoothing": {"label_smoothing": 0.0}, "no_one_cycle": {"one_cycle": False}}

ON = {"elastic": {"elastic": 1.0}, "tta": {"views": 4}, "ema": {"ema_decay": 0.98},
      "5members": {"members_count": 5}}

for base, variants in ((ProbCmpSmall, OFF), (ProbCmp, ON)):
    for suffix, switches in variants.items():
        name = f"{base.name}-{suffix}"
        register(name)(type(name, (base,), {
            **switches, "label": f"{base.label}, {suffix.replace('_', ' ')}",
            "description": f"{base.name} with {', '.join(f'{k}={v}' for k, v in switches.items())}"}))

# What must agree between two runs for their rounds to pair: the same digits and test pairs.
PAIRING_KEYS = ("seed", "data", "data_dir", "test_dir", "pairs", "val_pairs")


def errors_by_round(run: Path, metric: str | None) -> tuple[dict, dict[int, float], str]:
    """A run directory's config, {round: metric} (the run must hold a single model) and the
    metric: ``metric``, or by default the validation error where the run has one."""
    manifest, _, rounds = load_run(run)
    config = manifest["config"]
    models = {r["model"] for r in rounds}
    if len(models) != 1:
        raise SystemExit(f"{run}: expected the rounds of one model, found {sorted(models) or 'none'}")
    metric = metric or ("val_error" if all("val_error" in r for r in rounds) else "test_error")
    return config, {r["round"]: r[metric] for r in rounds if metric in r}, metric


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base", type=Path, help="the run of probcmp_small (or any model) to compare against")
    p.add_argument("variants", type=Path, nargs="+", help="runs of the variants")
    p.add_argument("--metric", choices=["val_error", "val_digit_error", "test_error", "test_digit_error"],
                   help="(default: val_error if the runs have it, else test_error)")
    args = p.parse_args(argv)
    base_cfg, base, metric = errors_by_round(args.base, args.metric)
    print(f"{metric}, paired by round (variant - base):\n")
    print("| variant | rounds | base | variant | difference (95 % CI) | Wilcoxon p | per round (pp) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for run in args.variants:
        cfg, errors, _ = errors_by_round(run, metric)
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
              f"{s['mean']:+.2f} pp ({s['ci_low']:+.2f}, {s['ci_high']:+.2f}) | {s['wilcoxon_p']:.2g} | "
              f"{', '.join(f'{d:+.1f}' for d in diffs)} |")

if __name__ == "__main__":
    main()
