"""The fused BatchNorm + max-pool + ReLU kernel against PyTorch's three operators."""

import ctypes

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import TINY
from digitcmp import directconv, fused
from digitcmp.config import Config
from digitcmp.kernels import lanes_of, lanes_view, padded_lanes
from digitcmp.stacked import StackedBatchNorm, fuse_pool_relu
from digitcmp.train import fuses, train_rounds


@pytest.fixture
def kernel() -> ctypes.CDLL:
    lib = fused.library()
    if lib is None:
        pytest.skip("no fused kernel on this machine (not an x86-64 CPU with AVX2, or no C compiler)")
    return lib


def _layers(rounds: int, channels: int) -> list[nn.BatchNorm2d]:
    """BatchNorm layers with varied weights: positive, negative and zero scales."""
    layers = []
    for _ in range(rounds):
        bn = nn.BatchNorm2d(channels)
        with torch.no_grad():
            bn.weight.copy_(torch.randn(channels))
            bn.weight[0] = 0.0
            bn.bias.copy_(torch.randn(channels))
            bn.running_mean.copy_(torch.randn(channels))
        layers.append(bn)
    return layers


@pytest.mark.parametrize("rounds, n, c, h, w", [(1, 20, 16, 16, 16), (3, 6, 20, 10, 10),
                                                (2, 5, 3, 7, 5), (1, 2, 1, 2, 2), (1, 17, 4, 5, 6)])
