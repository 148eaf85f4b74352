"""The name -> class registry every command uses, and the interface a model follows.

Every model takes ``x`` of shape N x 2 x 14 x 14 and returns ``(target_logits, digit_logits)``:
target logits N x 2 (class 1 means "first digit <= second"), digit logits N x 2 x 10 or None for
models without a digit head. A single-logit head s is returned as the two logits [0, s], whose
cross-entropy equals binary cross-entropy on s, so one loss function serves every model.

A user adds a model with ``@register("name")`` on a ``PairModel`` subclass; it then works in
every command. The class attributes below are the model's *recipe*: what the one training loop
(``train.py``) does differently for it. The defaults are the study's.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

MODELS: dict[str, type[nn.Module]] = {}


def register(name: str):
    """Class decorator: make a model available to every command under ``name``."""

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        cls.name = name
        MODELS[name] = cls
        return cls

    return add


def get_model_class(name: str) -> type[nn.Module]:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    return MODELS[name]


def label(name: str) -> str:
    """How tables and figures name a model: its ``label`` (the study's names), else its name."""
    cls = MODELS.get(name)
    return (getattr(cls, "label", "") or name) if cls else name


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class PairModel(nn.Module):
    """Base class: the attributes the commands and the training loop read."""

    name = ""
    label = ""  # how tables and figures name the model
    description = ""
    default_lr = 5e-4
    default_aux_weight = 0.0  # weight of the digit cross-entropy; 0 for models without digits

    # The recipe.
    target_loss = True  # the comparison's cross-entropy is part of the loss
    target_is_log_prob = False  # target output holds log-probabilities already (NLL, not CE)
    label_smoothing = 0.0  # of the digit cross-entropy
    one_cycle = False  # learning rate: a one-cycle schedule peaking at lr, else constant
    ema_decay = 0.0  # > 0: the trained weights are their exponential moving average over steps

    @classmethod
    def epoch_pairs(cls, train, gen: torch.Generator):
        """The training pairs of one epoch, in the order they are batched: the study's recipe
        shuffles them. A recipe may augment them here (new pairs, jittered digits...)."""
        return train[torch.randperm(len(train), generator=gen)]

    def members(self) -> list[nn.Module]:
        """The networks that train independently, each a pair model trained with this model's
        recipe (an ensemble trains each member on its own); usually the model itself."""
        return [self]

    @classmethod
    def combine_members(cls, outputs: list[tuple]) -> tuple:
        """The model's output from its members' outputs on the same pairs (for a model that is
        its own only member, that output)."""
        [out] = outputs
        return out
