"""How close the full protocol comes to this machine's arithmetic limit.

    python benchmarks/speed.py [--rounds 15] [--epochs 25] [--engine stacked] [--executor process]

In one run: (1) float32 matmul throughput of a large torch matmul with as many threads as the
protocol uses in all (workers x threads), best of several tries; (2) the floating-point work of the
protocol, counted from the layer shapes (2 FLOPs per multiply-add; training = 3x the forward pass,
for the forward, input-gradient and weight-gradient products; plus one forward pass over the train
and test pairs per round for evaluation; element-wise layers not counted); (3) the wall time of
`digitcmp reproduce` for the study's three models. Prints Table III, per-model seconds per round,
seconds, achieved GFLOP/s and, last, `roofline_ratio=<achieved / matmul throughput>`.
Target (issue 6): roofline_ratio >= 0.6 for 3 models x 15 rounds x 25 epochs.
"""

import argparse
import os
import statistics
import tempfile
import time

import torch

from digitcmp.config import Config
from digitcmp.experiment import run_experiment
from digitcmp.models import get_model_class
from digitcmp.models.layers import forward_flops
from digitcmp.tables import write_summary


def matmul_gflops(threads: int, n: int = 2048, tries: int = 5) -> float:
    """Best-of-``tries`` float32 throughput of an n x n matmul, in GFLOP/s."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        best = min(best, (time.perf_counter() - start) / 4)
    return 2 * n**3 / best / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--engine", default="stacked", choices=["stacked", "reference"])
    p.add_argument("--executor", default="process", choices=["serial", "process"])
    p.add_argument("--workers", type=int, default=None, help="(default: cores / threads)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--data", default="auto")
    p.add_argument("--out", default=None, help="run directory (default: a new temporary one)")
    args = p.parse_args()
    config = Config(rounds=args.rounds, epochs=args.epochs, threads=args.threads, data=args.data,
                    engine=args.engine)
    workers = 1 if args.executor == "serial" else (
        args.workers or max(1, (os.cpu_count() or 1) // args.threads))
    peak = matmul_gflops(workers * args.threads)
    print(f"matmul throughput: {peak:.1f} GFLOP/s ({workers * args.threads} threads)")

    flops = 0
    for name in config.models:
        f = forward_flops(get_model_class(name)())
        per_round = f * config.pairs * (3 * config.epochs + 2)
        print(f"{name}: {f / 1e6:.2f} MFLOP forward per pair, {per_round / 1e9:.1f} GFLOP per round")
        flops += per_round * config.rounds

    out = args.out or tempfile.mkdtemp(prefix="digitcmp-speed-")
    start = time.perf_counter()
    results = run_experiment(config, out, executor=args.executor, workers=args.workers,
                             progress=False)
    seconds = time.perf_counter() - start
    print(write_summary(out, results, config.models))
    for m in config.models:
        per_round = [r["seconds"] for r in results if r["model"] == m]
        print(f"{m}: median {statistics.median(per_round):.2f} s per round ({len(per_round)} rounds)")
    achieved = flops / seconds / 1e9
    print(f"run directory: {out}")
    print(f"protocol: {flops / 1e12:.2f} TFLOP in {seconds:.1f} s = {achieved:.1f} GFLOP/s "
          f"({args.engine} engine, {args.executor} executor, {workers} worker(s))")
    print(f"reproduce_seconds={seconds:.1f}")
    print(f"roofline_ratio={achieved / peak:.3f}")


if __name__ == "__main__":
    main()
