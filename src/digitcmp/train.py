"""Train one model for one round, and evaluate it.

``run_round(config, model_name, round)`` is a pure function of its arguments (for a fixed
machine and thread count), so any executor can map it over (model, round) tasks.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import Pairs, RoundData, Source, load_source, round_data, seed_for
from .models import count_params, get_model_class


@dataclass
class Config:
    """Everything that determines a run's numbers. Flags of the CLI map onto these fields."""

    models: list[str] = field(default_factory=lambda: ["baseline", "cnn", "siamese_aux"])
    rounds: int = 15
    seed: int = 0
    data: str = "auto"
    data_dir: str | None = None
    pairs: int = 1000
    epochs: int = 25
    batch_size: int = 100
    lr: float | None = None  # None: the model's default_lr (the study's per-model rates)
    weight_decay: float = 1e-4  # Adam's L2 penalty, the study's "L2 regularization"
    aux_weight: float | None = None  # None: the model's default_aux_weight
    threads: int = 1  # torch intra-op threads per training; part of the config because
    # the thread count can change float summation order, hence the last digits of results.

    def to_dict(self) -> dict:
        return asdict(self)

    # The fields that may differ when resuming into an existing run directory: asking for
    # more rounds or more models extends a run without changing what the finished rounds mean.
    EXTENT = ("models", "rounds")


def lr_for(config: Config, model_cls) -> float:
    return model_cls.default_lr if config.lr is None else config.lr


def aux_weight_for(config: Config, model_cls) -> float:
    return model_cls.default_aux_weight if config.aux_weight is None else config.aux_weight


def loss_fn(out, pairs: Pairs, aux_weight: float) -> torch.Tensor:
    """CE on the target, plus aux_weight x (CE on digit a + CE on digit b) when there are digits."""
    logits, digits = out
    loss = F.cross_entropy(logits, pairs.target)
    if digits is not None and aux_weight:
        # Mean over the 2N digits, times 2: the sum of the per-digit losses CE(z_a) + CE(z_b).
        loss = loss + aux_weight * 2 * F.cross_entropy(digits.flatten(0, 1), pairs.classes.flatten())
    return loss


def batch(p: Pairs, idx: torch.Tensor) -> Pairs:
    return Pairs(p.input[idx], p.target[idx], p.classes[idx])


def train_model(model: nn.Module, train: Pairs, config: Config, lr: float, aux_weight: float,
                gen: torch.Generator) -> list[float]:
    """Adam on mini-batches for config.epochs epochs; returns the mean training loss per epoch."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    n, bs = len(train), config.batch_size
    losses = []
    for _ in range(config.epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            if len(idx) < 2:  # BatchNorm cannot train on a batch of one
                continue
            b = batch(train, idx)
            loss = loss_fn(model(b.input), b, aux_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / n)
    return losses


@torch.inference_mode()
def evaluate(model: nn.Module, pairs: Pairs) -> dict:
    """Error rates (fractions) on the target, and on the digits for models that predict them."""
    model.eval()
    logits, digits = model(pairs.input)
    # Counts divided in Python, so 17 wrong out of 1000 is stored as 0.017, not float32 noise.
    out = {"error": (logits.argmax(1) != pairs.target).sum().item() / len(pairs)}
    if digits is not None:
        out["digit_error"] = (digits.argmax(2) != pairs.classes).sum().item() / pairs.classes.numel()
    return out


@functools.lru_cache(maxsize=4)
def cached_source(data: str, data_dir: str | None) -> Source:
    """Load a source once per process: every round of a run reuses it."""
    return load_source(data, data_dir)


def train_round(config: Config, model_name: str, round: int) -> tuple[nn.Module, RoundData, dict]:
    """Train ``model_name`` on round ``round``'s pairs; return the model, the data and the record."""
    torch.set_num_threads(config.threads)
    start = time.perf_counter()
    data = round_data(cached_source(config.data, config.data_dir), config.seed, round, config.pairs)
    cls = get_model_class(model_name)
    # Initialisation and dropout masks depend only on (seed, round): torch's global generator
    # drives both, reseeded here so the result does not depend on what ran before in the process.
    torch.manual_seed(seed_for(config.seed, round, "init"))
    model = cls()
    gen = torch.Generator().manual_seed(seed_for(config.seed, round, "batches"))
    losses = train_model(model, data.train, config, lr_for(config, cls), aux_weight_for(config, cls),
                         gen)
    tr, te = evaluate(model, data.train), evaluate(model, data.test)
    result = {
        "model": model_name, "round": round, "seed": config.seed, "params": count_params(model),
        "train_error": tr["error"], "test_error": te["error"],
    }
    if "digit_error" in te:
        result["train_digit_error"] = tr["digit_error"]
        result["test_digit_error"] = te["digit_error"]
    result["train_loss"] = losses
    result["seconds"] = float(f"{time.perf_counter() - start:.3f}")
    return model, data, result


def run_round(config: Config, model_name: str, round: int, checkpoint_dir: str | None = None) -> dict:
    """Train one model for one round and return its result record (what executors map).

    With ``checkpoint_dir``, the trained model is also saved there as ``{model}-r{round}.pt``.
    """
    model, data, result = train_round(config, model_name, round)
    if checkpoint_dir is not None:
        from .checkpoint import save_checkpoint

        save_checkpoint(Path(checkpoint_dir) / f"{model_name}-r{round}.pt", model, model_name,
                        config=config.to_dict(), source=cached_source(config.data, config.data_dir).info(),
                        mean=data.mean, std=data.std, round=round,
                        metrics={k: v for k, v in result.items() if k.endswith("error")})
    return result
