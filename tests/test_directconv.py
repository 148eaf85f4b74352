"""The direct convolution kernels against PyTorch's convolution."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import TINY
from digitcmp import directconv
from digitcmp.config import Config
from digitcmp.kernels import lanes_of
from digitcmp.models import MODELS
from digitcmp.stacked import DeferredConv, StackedBatchNorm, StackedConv2d, has_direct_convs, stack_models
from digitcmp.train import direct_convs, train_rounds


@pytest.fixture(autouse=True)
def kernel():
    if directconv.library() is None:
        pytest.skip("no direct convolution kernels here (not an x86-64 CPU with AVX2, or no C compiler)")


# (images, in channels, height, width, out channels, kernel, padding): the study's layers
# (siamese_aux's second, cnn's second with padding beyond kernel - 1, a first layer), then odd
# sizes: images not a multiple of the vector width, channels not a multiple of the tiles,
# a non-square map and kernel, no padding, one image.
SHAPES = [(200, 16, 8, 8, 20, 5, 3), (100, 16, 8, 8, 20, 3, 3), (33, 1, 14, 14, 16, 5, 3),
          (7, 3, 5, 6, 5, 3, 1), (17, 5, 7, 3, 25, (3, 2), (2, 0)), (3, 2, 6, 6, 13, 5, 0),
          (1, 4, 4, 4, 4, 1, 0)]


@pytest.mark.parametrize("n, c, h, w, oc, k, p", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_forward_and_gradients_are_pytorchs(n, c, h, w, oc, k, p, bias):
    """Output and the three gradients against float64 PyTorch, to float32 rounding."""
    k, p = (k, k) if isinstance(k, int) else k, (p, p) if isinstance(p, int) else p
    gen = torch.Generator().manual_seed(n + c + oc)
    x, wt = torch.randn(n, c, h, w, generator=gen), torch.randn(oc, c, *k, generator=gen)
    b = torch.randn(oc, generator=gen) if bias else None
    leaves64 = [t.double().requires_grad_() for t in (x, wt, b) if t is not None]
    ref = F.conv2d(leaves64[0], leaves64[1], leaves64[2] if bias else None, padding=p)
    g = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    ref_grads = torch.autograd.grad(ref, leaves64, g)
    leaves = [t.clone().requires_grad_() for t in (x, wt, b) if t is not None]
    y = directconv.DirectConv2d.apply(leaves[0], leaves[1], leaves[2] if bias else None, p)
    assert y.shape == ref.shape and y.is_contiguous(memory_format=torch.channels_last)
    grads = torch.autograd.grad(y, leaves, g.float())
    for got, want in zip([y, *grads], [ref, *ref_grads], strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


@pytest.mark.parametrize("n, c, h, w, oc, k, p", SHAPES[:5])
def test_inference_runs_convolution_batchnorm_pool_and_relu_as_pytorch_does(n, c, h, w, oc, k, p):
    """conv_bn_pool_relu_eval against float64 PyTorch, to float32 rounding; channel scales of
    both signs and zero (the pool then picks the raw minimum, or ties); odd map sizes (a last
    row or column in no window); the lanes past the images zero."""
    k, p = (k, k) if isinstance(k, int) else k, (p, p) if isinstance(p, int) else p
    gen = torch.Generator().manual_seed(n + oc)
    x, wt = torch.randn(n, c, h, w, generator=gen), torch.randn(oc, c, *k, generator=gen)
    b, gamma, beta, mean = (torch.randn(oc, generator=gen) for _ in range(4))
    gamma[0] = 0
    var = torch.rand(oc, generator=gen) + 0.1
    got = directconv.conv_bn_pool_relu_eval(x, wt, b, gamma, beta, mean, var, 1e-5, p)
    y = F.batch_norm(F.conv2d(x.double(), wt.double(), b.double(), padding=p), mean.double(), var.double(),
                     gamma.double(), beta.double(), False, 0.0, 1e-5)
    want = F.relu(F.max_pool2d(y, 2))
    buf = lanes_of(got)
    assert buf is not None and not buf[..., n:].any()
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


@pytest.mark.parametrize("n, c, h, w", [(100, 2, 14, 14), (200, 20, 5, 5), (45, 3, 9, 7), (16, 16, 4, 4),
                                        (5, 1, 2, 3), (1, 4, 1, 1)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_maps_go_to_the_lanes_layout_from_any_layout(n, c, h, w, layout):
    """to_lanes: the same H x W x C x Np buffer, padding lanes zero, from an NCHW map (C planes
    per image), a channels_last one and a strided one; blocks of 16 and the rest, both sides."""
    x = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(n))
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.randn(n, c, h, 2 * w)[..., ::2].copy_(x)
    np_ = -(-n // 16) * 16 + 16  # a whole vector of padding lanes too
    want = torch.zeros(h, w, c, np_)
    want[..., :n] = x.permute(2, 3, 1, 0)
    assert torch.equal(directconv.to_lanes(x, np_), want)


def test_the_input_gradient_is_skipped_where_nobody_needs_it():
    x, wt = torch.randn(4, 1, 6, 6), torch.randn(3, 1, 3, 3, requires_grad=True)
    y = directconv.DirectConv2d.apply(x, wt, None, (1, 1))
    y.sum().backward()
    torch.testing.assert_close(wt.grad, torch.autograd.grad(F.conv2d(x, wt, padding=1).sum(), wt)[0])


def test_the_stacked_engine_runs_its_convolutions_on_the_kernels(monkeypatch):
    """With ``direct`` each stride-1 convolution of more than two input channels runs directly (the
    first layers keep their im2col path), R rounds each with their own weights; strided ones and
    everything without ``direct`` keep PyTorch's convolution."""
    convs = [nn.Conv2d(6, 5, 3, padding=2), nn.Conv2d(6, 5, 3, padding=2)]
    strided = [nn.Conv2d(6, 5, 3, stride=2), nn.Conv2d(6, 5, 3, stride=2)]
    nets = [nn.Sequential(a, nn.Sequential(b)) for a, b in zip(convs, strided, strict=True)]
    stacked = stack_models(nets, [torch.Generator(), torch.Generator()], direct=True)
    layer, strided_layer = [m for m in stacked.modules() if isinstance(m, StackedConv2d)]
    assert layer.direct and not strided_layer.direct and has_direct_convs(stacked)
    assert not has_direct_convs(stack_models(nets, [torch.Generator(), torch.Generator()]))
    x = torch.randn(2 * 9, 6, 7, 7)
    calls = []
    real = directconv.DirectConv2d.apply
    monkeypatch.setattr(directconv.DirectConv2d, "apply", lambda *a: calls.append(1) or real(*a))
    y = layer(x)
    assert len(calls) == 2  # one call per round
    want = torch.cat([F.conv2d(x[:9], convs[0].weight, convs[0].bias, padding=2),
                      F.conv2d(x[9:], convs[1].weight, convs[1].bias, padding=2)])
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("available", [True, False])
def test_a_round_records_whether_its_convolutions_ran_directly(monkeypatch, available):
    if not available:
        monkeypatch.setattr(directconv, "library", lambda: None)
    cfg = Config(**TINY, models=["cnn"])
    [trained] = train_rounds(cfg, "cnn", [0])
    assert trained.record["direct_conv"] is (available and cfg.device == "cpu")
    [plain] = train_rounds(Config(**TINY, models=["baseline"]), "baseline", [0])
    assert plain.record["direct_conv"] is False  # no convolution in it


