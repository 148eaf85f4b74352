"""Adam with PyTorch's fused kernel, stepped with less Python around it.

``torch.optim.Adam(fused=True)`` spends more time per step in Python (regrouping the tensors by
device and dtype, checking each parameter's state) than in its kernel for the few small
tensors of the study's models (README, Speed). Once every parameter has its state, this one
keeps the lists of state tensors and calls the same kernels with the same arguments: the same
numbers to the bit. Anything the short path does not cover (several parameter groups, a
missing gradient, amsgrad, maximize, capturable or differentiable, a non-fused Adam) goes
through ``torch.optim.Adam.step`` unchanged. Schedulers work as with Adam: the learning rate
and betas are read from the parameter group at every step.
"""

from __future__ import annotations

import torch


class Adam(torch.optim.Adam):
    """``torch.optim.Adam`` (same arguments, state and state_dict) with a shorter fused step."""

    _lists: tuple[list[torch.Tensor], ...] | None = None

    def step(self, closure=None):
        if closure is not None or not self._short_path():
            self._lists = None  # the state may change under the full step
            return super().step(closure)
        group = self.param_groups[0]
        params = group["params"]
        grads = [p.grad for p in params]
        if any(g is None for g in grads):
            self._lists = None
            return super().step()
        if self._lists is None:
            states = [self.state[p] for p in params]
            self._lists = tuple([s[k] for s in states] for k in ("exp_avg", "exp_avg_sq", "step"))
        exp_avgs, exp_avg_sqs, steps = self._lists
        beta1, beta2 = group["betas"]
        # What torch.optim.adam._fused_adam does for tensors on one device, one dtype (without
        # autograd, as Adam's step runs).
        with torch.no_grad():
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False,
                               lr=group["lr"], beta1=beta1, beta2=beta2,
                               weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
                               grad_scale=None, found_inf=None)
        return None

    def _short_path(self) -> bool:
        """Whether the short step computes what Adam's own would: one group of parameters of
        one device and dtype, all with state, and the options the short step passes."""
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
        return all(p in self.state and p.device == first.device and p.dtype == first.dtype
                   for p in params)

    def load_state_dict(self, state_dict: dict) -> None:
        self._lists = None  # the loaded state has tensors of its own
        super().load_state_dict(state_dict)
