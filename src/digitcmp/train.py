"""Train one model for one round (or, with the stacked engine, several rounds at once), and evaluate it.

``run_rounds(config, model_name, rounds)`` is a pure function of its arguments (for a fixed
machine and thread count), so any executor can map it over (model, rounds) tasks.
"""

from __future__ import annotations

import functools
import importlib
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import Pairs, RoundData, Source, load_source, round_data, seed_for
from .models import count_params, get_model_class
from .stacked import stack, stackable, unstack


@dataclass
class Config:
    """Everything that determines a run's numbers. Flags of the CLI map onto these fields."""

    models: list[str] = field(default_factory=lambda: ["baseline", "cnn", "siamese_aux"])
    rounds: int = 15
    seed: int = 0
    data: str = "auto"
    data_dir: str | None = None
    test_dir: str | None = None  # take test pairs from the MNIST test split (t10k files) here
    pairs: int = 1000
    val_pairs: int = 0  # training pairs held out as a validation split (trained on: pairs - val_pairs)
    epochs: int = 25
    batch_size: int = 100
    lr: float | None = None  # None: the model's default_lr (the study's per-model rates)
    weight_decay: float = 1e-4  # Adam's L2 penalty, the study's "L2 regularization"
    aux_weight: float | None = None  # None: the model's default_aux_weight
    threads: int = 1  # torch intra-op threads per training; part of the config because
    # the thread count can change float summation order, hence the last digits of results.
    engine: str = "stacked"  # "stacked": a model's rounds trained as one network (stacked.py);
    # "reference": one plain training loop per round. Same protocol; dropout masks drawn differently.
    plugins: list[str] = field(default_factory=list)  # modules that register models (--plugin);
    # every worker imports them before building a model, so user models run on any executor.
    variants: dict[str, dict] = field(default_factory=dict)  # named arms that ``models`` may list
    # besides registered models: name -> {"model": registered name, option: value, ...}, where
    # each option (one of TUNABLE) overrides this config for that arm, e.g. an aux-weight sweep.

    def to_dict(self) -> dict:
        return asdict(self)

    # The fields that may differ when resuming into an existing run directory: asking for
    # more rounds or more models extends a run without changing what the finished rounds mean.
    EXTENT = ("models", "rounds")


TUNABLE = ("lr", "weight_decay", "aux_weight", "epochs", "batch_size")


def option_problem(key: str, value) -> str | None:
    """Why ``value`` cannot be the value of training option ``key`` of an arm, or None if it can."""
    if key not in TUNABLE:
        return f"unknown option {key!r}; options: {', '.join(TUNABLE)}"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if key in ("epochs", "batch_size"):
        if not (number and isinstance(value, int) and value >= 1):
            return f"{key} must be a whole number >= 1, got {value!r}"
    elif not (number and 0 <= value < math.inf):
        return f"{key} must be a number >= 0, got {value!r}"
    return None


def resolve(config: Config, arm: str) -> tuple[str, Config]:
    """The registered model and the config with which ``arm`` (a name in config.models) trains."""
    spec = config.variants.get(arm)
    if spec is None:
        return arm, config
    options = {k: v for k, v in spec.items() if k != "model"}
    return spec["model"], replace(config, variants={}, **options)


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


def round_losses(out, pairs: Pairs, aux_weight: float, rounds: int) -> torch.Tensor:
    """``loss_fn`` of each of ``rounds`` equal batches stacked round-major: a vector of R losses."""
    logits, digits = out

    def ce(z, t):
        return F.cross_entropy(z, t, reduction="none").view(rounds, -1).mean(1)

    loss = ce(logits, pairs.target)
    if digits is not None and aux_weight:
        loss = loss + aux_weight * 2 * ce(digits.flatten(0, 1), pairs.classes.flatten())
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


def recipe(model: nn.Module):
    """How ``model`` trains: its own recipe (a ``fit`` method, ``train_model``'s other arguments)
    when it has one, else the plain loop ``train_model``."""
    return model.fit if hasattr(model, "fit") else functools.partial(train_model, model)


