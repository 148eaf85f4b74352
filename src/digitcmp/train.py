"""Training and evaluation: one loss, one loop, and the two engines that feed it.

The loop trains a network of S *slots*: independent networks whose batches are stacked
round-major along the batch dimension (slot s owns rows s*B .. s*B+B-1). The reference engine
trains one slot (a plain model, or one member of an ensemble at a time); the stacked engine
trains the R rounds of a model as one network of R slots (``stacked.py``). A model's recipe
(class attributes of ``PairModel``) chooses its epoch pairs, loss terms and schedule; the loop,
the non-finite checks and the per-epoch metrics are the same for every model.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import Config, aux_weight_for, lr_for
from .data.pairs import Pairs, RoundData, round_data
from .data.sources import Source, load_source
from .device import autocast, resolve_device, set_precision
from .errors import TrainingError
from .models import count_params, get_model_class
from .seeds import generator, seed_for
from .stacked import stack_models, stackable, unstack

# Rows per slot in one evaluation forward pass of a stacked network (bounds its memory).
EVAL_CHUNK = 250


@dataclass
class Trained:
    """One trained round: the model (eval mode), its pairs and its result record."""

    model: nn.Module
    data: RoundData
    record: dict


def pair_losses(out, batch: Pairs, slots: int, recipe, aux_weight: float) -> dict[str, torch.Tensor]:
    """The loss of each of ``slots`` equal blocks of ``batch``: vectors of S values.

    ``target_loss``: cross-entropy of the comparison; ``aux_loss`` (models with digit logits):
    CE(z_a) + CE(z_b), the sum of the two digits' cross-entropies; ``loss``: what is minimised,
    target + aux_weight x aux, as the recipe says.
    """
    logits, digits = out

    def mean_per_slot(x: torch.Tensor) -> torch.Tensor:
        return x.view(slots, -1).mean(1)

    target_ce = F.nll_loss if recipe.target_is_log_prob else F.cross_entropy
    parts = {"target_loss": mean_per_slot(target_ce(logits.float(), batch.target, reduction="none"))}
    loss = parts["target_loss"] if recipe.target_loss else None
    if digits is not None:
        # Mean over the 2N digits, times 2: the sum of the per-digit losses CE(z_a) + CE(z_b).
        ce = F.cross_entropy(digits.flatten(0, 1).float(), batch.classes.flatten(), reduction="none",
                             label_smoothing=recipe.label_smoothing)
        parts["aux_loss"] = 2 * mean_per_slot(ce)
        if aux_weight:
            aux = aux_weight * parts["aux_loss"]
            loss = aux if loss is None else loss + aux
    if loss is None:
        raise TrainingError(f"{recipe.name}: nothing to train on (no target loss and aux weight 0)")
    parts["loss"] = loss
    return parts


def fit(net: nn.Module, trains: list[Pairs], gens: list[torch.Generator], recipe, lr: float,
        aux_weight: float, config: Config, names: list[str], device: torch.device,
        after_epoch: Callable[[int], None] | None = None, fused: bool = False) -> dict[str, torch.Tensor]:
    """Train ``net`` (S = len(trains) slots) for config.epochs epochs with Adam, the recipe's
    epoch pairs and schedule; return per-epoch metrics, each an epochs x S tensor: the mean
    ``loss``, ``target_loss``, ``aux_loss`` and the error on the batches as they were trained
    (dropout on, batch statistics: ``running_train_error``).

    Slot s draws its epoch pairs from ``gens[s]``. A non-finite loss or weight stops training
    with a TrainingError naming the slot (``names[s]``) and the epoch. ``fused``: Adam's fused
    kernel, one pass over all weights instead of a few small ops per tensor (the reference
    engine keeps the plain one).
    """
    slots, n, bs = len(trains), len(trains[0]), config.batch_size
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=config.weight_decay, fused=fused or None)
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=config.epochs * math.ceil(n / bs))
             if recipe.one_cycle else None)
    # MPS has no float64; elsewhere sums of per-batch losses are kept in double precision.
    acc = torch.float32 if device.type == "mps" else torch.float64
    history: dict[str, list[torch.Tensor]] = {}
    for epoch in range(config.epochs):
        net.train()
        pairs = [recipe.epoch_pairs(t, g) for t, g in zip(trains, gens, strict=True)]
        sums: dict[str, torch.Tensor] = {}
        wrong = torch.zeros(slots, device=device)
        seen = 0
        for i in range(0, n, bs):
            size = min(bs, n - i)
            if size < 2:  # BatchNorm cannot train on a batch of one
                continue
            b = Pairs.cat([p[i:i + bs] for p in pairs]) if slots > 1 else pairs[0][i:i + bs]
            with autocast(device, config.precision):
                out = net(b.input)
            parts = pair_losses(out, b, slots, recipe, aux_weight)
            opt.zero_grad(set_to_none=True)
            # The sum over slots, not the mean: slot s's weights then get exactly its own gradient.
            parts["loss"].sum().backward()
            opt.step()
            if sched is not None:
                sched.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0) + v.detach().to(acc) * size
            wrong += (out[0].argmax(1) != b.target).view(slots, -1).sum(1)
            seen += size
        metrics = {k: v / seen for k, v in sums.items()} | {"running_train_error": wrong.to(acc) / seen}
        check_finite(net, metrics["loss"], names, epoch)
        for k, v in metrics.items():
            history.setdefault(k, []).append(v.cpu())
        if after_epoch is not None:
            after_epoch(epoch)
    return {k: torch.stack(v) for k, v in history.items()}


def check_finite(net: nn.Module, loss: torch.Tensor, names: list[str], epoch: int) -> None:
    """Stop a training whose loss or weights stopped being finite numbers: its results would be
    meaningless, and a checkpoint of it would predict nothing."""
    bad = ~torch.isfinite(loss)
    if bad.any():
        s = int(bad.nonzero()[0])
        raise TrainingError(f"{names[s]}: the training loss became {loss[s].item()} in epoch "
                            f"{epoch + 1}; lower --lr or check the data")
    for name, p in net.named_parameters():
        if not torch.isfinite(p).all():
            raise TrainingError(f"{names[0] if len(names) == 1 else ', '.join(names)}: weights "
                                f"({name}) became non-finite in epoch {epoch + 1}; lower --lr")


def errors(logits: torch.Tensor, digits: torch.Tensor | None, pairs: Pairs) -> dict:
    """Error rates (fractions) on the target, and on the digits when the model predicts them."""
    # Counts divided in Python, so 17 wrong out of 1000 is stored as 0.017, not float32 noise.
    out = {"error": (logits.argmax(1) != pairs.target).sum().item() / len(pairs)}
    if digits is not None:
        out["digit_error"] = (digits.argmax(2) != pairs.classes).sum().item() / pairs.classes.numel()
    return out


def _forward_slots(net: nn.Module, splits: list[Pairs], chunk: int | None, precision: str):
    """``net``'s outputs for S splits (one per slot, equal sizes), evaluated ``chunk`` rows per
    slot at a time: per slot, the target logits and the digit logits (or None)."""
    n, slots = len(splits[0]), len(splits)
    chunk = chunk or n
    device = next(net.parameters()).device
    with autocast(device, precision):
        outs = [net(torch.cat([p.input[i:i + chunk] for p in splits]) if slots > 1
                    else splits[0].input[i:i + chunk]) for i in range(0, n, chunk)]

    def per_slot(parts):  # chunks of S*c slot-major rows -> S tensors of all N rows
        return torch.cat([z.float().unflatten(0, (slots, -1)) for z in parts], 1).unbind()

    logits = per_slot([o[0] for o in outs])
    digits = per_slot([o[1] for o in outs]) if outs[0][1] is not None else [None] * slots
    return logits, digits


@torch.inference_mode()
def evaluate(net: nn.Module, splits: list[Pairs], chunk: int | None = None,
             precision: str = "fp32") -> list[dict]:
    """Error rates (see ``errors``) of each slot of ``net`` on its split, in eval mode."""
    net.eval()
    logits, digits = _forward_slots(net, splits, chunk, precision)
    return [errors(lg, dg, p) for lg, dg, p in zip(logits, digits, splits, strict=True)]


@torch.no_grad()
def train_mode_errors(net: nn.Module, splits: list[Pairs], batch_size: int,
                      precision: str = "fp32") -> list[float]:
    """Each slot's error on its split measured as if still training: dropout on, BatchNorm with
    the statistics of mini-batches of ``batch_size``. (A course-style error count that forgets
    ``model.eval()`` measures this.) The network's BatchNorm statistics are left as they were."""
    saved = copy.deepcopy(net.state_dict())
    net.train()
    n = len(splits[0])
    # Batches of batch_size rows per slot, a one-row tail joined to the batch before it.
    bounds = list(range(0, n, batch_size)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < 2:
        del bounds[-2]
    wrong = [0] * len(splits)
    device = next(net.parameters()).device
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        with autocast(device, precision):
            logits = net(torch.cat([p.input[a:b] for p in splits]))[0]
        for s, (lg, p) in enumerate(zip(logits.unflatten(0, (len(splits), -1)), splits, strict=True)):
            wrong[s] += (lg.argmax(1) != p.target[a:b]).sum().item()
    net.load_state_dict(saved)
    return [w / n for w in wrong]


@functools.lru_cache(maxsize=4)
def cached_source(data: str, data_dir: str | None, test_dir: str | None = None,
                  test_pool: str = "test") -> Source:
    """Load a source once per process: every round of a run reuses it."""
    return load_source(data, data_dir, test_dir, test_pool)


def source_for(config: Config) -> Source:
    """The digits ``config`` draws its pairs from (loaded once per process)."""
    return cached_source(config.data, config.data_dir, config.test_dir, config.test_pool)


def init_model(config: Config, cls: type[nn.Module], round: int) -> nn.Module:
    """A fresh ``cls`` initialised for ``round``."""
    # Initialisation (and the reference engine's dropout masks) depend only on (seed, round):
    # torch's global generators are reseeded here, so nothing that ran before in the process matters.
    torch.manual_seed(seed_for(config.seed, round, "init"))
    return cls()


class Curves:
    """Per-epoch metrics of S slots: the loop's training metrics, and each slot's error (eval
    mode) on the first ``pairs`` of its test and validation pairs after every epoch. A subset
    keeps the cost small (evaluating all 1000 test pairs costs a quarter of an epoch's training)
    and, being the same pairs every epoch, shows the curve's shape without sampling noise."""

    def __init__(self, net: nn.Module, datas: list[RoundData], pairs: int, chunk: int | None,
                 precision: str):
        self.net, self.chunk, self.precision = net, chunk, precision
        self.splits = {split: [d.splits()[split][:pairs] for d in datas]
                       for split in ("test", "val") if pairs and split in datas[0].splits()}
        self.errors: dict[str, list[list[dict]]] = {split: [] for split in self.splits}

    def after_epoch(self, epoch: int) -> None:
        for split, log in self.errors.items():
            log.append(evaluate(self.net, self.splits[split], self.chunk, self.precision))

    def of_slot(self, s: int, history: dict[str, torch.Tensor]) -> dict[str, list[float]]:
        """Slot s's curves: each metric's per-epoch values."""
        curves = {k: [float(x) for x in v[:, s]] for k, v in history.items()}
        for split, log in self.errors.items():
            curves[f"{split}_error"] = [epoch[s]["error"] for epoch in log]
        return curves


def make_record(config: Config, model_name: str, round: int, model: nn.Module, evals: dict[str, dict],
                train_mode: dict[str, float], curves: dict[str, list[float]], seconds: float,
                engine: str, device: torch.device) -> dict:
    """The result of one trained round, as rounds.jsonl stores it (errors as fractions)."""
    cls = type(model)
    digits = "digit_error" in evals["test"]
    result = {
        "model": model_name, "arch": cls.name, "round": round, "seed": config.seed,
        "params": count_params(model), "lr": lr_for(config, cls),
        "aux_weight": aux_weight_for(config, cls) if digits else None,
        "train_error": evals["train"]["error"], "test_error": evals["test"]["error"],
    }
    if "val" in evals:
        result["val_error"] = evals["val"]["error"]
    if digits:
        result["train_digit_error"] = evals["train"]["digit_error"]
        result["test_digit_error"] = evals["test"]["digit_error"]
    result.update({f"train_mode_{split}_error": e for split, e in train_mode.items()})
    result.update(train_loss=curves.pop("loss"), curves=curves, seconds=float(f"{seconds:.3f}"),
                  engine=engine, device=str(device))
    return result


def train_round(config: Config, model_name: str, round: int, device: torch.device,
                progress: Callable[[float], None] | None = None) -> Trained:
    """Train ``model_name`` on round ``round``'s pairs with the reference engine: one slot at a
    time (each member of an ensemble in turn, sharing the round's batch generator)."""
    start = time.perf_counter()
    data = round_data(source_for(config), config.seed, round, config.pairs, config.val_pairs)
    cls = get_model_class(model_name)
    model = init_model(config, cls, round).to(device)
    on_device = data.to(device)
    gen = generator(config.seed, round, "batches")
    members = model.members()
    # Curves of an ensemble trained one member at a time would describe half-trained ensembles.
    curves = (Curves(model, [on_device], config.curve_pairs, None, config.precision)
              if len(members) == 1 else None)
    histories = []
    for member in members:
        def after_epoch(epoch):
            if curves is not None:
                curves.after_epoch(epoch)
            if progress is not None:
                progress(1 / len(members))
        histories.append(fit(member, [on_device.train], [gen], cls, lr_for(config, cls),
                             aux_weight_for(config, cls), config, [f"{model_name} round {round}"],
                             device, after_epoch))
    history = {k: torch.stack([h[k] for h in histories]).mean(0) for k in histories[0]}
    splits = on_device.splits()
    evals = {split: evaluate(model, [p], precision=config.precision)[0] for split, p in splits.items()}
    train_mode = {split: train_mode_errors(model, [splits[split]], config.batch_size, config.precision)[0]
                  for split in ("train", "test")}
    slot_curves = curves.of_slot(0, history) if curves else {k: [float(x) for x in v[:, 0]]
                                                            for k, v in history.items()}
    record = make_record(config, model_name, round, model, evals, train_mode, slot_curves,
                         time.perf_counter() - start, "reference", device)
    return Trained(model.eval(), data, record)


def train_stacked(config: Config, model_name: str, rounds: list[int], device: torch.device,
                  progress: Callable[[float], None] | None = None) -> list[Trained]:
    """Train ``model_name`` on ``rounds`` at once with the stacked engine: R slots, each with the
    reference engine's data, initialisation and batches for its round."""
    start = time.perf_counter()
    cls = get_model_class(model_name)
    source = source_for(config)
    datas = [round_data(source, config.seed, r, config.pairs, config.val_pairs) for r in rounds]
    on_device = [d.to(device) for d in datas]
    models = [init_model(config, cls, r) for r in rounds]
    net = stack_models(models, [generator(config.seed, r, "dropout", device) for r in rounds]).to(device)
    curves = Curves(net, on_device, config.curve_pairs, EVAL_CHUNK, config.precision)

    def after_epoch(epoch):
        curves.after_epoch(epoch)
        if progress is not None:
            progress(len(rounds))

    history = fit(net, [d.train for d in on_device], [generator(config.seed, r, "batches") for r in rounds],
                  cls, lr_for(config, cls), aux_weight_for(config, cls), config,
                  [f"{model_name} round {r}" for r in rounds], device, after_epoch,
                  fused=device.type in ("cpu", "cuda"))
    evals = {split: evaluate(net, [d.splits()[split] for d in on_device], EVAL_CHUNK, config.precision)
             for split in on_device[0].splits()}
    train_mode = {split: train_mode_errors(net, [d.splits()[split] for d in on_device],
                                           config.batch_size, config.precision)
                  for split in ("train", "test")}
    # Rounds trained together finish together: each is charged an equal share of the time.
    seconds = (time.perf_counter() - start) / len(rounds)
    out = []
    for i, r in enumerate(rounds):
        model = unstack(net, i, models[i])
        record = make_record(config, model_name, r, model, {k: v[i] for k, v in evals.items()},
                             {k: v[i] for k, v in train_mode.items()}, curves.of_slot(i, history),
                             seconds, "stacked", device)
        out.append(Trained(model, datas[i], record))
    return out


def train_rounds(config: Config, model_name: str, rounds: list[int],
                 progress: Callable[[float], None] | None = None) -> list[Trained]:
    """Train ``model_name`` on each of ``rounds``: with the stacked engine all at once when the
    model stacks, else one after another. ``progress(k)`` is told of every k round-epochs done."""
    device = resolve_device(config.device)
    torch.set_num_threads(config.threads)
    set_precision(config.precision)
    if config.engine == "stacked" and stackable(get_model_class(model_name)()):
        return train_stacked(config, model_name, rounds, device, progress)
    return [train_round(config, model_name, r, device, progress) for r in rounds]
