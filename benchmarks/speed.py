"""How close the full protocol comes to this machine's arithmetic limit.

    python benchmarks/speed.py [--rounds 15] [--epochs 25] [--engine stacked] [--device cpu]
        [--executor process] [--workers N] [--threads 1]

In one run: (1) the float32 matmul throughput of the device: on a CPU, a large torch matmul on
one thread and on as many threads as the protocol uses in all (workers x threads), best of
several tries before the protocol and again after it; on a GPU, a large float32 matmul on the
device (TF32 off); (2) the floating-point work of the protocol, counted from the layer shapes
(2 FLOPs per multiply-add of the Linear and Conv2d layers; a training step is 3x its forward
pass, for the forward, input-gradient and weight-gradient products; plus every evaluation pass
a round makes: the per-epoch curves, the final errors and the train-mode errors; element-wise
layers not counted); (3) the wall time of `digitcmp reproduce` for the study's three models
(digitcmp's C kernels built, on a first run, and loaded before the clock starts: a one-time
cost per machine, not the protocol's work).

Prints Table III, per model the seconds per round (median; rounds trained together are each
charged an equal share), the GFLOP/s of one worker and its fraction of one worker's matmul
rate, the protocol's TFLOP, seconds and GFLOP/s, and, last, `roofline_ratio=<achieved GFLOP/s /
matmul GFLOP/s of all workers>`. Target (issue 24): roofline_ratio >= 0.5 on the CPU (goal 0.6).
"""

import argparse
import statistics
import tempfile
import time

import torch

from digitcmp.config import DEVICES, Config
from digitcmp.device import resolve_device
from digitcmp.executors import default_workers
from digitcmp.experiment import run_experiment
from digitcmp.models import get_model_class
from digitcmp.models.layers import forward_flops
from digitcmp.tables import write_summary
from digitcmp.train import load_kernels


def matmul_gflops(threads: int, n: int = 2048, tries: int = 5, device: str = "cpu") -> float:
    """Best-of-``tries`` float32 throughput of an n x n matmul, in GFLOP/s."""
    dev = torch.device(device)
    if dev.type == "cpu":
        torch.set_num_threads(threads)
    else:
        n = 8192
        torch.backends.cuda.matmul.allow_tf32 = False
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    a @ b
    best = float("inf")
    for _ in range(tries):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        if dev.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / 4)
    return 2 * n**3 / best / 1e9


def round_pairs(config: Config) -> tuple[int, int]:
    """Pairs one round trains on (over all its epochs) and pairs it evaluates (forward only)."""
    train = config.pairs - config.val_pairs
    curve_pairs = min(config.curve_pairs, config.pairs) + min(config.curve_pairs, config.val_pairs)
    curves = config.epochs * curve_pairs
    # Final errors on train, test and validation pairs; train-mode errors on train and test.
    evaluated = (train + config.pairs + config.val_pairs) + (train + config.pairs) + curves
    return config.epochs * train, evaluated


def round_flops(config: Config, model: str) -> float:
    """The floating-point work of one round of ``model`` under ``config``."""
    trained, evaluated = round_pairs(config)
    return forward_flops(get_model_class(model)()) * (3 * trained + evaluated)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--engine", default="stacked", choices=["stacked", "reference"])
    p.add_argument("--device", default="cpu", choices=DEVICES)
    p.add_argument("--executor", default="process", choices=["serial", "process"])
    p.add_argument("--workers", type=int, default=None, help="(default: one per GPU, else cores / threads)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--data", default="auto")
    p.add_argument("--out", default=None, help="run directory (default: a new temporary one)")
    args = p.parse_args()
    device = resolve_device(args.device)
    config = Config(rounds=args.rounds, epochs=args.epochs, threads=args.threads, data=args.data,
                    engine=args.engine, device=str(device))
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    workers = 1 if args.executor == "serial" else (args.workers or default_workers(args.threads, gpus))
    if device.type == "cpu":
        one = matmul_gflops(args.threads)
        peak = matmul_gflops(workers * args.threads)
    else:
        one = matmul_gflops(1, device=str(device))
        peak = one * max(1, gpus if args.executor == "process" else 1)
        print(f"matmul throughput: {one:.1f} GFLOP/s float32 on {torch.cuda.get_device_name(device)}")

    per_round = {m: round_flops(config, m) for m in config.models}
    flops = sum(per_round.values()) * config.rounds
    out = args.out or tempfile.mkdtemp(prefix="digitcmp-speed-")
    load_kernels(config, device)  # a first run builds them: once per machine, not the protocol's work
    start = time.perf_counter()
    results = run_experiment(config, out, executor=args.executor, workers=args.workers, progress=False)
    seconds = time.perf_counter() - start
    if device.type == "cpu":
        # A shared machine's matmul rate moves from minute to minute: the roofline is the better
        # of a measurement before the protocol and one after it.
        one = max(one, matmul_gflops(args.threads))
        peak = max(peak, matmul_gflops(workers * args.threads))
        print(f"matmul throughput (the better of before and after the run): {one:.1f} GFLOP/s "
              f"({args.threads} thread(s)), {peak:.1f} GFLOP/s ({workers * args.threads} threads)")
    print(write_summary(out, results, config.models))
    print("| model | GFLOP per round | seconds per round (median) | GFLOP/s per worker "
          "| of its matmul rate |")
    print("|---|---:|---:|---:|---:|")
    for m in config.models:
        s = statistics.median(r["seconds"] for r in results if r["model"] == m)
        rate = per_round[m] / s / 1e9
        print(f"| `{m}` | {per_round[m] / 1e9:.1f} | {s:.2f} | {rate:.1f} | {rate / one:.2f} |")
    achieved = flops / seconds / 1e9
    print(f"\nrun directory: {out}")
    print(f"protocol: {flops / 1e12:.2f} TFLOP in {seconds:.1f} s = {achieved:.1f} GFLOP/s "
          f"({args.engine} engine on {device}, {args.executor} executor, {workers} worker(s))")
    print(f"reproduce_seconds={seconds:.1f}")
    print(f"roofline_ratio={achieved / peak:.3f}")


if __name__ == "__main__":
    main()
