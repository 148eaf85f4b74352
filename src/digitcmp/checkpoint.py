"""Checkpoints: a trained model with everything needed to rebuild and trust it.

A checkpoint holds only tensors and plain Python values, so it loads with
``torch.load(..., weights_only=True)``: opening one never unpickles arbitrary objects. It also
holds a SHA-256 digest of its weights, so a damaged file is refused rather than silently
predicting something else, and non-finite weights are never saved.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError
from .files import atomic_write
from .models import MODELS
from .provenance import versions

FORMAT = "digitcmp-checkpoint"
FORMAT_VERSION = 2  # 2: weights digest, device


def weights_digest(state_dict: dict) -> str:
    """SHA-256 over the names, types, shapes and bytes of a state dict's tensors."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, model: nn.Module, model_name: str, *, config: dict,
                    source: dict, mean: float, std: float, metrics: dict, round: int,
                    device: str = "cpu") -> Path:
    """Write ``model`` and its provenance to ``path`` atomically; refuse non-finite weights."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: not saved: weights {bad[0]} are not finite numbers")
    payload = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model": model_name, "model_kwargs": {},
        "state_dict": state, "weights_sha256": weights_digest(state),
        "config": config, "source": source, "round": round, "device": device,
        "normalisation": {"mean": float(mean), "std": float(std)},
        "metrics": metrics, "versions": versions(),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write(path, buf.getvalue())
    return Path(path)


def save_trained(path: str | os.PathLike, trained, config: dict, source: dict) -> Path:
    """Save a ``train.Trained`` round with its metrics (its record's error rates)."""
    record = trained.record
    return save_checkpoint(path, trained.model, record["arch"], config=config, source=source,
                           mean=trained.data.mean, std=trained.data.std, round=record["round"],
                           device=record.get("device", "cpu"),
                           metrics={k: v for k, v in record.items() if k.endswith("error")})


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model of a checkpoint on ``device`` (in eval mode), with the checkpoint dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        why = next((line.strip() for line in str(e).splitlines() if "Unsupported global" in line),
                   str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise CheckpointError(f"{path}: refused: holds objects other than tensors and plain "
                              f"values ({why[:200]})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError, IndexError,
            TypeError, AttributeError, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or truncated: {first})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a digitcmp checkpoint")
    if ckpt.get("format_version") not in (1, FORMAT_VERSION):
        raise CheckpointError(f"{path}: checkpoint format version {ckpt.get('format_version')!r}; "
                              f"this digitcmp reads versions 1 and {FORMAT_VERSION}")
    _check_fields(ckpt, path)
    name = ckpt["model"]
    if name not in MODELS:
        raise CheckpointError(f"{path}: model {name!r} is not registered here (known: "
                              f"{', '.join(MODELS)}); load its plugin with --plugin")
    state = ckpt["state_dict"]
    if "weights_sha256" in ckpt and weights_digest(state) != ckpt["weights_sha256"]:
        raise CheckpointError(f"{path}: weights do not match their digest (the file is damaged)")
    try:
        model = MODELS[name](**ckpt["model_kwargs"])
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: weights do not fit model {name!r} "
                              f"({str(e).splitlines()[0][:160]})") from None
    return model.to(device).eval(), ckpt


def _check_fields(ckpt: dict, path: Path) -> None:
    """The fields loading and predicting read, with the types they need."""

    def bad(field: str, why: str):
        raise CheckpointError(f"{path}: field {field!r} {why}")

    if not isinstance(ckpt.get("model"), str):
        bad("model", "is missing or not a name")
    if not isinstance(ckpt.get("model_kwargs", {}), dict):
        bad("model_kwargs", "is not a table")
    ckpt.setdefault("model_kwargs", {})
    state = ckpt.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        bad("state_dict", "is missing or not a table of tensors")
    norm = ckpt.get("normalisation")
    if not isinstance(norm, dict):
        bad("normalisation", "is missing")
    for key in ("mean", "std"):
        v = norm.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            bad(f"normalisation.{key}", f"is {v!r}, not a finite number")
    if not norm["std"] > 0:
        bad("normalisation.std", f"is {norm['std']!r}, not positive")
