"""Milliseconds per round per training step, engines side by side: a speed comparison that holds
on a busy machine.

    python benchmarks/step_time.py [--models baseline cnn siamese_aux] [--steps 40] [--threads 1]
        [--against OLD_STACKED.py [--against-fused] [--against-kernels]] [--compile] [--device cpu]
        [--rounds R]

For each model, one training step (100 pairs per round, forward, backward, Adam) of each variant
is run in turn, ``--steps`` times: the reference engine (the plain model and loop), the stacked
engine at the stack size and with the C kernels ``digitcmp reproduce`` uses at ``--threads``
(``fused.py``'s BatchNorm + max-pool + ReLU, ``directconv.py``'s convolutions), where it uses
them also without the direct convolutions and without either, where the direct convolutions are
not used at that thread count also with them, and, with ``--against``,
the stacked engine of another digitcmp (a ``stacked.py`` file, e.g. ``git show
REV:src/digitcmp/stacked.py``), with the plain Adam that digitcmp 0.1's stacked engine used
(``--against-fused``: the fused one, as later versions; ``--against-kernels``: with this
version's C kernels where it runs them, for a version whose ``stack_models`` takes the same
options: then the two differ only in their own code), and, with ``--compile``, the stacked
engine through ``torch.compile`` (its compilation happens in untimed warm-up steps). On a GPU
(``--device cuda``) the stacked engine stacks ``--rounds`` rounds (default 15, as ``reproduce``
does there), both folded into grouped convolutions (what digitcmp uses on a GPU) and slot by slot.
Alternating the variants step by step exposes them to the same machine noise, so their ratio is
meaningful where separate timings are not. Prints the minimum and median per variant and, last,
``stacked_vs_reference=<mean over models of the ratio of minima>`` (below 1: stacked is faster).
"""

import argparse
import importlib.util
import statistics
import time

import torch

from digitcmp import directconv
from digitcmp.adam import Adam
from digitcmp.config import Config, aux_weight_for, lr_for
from digitcmp.data.pairs import Pairs, round_data
from digitcmp.device import resolve_device
from digitcmp.models import get_model_class
from digitcmp.seeds import generator
from digitcmp.stacked import has_direct_convs, has_fused_layers, stack_models
from digitcmp.train import cached_source, direct_convs, fuses, init_model, pair_losses, stack_group


def load_stacked(path: str):
    """A stacked.py from another digitcmp, loaded beside this one."""
    # Inside the digitcmp package, so that its relative imports resolve against this digitcmp.
    spec = importlib.util.spec_from_file_location("digitcmp._stacked_other", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, "stack_models", None) or module.stack  # digitcmp 0.1 named it stack


def time_steps(variants: dict, cls, aux: float, steps: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per round of one training step of each variant (net, optimiser, batch, slots),
    the variants taking turns step by step."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = {v: [] for v in variants}
    for i in range(steps + 3):
        for v, (net, opt, batch, slots) in variants.items():
            sync()
            start = time.perf_counter()
            parts = pair_losses(net(batch.input), batch, slots, cls, aux)
            opt.zero_grad(set_to_none=True)
            parts["loss"].sum().backward()
            opt.step()
            sync()
            if i >= 3:  # the first steps warm up allocators and kernels
                times[v].append((time.perf_counter() - start) / slots)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["baseline", "cnn", "siamese_aux"])
    p.add_argument("--steps", type=int, default=40, help="steps per variant (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="(default: %(default)s)")
    p.add_argument("--against", metavar="STACKED.py", help="another digitcmp's stacked.py to time too")
    p.add_argument("--against-fused", action="store_true",
                   help="step --against's engine with the fused Adam too (a version that used it)")
    p.add_argument("--against-kernels", action="store_true",
                   help="build --against's engine with this one's C kernels (a version that took them)")
    p.add_argument("--compile", action="store_true", help="also time the stacked engine under torch.compile")
    p.add_argument("--device", default="cpu", help="(default: %(default)s)")
    p.add_argument("--rounds", type=int, default=15, help="rounds stacked on a GPU (default: %(default)s)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    config = Config(data="embedded", threads=args.threads)
    source = cached_source("embedded", None)
    ratios = []
    for name in args.models:
        cls = get_model_class(name)
        rounds = args.rounds if gpu else stack_group(config, device, cls())
        datas = [round_data(source, 0, r, config.pairs) for r in range(rounds)]
        lr = lr_for(config, cls)

        def variant(net, slots, fused, datas=datas, lr=lr):
            net = net.to(device)
            opt = Adam(net.parameters(), lr=lr, weight_decay=config.weight_decay, fused=fused or None)
            batch = Pairs.cat([d.train[:config.batch_size] for d in datas[:slots]]).to(device)
            return net.train(), opt, batch, slots

        def stacked_with(stack, cls=cls, rounds=rounds, **options):
            return stack([init_model(config, cls, r) for r in range(rounds)],
                         [generator(0, r, "dropout", device) for r in range(rounds)], **options)

        kernels = {"fuse": fuses(config, device), "direct": direct_convs(config, device)}
        variants = {"reference": variant(init_model(config, cls, 0), 1, False),
                    f"stacked (R={rounds})": variant(stacked_with(stack_models, folded=gpu, **kernels),
                                                     rounds, True)}
        net = variants[f"stacked (R={rounds})"][0]
        if has_direct_convs(net):
            variants[f"stacked (R={rounds}), no direct conv"] = variant(
                stacked_with(stack_models, fuse=kernels["fuse"]), rounds, True)
        elif not gpu and directconv.library() is not None:  # e.g. --threads 2: what it would give
            with_direct = variant(stacked_with(stack_models, fuse=kernels["fuse"], direct=True), rounds, True)
            if has_direct_convs(with_direct[0]):
                variants[f"stacked (R={rounds}), with direct conv"] = with_direct
        if has_fused_layers(net) or has_direct_convs(net):
            variants[f"stacked (R={rounds}), no C kernels"] = variant(stacked_with(stack_models),
                                                                      rounds, True)
        if gpu:
            variants[f"stacked (R={rounds}, slot by slot)"] = variant(stacked_with(stack_models), rounds,
                                                                      True)
        if args.compile:
            net, opt, batch, slots = variant(stacked_with(stack_models, folded=gpu, **kernels),
                                             rounds, True)
            variants[f"stacked (R={rounds}), torch.compile"] = (torch.compile(net), opt, batch, slots)
        if args.against:
            other = load_stacked(args.against)
            options = kernels if args.against_kernels else {}
            variants[f"stacked, {args.against}"] = variant(stacked_with(other, **options), rounds,
                                                           args.against_fused)
        times = time_steps(variants, cls, aux_weight_for(config, cls), args.steps, device)
        for v, ts in times.items():
            print(f"{name:12s} {v:34s} min {1000 * min(ts):6.2f} ms, median "
                  f"{1000 * statistics.median(ts):6.2f} ms per round-step")
        ref, fast = (min(times[v]) for v in list(variants)[:2])
        ratios.append(fast / ref)
        print(f"{name:12s} stacked / reference: {fast / ref:.2f}")
    print(f"stacked_vs_reference={statistics.mean(ratios):.2f}")


if __name__ == "__main__":
    main()
