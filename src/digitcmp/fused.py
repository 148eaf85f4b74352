"""BatchNorm + 2 x 2 max-pool + ReLU of feature maps in one C kernel, for training (in inference,
after a direct convolution, ``directconv.conv_bn_pool_relu_eval`` runs the pair); beside it,
two small kernels of the stacked engine's other layers: the MLP's pair max-pool and the
dropout masks.

PyTorch runs these three as separate passes over the full-size map: forward, BatchNorm's
statistics, its normalisation, the pool (with int64 indices) and the ReLU; backward, the ReLU,
a zero-fill and a scatter for the pool and two more passes for BatchNorm: a large share of a
convnet's training step (README, Speed). The kernel (``fused.c``) reads the map three times
forward and writes only quarter-size results, and reads it once and writes its gradient once
backward. It computes the same function; float summation order differs from PyTorch's, and so
do the last digits of what trains with it. Maps come channels_last, or, after a direct
convolution (``directconv.py``), in its lanes layout, which the kernel then keeps.

The C source is compiled on first use (``kernels.py``). It is used only on x86-64 CPUs with
AVX2 and FMA: the flags target them, and compiled without them its loops were slower than
PyTorch's operators. Where that or the compiler is missing, ``library()`` is None and the
callers use PyTorch's operators.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from . import directconv, kernels
from .directconv import to_lanes
from .kernels import lanes_of, lanes_view, named, padded_lanes, ptr

# -fno-trapping-math lets the compiler turn the kernel's ternaries into vector selects; it
# changes no result (it only assumes that nobody reads the floating-point exception flags).
FLAGS = ("-O3", "-mavx2", "-mfma", "-fno-trapping-math")
MAX_CHANNELS = 1024  # MAXC in fused.c


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernel; None where it cannot run (not an x86-64 CPU with AVX2, no C
    compiler, a failed build)."""
    lib = kernels.load("fused.c", FLAGS) if kernels.vector_isa() else None
    if lib is None:
        return None
    p, i, f = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
    lib.bn_pool_relu_forward.argtypes = [p, i, i, i, i, i, p, p, f, p, p, p, p, p]
    lib.bn_pool_relu_backward.argtypes = [p, p, p, p, p, i, i, i, i, i, p, p, p, f, p, p, p]
    lib.bn_pool_relu_forward_lanes.argtypes = [p, i, i, i, i, i, p, p, f, p, p, p, p, p]
    lib.bn_pool_relu_backward_lanes.argtypes = [p, p, p, p, p, i, i, i, i, i, p, p, p, f, p, p, p]
    lib.pair_max_forward.argtypes = [p, ctypes.c_long, p, p]
    lib.pair_max_backward.argtypes = [p, p, ctypes.c_long, p]
    lib.dropout_masks.argtypes = [p, i, ctypes.c_long, ctypes.c_long, p]
    return lib


def fits(channels: int, h: int, w: int) -> bool:
    """Whether the kernel takes maps of this many channels and this size (maps too small for a
    2 x 2 window go to PyTorch's operators, which refuse them with their own message)."""
    return channels <= MAX_CHANNELS and min(h, w) >= 2


