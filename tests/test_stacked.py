"""The stacked engine against the reference loop it replaces."""

import copy
import dataclasses

import pytest
import torch
from torch import nn

from conftest import DEVICE, TINY
from digitcmp import directconv, fused
from digitcmp.config import Config, aux_weight_for, lr_for
from digitcmp.data.pairs import round_data
from digitcmp.models import MODELS, PairModel
from digitcmp.seeds import generator
from digitcmp.stacked import (
    StackedConv2d,
    StackedDropout,
    StackedLinear,
    has_direct_convs,
    has_fused_layers,
    random_bits,
    stack_models,
    stackable,
)
from digitcmp.train import cached_source, evaluate, fit, init_model, train_rounds

CFG = Config(data="embedded", pairs=100, epochs=2, batch_size=25)
CPU = torch.device("cpu")


def _without_dropout(model):
    for m in model.modules():
        if isinstance(m, (nn.Dropout, StackedDropout)):
            m.p = 0.0
    return model


@pytest.mark.parametrize("name, fuse", [("baseline", False), ("cnn", False), ("siamese_aux", False),
                                        ("cnn", True), ("siamese_aux", True)])
def test_stacked_training_equals_one_loop_per_round(name, fuse):
    """Same data, batches and initialisation per round: with dropout off (the one thing drawn
    from other random numbers) the stacked network ends where R separate loops end, up to float
    summation order, and its per-round evaluation matches; also with BatchNorm + max-pool + ReLU
    as the fused kernel and the convolutions on the direct kernels (``fuse``)."""
    if fuse and (fused.library() is None or directconv.library() is None):
        pytest.skip("no C kernels on this machine (not an x86-64 CPU with AVX2, or no C compiler)")
    torch.set_num_threads(CFG.threads)
    cls, rounds = MODELS[name], [0, 1]
    datas = [round_data(cached_source("embedded", None), 0, r, CFG.pairs) for r in rounds]
    models = [_without_dropout(init_model(CFG, cls, r)) for r in rounds]
    refs = copy.deepcopy(models)
    lr, aux = lr_for(CFG, cls), aux_weight_for(CFG, cls)
    ref_losses = [fit(m, [d.train], [generator(0, r, "batches")], cls, lr, aux, CFG, [name], CPU)["loss"]
                  for m, d, r in zip(refs, datas, rounds, strict=True)]
    net = stack_models(models, [generator(0, r, "dropout") for r in rounds], fuse=fuse, direct=fuse)
    assert has_fused_layers(net) is fuse and has_direct_convs(net) is fuse
    losses = fit(net, [d.train for d in datas], [generator(0, r, "batches") for r in rounds], cls, lr,
                 aux, CFG, [name] * 2, CPU)["loss"]
    assert torch.allclose(losses, torch.cat(ref_losses, 1), rtol=1e-3)
    evals = evaluate(net, [d.test for d in datas], chunk=30)
    assert evals == evaluate(net, [d.test for d in datas])  # chunking changes nothing
    for i in rounds:
        got = net.unstack(i, copy.deepcopy(refs[i]))
        for (key, a), b in zip(got.state_dict().items(), refs[i].state_dict().values(), strict=True):
            assert torch.allclose(a.float(), b.float(), rtol=1e-2, atol=1e-2), key
        # The same function up to float summation order (a near-tie may still flip a pair's answer).
        with torch.no_grad():
            x = datas[i].test.input
            assert torch.allclose(got.eval()(x)[0], refs[i].eval()(x)[0], atol=1e-2)
        assert evals[i] == evaluate(got, [datas[i].test])[0]


@pytest.mark.parametrize("rows, n_in, n_out", [
    (100, 392, 160),  # blocks on 16-byte boundaries: one batched matmul
    (25, 52, 10),  # an odd batch: round 1's output block off a 16-byte boundary
    (50, 10, 1),  # one output: a matrix-vector product
    (7, 3, 5),  # every block off
])
def test_a_stacked_linear_computes_each_round_as_the_round_alone(rows, n_in, n_out):
    """Outputs and gradients to the bit: on AMD CPUs PyTorch's batched matmul rounds a block off
    a 16-byte boundary otherwise than the same block aligned (as a round alone has it)."""
    torch.manual_seed(0)
    layers = [nn.Linear(n_in, n_out) for _ in range(3)]
    xs, grads = torch.randn(3, rows, n_in), torch.randn(3, rows, n_out)
    net = StackedLinear(layers)
    x = xs.flatten(0, 1).requires_grad_()
    y = net(x)
    y.backward(grads.flatten(0, 1))
    for r in range(3):
        alone = StackedLinear([layers[r]])
        xr = xs[r].clone().requires_grad_()
        yr = alone(xr)
        yr.backward(grads[r].clone())
        assert torch.equal(y[r * rows:(r + 1) * rows], yr)
        assert torch.equal(x.grad[r * rows:(r + 1) * rows], xr.grad)
        assert torch.equal(net.weight.grad[r], alone.weight.grad[0])
        assert torch.equal(net.bias.grad[r], alone.bias.grad[0])


