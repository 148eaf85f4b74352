"""Devices and precision: what ``--device`` and ``--precision`` resolve to.

``auto`` picks CUDA if available, else Apple's MPS, else the CPU. Float32 is the default
everywhere so that results compare across devices; TF32 and bfloat16 trade digits for speed.
"""

from __future__ import annotations

import contextlib

import torch

from .config import DEVICES
from .errors import ConfigError


def available(kind: str) -> bool:
    if kind == "cpu":
        return True
    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    return False


def resolve_device(name: str) -> torch.device:
    """The torch device ``--device name`` means here; a one-line error if it is not available."""
    if name not in DEVICES:
        raise ConfigError(f"--device {name!r}: choose one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device(next(k for k in ("cuda", "mps", "cpu") if available(k)))
    if not available(name):
        built = {"cuda": torch.version.cuda, "mps": None}.get(name)
        why = ("no CUDA GPU is visible" if built
               else f"this torch ({torch.__version__}) has no {name.upper()} support")
        raise ConfigError(f"--device {name}: not available here ({why}); use --device cpu or auto")
    return torch.device(name)


def set_precision(precision: str) -> None:
    """Let CUDA's matmuls and convolutions use TF32 only when asked (``tf32``)."""
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def autocast(device: torch.device, precision: str):
    """The context forward passes run in: bfloat16 autocast for ``bf16``, else nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
