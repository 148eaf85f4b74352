"""Milliseconds per round per training step, engines side by side: a speed comparison that holds
on a busy machine.

    python benchmarks/step_time.py [--models baseline cnn siamese_aux] [--steps 40] [--threads 1]
        [--against OLD_STACKED.py]

For each model, one training step (100 pairs per round, forward, backward, Adam) of each variant
is run in turn, ``--steps`` times: the reference engine (the plain model and loop), the stacked
engine at the stack size ``digitcmp reproduce`` uses, and, with ``--against``, the stacked engine
of another digitcmp (a ``stacked.py`` file, e.g. ``git show REV:src/digitcmp/stacked.py``), with
the plain Adam that digitcmp 0.1's stacked engine used.
Alternating the variants step by step exposes them to the same machine noise, so their ratio is
meaningful where separate timings are not. Prints the minimum and median per variant and, last,
``stacked_vs_reference=<mean over models of the ratio of minima>`` (below 1: stacked is faster).
"""

import argparse
import importlib.util
import statistics
import time

import torch

from digitcmp.config import Config, aux_weight_for, lr_for
from digitcmp.data.pairs import Pairs, round_data
from digitcmp.models import get_model_class
from digitcmp.seeds import generator
from digitcmp.stacked import stack_models, stack_size
from digitcmp.train import cached_source, init_model, pair_losses


def load_stacked(path: str):
    """A stacked.py from another digitcmp, loaded beside this one."""
    spec = importlib.util.spec_from_file_location("stacked_other", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, "stack_models", None) or module.stack  # digitcmp 0.1 named it stack


def time_steps(variants: dict, cls, aux: float, steps: int) -> dict[str, list[float]]:
    """Seconds per round of one training step of each variant (net, optimiser, batch, slots),
    the variants taking turns step by step."""
    times = {v: [] for v in variants}
    for i in range(steps + 3):
        for v, (net, opt, batch, slots) in variants.items():
            start = time.perf_counter()
            parts = pair_losses(net(batch.input), batch, slots, cls, aux)
            opt.zero_grad(set_to_none=True)
            parts["loss"].sum().backward()
            opt.step()
            if i >= 3:  # the first steps warm up allocators and kernels
                times[v].append((time.perf_counter() - start) / slots)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["baseline", "cnn", "siamese_aux"])
    p.add_argument("--steps", type=int, default=40, help="steps per variant (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="(default: %(default)s)")
    p.add_argument("--against", metavar="STACKED.py", help="another digitcmp's stacked.py to time too")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    config = Config(data="embedded")
    source = cached_source("embedded", None)
    ratios = []
    for name in args.models:
        cls = get_model_class(name)
        rounds = stack_size(cls(), config.batch_size)
        datas = [round_data(source, 0, r, config.pairs) for r in range(rounds)]
        lr = lr_for(config, cls)

        def variant(net, slots, fused, datas=datas, lr=lr):
            opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=config.weight_decay,
                                   fused=fused or None)
            return net.train(), opt, Pairs.cat([d.train[:config.batch_size] for d in datas[:slots]]), slots

        def stacked_with(stack, cls=cls, rounds=rounds):
            return stack([init_model(config, cls, r) for r in range(rounds)],
                         [generator(0, r, "dropout") for r in range(rounds)])

        variants = {"reference": variant(init_model(config, cls, 0), 1, False),
                    f"stacked (R={rounds})": variant(stacked_with(stack_models), rounds, True)}
        if args.against:
            other = load_stacked(args.against)
            variants[f"stacked, {args.against}"] = variant(stacked_with(other), rounds, False)
        times = time_steps(variants, cls, aux_weight_for(config, cls), args.steps)
        for v, ts in times.items():
            print(f"{name:12s} {v:24s} min {1000 * min(ts):6.2f} ms, median "
                  f"{1000 * statistics.median(ts):6.2f} ms per round-step")
        ref, fast = (min(times[v]) for v in list(variants)[:2])
        ratios.append(fast / ref)
        print(f"{name:12s} stacked / reference: {fast / ref:.2f}")
    print(f"stacked_vs_reference={statistics.mean(ratios):.2f}")


if __name__ == "__main__":
    main()
