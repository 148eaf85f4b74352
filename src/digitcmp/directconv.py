"""2-d convolution forward and backward as direct C kernels (``directconv.c``), for the CPU.

oneDNN's convolutions for feature maps with a few channels (the study's convnets go 16 -> 20)
run at a fraction of the CPU's matmul rate: a 20-channel output is a thin matrix product, and
its backward for the weights is worse. The kernels here keep the images innermost in memory,
so that every multiply-add is a full vector whatever the channel counts, skip the taps that
fall on the zero padding, and keep a tile of outputs in registers (README, Speed). A map in
that layout (``kernels.lanes_of``) is taken as it is, any other is transposed into it; the
output is a lanes view (for a fused layer next, ``fused.py``) or a channels_last map. For
inference, one kernel runs a convolution and the fused BatchNorm + max-pool + ReLU after it
(``conv_bn_pool_relu_eval``).

Used by the stacked engine on a CPU with AVX2 and FMA (AVX-512 where PyTorch uses it), on one
thread, for float32 convolutions with stride 1 and no dilation (``stacked.use_direct_convs``);
elsewhere ``library()`` is None, and the callers use PyTorch's operators. The function is the
same; the float summation order differs.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from . import kernels
from .kernels import lanes_of, lanes_view, named, padded_lanes, ptr

# The vector width and register tiles are compile-time constants of directconv.c.
# -fno-trapping-math: as for fused.c (fused.py), vector selects for the evaluation kernel's pool.
FLAGS = {"AVX512": ("-O3", "-mavx512f", "-mavx2", "-mfma", "-fno-trapping-math", "-DVW=16"),
         "AVX2": ("-O3", "-mavx2", "-mfma", "-fno-trapping-math", "-DVW=8")}


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels for this CPU; None where they cannot run."""
    isa = kernels.vector_isa()
    lib = kernels.load("directconv.c", FLAGS[isa]) if isa else None
    if lib is None:
        return None
    p, i, n = ctypes.c_void_p, ctypes.c_int, ctypes.c_long
    shape = [i] * 11  # Np, H, W, C, OC, KH, KW, ph, pw, Ho, Wo
    lib.conv_forward.argtypes = [p, p, p, p, i, *shape, i]
    lib.conv_backward_input.argtypes = [p, p, p, i, *shape, i]
    lib.conv_backward_weight.argtypes = [p, p, p, p, *shape]
    lib.conv_bn_pool_relu_eval.argtypes = [p, p, p, p, p, p, p, ctypes.c_float, p, i, *shape]
    lib.to_lanes.argtypes = [p, p, i, n, i, i]
    return lib


def supports(x: torch.Tensor) -> bool:
    """Whether the kernels can take feature maps like ``x`` here."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and library() is not None


def to_lanes(x: torch.Tensor, np_: int) -> torch.Tensor:
    """The H x W x C x ``np_`` buffer of N x C x H x W maps: the one ``x`` views if it is such a
    view, else a transposed copy (in one pass from a contiguous or a channels_last map)."""
    buf = lanes_of(x)
    if buf is not None and buf.shape[3] == np_:
        return buf
    n, c, h, w = x.shape
    if x.is_contiguous():  # each image C planes of H x W
        planes, pixels = c, h * w
    else:  # each image one plane of H x W x C
        x = x.contiguous(memory_format=torch.channels_last)
        planes, pixels = 1, h * w * c
    out = x.new_empty(h, w, c, np_)
    library().to_lanes(ptr(x), ptr(out), n, pixels, planes, np_)
    return out


def _geometry(x: torch.Tensor, weight: torch.Tensor, padding: tuple[int, int]) -> tuple[int, ...]:
    """(N, C, H, W, OC, KH, KW, ph, pw, Ho, Wo) of a convolution of ``x`` by ``weight``."""
    n, c, h, w = x.shape
    oc, _, kh, kw = weight.shape
    (ph, pw) = padding
    return n, c, h, w, oc, kh, kw, ph, pw, h + 2 * ph - kh + 1, w + 2 * pw - kw + 1


def _operands(weight: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward kernels' weights (KH x KW x C x OC) and bias (zeros where there is none)."""
    b = bias.contiguous() if bias is not None else weight.new_zeros(weight.shape[0])
    return weight.permute(2, 3, 1, 0).contiguous(), b