def train_stacked(models: list[nn.Module], train: list[Pairs], config: Config, lr: float,
                  aux_weight: float, batch_gens: list[torch.Generator],
                  dropout_gens: list[torch.Generator]) -> tuple[nn.Module, list[list[float]]]:
    """``train_model`` for R rounds at once: the same loop, on the stacked network.

    Round r shuffles with ``batch_gens[r]`` exactly as the reference loop does, so its batches
    are the reference's batches. Returns the stacked network and each round's per-epoch losses.
    """
    rounds = len(models)
    net = stack(models, dropout_gens)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=config.weight_decay)
    x, t, c = (torch.stack([getattr(p, f) for p in train]) for f in ("input", "target", "classes"))
    rows = torch.arange(rounds).unsqueeze(1)
    n, bs = x.shape[1], config.batch_size
    losses = torch.zeros(config.epochs, rounds, dtype=torch.float64)
    for epoch in range(config.epochs):
        net.train()
        perm = torch.stack([torch.randperm(n, generator=g) for g in batch_gens])
        for i in range(0, n, bs):
            idx = perm[:, i:i + bs]
            if idx.shape[1] < 2:  # BatchNorm cannot train on a batch of one
                continue
            b = Pairs(x[rows, idx].flatten(0, 1), t[rows, idx].flatten(0, 1), c[rows, idx].flatten(0, 1))
            per_round = round_losses(net(b.input), b, aux_weight, rounds)
            opt.zero_grad(set_to_none=True)
            # The sum, not the mean: round r's weights then get exactly round r's gradient.
            per_round.sum().backward()
            opt.step()
            losses[epoch] += per_round.detach() * idx.shape[1]
    return net, (losses / n).t().tolist()


def errors(logits: torch.Tensor, digits: torch.Tensor | None, pairs: Pairs) -> dict:
    """Error rates (fractions) on the target, and on the digits when the model predicts them."""
    # Counts divided in Python, so 17 wrong out of 1000 is stored as 0.017, not float32 noise.
    out = {"error": (logits.argmax(1) != pairs.target).sum().item() / len(pairs)}
    if digits is not None:
        out["digit_error"] = (digits.argmax(2) != pairs.classes).sum().item() / pairs.classes.numel()
    return out


@torch.inference_mode()
def evaluate(model: nn.Module, pairs: Pairs) -> dict:
    """Error rates of a trained model on ``pairs`` (see ``errors``)."""
    model.eval()
    return errors(*model(pairs.input), pairs)


@torch.inference_mode()
def evaluate_stacked(net: nn.Module, splits: list[Pairs], chunk: int = 250) -> list[dict]:
    """``evaluate`` for each round of a stacked network; ``splits[r]`` is round r's pairs."""
    net.eval()
    x = torch.stack([p.input for p in splits])
    outs = [net(x[:, i:i + chunk].flatten(0, 1)) for i in range(0, x.shape[1], chunk)]
    rounds = len(splits)

    def per_round(parts):  # chunks of R*c round-major rows -> R tensors of all N rows
        return torch.cat([z.unflatten(0, (rounds, -1)) for z in parts], 1).unbind()

    logits = per_round([o[0] for o in outs])
    digits = per_round([o[1] for o in outs]) if outs[0][1] is not None else [None] * rounds
    return [errors(lg, dg, p) for lg, dg, p in zip(logits, digits, splits, strict=True)]


@functools.lru_cache(maxsize=4)
def cached_source(data: str, data_dir: str | None, test_dir: str | None = None) -> Source:
    """Load a source once per process: every round of a run reuses it."""
    return load_source(data, data_dir, test_dir)


def source_for(config: Config) -> Source:
    """The digits ``config`` draws its pairs from (loaded once per process)."""
    return cached_source(config.data, config.data_dir, config.test_dir)


def _record(config: Config, model_name: str, round: int, model: nn.Module, tr: dict, te: dict,
            va: dict | None, losses: list[float], seconds: float, engine: str) -> dict:
    cls = type(model)
    result = {
        "model": model_name, "arch": cls.name, "round": round, "seed": config.seed,
        "params": count_params(model), "lr": lr_for(config, cls),
        "aux_weight": aux_weight_for(config, cls) if "digit_error" in te else None,
        "train_error": tr["error"], "test_error": te["error"],
    }
    if va is not None:
        result["val_error"] = va["error"]
    if "digit_error" in te:
        result["train_digit_error"] = tr["digit_error"]
        result["test_digit_error"] = te["digit_error"]
    result.update(train_loss=losses, seconds=float(f"{seconds:.3f}"), engine=engine)
    return result


