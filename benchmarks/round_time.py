"""Seconds per round of one model, from short timed pieces: for machines too noisy to time rounds.

    python benchmarks/round_time.py [--model probcmp] [--repeats 3] [--threads 1]

A round is `epochs` epochs of the model's training recipe (its own ``fit``, or the plain Adam loop)
on 1000 pairs, then an evaluation of the train and test pairs. This script trains a fresh model
for ONE epoch ``--repeats`` times and evaluates it, timing each piece, and projects a round as
epochs x (one epoch) + (evaluation), from the minimum and from the median of the repeats.

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

import torch

from digitcmp.data import load_source, round_data
from digitcmp.models import get_model_class
from digitcmp.train import Config, aux_weight_for, evaluate, init_model, lr_for, recipe, round_generator
from speed import matmul_gflops


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    d = Config()
    p.add_argument("--model", default="probcmp", help="(default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="timed one-epoch trainings (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="epochs of a round (default: %(default)s)")
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads (default: %(default)s)")
    p.add_argument("--data", default="embedded", help="(default: %(default)s)")
    args = p.parse_args()

    peak = matmul_gflops(args.threads)
    torch.set_num_threads(args.threads)
    config = Config(models=[args.model], epochs=1, threads=args.threads, data=args.data)
    cls = get_model_class(args.model)
    data = round_data(load_source(args.data), config.seed, 0, config.pairs)
    epoch, evals = [], []
    for _ in range(args.repeats):
        model = init_model(config, cls, 0)
        start = time.perf_counter()
        recipe(model)(data.train, config, lr_for(config, cls), aux_weight_for(config, cls),
                      round_generator(config, 0, "batches"))
        epoch.append(time.perf_counter() - start)
        start = time.perf_counter()
        evaluate(model, data.train), evaluate(model, data.test)
        evals.append(time.perf_counter() - start)
        print(f"one epoch {epoch[-1]:.2f} s, evaluation {evals[-1]:.2f} s")

    def project(pick) -> float:
        return args.epochs * pick(epoch) + pick(evals)

    print(f"matmul throughput: {peak:.1f} GFLOP/s ({args.threads} thread(s))")
    print(f"{args.model}: {args.epochs} epochs + evaluation = {project(statistics.median):.1f} s "
          f"per round from the medians, {project(min):.1f} s from the minima")
    print(f"round_seconds_min={project(min):.1f}")


if __name__ == "__main__":
    main()