def test_the_engine_uses_the_kernels_only_where_they_were_measured_faster():
    cpu = torch.device("cpu")
    assert direct_convs(Config(threads=1), cpu)
    assert not direct_convs(Config(threads=2), cpu)  # one thread against PyTorch's two
    assert not direct_convs(Config(precision="bf16"), cpu)
    assert not direct_convs(Config(), torch.device("meta"))


def test_a_convnet_block_keeps_its_maps_in_the_lanes_layout():
    """In the study's convnets every convolution feeds a fused BatchNorm + pool + ReLU: all run
    directly, first layers included, each pair exchanging lanes views; without the fused layer
    after it a first layer keeps its im2col path."""
    cnn = MODELS["cnn"]()
    stacked = stack_models([cnn], [torch.Generator()], fuse=True, direct=True)
    convs = [m for m in stacked.modules() if isinstance(m, StackedConv2d)]
    norms = [m for m in stacked.modules() if isinstance(m, StackedBatchNorm) and m.pool_relu]
    assert len(convs) == len(norms) == 2 and convs[0].im2col
    assert all(m.direct and m.lanes for m in convs) and all(m.lanes for m in norms)
    x = torch.randn(8, 2, 14, 14)
    deferred = convs[0].train()(x)  # in training each pair runs as one autograd function
    assert isinstance(deferred, DeferredConv) and deferred.x is x and deferred.conv is convs[0]
    first = norms[0].train()(deferred)
    assert lanes_of(first) is not None and lanes_of(norms[1].train()(convs[1].train()(first))) is not None
    with torch.no_grad():  # inference too, the pair as one kernel; with gradients on,
        deferred = convs[0].eval()(x)  # evaluation stays in PyTorch's layouts
        assert isinstance(deferred, DeferredConv) and lanes_of(norms[0].eval()(deferred)) is not None
    assert lanes_of(convs[0].eval()(x)) is None
    plain = stack_models([MODELS["cnn"]()], [torch.Generator()], direct=True)  # no fused layers
    first = next(m for m in plain.modules() if isinstance(m, StackedConv2d))
    assert not first.direct and not first.lanes


def test_maps_too_small_for_the_fused_kernel_leave_the_pair_to_pytorchs_operators():
    """A convolution whose output has no 2 x 2 window does not run inside the fused layer: the
    pair fails as the plain model does, with PyTorch's own message."""
    seq = nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.MaxPool2d(2), nn.ReLU())
    net = stack_models([seq], [torch.Generator()], fuse=True, direct=True).train()
    assert next(m for m in net.modules() if isinstance(m, StackedConv2d)).lanes
    x = torch.randn(2, 4, 3, 3)  # a 1 x 1 output
    for model in (seq.train(), net):
        with pytest.raises(RuntimeError, match="Output size is too small"):
            model(x)
    assert net(torch.randn(2, 4, 6, 6)).shape == (2, 4, 2, 2)


def test_layers_with_many_channels_keep_onednn():
    """Where the direct weight gradient was measured slower (probcmp's 32 -> 32 layers), the
    convolution and its fused layer stay as they were."""
    net = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.MaxPool2d(2), nn.ReLU(),
                        nn.Conv2d(16, 20, 3, padding=1))
    stacked = stack_models([net], [torch.Generator()], fuse=True, direct=True)
    wide, narrow = [m for m in stacked.modules() if isinstance(m, StackedConv2d)]
    assert not wide.direct and not wide.lanes and narrow.direct
    assert not next(m for m in stacked.modules() if isinstance(m, StackedBatchNorm)).lanes
