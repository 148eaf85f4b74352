"""Adam with PyTorch's fused kernel, stepped with less Python around it, and slot by slot.

``torch.optim.Adam(fused=True)`` spends more time per step in Python (regrouping the tensors by
device and dtype, checking each parameter's state) than in its kernel for the few small
tensors of the study's models (README, Speed). Once its state is made, this one keeps the
lists of state tensors and calls the same kernels with the same arguments.

``per_slot``: the parameters of a stacked network (``stacked.py``) hold S independent networks
along their first dimension. PyTorch's CPU kernel runs a tensor in whole vectors and the last
few values one at a time, and the two ways round differently now and then, so a slot's update
would depend on where its values fall in the stacked tensor, i.e. on its stack mates. Each
slot's slice then goes to the kernel as a tensor of its own, where its size is not a whole
number of 64 floats (beyond any vector the kernel uses): the same numbers as the slot trained
alone, to the bit (tested). The state is made here, as ``torch.optim.Adam`` makes it, so that
the first step too runs slot by slot.

Anything the short path does not cover (several parameter groups, a missing or sparse
gradient, amsgrad, maximize, capturable or differentiable, a non-fused Adam) goes through
``torch.optim.Adam.step`` unchanged. Schedulers work as with Adam: the learning rate and betas
are read from the parameter group at every step.
"""

from __future__ import annotations

import torch

# Values per slot that keep slots apart in whole vectors of any width the kernel uses.
_WHOLE = 64


class Adam(torch.optim.Adam):
    """``torch.optim.Adam`` (same arguments, state and state_dict) with a shorter fused step;
    ``per_slot``: the parameters' first dimension holds independent networks (see above)."""

    _lists: tuple[list[torch.Tensor], ...] | None = None

    # torch.optim.Optimizer wraps these two in torch._disable_dynamo, whose first call imports
    # torch._dynamo: about as long as importing torch itself, in every worker process, for a
    # guard that matters only under torch.compile, which never traces this optimiser. The
    # functions it wraps do the same work without the import.
    add_param_group = getattr(torch.optim.Optimizer.add_param_group, "__wrapped__",
                              torch.optim.Optimizer.add_param_group)
    _zero_grad = getattr(torch.optim.Optimizer.zero_grad, "__wrapped__", torch.optim.Optimizer.zero_grad)

    def __init__(self, params, *args, per_slot: bool = False, **kwargs):
        super().__init__(params, *args, **kwargs)
        self.per_slot = per_slot

    def zero_grad(self, set_to_none: bool = True) -> None:
        """``torch.optim.Optimizer.zero_grad``; dropping the gradients (``set_to_none``, every
        training step's case) without the profiler range it opens around that loop."""
        if not set_to_none:
            return self._zero_grad(False)
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None
        return None

    def step(self, closure=None):
        if closure is not None or not self._short_path():
            self._lists = None  # the state may change under the full step
            return super().step(closure)
        group = self.param_groups[0]
        params = group["params"]
        grads = [p.grad for p in params]
        if any(g is None or g.is_sparse for g in grads):
            self._lists = None
            return super().step()
        if self._lists is None:
            self._lists = self._state_lists(params)
        ps, exp_avgs, exp_avg_sqs, steps, slot_steps = self._lists
        beta1, beta2 = group["betas"]
        # What torch.optim.adam._fused_adam does for tensors on one device, one dtype (without
        # autograd, as Adam's step runs), on each slot's slice where ``_slices`` cuts them.
        with torch.no_grad():
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(ps, [s for g in grads for s in self._slices(g)], exp_avgs, exp_avg_sqs,
                               [], slot_steps, amsgrad=False, lr=group["lr"], beta1=beta1,
                               beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                               maximize=False, grad_scale=None, found_inf=None)
        return None

    def _short_path(self) -> bool:
        """Whether the short step computes what Adam's own would: one group of real float
        parameters of one device and dtype, and the options the short step passes."""
        if len(self.param_groups) != 1:
            return False
        group = self.param_groups[0]
        params = group["params"]
        if not (group["fused"] and not group["amsgrad"] and not group["maximize"]
                and not group["capturable"] and not group["differentiable"]
                and not group.get("decoupled_weight_decay", False)
                and not torch.is_tensor(group["lr"]) and params):
            return False
        first = params[0]
        return all(p.device == first.device and p.dtype == first.dtype and p.is_floating_point()
                   for p in params)

    def _slices(self, t: torch.Tensor) -> list[torch.Tensor]:
        """``t`` as the kernel gets it: each slot's slice apart (``per_slot``, several slots,
        slices not a whole number of vectors), else whole."""
        if self.per_slot and t.dim() >= 1 and t.shape[0] > 1 and t[0].numel() % _WHOLE:
            return list(t.unbind(0))
        return [t]

    def _state_lists(self, params: list[torch.Tensor]) -> tuple[list[torch.Tensor], ...]:
        """The kernel's lists (parameters, moments, a step per parameter and one per slice),
        making the state first where a parameter has none, as torch.optim.Adam does for a fused
        step."""
        for p in params:
            if not self.state.get(p):
                self.state[p] = {"step": torch.zeros((), dtype=torch.float32, device=p.device),
                                 "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                 "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
        states = [self.state[p] for p in params]
        return ([s for p in params for s in self._slices(p)],
                [s for st in states for s in self._slices(st["exp_avg"])],
                [s for st in states for s in self._slices(st["exp_avg_sq"])],
                [st["step"] for st in states],
                [st["step"] for p, st in zip(params, states, strict=True) for _ in self._slices(p)])

    def load_state_dict(self, state_dict: dict) -> None:
        self._lists = None  # the loaded state has tensors of its own
        super().load_state_dict(state_dict)
