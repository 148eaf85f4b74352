"""Seconds per round of one model, the minimum and median of a few timed rounds.

    python benchmarks/round_time.py [--model probcmp] [--repeats 3] [--rounds 1] [--epochs 25]
        [--threads 1] [--engine stacked] [--curve-pairs 250 [0 ...]]

Trains rounds 0 .. ``--rounds`` - 1 together (as one task of ``digitcmp reproduce`` does: 10 for
baseline, 1 for a convnet) ``--repeats`` times in this process, after an untimed one-epoch run
that loads the data and warms up the kernels, and times each: epochs, per-epoch curves and final
evaluations, divided by the rounds. On a shared or throttled machine (a VM whose CPU is taken
away from it now and then) a round's time is its work plus whatever stalls hit it: the minimum
of several is the closest to the work alone (the advice of Python's ``timeit``), the median what
a round costs under the current stalls. Also prints the matmul throughput measured in the same
run, so figures from different machines or moments can be compared.

Several ``--curve-pairs`` values are timed in turn within each repeat, so that slow spells of
the machine hit them alike: ``--curve-pairs 250 0`` measures what the per-epoch curves cost.
Last line: ``round_seconds_min=<seconds>`` for one value, ``curve_cost=<+x %>`` (first value's
minimum over the last one's) for several.
"""

import argparse
import statistics
import time

from digitcmp.config import Config
from digitcmp.train import train_rounds
from speed import matmul_gflops


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    d = Config()
    p.add_argument("--model", default="probcmp", help="(default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=1, help="rounds trained together (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="epochs of a round (default: %(default)s)")
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads (default: %(default)s)")
    p.add_argument("--data", default="embedded", help="(default: %(default)s)")
    p.add_argument("--engine", default=d.engine, choices=["stacked", "reference"],
                   help="(default: %(default)s)")
    p.add_argument("--curve-pairs", type=int, nargs="+", default=[d.curve_pairs],
                   help="test pairs evaluated after every epoch; 0: none; several: timed in turn "
                        "(default: %(default)s)")
    args = p.parse_args()

    peak = matmul_gflops(args.threads)
    configs = {c: Config(models=[args.model], epochs=args.epochs, threads=args.threads,
                         data=args.data, engine=args.engine, curve_pairs=c)
               for c in args.curve_pairs}
    rounds = list(range(args.rounds))
    first = next(iter(configs.values()))
    train_rounds(Config(**{**first.to_dict(), "epochs": 1}), args.model, rounds)  # untimed warm-up
    times: dict[int, list[float]] = {c: [] for c in configs}
    for _ in range(args.repeats):
        for c, config in configs.items():
            start = time.perf_counter()
            train_rounds(config, args.model, rounds)
            times[c].append((time.perf_counter() - start) / len(rounds))
            print(f"round, curve pairs {c}: {times[c][-1]:.2f} s")
    print(f"matmul throughput: {peak:.1f} GFLOP/s ({args.threads} thread(s))")
    for c, t in times.items():
        print(f"{args.model}, {args.engine} engine, curve pairs {c}: {statistics.median(t):.2f} s "
              f"per round (median), {min(t):.2f} s (minimum) of {args.repeats}")
    if len(times) == 1:
        print(f"round_seconds_min={min(times[args.curve_pairs[0]]):.2f}")
    else:
        cost = min(times[args.curve_pairs[0]]) / min(times[args.curve_pairs[-1]]) - 1
        print(f"curve_cost={100 * cost:+.1f} %")


if __name__ == "__main__":
    main()
