"""Our own models (models/probcmp.py): the computed comparison, the augmentations, a short run that learns."""

import itertools

import torch

from digitcmp.config import Config
from digitcmp.models import count_params, get_model_class
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