@pytest.mark.parametrize("name, options", [
    ("siamese_aux", TINY),
    # Batches of 50 stack two rounds of model 3 in one network: a batch of its one-output
    # comparison products rounded otherwise than each alone (StackedLinear runs them apart).
    ("siamese_aux", dict(data="embedded", pairs=300, epochs=3, batch_size=50, device=DEVICE)),
    # An odd batch: blocks of the ablation arms' 52 x 10 layer off 16-byte boundaries.
    ("separate_aux", dict(data="embedded", pairs=150, epochs=2, batch_size=25, device=DEVICE)),
    ("cnn", dict(data="embedded", pairs=200, epochs=2, device=DEVICE)),  # 2 rounds stacked
    ("cnn", dict(data="embedded", pairs=200, epochs=2, threads=2, device=DEVICE)),
])
def test_a_rounds_result_does_not_depend_on_its_stack_mates(name, options):
    cfg = Config(**options)
    together = train_rounds(cfg, name, [0, 1])
    alone = train_rounds(cfg, name, [1])
    for t in together + alone:
        t.record.pop("seconds")
    assert together[1].record == alone[0].record
    pairs = zip(together[1].model.state_dict().values(), alone[0].model.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_mlp_rounds_stacked_with_other_mates_train_to_the_same_bits():
    """Rounds 5-9 of the MLP stacked with rounds 0-4 and alone (as a resumed run or --stack
    groups them): the same weights and records. PyTorch's fused Adam alone rounds some values
    of a stacked tensor otherwise than the same values stacked elsewhere (the last layer's two
    biases per round here), and in this training round 8's weights then differed."""
    cfg = Config(data="embedded", pairs=100, epochs=20, batch_size=10, device=DEVICE)
    together = {t.record["round"]: t for t in train_rounds(cfg, "baseline", list(range(10)))}
    for t in train_rounds(cfg, "baseline", list(range(5, 10))):
        mate = together[t.record["round"]]
        for a, b in zip(t.model.state_dict().values(), mate.model.state_dict().values(), strict=True):
            assert torch.equal(a, b), t.record["round"]
        for record in (t.record, mate.record):
            record.pop("seconds")
        assert t.record == mate.record


@pytest.mark.parametrize("name", ["cnn", "siamese_aux", "probcmp_small"])
def test_folded_slots_compute_what_slot_by_slot_computes(name):
    """The GPU path (rounds folded into the channels of grouped convolutions and BatchNorm)
    against the CPU path, on the CPU: the same outputs, gradients and BatchNorm statistics."""
    members = [init_model(CFG, MODELS[name], r).members()[0] for r in range(3)]
    gens = [generator(0, r, "dropout") for r in range(3)]
    nets = [stack_models(members, gens, folded=f) for f in (False, True)]
    x = torch.randn(3 * 8, 2, 14, 14, generator=torch.Generator().manual_seed(0))
    for net in nets:
        _without_dropout(net).train()(x)[0].square().sum().backward()
    (a, b) = nets
    # Up to float summation order; some gradients are themselves rounding noise (a convolution's
    # bias before BatchNorm has none in exact arithmetic), so differences are measured against
    # the whole gradient's size.
    scale = torch.cat([p.grad.flatten() for p in a.parameters()]).norm()
    for (key, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert (p.grad - q.grad).norm() <= 1e-4 * scale, key
    for (key, u), v in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-6, msg=key)


@pytest.mark.parametrize("rounds", [1, 3])
@pytest.mark.parametrize(("in_ch", "kernel", "padding", "ring"), [
    (16, 3, 3, (1, 1, 1, 1)),  # cnn's second layer: an outer ring of bias values
    (16, (3, 5), (4, 1), (0, 0, 2, 2)),  # a ring on one axis only
    (16, 5, 3, None),  # siamese_aux's second layer: every output sees the input
    (2, 5, 3, None),  # a first layer (im2col)
])
def test_a_stacked_convolution_is_its_rounds_convolutions(rounds, in_ch, kernel, padding, ring):
    """Each round's slice of the output, and the gradients of its input, weight and bias, are
    those of the plain Conv2d it was made from, whichever way the engine computes them."""
    torch.manual_seed(0)
    convs = [nn.Conv2d(in_ch, 6, kernel, padding=padding) for _ in range(rounds)]
    stacked = StackedConv2d(convs)
    assert stacked.ring == ring
    x = torch.randn(rounds * 4, in_ch, 8, 8)
    g = torch.randn(rounds * 4, 6, *convs[0](x[:1]).shape[2:])
    xs = x.clone().requires_grad_()
    (stacked(xs) * g).sum().backward()
    xr = x.clone().requires_grad_()
    out = torch.cat([c(part) for c, part in zip(convs, xr.chunk(rounds), strict=True)])
    (out * g).sum().backward()
    torch.testing.assert_close(stacked(x), out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(xs.grad, xr.grad, rtol=1e-4, atol=1e-5)
    for r, c in enumerate(convs):
        torch.testing.assert_close(stacked.weight.grad[r], c.weight.grad, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(stacked.bias.grad[r], c.bias.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("p", [0.5, 0.3])  # random bits, and bernoulli_ for other rates
def test_dropout_masks_differ_between_rounds_and_keep_the_rate(p):
    drop = StackedDropout(p, [torch.Generator().manual_seed(s) for s in (1, 2)]).train()
    y = drop(torch.ones(2000, 50))
    a, b = y[:1000] > 0, y[1000:] > 0
    assert not torch.equal(a, b) and abs(a.float().mean() - (1 - p)) < 0.02
    torch.testing.assert_close(y.unique(), torch.tensor([0.0, 1 / (1 - p)]))


def test_random_bits_are_fair_in_every_position_of_a_draw_and_reproducible():
    bits = random_bits(torch.Size([4000, 63]), torch.Generator().manual_seed(0))
    # Row i holds the 63 bits of draw i: each position is a fair coin (4000 draws: sd 0.008),
    # and so are all 252,000 values (sd 0.001: a bit that is always 0, such as the sign bit of
    # a draw, in one value of 64 would move the mean by 0.008).
    assert set(bits.unique().tolist()) == {0.0, 1.0}
    assert ((bits.mean(0) - 0.5).abs() < 0.04).all()
    assert abs(bits.mean().item() - 0.5) < 0.004
    assert torch.equal(bits, random_bits(torch.Size([4000, 63]), torch.Generator().manual_seed(0)))


def test_models_with_other_layers_or_recipes_fall_back_to_the_reference_loop():
    class Odd(PairModel):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))  # a parameter outside any stackable layer
            self.fc = nn.Linear(392, 2)

        def forward(self, x):
            return self.fc(x.flatten(1)) * self.scale, None

    assert not stackable(Odd())
    assert all(stackable(c()) for c in MODELS.values())  # every built-in model, ensembles too
    with pytest.raises(TypeError, match="Odd layers cannot be stacked"):
        stack_models([Odd(), Odd()], [generator(0, r, "dropout") for r in range(2)])


def test_an_ensembles_members_train_as_slots_as_they_would_one_after_another():
    """probcmp's members (no dropout) end where the reference engine's one-by-one training ends,
    up to float summation order: same epoch pairs, jitter, initialisation and schedule."""
    cfg = Config(**{**TINY, "pairs": 60, "batch_size": 30, "epochs": 2}, engine="stacked")
    stacked = train_rounds(cfg, "probcmp", [0, 1])
    reference = train_rounds(dataclasses.replace(cfg, engine="reference"), "probcmp", [0, 1])
    for s, r in zip(stacked, reference, strict=True):
        assert s.record["engine"] == "stacked" and r.record["engine"] == "reference"
        for (key, a), b in zip(s.model.state_dict().items(), r.model.state_dict().values(), strict=True):
            assert torch.allclose(a.float(), b.float(), rtol=1e-2, atol=1e-2), key
        torch.testing.assert_close(s.record["train_loss"], r.record["train_loss"], rtol=1e-3, atol=1e-4)
