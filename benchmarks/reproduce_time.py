"""Wall-clock time of the full study protocol (3 models x 15 rounds x 25 epochs).

    python benchmarks/reproduce_time.py [--rounds 15] [--executor process] [--out DIR]

Prints Table III, per-model median seconds per round, and last `reproduce_seconds=<s>`.
Target (issue 2): under 600 s on a 2-core machine. The run directory is kept (default: a fresh
temporary directory), so its numbers can be inspected or reported afterwards.
"""

import argparse
import statistics
import tempfile
import time

from digitcmp.experiment import run_experiment
from digitcmp.report import write_summary
from digitcmp.train import Config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--executor", default="process", choices=["serial", "process"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", default="auto")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="digitcmp-bench-")
    config = Config(rounds=args.rounds, epochs=args.epochs, threads=args.threads, data=args.data)
    start = time.perf_counter()
    results = run_experiment(config, out, executor=args.executor, progress=False)
    seconds = time.perf_counter() - start
    print(write_summary(out, results, config.models))
    for m in config.models:
        per_round = [r["seconds"] for r in results if r["model"] == m]
        print(f"{m}: median {statistics.median(per_round):.1f} s per round ({len(per_round)} rounds)")
    print(f"run directory: {out}")
    print(f"reproduce_seconds={seconds:.1f}")


if __name__ == "__main__":
    main()
