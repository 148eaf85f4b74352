"""The best roofline_ratio the protocol's layers allow with this machine's kernels.

    python benchmarks/kernel_ceiling.py [--models baseline cnn siamese_aux] [--tries 15]

speed.py measures the protocol against a large square matmul. A layer of a 100-pair batch is a
much smaller product, and often a thin one (a convolution with 20 output channels is an
M x K by K x 20 product), which neither BLAS nor oneDNN runs at the square matmul's speed. For
each Conv2d and Linear of a model, with the shapes it has in a training step (a batch of 100
pairs, as ``digitcmp reproduce`` trains), this times on one thread the three products of a step
(forward, input gradient, weight gradient) in each of these ways, and keeps the fastest of each:

- as matrix products from ready-made operands (BLAS): the forward M x K by K x N (for a
  convolution M = images x output pixels, K = input channels x kernel area, N = output
  channels; for a Linear M = rows, K = inputs, N = outputs), the input gradient M x N by N x K,
  the weight gradient K x M by M x N; no im2col and no col2im, so faster than any
  im2col-based convolution can be;
- for a convolution, oneDNN's convolution forward and its backward for the input and for the
  weights (and bias), on channels_last maps;
- for a convolution of stride 1, ``directconv.py``'s kernels for the same three, on maps in
  their lanes layout (as the stacked engine hands them over on one thread; where they run).

Their sum is the least time a training step could take if it were nothing but its products,
each done by the fastest of these kernels, with BatchNorm, pooling, ReLU, dropout, copies, the
loss, Adam and Python taking no time at all. An evaluation pass is its forward products alone
(same batch size).

Prints per model the GFLOP/s of a training step's products (BLAS alone, and the fastest of each)
and the fraction of a square matmul on the same thread; per convolution, the times of oneDNN's
kernels and of the direct ones; then, with speed.py's count of the
protocol's work, last ``kernel_ceiling=<fraction>``: the roofline_ratio the full protocol would
reach at that speed (per thread; speed.py divides two workers' work by a two-thread matmul).
"""

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from digitcmp import directconv
from digitcmp.config import STUDY_MODELS, Config
from digitcmp.kernels import padded_lanes, ptr
from digitcmp.models import get_model_class
from speed import matmul_gflops, round_flops, round_pairs


def layer_shapes(model: nn.Module, batch: int) -> list[tuple[nn.Module, torch.Size, torch.Size]]:
    """Each Conv2d and Linear of ``model`` with the shapes of its input and output, in order, for
    a batch of ``batch`` pairs."""
    layers = []

    def record(m, inputs, out):
        layers.append((m, inputs[0].shape, out.shape))

    hooks = [m.register_forward_hook(record) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(batch, 2, 14, 14))
    finally:
        for h in hooks:
            h.remove()
    return layers


def best_seconds(f, tries: int) -> float:
    """The least time of one call of ``f`` over ``tries`` timed calls, after one untimed."""
    f()
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - start)
    return best


def gemm_seconds(m: int, k: int, n: int, tries: int) -> list[float]:
    """Seconds of the forward, input-gradient and weight-gradient products of an (m, k, n) layer."""
    x, w, g = torch.randn(m, k), torch.randn(k, n), torch.randn(m, n)
    return [best_seconds(f, tries) for f in (lambda: x @ w, lambda: g @ w.t(), lambda: x.t() @ g)]


def conv_seconds(conv: nn.Conv2d, shape: torch.Size, tries: int) -> list[float]:
    """Seconds of oneDNN's forward, input-gradient and weight(-and-bias)-gradient kernels for
    ``conv`` on an input of ``shape``, channels_last."""
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    w = conv.weight.detach().contiguous(memory_format=torch.channels_last)
    b = conv.bias.detach() if conv.bias is not None else None
    args = (conv.stride, conv.padding, conv.dilation, conv.groups)
    g = F.conv2d(x, w, b, *args).contiguous(memory_format=torch.channels_last)
    bias_sizes = list(b.shape) if b is not None else None

    def backward(mask):
        return lambda: torch.ops.aten.convolution_backward(g, x, w, bias_sizes, list(conv.stride),
                                                           list(conv.padding), list(conv.dilation),
                                                           False, [0, 0], conv.groups, mask)

    return [best_seconds(lambda: F.conv2d(x, w, b, *args), tries),
            best_seconds(backward([True, False, False]), tries),
            best_seconds(backward([False, True, b is not None]), tries)]


