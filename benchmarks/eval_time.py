"""Milliseconds to evaluate each model's stacked network on its rounds' 1000 test pairs: the
evaluation a round runs after every epoch (on 250 of them) and at the end, in eval mode, in the
chunks training uses.

    python benchmarks/eval_time.py [--models siamese_aux cnn] [--repeats 30] [--threads 1]

Builds the network as ``digitcmp reproduce`` does on the CPU (the stacked engine at its stack
size, with the C kernels it uses at ``--threads``), freshly initialised (the time does not depend
on the weights), evaluates it three times untimed, then ``--repeats`` times timed. To compare two
versions of digitcmp, run this file against each (``PYTHONPATH=OTHER/src``), alternating. Last
line: ``eval_ms_min=<sum over the models of the minimum, per round>``.
"""

import argparse
import statistics
import time

import torch

from digitcmp.config import Config
from digitcmp.data.pairs import round_data
from digitcmp.models import get_model_class
from digitcmp.seeds import generator
from digitcmp.stacked import stack_models
from digitcmp.train import EVAL_CHUNK, cached_source, direct_convs, evaluate, fuses, init_model, stack_group


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=["siamese_aux", "cnn"], help="(default: %(default)s)")
    p.add_argument("--repeats", type=int, default=30, help="timed evaluations (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    config, device = Config(data="embedded", threads=args.threads), torch.device("cpu")
    total = 0.0
    for name in args.models:
        cls = get_model_class(name)
        rounds = stack_group(config, device, cls())
        source = cached_source("embedded", None)
        datas = [round_data(source, config.seed, r, config.pairs) for r in range(rounds)]
        net = stack_models([init_model(config, cls, r) for r in range(rounds)],
                           [generator(config.seed, r, "dropout", device) for r in range(rounds)], rounds,
                           fuse=fuses(config, device), direct=direct_convs(config, device))
        splits = [d.splits()["test"] for d in datas]
        for _ in range(3):
            evaluate(net, splits, EVAL_CHUNK)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            evaluate(net, splits, EVAL_CHUNK)
            times.append((time.perf_counter() - start) / rounds * 1e3)
        print(f"{name} ({rounds} round(s) stacked): {min(times):.1f} ms per round (minimum), "
              f"{statistics.median(times):.1f} (median) of {args.repeats}")
        total += min(times)
    print(f"eval_ms_min={total:.1f}")


if __name__ == "__main__":
    main()
