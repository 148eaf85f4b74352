"""Did a run on one device land where a run on another did? Compare two run directories of the
same protocol (same seed, pairs and initialisation; dropout draws and float order differ).

    python benchmarks/device_compare.py CPU_RUN GPU_RUN [--tolerance 3]

Per model: each run's mean test error, and how many of the second run's rounds fall within the
first run's spread of test errors (its minimum to maximum over rounds), widened by
``--tolerance`` percentage points. Last line: ``within_spread=<rounds within>/<rounds>``.
"""

import argparse
from pathlib import Path

from digitcmp.rundir import load_run
from digitcmp.stats import by_model, mean_std


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("first", type=Path)
    p.add_argument("second", type=Path)
    p.add_argument("--tolerance", type=float, default=3.0, help="percentage points (default: %(default)s)")
    args = p.parse_args()
    a, b = (by_model(load_run(d)[2]) for d in (args.first, args.second))
    within = total = 0
    for model in a.keys() & b.keys():
        ref = [100 * r["test_error"] for r in a[model]]
        low, high = min(ref) - args.tolerance, max(ref) + args.tolerance
        got = [100 * r["test_error"] for r in b[model]]
        inside = sum(low <= e <= high for e in got)
        within, total = within + inside, total + len(got)
        print(f"{model}: {args.first.name} {mean_std(ref)[0]:.2f} %, {args.second.name} "
              f"{mean_std(got)[0]:.2f} %; {inside}/{len(got)} rounds within [{low:.1f}, {high:.1f}] %")
    print(f"within_spread={within}/{total}")


if __name__ == "__main__":
    main()
