"""Where a training step's time goes: torch.profiler's table of operators for one model.

    python benchmarks/profile_step.py [--model cnn] [--engine stacked] [--steps 20] [--rows 20]
        [--threads 1]

Builds the model as ``digitcmp reproduce`` trains it on the CPU (the stacked engine at its stack
size, or the plain model for ``--engine reference``), warms up, then profiles ``--steps``
training steps (forward, loss, backward, Adam) on round 0's first batch and prints the
operators sorted by their own CPU time. Last line: ``ms_per_round_step=<profiled mean>`` (the
profiler adds some overhead; ``step_time.py`` gives clean timings).

Before it, the matmul-like operators (convolutions, matmuls: the work ``speed.py`` counts) as a
share of the step, their GFLOP/s and its fraction of the thread's matmul rate: with everything
else taking no time, a step would reach that fraction of the roofline, so it bounds what
removing the rest can give.
"""

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from digitcmp.adam import Adam
from digitcmp.config import Config, aux_weight_for, lr_for
from digitcmp.data.pairs import Pairs, round_data
from digitcmp.models import get_model_class
from digitcmp.models.layers import forward_flops
from digitcmp.seeds import generator
from digitcmp.stacked import stack_models
from digitcmp.train import cached_source, direct_convs, fuses, init_model, pair_losses, stack_group
from speed import matmul_gflops

# The operators that do the counted arithmetic: oneDNN's convolutions or directconv.py's, the
# im2col and Linear matmuls. Everything else (BatchNorm, pooling, ReLU, copies, the layout
# transposes around the direct convolutions, Adam) is what issue 24 removes.
MATMUL_LIKE = {"aten::mkldnn_convolution", "aten::convolution_backward", "aten::bmm", "aten::baddbmm",
               "aten::mm", "aten::addmm", "aten::matmul", "digitcmp::conv_forward",
               "digitcmp::conv_backward_input", "digitcmp::conv_backward_weight"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cnn", help="(default: %(default)s)")
    p.add_argument("--engine", default="stacked", choices=["stacked", "reference"],
                   help="(default: %(default)s)")
    p.add_argument("--steps", type=int, default=20, help="profiled steps (default: %(default)s)")
    p.add_argument("--rows", type=int, default=20, help="operators shown (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="(default: %(default)s)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    config = Config(data="embedded", threads=args.threads)
    cls = get_model_class(args.model)
    stacked = args.engine == "stacked"
    slots = stack_group(config, torch.device("cpu"), cls()) if stacked else 1
    source = cached_source("embedded", None)
    batch = Pairs.cat([round_data(source, 0, r, config.pairs).train[:config.batch_size]
                       for r in range(slots)])
    models = [init_model(config, cls, r) for r in range(slots)]
    net = (stack_models(models, [generator(0, r, "dropout") for r in range(slots)],
                        fuse=fuses(config, torch.device("cpu")),
                        direct=direct_convs(config, torch.device("cpu"))) if stacked else models[0]).train()
    opt = Adam(net.parameters(), lr=lr_for(config, cls), weight_decay=config.weight_decay,
               fused=stacked or None)  # as train.fit: the fused kernel for the stacked engine
    aux = aux_weight_for(config, cls)

    def step() -> None:
        parts = pair_losses(net(batch.input), batch, slots, cls, aux)
        opt.zero_grad(set_to_none=True)
        parts["loss"].sum().backward()
        opt.step()

    for _ in range(5):  # warm up allocators and kernels
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        seconds = time.perf_counter() - start
    print(f"{args.model}, {args.engine} engine, {slots} round(s) per step, {args.threads} thread(s)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    heavy = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_LIKE)
    # As speed.py counts it: a training step is 3 forward passes' worth of matmul work.
    flops = 3 * forward_flops(cls()) * config.batch_size * slots * args.steps
    peak = matmul_gflops(args.threads)
    heavy_rate, step_rate = flops / (heavy * 1e3), flops / (total * 1e3)  # profiler times are in us
    print(f"matmul-like operators: {heavy / total:.0%} of the operators' time, {heavy_rate:.1f} GFLOP/s "
          f"= {heavy_rate / peak:.2f} of the {peak:.0f} GFLOP/s matmul; the whole step {step_rate:.1f} "
          f"GFLOP/s = {step_rate / peak:.2f}")
    print(f"ms_per_round_step={1000 * seconds / args.steps / slots:.2f}")


if __name__ == "__main__":
    main()
