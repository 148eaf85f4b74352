"""Our own models, ``probcmp`` and ``probcmp_small``: the lowest test error we can reach.

What they exploit about the task:

- The target is a fixed function of the two classes, so nothing about "<=" needs learning: a digit
  classifier shared by both images gives p_a and p_b, and the comparison is computed,
  P(a <= b) = sum over i <= j of p_a(i) p_b(j) (``p_leq``). Model 3's learned Linear(10, 1) on
  z_a - z_b cannot represent "<=" for every pair of classes, and its errors add to the digits'.
- So every training pair is two labelled digits, and the recipe trains the classifier on
  the 2,000 digits of the 1,000 training pairs: random small affine jitter (rotation, scale,
  shear, shift: labels stay true), label smoothing, a one-cycle learning rate. The pair loss is
  kept, on the digits *re-paired* at random each epoch (``re_pair``): a new pair's target is
  computed from its classes, so it stays true, and the loss weighs the confusions that flip a
  comparison.
- ``probcmp`` averages the digit distributions of a few independently initialised classifiers.

Nothing else is learned from: no other digits, no pretrained weights (the task's rules).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..data.pairs import Pairs
from .registry import PairModel, register


def p_leq(pa: torch.Tensor, pb: torch.Tensor) -> torch.Tensor:
    """P(a <= b) for independent digits with distributions ``pa``, ``pb`` (N x 10 each)."""
    # sum_i p_a(i) P(b >= i), with P(b >= i) = 1 - P(b <= i - 1) from the cumulative sum.
    below = torch.cumsum(pb, 1) - pb  # P(b < i)
    return (pa * (1 - below)).sum(1).clamp(0, 1)


def comparison_logits(p: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Two logits whose softmax is [1 - p, p]: the models' target output for a probability p."""
    p = p.clamp(eps, 1 - eps)
    return torch.stack((torch.log1p(-p), torch.log(p)), 1)


def compare(probs: torch.Tensor) -> torch.Tensor:
    """Target logits of N pairs from their digit distributions (N x 2 x 10)."""
    return comparison_logits(p_leq(probs[:, 0], probs[:, 1]))


