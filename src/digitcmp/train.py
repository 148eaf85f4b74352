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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import directconv, fused
from .adam import Adam
from .config import Config, aux_weight_for, lr_for
from .data.pairs import Pairs, RoundData, round_data
from .data.sources import Source, load_source
from .device import autocast, resolve_device, set_precision
from .errors import TrainingError
from .models import count_params, get_model_class
from .seeds import generator, seed_for
from .stacked import (
    DIRECT_STACK_BUDGET,
    STACK_BUDGET,
    has_direct_convs,
    has_fused_layers,
    stack_models,
    stack_size,
    stackable,
)

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
    with a TrainingError naming the slot (``names[s]``) and the epoch. ``fused`` (the stacked
    engine's): Adam's fused kernel, one pass over all weights instead of a few small ops per
    tensor, stepped by ``adam.Adam`` slot by slot, so that a slot's update does not depend on
    its stack mates (the reference engine keeps the plain Adam).
    """
    slots, n, bs = len(trains), len(trains[0]), config.batch_size
    opt = Adam(net.parameters(), lr=lr, weight_decay=config.weight_decay, fused=fused or None,
               per_slot=fused)
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=config.epochs * math.ceil(n / bs))
             if recipe.one_cycle else None)
    params = list(net.parameters())
    ema = [p.detach().clone() for p in params] if recipe.ema_decay else None
    # MPS has no float64; elsewhere sums of per-batch losses are kept in double precision.
    acc = torch.float32 if device.type == "mps" else torch.float64
    history: dict[str, list[torch.Tensor]] = {}
    for epoch in range(config.epochs):
        net.train()
        pairs = [recipe.epoch_pairs(t, g) for t, g in zip(trains, gens, strict=True)]
        sums = torch.zeros((), dtype=acc, device=device)
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
            if ema is not None:
                with torch.no_grad():
                    for e, p in zip(ema, params, strict=True):
                        e.lerp_(p, 1 - recipe.ema_decay)
            # All metrics in one K x S tensor: four operations a step instead of three per metric.
            sums = sums + torch.stack([v.detach() for v in parts.values()]).to(acc) * size
            wrong += (out[0].argmax(1) != b.target).view(slots, -1).sum(1)
            seen += size
        metrics = dict(zip(parts, sums / seen, strict=True)) | {"running_train_error": wrong.to(acc) / seen}
        check_finite(net, metrics["loss"], names, epoch)
        for k, v in metrics.items():
            history.setdefault(k, []).append(v.cpu())
        if after_epoch is not None:
            after_epoch(epoch)
    if ema is not None:  # the average of the last steps' weights, not the last one's
        with torch.no_grad():
            for p, e in zip(params, ema, strict=True):
                p.copy_(e)
    return {k: torch.stack(v) for k, v in history.items()}


def check_finite(net: nn.Module, loss: torch.Tensor, names: list[str], epoch: int) -> None:
    """Stop a training whose loss or weights stopped being finite numbers: its results would be
    meaningless, and a checkpoint of it would predict nothing."""
    bad = ~torch.isfinite(loss)
    if bad.any():
        s = int(bad.nonzero()[0])
        raise TrainingError(f"{names[s]}: the training loss became {loss[s].item()} in epoch "
                            f"{epoch + 1}; lower --lr or check the data")
    if not all(torch.isfinite(p).all() for p in net.parameters()):
        who = ", ".join(dict.fromkeys(names))
        raise TrainingError(f"{who}: the weights became non-finite in epoch {epoch + 1}; lower --lr")


def errors(logits: torch.Tensor, digits: torch.Tensor | None, pairs: Pairs) -> dict:
    """Error rates (fractions) on the target, and on the digits when the model predicts them."""
    # Counts divided in Python, so 17 wrong out of 1000 is stored as 0.017, not float32 noise.
    out = {"error": (logits.argmax(1) != pairs.target).sum().item() / len(pairs)}
    if digits is not None:
        out["digit_error"] = (digits.argmax(2) != pairs.classes).sum().item() / pairs.classes.numel()
    return out


def first_member(outputs: list[tuple]) -> tuple:
    """``combine`` for networks whose slots are whole models: a round's output is its slot's."""
    [out] = outputs
    return out


def _round_outputs(net: nn.Module, splits: list[Pairs], bounds: list[int], precision: str,
                   members: int, combine) -> list[tuple]:
    """``net``'s output on each round's split: the round's ``members`` slots all see its pairs,
    ``bounds[i]:bounds[i+1]`` rows per forward pass, and ``combine`` makes their outputs one."""
    slot_splits = [p for p in splits for _ in range(members)]
    device = next(net.parameters()).device
    outs = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        with autocast(device, precision):
            outs.append(net(torch.cat([p.input[a:b] for p in slot_splits]) if len(slot_splits) > 1
                            else slot_splits[0].input[a:b]))

    def per_slot(parts):  # chunks of S*c slot-major rows -> S tensors of all N rows
        return torch.cat([z.float().unflatten(0, (len(slot_splits), -1)) for z in parts], 1).unbind()

    logits = per_slot([o[0] for o in outs])
    digits = per_slot([o[1] for o in outs]) if outs[0][1] is not None else [None] * len(slot_splits)
    slots = list(zip(logits, digits, strict=True))
    return [combine(slots[r * members:(r + 1) * members]) for r in range(len(splits))]


@torch.inference_mode()
def evaluate(net: nn.Module, splits: list[Pairs], chunk: int | None = None, precision: str = "fp32",
             members: int = 1, combine=first_member) -> list[dict]:
    """Error rates (see ``errors``) of each round of ``net`` on its split, in eval mode,
    ``chunk`` rows per slot at a time. A round is ``members`` slots whose outputs ``combine``
    makes the round's (an ensemble's members)."""
    net.eval()
    n = len(splits[0])
    bounds = list(range(0, n, chunk or n)) + [n]
    outs = _round_outputs(net, splits, bounds, precision, members, combine)
    return [errors(lg, dg, p) for (lg, dg), p in zip(outs, splits, strict=True)]


@torch.no_grad()
def train_mode_errors(net: nn.Module, splits: list[Pairs], batch_size: int, precision: str = "fp32",
                      members: int = 1, combine=first_member) -> list[float]:
    """Each round's error on its split measured as if still training: dropout on, BatchNorm
    with the statistics of mini-batches of ``batch_size``. (A course-style error count that
    forgets ``model.eval()`` measures this.) BatchNorm's running statistics are left as they were."""
    saved = copy.deepcopy(net.state_dict())
    net.train()
    n = len(splits[0])
    # Batches of batch_size rows per slot, a one-row tail joined to the batch before it.
    bounds = list(range(0, n, batch_size)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < 2:
        del bounds[-2]
    outs = _round_outputs(net, splits, bounds, precision, members, combine)
    net.load_state_dict(saved)
    return [(lg.argmax(1) != p.target).sum().item() / n for (lg, _), p in zip(outs, splits, strict=True)]


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


def member_generator(config: Config, round: int, purpose: str, member: int, device="cpu") -> torch.Generator:
    """The generator for ``purpose`` ("batches", "dropout") of member ``member`` of a round's
    model: member 0's is the round's own (every single model's), the others' their own."""
    return generator(config.seed, round, purpose if member == 0 else f"{purpose}/member{member}", device)


class Curves:
    """Per-epoch metrics of R rounds of K member slots: the loop's training metrics (averaged
    over a round's members), and each round's error (eval mode) on the first ``pairs`` of its
    test and validation pairs after every epoch. A subset keeps the cost small (evaluating all
    1000 test pairs costs a quarter of an epoch's training) and, being the same pairs every
    epoch, shows the curve's shape without sampling noise."""

    def __init__(self, net: nn.Module, datas: list[RoundData], pairs: int, chunk: int | None,
                 precision: str, members: int = 1, combine=first_member):
        self.net, self.chunk, self.precision = net, chunk, precision
        self.members, self.combine = members, combine
        self.splits = {split: [d.splits()[split][:pairs] for d in datas]
                       for split in ("test", "val") if pairs and split in datas[0].splits()}
        self.errors: dict[str, list[list[dict]]] = {split: [] for split in self.splits}

    def after_epoch(self, epoch: int) -> None:
        for split, log in self.errors.items():
            log.append(evaluate(self.net, self.splits[split], self.chunk, self.precision, self.members,
                                self.combine))

    def of_round(self, r: int, history: dict[str, torch.Tensor]) -> dict[str, list[float]]:
        """Round r's curves: each metric's per-epoch values."""
        curves = round_history(history, r, self.members)
        for split, log in self.errors.items():
            curves[f"{split}_error"] = [epoch[r]["error"] for epoch in log]
        return curves


def round_history(history: dict[str, torch.Tensor], r: int, members: int) -> dict[str, list[float]]:
    """Round r's per-epoch training metrics from the loop's (epochs x slots) history: the mean
    over its ``members`` slots."""
    return {name: [float(x) for x in v[:, r * members:(r + 1) * members].mean(1)]
            for name, v in history.items()}


def make_record(config: Config, model_name: str, round: int, model: nn.Module, evals: dict[str, dict],
                train_mode: dict[str, float], curves: dict[str, list[float]], seconds: float,
                engine: str, device: torch.device, fused_kernel: bool = False,
                direct_conv: bool = False) -> dict:
    """The result of one trained round, as rounds.jsonl stores it (errors as fractions);
    ``fused_kernel``: whether BatchNorm + max-pool + ReLU ran as ``fused.py``'s kernel,
    ``direct_conv``: whether convolutions ran on ``directconv.py``'s (either changes float
    summation order, hence the last digits, against PyTorch's operators)."""
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
        for split in evals:
            result[f"{split}_digit_error"] = evals[split]["digit_error"]
    result.update({f"train_mode_{split}_error": e for split, e in train_mode.items()})
    result.update(train_loss=curves.pop("loss"), curves=curves, seconds=float(f"{seconds:.3f}"),
                  engine=engine, device=str(device), fused_kernel=fused_kernel, direct_conv=direct_conv)
    return result


def train_round(config: Config, model_name: str, round: int, device: torch.device,
                progress: Callable[[float], None] | None = None) -> Trained:
    """Train ``model_name`` on round ``round``'s pairs with the reference engine: one slot at a
    time, each member of an ensemble in turn."""
    start = time.perf_counter()
    data = round_data(source_for(config), config.seed, round, config.pairs, config.val_pairs,
                      config.standardise)
    cls = get_model_class(model_name)
    model = init_model(config, cls, round).to(device)
    on_device = data.to(device)
    members = model.members()
    # Curves of an ensemble trained one member at a time would describe half-trained ensembles.
    curves = (Curves(model, [on_device], config.curve_pairs, None, config.precision)
              if len(members) == 1 else None)

    def after_epoch(epoch):
        if curves is not None:
            curves.after_epoch(epoch)
        if progress is not None:
            progress(1 / len(members))

    histories = [fit(member, [on_device.train], [member_generator(config, round, "batches", k)], cls,
                     lr_for(config, cls), aux_weight_for(config, cls), config,
                     [f"{model_name} round {round}"], device, after_epoch)
                 for k, member in enumerate(members)]
    history = {name: torch.cat([h[name] for h in histories], 1) for name in histories[0]}
    splits = on_device.splits()
    evals = {split: evaluate(model, [p], precision=config.precision)[0] for split, p in splits.items()}
    train_mode = {split: train_mode_errors(model, [splits[split]], config.batch_size, config.precision)[0]
                  for split in ("train", "test")}
    round_curves = curves.of_round(0, history) if curves else round_history(history, 0, len(members))
    record = make_record(config, model_name, round, model, evals, train_mode, round_curves,
                         time.perf_counter() - start, "reference", device)
    return Trained(model.eval(), data, record)


def fuses(config: Config, device: torch.device) -> bool:
    """Whether the stacked engine runs BatchNorm + max-pool + ReLU as one C kernel (``fused.py``):
    on a CPU that has it, in float32, on at most two threads per training. (The kernel runs on
    one thread; it was measured faster than PyTorch's operators beside one and two threads,
    README's Speed section, not against more.)"""
    return (device.type == "cpu" and config.precision == "fp32" and config.threads <= 2
            and fused.library() is not None)


def direct_convs(config: Config, device: torch.device) -> bool:
    """Whether the stacked engine runs convolutions on ``directconv.py``'s kernels: on a CPU that
    has them, in float32, on one thread per training (they run on one thread; beside PyTorch's
    convolutions on two threads they were no faster, README's Speed section)."""
    return (device.type == "cpu" and config.precision == "fp32" and config.threads == 1
            and directconv.library() is not None)


def load_kernels(config: Config, device: torch.device) -> None:
    """Build (on first use: a compiler run of over a second each) and load the C kernels that
    training under ``config`` on ``device`` uses, both builds at once. The driver calls it before
    its workers start, so that forked workers find them loaded and spawned ones built."""
    if config.engine != "stacked":  # the reference engine runs PyTorch's operators only
        return
    with ThreadPoolExecutor(2) as pool:  # each thread waits on its compiler process
        list(pool.map(lambda uses: uses(config, device), (fuses, direct_convs)))


def stack_group(config: Config, device: torch.device, model: nn.Module) -> int:
    """How many rounds (slots) of ``model`` the stacked engine stacks in one network on a CPU
    (``stacked.stack_size``, with the larger budget where the direct kernels run)."""
    budget = DIRECT_STACK_BUDGET if direct_convs(config, device) else STACK_BUDGET
    return stack_size(model, config.batch_size, budget)


def train_stacked(config: Config, model_name: str, rounds: list[int], device: torch.device,
                  progress: Callable[[float], None] | None = None) -> list[Trained]:
    """Train ``model_name`` on ``rounds`` at once with the stacked engine: R x K slots, the K
    members of each round's model (one for most models), each with the reference engine's data,
    initialisation and epoch pairs for its round and member."""
    start = time.perf_counter()
    cls = get_model_class(model_name)
    source = source_for(config)
    datas = [round_data(source, config.seed, r, config.pairs, config.val_pairs, config.standardise)
             for r in rounds]
    on_device = [d.to(device) for d in datas]
    models = [init_model(config, cls, r) for r in rounds]
    k = len(models[0].members())
    slots = [(r, m) for r in rounds for m in range(k)]
    members = [member for model in models for member in model.members()]
    # On a CPU, slots stack in groups whose activations fit the cache; a GPU takes them all,
    # folded into the channels of grouped convolutions.
    gpu = device.type == "cuda"
    group = None if gpu else stack_group(config, device, members[0])
    net = stack_models(members, [member_generator(config, r, "dropout", m, device) for r, m in slots],
                       group, folded=gpu, fuse=fuses(config, device),
                       direct=direct_convs(config, device)).to(device)
    fused_kernel, direct_conv = has_fused_layers(net), has_direct_convs(net)
    combine = cls.combine_members
    curves = Curves(net, on_device, config.curve_pairs, EVAL_CHUNK, config.precision, k, combine)

    def after_epoch(epoch):
        curves.after_epoch(epoch)
        if progress is not None:
            progress(len(rounds))

    history = fit(net, [d.train for d in on_device for _ in range(k)],
                  [member_generator(config, r, "batches", m) for r, m in slots], cls,
                  lr_for(config, cls), aux_weight_for(config, cls), config,
                  [f"{model_name} round {r}" for r, _ in slots], device, after_epoch,
                  fused=device.type in ("cpu", "cuda"))
    evals = {split: evaluate(net, [d.splits()[split] for d in on_device], EVAL_CHUNK, config.precision,
                             k, combine)
             for split in on_device[0].splits()}
    train_mode = {split: train_mode_errors(net, [d.splits()[split] for d in on_device],
                                           config.batch_size, config.precision, k, combine)
                  for split in ("train", "test")}
    # Rounds trained together finish together: each is charged an equal share of the time.
    seconds = (time.perf_counter() - start) / len(rounds)
    out = []
    for i, r in enumerate(rounds):
        for m, member in enumerate(models[i].members()):
            net.unstack(i * k + m, member)
        model = models[i].eval()
        record = make_record(config, model_name, r, model, {s: v[i] for s, v in evals.items()},
                             {s: v[i] for s, v in train_mode.items()}, curves.of_round(i, history),
                             seconds, "stacked", device, fused_kernel, direct_conv)
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
