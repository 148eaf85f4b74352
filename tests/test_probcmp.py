"""Our own models (models/probcmp.py): the computed comparison, the augmentations, a short run that learns."""

import itertools

import torch

from digitcmp.config import Config
from digitcmp.models import count_params, get_model_class, register
from digitcmp.models.probcmp import comparison_logits, jitter, p_leq, re_pair
from digitcmp.train import train_rounds


def brute_p_leq(pa, pb):
    return sum(pa[:, i] * pb[:, j] for i, j in itertools.product(range(10), repeat=2) if i <= j)


def test_p_leq_is_the_probability_of_a_leq_b():
    gen = torch.Generator().manual_seed(0)
    pa, pb = (torch.rand(64, 10, generator=gen, dtype=torch.float64).softmax(1) for _ in range(2))
    p = p_leq(pa, pb)
    torch.testing.assert_close(p, brute_p_leq(pa, pb))
    # The outcomes a <= b and a > b exhaust the 100 class pairs: their probabilities sum to 1.
    greater = sum(pa[:, i] * pb[:, j] for i, j in itertools.product(range(10), repeat=2) if i > j)
    torch.testing.assert_close(p + greater, torch.ones(64, dtype=torch.float64))
    assert torch.allclose(comparison_logits(p).softmax(1).sum(1), torch.ones(64, dtype=torch.float64))


def test_p_leq_is_exact_on_one_hot_digits():
    eye = torch.eye(10)
    a, b = torch.cartesian_prod(torch.arange(10), torch.arange(10)).unbind(1)
    assert torch.equal(p_leq(eye[a], eye[b]), (a <= b).float())
    assert torch.equal(comparison_logits(p_leq(eye[a], eye[b])).argmax(1), (a <= b).long())


def test_swapping_the_digits_flips_the_prediction_except_for_equal_digits():
    torch.manual_seed(0)
    model = get_model_class("probcmp_small")().eval()
    x = torch.randn(32, 2, 14, 14)
    with torch.no_grad():
        logits, digits = model(x)
        swapped, _ = model(x.flip(1))
    p, p_swapped = logits.softmax(1)[:, 1], swapped.softmax(1)[:, 1]
    probs = digits.softmax(2)
    p_equal = (probs[:, 0] * probs[:, 1]).sum(1)
    # P(b <= a) = 1 - P(a <= b) + P(a == b): the target flips except when the digits are equal.
    torch.testing.assert_close(p_swapped, 1 - p + p_equal, atol=1e-5, rtol=0)


def test_re_pairing_keeps_every_digit_and_computes_true_targets():
    classes = torch.arange(40) % 10
    digits = classes.float().view(-1, 1, 1, 1).expand(40, 1, 14, 14).clone()  # pixels = class
    pairs = re_pair(digits, classes, torch.Generator().manual_seed(1))
    assert pairs.input.shape == (20, 2, 14, 14)
    assert torch.equal(pairs.input[:, :, 0, 0].long(), pairs.classes)  # each digit kept its class
    assert torch.equal(pairs.target, (pairs.classes[:, 0] <= pairs.classes[:, 1]).long())
    assert sorted(pairs.classes.flatten().tolist()) == sorted(classes.tolist())  # no digit lost or reused


def test_jitter_moves_digits_but_keeps_background_and_identity_at_zero_strength():
    gen = torch.Generator().manual_seed(0)
    x = torch.full((8, 1, 14, 14), -0.4)
    x[:, :, 4:10, 6:8] = 2.5  # a "1" on a standardised background
    moved = jitter(x, gen)
    assert moved.shape == x.shape and not torch.allclose(moved, x)
    assert torch.allclose(moved[:, :, 0, 0], torch.full((8, 1), -0.4))  # corners stay background
    assert torch.allclose(jitter(x, gen, rotate=0, scale=0, shear=0, shift=0), x, atol=1e-5)
    assert torch.allclose(jitter(torch.full((2, 1, 14, 14), -0.4), gen), torch.full((2, 1, 14, 14), -0.4))


def test_probcmp_small_is_within_the_study_budget():
    assert count_params(get_model_class("probcmp_small")()) <= 70_000
    assert count_params(get_model_class("probcmp")()) == 3 * count_params(get_model_class("probcmp_small")())


def test_a_short_run_of_probcmp_small_learns():
    config = Config(data="embedded", pairs=200, epochs=3, batch_size=10)
    [trained] = train_rounds(config, "probcmp_small", [0])
    record = trained.record
    assert record["engine"] == "stacked" and len(record["curves"]["test_error"]) == 3
    losses = record["train_loss"]
    assert losses[-1] < losses[0]
    # Chance is ~45 % on the target and 90 % on the digits; this run reaches ~15 % on both.
    assert record["train_digit_error"] < 0.4 and record["train_error"] < 0.3


def test_elastic_distortion_moves_pixels_a_little_and_keeps_the_background():
    gen = torch.Generator().manual_seed(0)
    x = torch.full((8, 1, 14, 14), -0.4)
    x[:, :, 4:10, 6:8] = 2.5
    affine = jitter(x, torch.Generator().manual_seed(0), rotate=0, scale=0, shear=0, shift=0)
    bent = jitter(x, gen, rotate=0, scale=0, shear=0, shift=0, elastic=1.0)
    assert torch.allclose(affine, x, atol=1e-5) and not torch.allclose(bent, x, atol=1e-2)
    assert torch.allclose(bent[:, :, 0, 0], torch.full((8, 1), -0.4))
    assert (bent - x).abs().sum() < (x - x.mean()).abs().sum()  # a small change, not a new image


def test_test_time_views_average_in_eval_only():
    torch.manual_seed(0)
    plain = get_model_class("probcmp_small")()
    from digitcmp.models.probcmp import digit_net

    torch.manual_seed(0)
    net = digit_net(plain.width, views=4)
    net.load_state_dict(plain.nets[0].state_dict())
    x = torch.randn(6, 1, 14, 14)
    net.train(), plain.nets[0].train()
    assert torch.equal(net.classify(x), plain.nets[0].classify(x))  # training sees one view
    net.eval(), plain.nets[0].eval()
    with torch.no_grad():
        views, one = net.classify(x), plain.nets[0].classify(x)
    assert not torch.allclose(views, one) and torch.allclose(views.exp().sum(1), torch.ones(6))
    assert torch.equal(views, net.classify(x))  # the same views every time


def test_weight_averaging_ends_on_the_average_not_the_last_step():
    from digitcmp.models import MODELS

    config = Config(data="embedded", pairs=60, epochs=2, batch_size=20)
    ema_cls = type("EmaSmall", (MODELS["probcmp_small"],), {"ema_decay": 0.5})
    register("probcmp_small_ema_test")(ema_cls)
    try:
        [a] = train_rounds(config, "probcmp_small", [0])
        [b] = train_rounds(config, "probcmp_small_ema_test", [0])
    finally:
        MODELS.pop("probcmp_small_ema_test")
    # Same training (same seeds) until the end, where the averaged weights replace the last ones.
    assert a.record["train_loss"] == b.record["train_loss"]
    assert not torch.equal(a.model.nets[0][0].weight, b.model.nets[0][0].weight)
