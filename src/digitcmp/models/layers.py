"""What a model is made of: its layer table (the study's Tables I and II) and its arithmetic."""

from __future__ import annotations

import torch
from torch import nn


def layer_table(model: nn.Module, depth: int = 4) -> str:
    """Each layer of ``model`` with its output shape for one pair (batch 1) and its parameter
    count, as text (torchinfo)."""
    import torchinfo

    stats = torchinfo.summary(model, input_size=(1, 2, 14, 14), depth=depth, verbose=0, device="cpu",
                              col_names=("output_size", "num_params"), row_settings=("var_names",))
    # The summary's table, without the memory estimates that follow it.
    lines = str(stats).splitlines()
    return "\n".join(lines[:lines.index(next(x for x in lines if x.startswith("Total mult-adds")))])


def forward_flops(model: nn.Module) -> int:
    """FLOPs of one forward pass of one pair through the matmul-like layers (Linear, Conv2d):
    2 per multiply-add; element-wise layers are not counted."""
    total = 0

    def count(m, inputs, out):
        nonlocal total
        if isinstance(m, nn.Linear):
            total += 2 * m.in_features * out.numel()
        elif isinstance(m, nn.Conv2d):
            total += 2 * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1] * out.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 2, 14, 14))
    finally:
        for h in hooks:
            h.remove()
    return total
