"""A round's pairs, drawn exactly as the course's ``generate_pair_sets``: a random permutation of
a pool, consecutive digits paired (no digit used twice within a split), target ``class0 <= class1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import DataError
from ..seeds import generator
from .sources import Source


@dataclass(frozen=True)
class Pairs:
    """``input`` N x 2 x 14 x 14 float, ``target`` N long (class0 <= class1), ``classes`` N x 2."""

    input: torch.Tensor
    target: torch.Tensor
    classes: torch.Tensor

    def __len__(self) -> int:
        return len(self.target)

    def __getitem__(self, idx) -> Pairs:
        """The pairs at ``idx`` (a slice, an index tensor or any tensor index)."""
        return Pairs(self.input[idx], self.target[idx], self.classes[idx])

    def to(self, device: torch.device) -> Pairs:
        return Pairs(self.input.to(device), self.target.to(device), self.classes.to(device))

    @staticmethod
    def cat(parts: list[Pairs]) -> Pairs:
        """Pairs one after the other, e.g. several rounds' batches stacked round-major."""
        return Pairs(*(torch.cat([getattr(p, f) for p in parts]) for f in ("input", "target", "classes")))


def draw_pairs(x: torch.Tensor, y: torch.Tensor, n: int, gen: torch.Generator) -> Pairs:
    """n pairs from a pool, as ``generate_pair_sets``: permute, pair consecutive images."""
    if 2 * n > len(y):
        raise DataError(f"--pairs {n}: {n} pairs need {2 * n:,} digits, the pool has {len(y):,}")
    idx = torch.randperm(len(y), generator=gen)[: 2 * n].view(n, 2)
    classes = y[idx]
    return Pairs(torch.stack((x[idx[:, 0]], x[idx[:, 1]]), 1), (classes[:, 0] <= classes[:, 1]).long(),
                 classes)


@dataclass(frozen=True)
class RoundData:
    """One round's standardised train and test pairs, and the statistics used to standardise;
    ``val``: pairs held out of the training pairs for choosing hyperparameters, or None."""

    train: Pairs
    test: Pairs
    mean: float
    std: float
    val: Pairs | None = None

    def to(self, device: torch.device) -> RoundData:
        val = self.val.to(device) if self.val is not None else None
        return RoundData(self.train.to(device), self.test.to(device), self.mean, self.std, val)

    def splits(self) -> dict[str, Pairs]:
        """The splits by name, validation only when there is one."""
        return {"train": self.train, "test": self.test} | ({"val": self.val} if self.val is not None else {})


def standardise(p: Pairs, mean: float, std: float) -> Pairs:
    return Pairs((p.input - mean) / std, p.target, p.classes)


def check_pool_sizes(source: Source, n_pairs: int) -> None:
    """Refuse, before anything runs, a number of pairs the source's pools cannot supply."""
    if source.test_x is None:  # each round splits the training digits in two pools
        pools = {"train": len(source.train_y) // 2, "test": len(source.train_y) - len(source.train_y) // 2}
    else:
        pools = {"train": len(source.train_y), "test": len(source.test_y)}
    for split, size in pools.items():
        if 2 * n_pairs > size:
            raise DataError(f"--pairs {n_pairs}: {n_pairs} {split} pairs need {2 * n_pairs:,} digits; "
                            f"the {split} pool of {source.name} has {size:,}")


def round_data(source: Source, seed: int, round: int, n_pairs: int = 1000,
               val_pairs: int = 0, standardise_inputs: bool = True) -> RoundData:
    """The pairs of round ``round``: a function of (source, seed, round, n_pairs, val_pairs) only.

    With ``val_pairs``, the last ``val_pairs`` of the n_pairs training pairs (a random subset:
    pairs are drawn in random order) are held out as a validation split, and the model trains on
    the rest. Inputs are standardised with the mean and std of the pixels of the pairs it trains
    on (one scalar each), applied to every split, so nothing about held-out pairs leaks in; with
    ``standardise_inputs=False`` they stay 0-255 (mean 0 and std 1 are recorded).
    """
    if not 0 <= val_pairs <= n_pairs - 2:
        raise DataError(f"--val-pairs {val_pairs}: must be >= 0 and leave at least 2 of the "
                        f"{n_pairs} training pairs to train on")
    gen = generator(seed, round, "data")
    if source.test_x is None:
        # No test split: a random half of the pool for training, the other half for testing.
        perm = torch.randperm(len(source.train_y), generator=gen)
        half = len(perm) // 2
        tr, te = perm[:half], perm[half:]
        train = draw_pairs(source.train_x[tr], source.train_y[tr], n_pairs, gen)
        test = draw_pairs(source.train_x[te], source.train_y[te], n_pairs, gen)
    else:
        train = draw_pairs(source.train_x, source.train_y, n_pairs, gen)
        test = draw_pairs(source.test_x, source.test_y, n_pairs, gen)
    # Drawing the same pairs whatever val_pairs is keeps the test pairs, and the pairs trained
    # on, comparable between runs with and without a validation split.
    keep = n_pairs - val_pairs
    val = train[keep:] if val_pairs else None
    train = train[:keep]
    mean, std = train.input.mean().item(), train.input.std().item()
    if not std > 0:  # also catches NaN: every pixel one value: nothing to learn or standardise by
        raise DataError(f"{source.name} ({source.location}): the training pairs' pixels have no "
                        f"spread (std {std}); the images are blank or constant")
    if not standardise_inputs:
        mean, std = 0.0, 1.0
    return RoundData(standardise(train, mean, std), standardise(test, mean, std), mean, std,
                     standardise(val, mean, std) if val is not None else None)
