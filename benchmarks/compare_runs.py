"""Are two runs the same? Compare two run directories record by record, and their checkpoints.

    python benchmarks/compare_runs.py RUN_A RUN_B [--loss-rtol 1e-6]

For every (model, round) in both runs: every field the two records share must be equal, except
``seconds`` (timing) and ``train_loss`` (compared within ``--loss-rtol``: how the per-epoch mean
loss is summed may change its last digits without changing the training). Fields only one record
has (e.g. per-epoch curves added by a newer digitcmp) are listed, not compared. With
``--save-checkpoints`` in both runs, each round's weights must be bitwise equal: the proof that
training itself is unchanged. Last line: ``identical=<rounds that match>/<rounds compared>``.
"""

import argparse
import math
from pathlib import Path

import torch

from digitcmp.rundir import load_run


def close(a, b, rtol: float) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=rtol, abs_tol=rtol)
                                    for x, y in zip(a, b, strict=True))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--loss-rtol", type=float, default=1e-6)
    args = p.parse_args()
    _, _, ra = load_run(args.a)
    _, _, rb = load_run(args.b)
    a = {(r["model"], r["round"]): r for r in ra}
    b = {(r["model"], r["round"]): r for r in rb}
    common = sorted(set(a) & set(b))
    same, only = 0, set()
    for key in common:
        x, y = a[key], b[key]
        only |= set(x) ^ set(y)
        diffs = [k for k in set(x) & set(y) if k not in ("seconds", "train_loss") and x[k] != y[k]]
        if not close(x.get("train_loss", []), y.get("train_loss", []), args.loss_rtol):
            diffs.append("train_loss")
        weights = ""
        ca, cb = (d / "checkpoints" / f"{key[0]}-r{key[1]}.pt" for d in (args.a, args.b))
        if ca.exists() and cb.exists():
            sa, sb = (torch.load(c, weights_only=True)["state_dict"] for c in (ca, cb))
            equal = sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
            weights = ", weights bitwise equal" if equal else ", WEIGHTS DIFFER"
            if not equal:
                diffs.append("weights")
        same += not diffs
        verdict = "same" if not diffs else "differs in " + ", ".join(sorted(diffs))
        print(f"{key[0]} round {key[1]}: {verdict}{weights}")
    print(f"rounds only in {args.a}: {len(set(a) - set(b))}, only in {args.b}: {len(set(b) - set(a))}")
    if only:
        print(f"fields in one run's records only (not compared): {', '.join(sorted(only))}")
    print(f"identical={same}/{len(common)}")


if __name__ == "__main__":
    main()
