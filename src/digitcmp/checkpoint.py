"""Checkpoints: a trained model with everything needed to rebuild and trust it.

A checkpoint holds only tensors and plain Python values, so it loads with
``torch.load(..., weights_only=True)``: opening one never unpickles arbitrary objects.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from .experiment import versions
from .files import atomic_write
from .models import MODELS

FORMAT = "digitcmp-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(Exception):
    """A checkpoint cannot be loaded; the message names the file and the problem."""


def save_checkpoint(path: str | os.PathLike, model: nn.Module, model_name: str, *, config: dict,
                    source: dict, mean: float, std: float, metrics: dict, round: int) -> Path:
    """Write ``model`` and its provenance to ``path`` atomically."""
    payload = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model": model_name, "model_kwargs": {},
        "state_dict": model.state_dict(),
        "config": config, "source": source, "round": round,
        "normalisation": {"mean": float(mean), "std": float(std)},
        "metrics": metrics, "versions": versions(),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write(path, buf.getvalue())
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """Rebuild the model of a checkpoint (in eval mode) and return it with the checkpoint dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        why = next((line.strip() for line in str(e).splitlines() if "Unsupported global" in line),
                   str(e).splitlines()[0])
        raise CheckpointError(f"{path}: refused: holds objects other than tensors and plain "
                              f"values ({why[:200]})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or truncated: "
                              f"{str(e).splitlines()[0][:160]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a digitcmp checkpoint")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {ckpt.get('format_version')!r}; "
                              f"this digitcmp reads version {FORMAT_VERSION}")
    name = ckpt.get("model")
    if name not in MODELS:
        raise CheckpointError(f"{path}: model {name!r} is not registered here (known: "
                              f"{', '.join(MODELS)}); load its plugin with --plugin")
    model = MODELS[name](**ckpt.get("model_kwargs", {}))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(f"{path}: weights do not fit model {name!r} "
                              f"({str(e).splitlines()[0][:160]})") from None
    return model.eval(), ckpt