def conv_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 padding: tuple[int, int], lanes: bool) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """The forward kernel on ``x`` (N x C x H x W): returns the lanes buffer of ``x`` (kept for
    the backward), the output (an Ho x Wo x OC x Np lanes buffer if ``lanes``, else an N x OC x
    Ho x Wo channels_last map) and the geometry ``conv_backward`` takes."""
    geometry = n, c, h, w, oc, kh, kw, ph, pw, ho, wo = _geometry(x, weight, padding)
    np_ = padded_lanes(n)
    xt = to_lanes(x, np_)
    y = (x.new_empty(ho, wo, oc, np_) if lanes
         else torch.empty(n, oc, ho, wo, memory_format=torch.channels_last))
    wt, b = _operands(weight, bias)
    with named("digitcmp::conv_forward"):
        library().conv_forward(ptr(xt), ptr(wt), ptr(b), ptr(y), n, np_, h, w, c, oc, kh, kw, ph, pw,
                               ho, wo, lanes)
    return xt, y, geometry


def conv_bn_pool_relu_eval(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                           gamma: torch.Tensor, beta: torch.Tensor, running_mean: torch.Tensor,
                           running_var: torch.Tensor, eps: float, padding: tuple[int, int]) -> torch.Tensor:
    """relu(max_pool2d(batch_norm(conv2d(x, weight, bias, padding=padding)), 2)) in evaluation
    (BatchNorm with the running statistics) for one network, as one kernel that never writes
    the convolution's full-size map (past the caches for a first layer's batch of evaluation
    pairs): a lanes view, the same values as the convolution and the layer apart. Not
    differentiable: for inference."""
    n, c, h, w, oc, kh, kw, ph, pw, ho, wo = _geometry(x, weight, padding)
    np_ = padded_lanes(n)
    xt = to_lanes(x, np_)
    out = x.new_empty(ho // 2, wo // 2, oc, np_)
    wt, b = _operands(weight, bias)
    params = [t.detach().contiguous() for t in (gamma, beta, running_mean, running_var)]
    library().conv_bn_pool_relu_eval(ptr(xt), ptr(wt), ptr(b), *map(ptr, params), eps, ptr(out), n, np_,
                                     h, w, c, oc, kh, kw, ph, pw, ho, wo)
    return lanes_view(out, n)


def conv_backward(xt: torch.Tensor, weight: torch.Tensor, gt: torch.Tensor, geometry: tuple,
                  input_grad: bool, lanes_in: bool) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """The backward kernels, from ``conv_forward``'s lanes buffer of the input and geometry and
    the output's gradient as a lanes buffer ``gt``: the input gradient (if ``input_grad``; a
    lanes view if ``lanes_in``, else channels_last), the weight gradient (OC x C x KH x KW) and
    the bias gradient."""
    n, c, h, w, oc, kh, kw, ph, pw, ho, wo = geometry
    np_ = xt.shape[3]
    dx = None
    if input_grad:
        dx = (xt.new_empty(h, w, c, np_) if lanes_in
              else torch.empty(n, c, h, w, memory_format=torch.channels_last))
        wt = weight.permute(2, 3, 0, 1).contiguous()  # KH x KW x OC x C
        with named("digitcmp::conv_backward_input"):
            library().conv_backward_input(ptr(gt), ptr(wt), ptr(dx), n, np_, h, w, c, oc, kh, kw, ph,
                                          pw, ho, wo, lanes_in)
        dx = lanes_view(dx, n) if lanes_in else dx
    dw, db = xt.new_empty(kh, kw, c, oc), xt.new_empty(oc)
    with named("digitcmp::conv_backward_weight"):
        library().conv_backward_weight(ptr(xt), ptr(gt), ptr(dw), ptr(db), np_, h, w, c, oc, kh, kw,
                                       ph, pw, ho, wo)
    return dx, dw.permute(3, 2, 0, 1), db


class DirectConv2d(torch.autograd.Function):
    """F.conv2d(x, weight, bias, padding=padding) with stride 1 and no dilation. ``lanes``: the
    output as a view of a lanes buffer (``kernels.lanes_view``), for a next layer that reads
    them (``fused.py``'s); else channels_last. The input gradient is in the layout of the
    input: lanes if it was a lanes view."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                padding: tuple[int, int], lanes: bool = False) -> torch.Tensor:
        ctx.lanes_in = lanes_of(x) is not None
        xt, y, ctx.geometry = conv_forward(x, weight, bias, padding, lanes)
        ctx.save_for_backward(xt, weight)
        ctx.has_bias = bias is not None
        return lanes_view(y, x.shape[0]) if lanes else y

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        xt, weight = ctx.saved_tensors
        gt = to_lanes(grad_out, xt.shape[3])
        dx, dw, db = conv_backward(xt, weight, gt, ctx.geometry, ctx.needs_input_grad[0], ctx.lanes_in)
        return dx, dw, db if ctx.has_bias else None, None, None