def init_model(config: Config, cls: type[nn.Module], round: int) -> nn.Module:
    """A fresh ``cls`` initialised for ``round``."""
    # Initialisation (and the reference engine's dropout masks) depend only on (seed, round):
    # torch's global generator is reseeded here, so nothing that ran before in the process matters.
    torch.manual_seed(seed_for(config.seed, round, "init"))
    return cls()


def round_generator(config: Config, round: int, purpose: str) -> torch.Generator:
    """A generator seeded for one purpose ("batches", "dropout") of one round."""
    return torch.Generator().manual_seed(seed_for(config.seed, round, purpose))


def train_round(config: Config, model_name: str, round: int) -> tuple[nn.Module, RoundData, dict]:
    """Train ``model_name`` on round ``round``'s pairs with the reference loop; return the model,
    the data and the result record."""
    torch.set_num_threads(config.threads)
    start = time.perf_counter()
    data = round_data(source_for(config), config.seed, round, config.pairs, config.val_pairs)
    cls = get_model_class(model_name)
    model = init_model(config, cls, round)
    losses = recipe(model)(data.train, config, lr_for(config, cls), aux_weight_for(config, cls),
                           round_generator(config, round, "batches"))
    tr, te = evaluate(model, data.train), evaluate(model, data.test)
    va = evaluate(model, data.val) if data.val is not None else None
    result = _record(config, model_name, round, model, tr, te, va, losses,
                     time.perf_counter() - start, "reference")
    return model, data, result


def train_rounds(config: Config, model_name: str,
                 rounds: list[int]) -> list[tuple[nn.Module, RoundData, dict]]:
    """Train ``model_name`` on each of ``rounds``; with ``config.engine == "stacked"`` (and a model
    made of stackable layers) all at once. Returns (model, data, record) per round, in order."""
    if config.engine not in ("stacked", "reference"):
        raise ValueError(f"unknown engine {config.engine!r}; choose stacked or reference")
    cls = get_model_class(model_name)
    if config.engine == "reference" or not stackable(cls()):
        return [train_round(config, model_name, r) for r in rounds]
    torch.set_num_threads(config.threads)
    start = time.perf_counter()
    source = source_for(config)
    datas = [round_data(source, config.seed, r, config.pairs, config.val_pairs) for r in rounds]
    models = [init_model(config, cls, r) for r in rounds]
    net, losses = train_stacked(models, [d.train for d in datas], config, lr_for(config, cls),
                                aux_weight_for(config, cls),
                                [round_generator(config, r, "batches") for r in rounds],
                                [round_generator(config, r, "dropout") for r in rounds])
    train_err = evaluate_stacked(net, [d.train for d in datas])
    test_err = evaluate_stacked(net, [d.test for d in datas])
    val_err = evaluate_stacked(net, [d.val for d in datas]) if config.val_pairs else [None] * len(rounds)
    # Rounds trained together finish together: each is charged an equal share of the time.
    seconds = (time.perf_counter() - start) / len(rounds)
    out = []
    for i, r in enumerate(rounds):
        model = unstack(net, i, models[i])
        out.append((model, datas[i], _record(config, model_name, r, model, train_err[i], test_err[i],
                                             val_err[i], losses[i], seconds, "stacked")))
    return out


def run_rounds(config: Config, arm: str, rounds: list[int],
               checkpoint_dir: str | None = None) -> list[dict]:
    """Train one arm (a model, or a variant of ``config.variants``) for the given rounds and
    return their result records (what executors map); a record's "model" is the arm's name.

    A pure function of its arguments. With ``checkpoint_dir``, each round's trained model is also
    saved there as ``{arm}-r{round}.pt``.
    """
    for module in config.plugins:  # a fresh worker process has only the built-in models
        importlib.import_module(module)
    point = config.variants.get(arm)
    model_name, config = resolve(config, arm)
    out = train_rounds(config, model_name, rounds)
    for _, _, result in out:
        result["model"] = arm
        if point is not None:
            result["point"] = point
    if checkpoint_dir is not None:
        from .checkpoint import save_checkpoint

        for model, data, result in out:
            save_checkpoint(Path(checkpoint_dir) / f"{arm}-r{result['round']}.pt", model,
                            model_name, config=config.to_dict(),
                            source=source_for(config).info(),
                            mean=data.mean, std=data.std, round=result["round"],
                            metrics={k: v for k, v in result.items() if k.endswith("error")})
    return [result for _, _, result in out]