def supports(x: torch.Tensor) -> bool:
    """Whether the kernel can take feature maps like ``x`` here."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
            and fits(*x.shape[1:]) and library() is not None)


def _forward_lanes(y: torch.Tensor, n: int, weight: torch.Tensor, bias: torch.Tensor,
                   eps: float) -> tuple[torch.Tensor, ...]:
    """The training kernel on the lanes buffer ``y`` (H x W x C x Np, ``n`` images): the output,
    the window winners, the normalised winners (Ho x Wo x C x Np lanes buffers), batch mean and
    biased variance."""
    h, w, c, np_ = y.shape
    out = y.new_empty(h // 2, w // 2, c, np_)
    which, xhat = torch.empty_like(out), torch.empty_like(out)
    mean = torch.empty(c, dtype=torch.float64)
    var = torch.empty_like(mean)
    with named("digitcmp::bn_pool_relu_forward"):
        library().bn_pool_relu_forward_lanes(ptr(y), n, np_, h, w, c, ptr(weight), ptr(bias), eps,
                                             ptr(mean), ptr(var), ptr(out), ptr(which), ptr(xhat))
    return out, which, xhat, mean, var


def _backward_lanes(y: torch.Tensor, g: torch.Tensor, out: torch.Tensor, which: torch.Tensor,
                    xhat: torch.Tensor, n: int, weight: torch.Tensor, mean: torch.Tensor,
                    var: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The backward kernel from ``_forward_lanes``'s tensors and the output's gradient ``g`` (a
    lanes buffer): the gradient of ``y`` (a lanes buffer), of the weight and of the bias."""
    h, w, c, np_ = y.shape
    dy = torch.empty_like(y)
    dweight, dbias = torch.empty_like(weight), torch.empty_like(weight)
    with named("digitcmp::bn_pool_relu_backward"):
        library().bn_pool_relu_backward_lanes(ptr(y), ptr(g), ptr(out), ptr(which), ptr(xhat), n, np_,
                                              h, w, c, ptr(weight), ptr(mean), ptr(var), eps, ptr(dy),
                                              ptr(dweight), ptr(dbias))
    return dy, dweight, dbias


class BNPoolReLU(torch.autograd.Function):
    """relu(max_pool2d(batch_norm(x), 2)) in training mode, for ``rounds`` stacked networks
    (rows r*N .. r*N+N-1 of x are round r's); also returns each (round, channel)'s batch mean
    and biased variance, in double precision, for the running statistics. ``lanes`` (one
    network): in the lanes layout of ``directconv.py`` (``x`` copied into it unless it is a
    lanes view already), the output and the input gradient lanes views too."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, rounds: int,
                eps: float, lanes: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        weight, bias = weight.contiguous(), bias.contiguous()
        ctx.rounds, ctx.eps, ctx.lanes, ctx.shape = rounds, eps, lanes, (b, c, h, w)
        if lanes:
            x = to_lanes(x, padded_lanes(b))
            out, which, xhat, mean, var = _forward_lanes(x, b, weight, bias, eps)
            ctx.save_for_backward(x, out, which, xhat, weight, mean, var)
            ctx.mark_non_differentiable(mean, var)
            return lanes_view(out, b), mean, var
        x = x.contiguous(memory_format=torch.channels_last)
        out = torch.empty(b, c, h // 2, w // 2, memory_format=torch.channels_last)
        which, xhat = torch.empty_like(out), torch.empty_like(out)
        mean = torch.empty(rounds * c, dtype=torch.float64)
        var = torch.empty_like(mean)
        with named("digitcmp::bn_pool_relu_forward"):
            library().bn_pool_relu_forward(ptr(x), rounds, b // rounds, h, w, c, ptr(weight),
                                           ptr(bias), eps, ptr(mean), ptr(var), ptr(out),
                                           ptr(which), ptr(xhat))
        ctx.save_for_backward(x, out, which, xhat, weight, mean, var)
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor, _mean, _var):
        x, out, which, xhat, weight, mean, var = ctx.saved_tensors
        b, c, h, w = ctx.shape
        if ctx.lanes:
            g = to_lanes(grad_out, out.shape[3])
            dx, dweight, dbias = _backward_lanes(x, g, out, which, xhat, b, weight, mean, var, ctx.eps)
            return lanes_view(dx, b), dweight, dbias, None, None, None
        dweight, dbias = torch.empty_like(weight), torch.empty_like(weight)
        dx = torch.empty_like(x)
        grad_out = grad_out.contiguous(memory_format=torch.channels_last)
        with named("digitcmp::bn_pool_relu_backward"):
            library().bn_pool_relu_backward(ptr(x), ptr(grad_out), ptr(out), ptr(which),
                                            ptr(xhat), ctx.rounds, b // ctx.rounds, h, w, c,
                                            ptr(weight), ptr(mean), ptr(var), ctx.eps, ptr(dx),
                                            ptr(dweight), ptr(dbias))
        return dx, dweight, dbias, None, None, None


class ConvBNPoolReLU(torch.autograd.Function):
    """relu(max_pool2d(batch_norm(conv2d(x, conv_weight, conv_bias, padding)), 2)) in training
    mode for one network: ``directconv.py``'s convolution and this module's kernel as one
    autograd function, the map between them a lanes buffer no other operator sees: one autograd
    node and no views between them, where two functions cost a step more. Returns what
    ``BNPoolReLU`` does (the output a lanes view); the input gradient is in the layout of ``x``
    (lanes if it was a lanes view). The same kernels in the same order: the same numbers."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, conv_weight: torch.Tensor, conv_bias: torch.Tensor | None,
                weight: torch.Tensor, bias: torch.Tensor, padding: tuple[int, int],
                eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        ctx.lanes_in = lanes_of(x) is not None
        xt, y, ctx.geometry = directconv.conv_forward(x, conv_weight, conv_bias, padding, lanes=True)
        weight, bias = weight.contiguous(), bias.contiguous()
        out, which, xhat, mean, var = _forward_lanes(y, n, weight, bias, eps)
        ctx.save_for_backward(xt, conv_weight, y, out, which, xhat, weight, mean, var)
        ctx.eps, ctx.has_bias = eps, conv_bias is not None
        ctx.mark_non_differentiable(mean, var)
        return lanes_view(out, n), mean, var

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor, _mean, _var):
        xt, conv_weight, y, out, which, xhat, weight, mean, var = ctx.saved_tensors
        g = to_lanes(grad_out, out.shape[3])
        dy, dweight, dbias = _backward_lanes(y, g, out, which, xhat, ctx.geometry[0], weight, mean,
                                             var, ctx.eps)
        dx, dw, db = directconv.conv_backward(xt, conv_weight, dy, ctx.geometry,
                                              ctx.needs_input_grad[0], ctx.lanes_in)
        return dx, dw, db if ctx.has_bias else None, dweight, dbias, None, None