@pytest.mark.parametrize("lanes", [False, True])
def test_the_kernel_computes_batchnorm_pool_and_relu(kernel, rounds, n, c, h, w, lanes):
    """Output, input and weight gradients and running statistics as PyTorch's operators give
    them, round by round (odd sizes leave a row or column in no window); ``lanes``: the kernel
    for maps in directconv.py's lanes layout, given a lanes view where there is one round."""
    if lanes and directconv.library() is None:
        pytest.skip("no direct convolution kernels here, hence no lanes layout")
    torch.manual_seed(0)
    layers = _layers(rounds, c)
    x = (3 * torch.randn(rounds * n, c, h, w) + 1).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(rounds * n, c, h // 2, w // 2)
    seq = nn.Sequential(StackedBatchNorm(layers), nn.MaxPool2d(2), nn.ReLU())
    fuse_pool_relu(seq)
    seq[0].lanes = lanes
    assert seq[0].pool_relu and isinstance(seq[1], nn.Identity) and isinstance(seq[2], nn.Identity)

    xs = x.clone()
    if lanes and rounds == 1:
        xs = lanes_view(directconv.to_lanes(xs, padded_lanes(n)), n)
    xs.requires_grad_()
    got = seq(xs)
    assert (lanes_of(got) is not None) is (lanes and rounds == 1)
    got.backward(grad)
    xr = x.clone().requires_grad_()
    want = torch.cat([F.relu(F.max_pool2d(bn(part), 2)) for bn, part in zip(layers, xr.chunk(rounds),
                                                                               strict=True)])
    want.backward(grad)

    def close(a, b):
        return torch.allclose(a, b, rtol=1e-4, atol=1e-5)

    assert close(got, want)
    assert close(xs.grad, xr.grad)
    stacked = seq[0]
    for r, bn in enumerate(layers):
        assert close(stacked.weight.grad[r], bn.weight.grad)
        assert close(stacked.bias.grad[r], bn.bias.grad)
        assert close(stacked.running_mean.view(rounds, c)[r], bn.running_mean)
        assert close(stacked.running_var.view(rounds, c)[r], bn.running_var)
    assert stacked.num_batches_tracked.item() == 1
    # In evaluation the layer is still BatchNorm (running statistics) + pool + ReLU: alone, by
    # PyTorch's operators (after a lanes convolution the two run as directconv.py's evaluation
    # kernel: tests/test_directconv.py).
    stacked.eval()
    with torch.no_grad():
        got = seq(x)
        assert close(got, torch.cat([F.relu(F.max_pool2d(bn.eval()(part), 2))
                                     for bn, part in zip(layers, x.chunk(rounds), strict=True)]))


def test_without_the_kernel_the_fused_layer_uses_pytorchs_operators(monkeypatch):
    monkeypatch.setattr(fused, "library", lambda: None)
    torch.manual_seed(0)
    layers = _layers(2, 4)
    x = torch.randn(10, 4, 6, 6).contiguous(memory_format=torch.channels_last)
    seq = nn.Sequential(StackedBatchNorm(layers), nn.MaxPool2d(2), nn.ReLU())
    fuse_pool_relu(seq)
    want = torch.cat([F.relu(F.max_pool2d(bn(part), 2)) for bn, part in zip(layers, x.chunk(2), strict=True)])
    assert torch.equal(seq(x), want.detach())


def test_a_map_too_small_to_pool_is_refused_as_pytorch_refuses_it(kernel):
    seq = nn.Sequential(StackedBatchNorm([nn.BatchNorm2d(3)]), nn.MaxPool2d(2), nn.ReLU())
    fuse_pool_relu(seq)
    with pytest.raises(RuntimeError):
        seq(torch.randn(4, 3, 1, 5).contiguous(memory_format=torch.channels_last))


def test_only_a_plain_two_by_two_pool_is_fused():
    for pool in (nn.MaxPool2d(3), nn.MaxPool2d(2, stride=1), nn.MaxPool2d(2, ceil_mode=True)):
        seq = nn.Sequential(StackedBatchNorm([nn.BatchNorm2d(3)]), pool, nn.ReLU())
        fuse_pool_relu(seq)
        assert not seq[0].pool_relu and seq[1] is pool


@pytest.mark.parametrize("available", [True, False])
def test_a_round_records_whether_the_kernel_ran(kernel, monkeypatch, available):
    if not available:
        monkeypatch.setattr(fused, "library", lambda: None)
    cfg = Config(**TINY, models=["cnn"])
    [trained] = train_rounds(cfg, "cnn", [0])
    assert trained.record["fused_kernel"] is (available and cfg.device == "cpu")
    [plain] = train_rounds(Config(**TINY, models=["baseline"]), "baseline", [0])
    assert plain.record["fused_kernel"] is False  # no BatchNorm + 2-D pool + ReLU in it


def test_the_engine_uses_the_kernel_only_where_it_was_measured_faster(kernel):
    cpu = torch.device("cpu")
    assert fuses(Config(threads=1), cpu) and fuses(Config(threads=2), cpu)
    assert not fuses(Config(threads=4), cpu)  # a one-thread kernel beside PyTorch's parallel ones
    assert not fuses(Config(precision="bf16"), cpu)
    assert not fuses(Config(), torch.device("meta"))


@pytest.mark.parametrize("lanes_in", [False, True])
@pytest.mark.parametrize("n", [13, 45])  # 45: lanes in several blocks of the forward kernel
def test_a_convolution_and_the_fused_layer_as_one_function_give_the_same_bits(kernel, lanes_in, n):
    """fused.ConvBNPoolReLU (what the stacked engine runs for a convnet block of one round in
    training) against directconv.DirectConv2d then BNPoolReLU in the lanes layout: the same
    kernels in the same order, so the same output, statistics and gradients, to the bit; the
    input gradient in the input's layout."""
    if directconv.library() is None:
        pytest.skip("no direct convolution kernels here")
    torch.manual_seed(0)
    c, oc = 3, 8
    x = torch.randn(n, c, 9, 9)
    if lanes_in:
        x = lanes_view(directconv.to_lanes(x, padded_lanes(n)), n)
    params = [torch.randn(oc, c, 3, 3), torch.randn(oc), torch.randn(oc), torch.randn(oc)]
    runs = []
    for merged in (False, True):
        xs, ps = x.detach().clone().requires_grad_(), [p.clone().requires_grad_() for p in params]
        if lanes_in:  # a lanes view again, as the layer before would hand it over
            xs = lanes_view(directconv.to_lanes(x, padded_lanes(n)), n).requires_grad_()
        if merged:
            out, mean, var = fused.ConvBNPoolReLU.apply(xs, *ps[:2], *ps[2:], (2, 2), 1e-5)
        else:
            y = directconv.DirectConv2d.apply(xs, *ps[:2], (2, 2), True)
            out, mean, var = fused.BNPoolReLU.apply(y, *ps[2:], 1, 1e-5, True)
        assert lanes_of(out) is not None
        g = torch.arange(out.numel(), dtype=torch.float32).view(out.shape).sin()
        grads = torch.autograd.grad(out, [xs, *ps], g)
        assert (lanes_of(grads[0]) is not None) is lanes_in
        runs.append([out, mean, var, *grads])
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


def test_pairs_max_pool_as_pytorch_does_to_the_bit(kernel):
    """PairMax against F.max_pool1d(x, 2): values and gradients, ties (the first wins), NaN,
    -inf, and PyTorch's operator for a length it does not take."""
    x = torch.randn(50, 1, 160, generator=torch.Generator().manual_seed(0))
    x[0, 0, :8] = torch.tensor([1.0, 1.0, float("nan"), 2.0, 3.0, float("nan"), float("-inf"), float("-inf")])
    x[1, 0, :4] = torch.tensor([float("nan"), float("nan"), 0.0, -0.0])
    g = torch.randn(50, 1, 80, generator=torch.Generator().manual_seed(1))
    runs = []
    for pool in (lambda z: F.max_pool1d(z, 2), fused.PairMax.apply):
        xs = x.clone().requires_grad_()
        out = pool(xs)
        runs.append((out, torch.autograd.grad(out, xs, g)[0]))
    (want, want_grad), (got, got_grad) = runs
    assert torch.equal(got.nan_to_num(), want.nan_to_num()) and torch.equal(got.isnan(), want.isnan())
    assert torch.equal(got_grad, want_grad)
    assert fused.pairs_supported(x) and not fused.pairs_supported(torch.randn(4, 1, 7))


def test_the_engine_pools_the_mlps_pairs_by_the_kernel(kernel):
    from digitcmp.models import MODELS
    from digitcmp.stacked import PairMaxPool1d, stack_models

    models = [MODELS["baseline"]() for _ in range(2)]
    gens = [torch.Generator().manual_seed(r) for r in range(2)]
    pools = [type(m) for m in stack_models(models, gens, fuse=True).modules() if isinstance(m, nn.MaxPool1d)]
    assert pools == [PairMaxPool1d, PairMaxPool1d]
    assert all(type(m) is nn.MaxPool1d for m in stack_models(models, gens).modules()
               if isinstance(m, nn.MaxPool1d))
    layer = PairMaxPool1d()
    odd = torch.randn(3, 1, 9)  # PyTorch's operator: drops the last value
    assert torch.equal(layer(odd), F.max_pool1d(odd, 2))


@pytest.mark.parametrize("shape", [(4, 63), (6, 100), (2, 95), (10, 7, 5), (2, 1)])
def test_dropout_masks_are_random_bits_over_one_half_to_the_bit(kernel, shape):
    """fused.dropout_masks against stacked.random_bits per round, divided by 0.5, with each
    generator left where random_bits leaves it."""
    from digitcmp.stacked import random_bits

    rounds = 2
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
    twins = [torch.Generator().manual_seed(s) for s in (3, 4)]
    keep = torch.empty(shape)
    fused.dropout_masks(keep, gens)
    chunks = zip(keep.chunk(rounds), twins, strict=True)
    want = torch.cat([random_bits(rows.shape, g) / 0.5 for rows, g in chunks])
    assert torch.equal(keep, want)
    assert all(torch.equal(a.get_state(), b.get_state()) for a, b in zip(gens, twins, strict=True))
    assert not fused.masks_supported(torch.empty(3, 4), rounds)  # rows that do not split evenly


def test_stacked_dropout_by_the_kernel_as_without_it(kernel, monkeypatch):
    from digitcmp.stacked import StackedDropout

    x = torch.randn(30, 64, generator=torch.Generator().manual_seed(0))
    outs = []
    for lib in (fused.library(), None):
        monkeypatch.setattr(fused, "library", lambda lib=lib: lib)
        drop = StackedDropout(0.5, [torch.Generator().manual_seed(s) for s in range(3)]).train()
        outs.append([drop(x), drop(x)])
    assert all(torch.equal(a, b) for a, b in zip(*outs, strict=True))