def direct_seconds(conv: nn.Conv2d, shape: torch.Size, tries: int) -> list[float] | None:
    """Seconds of directconv.py's forward, input-gradient and weight-and-bias-gradient kernels
    for ``conv`` on an input of ``shape``, on maps already in their lanes layout (as the stacked
    engine hands them over); None where they do not run."""
    lib = directconv.library()
    if lib is None or conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1:
        return None
    n, c, h, w = shape
    oc, _, kh, kw = conv.weight.shape
    (ph, pw), ho, wo = conv.padding, h + 2 * conv.padding[0] - kh + 1, w + 2 * conv.padding[1] - kw + 1
    np_ = padded_lanes(n)
    x = directconv.to_lanes(torch.randn(shape), np_)
    g = directconv.to_lanes(torch.randn(n, oc, ho, wo), np_)
    wt, wT = torch.randn(kh, kw, c, oc), torch.randn(kh, kw, oc, c)
    b, y, dx = torch.randn(oc), torch.empty(ho, wo, oc, np_), torch.empty(h, w, c, np_)
    dw, db = torch.empty(kh, kw, c, oc), torch.empty(oc)
    geometry = (np_, h, w, c, oc, kh, kw, ph, pw, ho, wo)
    calls = (lambda: lib.conv_forward(ptr(x), ptr(wt), ptr(b), ptr(y), n, *geometry, 1),
             lambda: lib.conv_backward_input(ptr(g), ptr(wT), ptr(dx), n, *geometry, 1),
             lambda: lib.conv_backward_weight(ptr(x), ptr(g), ptr(dw), ptr(db), *geometry))
    return [best_seconds(f, tries) for f in calls]


def milliseconds(times: list[float] | None) -> str:
    return " / ".join(f"{1000 * t:.2f}" for t in times) if times else "(do not run here)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(STUDY_MODELS), help="(default: %(default)s)")
    p.add_argument("--tries", type=int, default=15, help="timed calls per kernel (default: %(default)s)")
    args = p.parse_args()
    torch.set_num_threads(1)
    config = Config(models=args.models)
    batch = config.batch_size
    trained, evaluated = round_pairs(config)
    peak = matmul_gflops(1)
    print(f"matmul throughput: {peak:.1f} GFLOP/s (1 thread, 2048 x 2048)")
    print("| model | products, forward (M x K x N) | step GFLOP/s, BLAS | step GFLOP/s, fastest kernel "
          "| of the square matmul |")
    print("|---|---|---:|---:|---:|")
    work = seconds = 0.0
    convs = []
    for name in args.models:
        shapes, gemm, best = [], [], []
        for layer, shape, out in layer_shapes(get_model_class(name)(), batch):
            if isinstance(layer, nn.Linear):
                m, k, n = shape.numel() // layer.in_features, layer.in_features, layer.out_features
            else:  # a grouped convolution as one product of the same size
                m, n = out.numel() // layer.out_channels, layer.out_channels
                k = layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
            shapes.append((m, k, n))
            g = gemm_seconds(m, k, n, args.tries)
            gemm.append(g)
            fastest = g
            if isinstance(layer, nn.Conv2d):
                onednn = conv_seconds(layer, shape, args.tries)
                direct = direct_seconds(layer, shape, args.tries)
                convs.append((name, len(shapes), onednn, direct))
                fastest = [min(t) for t in zip(g, onednn, direct or onednn, strict=True)]
            best.append(fastest)
        step_flops = 3 * sum(2 * m * k * n for m, k, n in shapes)
        blas, fast = (step_flops / sum(map(sum, t)) / 1e9 for t in (gemm, best))
        print(f"| `{name}` | {', '.join(f'{m}x{k}x{n}' for m, k, n in shapes)} | {blas:.1f} | {fast:.1f} "
              f"| {fast / peak:.2f} |")
        work += round_flops(config, name)
        seconds += (trained * sum(map(sum, best)) + evaluated * sum(t[0] for t in best)) / batch
    print("\n| convolution (model, layer) | oneDNN: forward, input grad, weight grad (ms) "
          "| directconv.py: the same |")
    print("|---|---:|---:|")
    for name, i, onednn, direct in convs:
        print(f"| `{name}` {i} | {milliseconds(onednn)} | {milliseconds(direct)} |")
    achieved = work / seconds / 1e9
    print(f"\nprotocol (a round of each model, one thread): {work / 1e9:.0f} GFLOP in at least "
          f"{seconds:.2f} s with the fastest kernels = {achieved:.1f} GFLOP/s")
    print(f"kernel_ceiling={achieved / peak:.3f}")


if __name__ == "__main__":
    main()
