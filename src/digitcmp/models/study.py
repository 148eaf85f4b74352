"""The study's three models (its Tables I and II and Fig. 1) and the arms of the 2 x 2 ablation
that separates weight sharing from the auxiliary loss."""

from __future__ import annotations

import torch
from torch import nn

from .registry import PairModel, register


@register("baseline")
class Baseline(PairModel):
    """The study's Table I: a two-hidden-layer perceptron on the flattened 2 x 14 x 14 input."""

    label = "Baseline"
    description = "study's model 1 (Table I): MLP 392-160-128-2 with BN, max-pool, dropout"

    def __init__(self):
        super().__init__()
        # MaxPool1d over features halves each hidden layer (160 -> 80, 128 -> 64).
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(392, 160), nn.BatchNorm1d(160), nn.ReLU(),
            nn.Unflatten(1, (1, 160)), nn.MaxPool1d(2), nn.Flatten(), nn.Dropout(0.5),
            nn.Linear(80, 128), nn.BatchNorm1d(128), nn.ReLU(),
            nn.Unflatten(1, (1, 128)), nn.MaxPool1d(2), nn.Flatten(), nn.Dropout(0.5),
            nn.Linear(64, 2),
        )

    def forward(self, x):
        return self.net(x), None


@register("cnn")
class CNN(PairModel):
    """The study's Table II: both digits as two channels of one convnet."""

    label = "CNN"
    description = "study's model 2 (Table II): 2-channel convnet, conv 16-20, FC 720-100-2"

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(2, 16, 5, padding=3), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 20, 3, padding=3), nn.BatchNorm2d(20), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.BatchNorm1d(720), nn.Linear(720, 100), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(100, 2),
        )

    def forward(self, x):
        return self.net(x), None


def digit_branch(hidden: int = 120) -> nn.Sequential:
    """The per-digit convnet of model 3: 1 x 14 x 14 -> 10 digit logits (69,838 parameters with
    the study's 120 hidden units)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, padding=3), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 20, 5, padding=3), nn.BatchNorm2d(20), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(500, hidden), nn.ReLU(), nn.Dropout(0.5), nn.Linear(hidden, 10),
    )


def compare_digits(compare: nn.Linear, digits: torch.Tensor) -> torch.Tensor:
    """Target logits [0, s] from s = compare(z_a - z_b), the head of model 3 and its ablation arms."""
    s = compare(digits[:, 0] - digits[:, 1]).squeeze(1)
    return torch.stack((torch.zeros_like(s), s), 1)


@register("siamese_aux")
class SiameseAux(PairModel):
    """The study's model 3: one digit branch shared by both digits, comparison from z_a - z_b."""

    label = "CNN + auxiliary loss"  # in the ablation: shared + aux
    description = "study's model 3: shared digit branch, Linear(10,1) on z_a - z_b, aux digit loss"
    default_lr = 1e-3
    default_aux_weight = 1.0

    def __init__(self):
        super().__init__()
        self.branch = digit_branch()
        self.compare = nn.Linear(10, 1)

    def forward(self, x):
        n = x.shape[0]
        # Both digits through the same weights in one batch of 2N images.
        digits = self.branch(x.reshape(2 * n, 1, 14, 14)).view(n, 2, 10)
        return compare_digits(self.compare, digits), digits


# The ablation arms (``digitcmp ablation``): a 2 x 2 design, weight sharing x auxiliary loss, in
# which the four arms share the digit branch, the comparison head, the learning rate and the
# optimiser, and differ only in the factor under test. Parameter counts stay within 1 %.


@register("siamese")
class Siamese(SiameseAux):
    """Model 3 trained on the comparison alone: weight sharing without the auxiliary loss."""

    label = "Shared, no aux"
    description = "ablation: siamese_aux's shared branch and head, trained without the digit loss"
    default_aux_weight = 0.0


@register("separate_aux")
class SeparateAux(PairModel):
    """Two digit branches with their own weights (no sharing), with the auxiliary digit loss.

    Each branch has 52 hidden units instead of 120 so that the two together have the parameters
    of one shared branch (70,191 vs 69,849): otherwise "no sharing" would also mean "twice the
    parameters" and the comparison would not isolate sharing. Equivalently: a two-channel network
    whose layers are block-diagonal, one block per digit.
    """

    label = "Separate + aux"
    description = "ablation: one 52-hidden-unit digit branch per digit (own weights), aux digit loss"
    default_lr = 1e-3
    default_aux_weight = 1.0

    def __init__(self):
        super().__init__()
        self.branch_a, self.branch_b = digit_branch(52), digit_branch(52)
        self.compare = nn.Linear(10, 1)

    def forward(self, x):
        digits = torch.stack((self.branch_a(x[:, :1]), self.branch_b(x[:, 1:])), 1)
        return compare_digits(self.compare, digits), digits


@register("separate")
class Separate(SeparateAux):
    """Neither factor: two branches with their own weights, trained on the comparison alone."""

    label = "Separate, no aux"
    description = "ablation: separate_aux trained without the digit loss (no sharing, no aux)"
    default_aux_weight = 0.0

