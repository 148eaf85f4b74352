"""Seconds per round of one model, from short timed pieces: for machines too noisy to time rounds.

    python benchmarks/round_time.py [--model probcmp] [--repeats 3] [--threads 1]

A round is `epochs` epochs of the model's training recipe on 1000 pairs, with its per-epoch
evaluation, then the final evaluations. This script trains round 0 for one epoch and for two,
``--repeats`` times, and projects a round as epochs x (one epoch) + (the rest), where one epoch
is the difference of the two, from the minimum and from the median of the repeats.

Why the minimum: on a shared or throttled machine (a VM whose CPU is taken away from it now and
then) the time of a piece is its work plus whatever stalls hit it; the minimum of several repeats
is the closest to the work alone (the advice of Python's ``timeit``). The median is what a round
costs under the machine's current stalls. Also prints the matmul throughput measured in the same
run, so figures from different machines or moments can be compared. Last line:
``round_seconds_min=<projected seconds per round from the minima>``.
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
    p.add_argument("--repeats", type=int, default=3, help="timed one-epoch trainings (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="epochs of a round (default: %(default)s)")
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads (default: %(default)s)")
    p.add_argument("--data", default="embedded", help="(default: %(default)s)")
    p.add_argument("--engine", default=d.engine, choices=["stacked", "reference"],
                   help="(default: %(default)s)")
    args = p.parse_args()

    peak = matmul_gflops(args.threads)
    # Untimed: loads the data source and warms up the kernels.
    warm = Config(models=[args.model], epochs=1, threads=args.threads, data=args.data, engine=args.engine)
    train_rounds(warm, args.model, [0])
    epoch, fixed = [], []
    for _ in range(args.repeats):
        # One round of one epoch and one of two: their difference is an epoch, the rest is the
        # round's fixed cost (data, initialisation, final evaluation).
        t = {}
        for epochs in (1, 2):
            config = Config(models=[args.model], epochs=epochs, threads=args.threads, data=args.data,
                            engine=args.engine)
            start = time.perf_counter()
            train_rounds(config, args.model, [0])
            t[epochs] = time.perf_counter() - start
        epoch.append(t[2] - t[1])
        fixed.append(max(0.0, t[1] - epoch[-1]))
        print(f"one epoch {epoch[-1]:.2f} s, the rest of a round {fixed[-1]:.2f} s")

    def project(pick) -> float:
        return args.epochs * pick(epoch) + pick(fixed)

    print(f"matmul throughput: {peak:.1f} GFLOP/s ({args.threads} thread(s))")
    print(f"{args.model}: {args.epochs} epochs + the rest = {project(statistics.median):.1f} s "
          f"per round from the medians, {project(min):.1f} s from the minima")
    print(f"round_seconds_min={project(min):.1f}")


if __name__ == "__main__":
    main()