def pairs_supported(x: torch.Tensor) -> bool:
    """Whether ``PairMax`` takes ``x``: float32 on the CPU, an even last dimension, a kernel."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() >= 1
            and x.shape[-1] % 2 == 0 and library() is not None)


class PairMax(torch.autograd.Function):
    """max_pool1d(x, 2) along the last dimension of ``x`` (the maximum of each pair of
    neighbours, the first where they tie), by ``fused.c``'s pair kernels: the same values and
    gradients as PyTorch's max-pool, which, given the MLP's N x 1 x L maps, runs a value at a
    time (README, Speed)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        out = x.new_empty(*x.shape[:-1], x.shape[-1] // 2)
        which = torch.empty(out.shape, dtype=torch.uint8)
        library().pair_max_forward(ptr(x), out.numel(), ptr(out), ptr(which))
        ctx.save_for_backward(which)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> torch.Tensor:
        (which,) = ctx.saved_tensors
        g = grad_out.contiguous()
        dx = g.new_empty(*g.shape[:-1], 2 * g.shape[-1])
        library().pair_max_backward(ptr(g), ptr(which), g.numel(), ptr(dx))
        return dx


def masks_supported(keep: torch.Tensor, rounds: int) -> bool:
    """Whether ``dropout_masks`` fills ``keep``: float32 on the CPU, contiguous, rows that split
    evenly into ``rounds``, a kernel."""
    return (keep.device.type == "cpu" and keep.dtype == torch.float32 and keep.is_contiguous()
            and keep.dim() >= 1 and keep.shape[0] % rounds == 0 and library() is not None)


def dropout_masks(keep: torch.Tensor, generators: list[torch.Generator]) -> None:
    """Fill ``keep`` with dropout masks for p = 0.5 scaled by 2 (kept values x 2, dropped 0):
    its rows split into one equal chunk per generator, chunk r from ``generators[r]``'s draws,
    the values of ``stacked.random_bits(chunk shape, generators[r]) / 0.5`` (tested), in one
    pass instead of half a dozen tensor operations per round (a few per cent of a step:
    README, Speed)."""
    rounds, n = len(generators), keep.numel() // len(generators)
    words = torch.empty(rounds, (n + 62) // 63, dtype=torch.int64)
    for row, g in zip(words, generators, strict=True):
        row.random_(generator=g)  # the draws random_bits makes: the same generator state after
    library().dropout_masks(ptr(words), rounds, n, words.shape[1], ptr(keep))