def jitter(x: torch.Tensor, gen: torch.Generator, rotate: float = 12.0, scale: float = 0.1,
           shear: float = 0.15, shift: float = 1.4, elastic: float = 0.0,
           smooth: float = 2.0) -> torch.Tensor:
    """Each image of ``x`` (N x 1 x H x W) under its own random affine map: a rotation up to
    ``rotate`` degrees, a scale within 1 +- ``scale``, a shear up to ``shear`` and a shift up to
    ``shift`` pixels; with ``elastic``, also a smooth random displacement field (Simard et al.,
    2003) of about ``elastic`` pixels, smoothed over ``smooth`` pixels. Small enough that a
    digit stays the digit it was."""
    n, _, h, w = x.shape

    def uniform(bound: float) -> torch.Tensor:
        return (torch.rand(n, generator=gen) * 2 - 1) * bound

    angle, s = uniform(rotate) * math.pi / 180, 1 + uniform(scale)
    cos, sin, sh = torch.cos(angle) / s, torch.sin(angle) / s, uniform(shear)
    # affine_grid works in [-1, 1] coordinates: one pixel is 2 / size.
    tx, ty = uniform(shift) * 2 / w, uniform(shift) * 2 / h
    # The draws come from gen on the CPU, whatever the device: the same jitter everywhere.
    theta = torch.stack((torch.stack((cos, sh - sin, tx), 1), torch.stack((sin, cos, ty), 1)), 1).to(x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if elastic:
        field = torch.rand(n, 2, h, w, generator=gen) * 2 - 1
        k = torch.arange(-3 * smooth, 3 * smooth + 1).div(smooth).pow(2).mul(-0.5).exp()
        k = (k / k.sum()).to(field)
        # A separable Gaussian blur of each displacement component, then scaled to pixels.
        field = F.conv2d(field.reshape(-1, 1, h, w), k.view(1, 1, -1, 1), padding=(len(k) // 2, 0))
        field = F.conv2d(field, k.view(1, 1, 1, -1), padding=(0, len(k) // 2)).view(n, 2, h, w)
        field = field / field.flatten(1).abs().amax(1).clamp_min(1e-8).view(n, 1, 1, 1) * elastic
        pixel = torch.tensor([2 / w, 2 / h]).view(1, 1, 1, 2)
        grid = grid + (field.permute(0, 2, 3, 1) * pixel).to(grid)
    # Inputs are standardised, so the background is each image's minimum, not 0: sample the
    # image minus its background, whose zero padding is then background too.
    background = x.amin((1, 2, 3), keepdim=True)
    return F.grid_sample(x - background, grid, align_corners=False) + background


def re_pair(digits: torch.Tensor, classes: torch.Tensor, gen: torch.Generator) -> Pairs:
    """New pairs from 2N labelled digits (2N x 1 x H x W, 2N classes): a random permutation,
    consecutive digits paired, the target computed from the classes so it stays true."""
    idx = torch.randperm(len(classes), generator=gen)[: len(classes) // 2 * 2].view(-1, 2)
    c = classes[idx]
    return Pairs(digits[idx].squeeze(2), (c[:, 0] <= c[:, 1]).long(), c)


def conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class DigitNet(nn.Sequential):
    """One member of probcmp: a digit classifier (``classify``), trained as a pair model whose
    comparison is computed from the two digits' distributions. With ``views`` > 1, in eval mode
    it classifies each digit and ``views - 1`` fixed jittered copies of it and averages their
    distributions (test-time augmentation)."""

    views = 1

    def classify(self, digits: torch.Tensor) -> torch.Tensor:
        """10 logits per digit image (M x 1 x 14 x 14)."""
        if self.training or self.views == 1:
            return super().forward(digits)
        gen = torch.Generator().manual_seed(0)  # the same views of a digit in every evaluation
        copies = [digits] + [jitter(digits, gen) for _ in range(self.views - 1)]
        probs = torch.stack([F.softmax(super(DigitNet, self).forward(v), 1) for v in copies]).mean(0)
        return probs.clamp_min(1e-12).log()

    def forward(self, x: torch.Tensor):
        n = x.shape[0]
        logits = self.classify(x.reshape(2 * n, 1, *x.shape[2:]))
        return compare(F.softmax(logits, 1).view(n, 2, 10)), logits.view(n, 2, 10)


def digit_net(width: int, views: int = 1) -> DigitNet:
    """A VGG-style classifier for one 1 x 14 x 14 digit: two 3x3 conv blocks at 14x14, two at
    7x7 (2x the channels), global average pooling, a linear map to 10 logits."""
    w2 = 2 * width
    net = DigitNet(
        *conv_block(1, width), *conv_block(width, width), nn.MaxPool2d(2),
        *conv_block(width, w2), *conv_block(w2, w2), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w2, 10),
    )
    net.views = views
    return net


class ProbCmpBase(PairModel):
    """Shared digit classifiers (an ensemble of ``members``) and the computed comparison."""

    members_count = 1
    width = 32
    default_lr = 4e-3  # peak of the one-cycle schedule
    default_aux_weight = 1.0  # weight of the digit loss; the pair loss has weight 1
    # The recipe's ingredients, switchable so that each one's contribution can be measured
    # (benchmarks/probcmp_ingredients.py registers a model without each).
    use_jitter = True  # random affine jitter of the training digits
    elastic = 0.0  # pixels of elastic distortion added to the jitter (0: none)
    views = 1  # test-time augmentation: each test digit classified in this many views
    target_loss = True  # the comparison's cross-entropy on re-paired digits, beside the digit loss
    target_is_log_prob = True  # compare() returns log-probabilities
    label_smoothing = 0.1
    one_cycle = True

    def __init__(self):
        super().__init__()
        self.nets = nn.ModuleList(digit_net(self.width, self.views) for _ in range(self.members_count))

    def forward(self, x: torch.Tensor):
        return self.combine_members([net(x) for net in self.nets])

    def members(self) -> list[nn.Module]:
        return list(self.nets)

    @classmethod
    def combine_members(cls, outputs: list[tuple]) -> tuple:
        """The ensemble: the mean of the members' digit distributions, and the comparison
        computed from it."""
        probs = torch.stack([F.softmax(digits, 2) for _, digits in outputs]).mean(0)
        # Log-probabilities as digit logits: softmax gives back the ensemble's distribution.
        return compare(probs), probs.clamp_min(1e-12).log()

    @classmethod
    def epoch_pairs(cls, train: Pairs, gen: torch.Generator) -> Pairs:
        """Each epoch, the training pairs' 2N digits, jittered, re-paired at random."""
        digits = train.input.reshape(-1, 1, *train.input.shape[2:])
        if cls.use_jitter:
            digits = jitter(digits, gen, elastic=cls.elastic)
        return re_pair(digits, train.classes.reshape(-1), gen)


@register("probcmp")
class ProbCmp(ProbCmpBase):
    __doc__ = ProbCmpBase.__doc__
    label = "ProbCmp"
    description = ("ours: 3 shared VGG-style digit nets, computed P(a<=b), jitter + re-pairing, "
                   "label smoothing, one-cycle")
    members_count = 3


@register("probcmp_small")
class ProbCmpSmall(ProbCmpBase):
    __doc__ = ProbCmpBase.__doc__
    label = "ProbCmp small"
    description = "ours, within the study's budget (<= 70k params, 25 epochs): one probcmp digit net"
    members_count = 1
