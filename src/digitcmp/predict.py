"""Ask a trained model about new digits: images of any size, or whole pair tensors.

Images are converted the way MNIST was made (LeCun et al.): grayscale, white digit on black,
cropped to the ink, scaled to fit 20x20 keeping the aspect ratio, placed in 28x28 with its centre
of mass at the centre; then pooled to 14x14 like the training data.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_checkpoint
from .data.sources import pool14
from .errors import DataError


def mnist_like(image: np.ndarray, where: str = "image") -> np.ndarray:
    """A grayscale image (any size, either polarity, 0-255) -> a 28x28 uint8 MNIST-style digit."""
    from PIL import Image

    try:
        img = np.asarray(image, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{where}: not an image array ({e})") from None
    if img.ndim != 2 or min(img.shape) < 2:
        raise DataError(f"{where}: expected a 2-D grayscale image, got shape {img.shape}")
    if not np.isfinite(img).all():
        raise DataError(f"{where}: the image holds non-finite values")
    # The background is what dominates the border; MNIST wants it black.
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    background = np.median(border)
    ink = np.abs(img - background)
    if ink.max() < 32:  # less than 1/8 of the range above the background anywhere
        raise DataError(f"{where}: blank image (no ink: contrast {ink.max():.0f} of 255)")
    ink = ink / ink.max() * 255
    rows, cols = np.nonzero(ink > 0.15 * 255)  # ignore faint noise when cropping
    ink = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = ink.shape
    scale = 20 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray(ink.astype(np.float32), mode="F").resize(size, Image.LANCZOS))
    small = np.clip(small, 0, 255)
    # Centre of mass to the centre of the 28x28 canvas (integer shift, kept inside the canvas).
    total = small.sum()
    cy, cx = ((np.indices(small.shape) * small).reshape(2, -1).sum(1) / total)
    top = int(np.clip(round(14 - cy), 0, 28 - small.shape[0]))
    left = int(np.clip(round(14 - cx), 0, 28 - small.shape[1]))
    out = np.zeros((28, 28))
    out[top:top + small.shape[0], left:left + small.shape[1]] = small
    return out.round().astype(np.uint8)


MAX_PIXELS = 4096 * 4096  # a digit needs far fewer; larger files are refused before decoding


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Any image Pillow reads -> 2-D float array 0-255; transparency is composited on white,
    16-bit images are scaled (not clipped) to 0-255."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise DataError(f"{path}: image of {im.width} x {im.height} pixels; digitcmp reads "
                                f"images of up to {MAX_PIXELS:,} pixels")
            im.load()
            if im.mode in ("I", "F") or im.mode.startswith("I;16"):
                # Wide grayscale: 16-bit PNGs open as I;16 or I with values 0-65535.
                a = np.asarray(im, dtype=np.float64)
                return np.clip(a if im.mode == "F" else a / 257.0, 0, 255)
            if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                canvas = Image.new("RGBA", im.size, (255, 255, 255, 255))
                canvas.alpha_composite(im.convert("RGBA"))
                im = canvas
            return np.asarray(im.convert("L"), dtype=np.float64)
    except FileNotFoundError:
        raise DataError(f"{path}: no such image file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not an image") from None
    # Pillow's PNG reader reports a broken chunk as a SyntaxError.
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: not a readable image ({str(e).splitlines()[0][:160]})") from None


class Predictor:
    """A trained model with its normalisation: ``predict(a, b)`` compares two digit images."""

    def __init__(self, model: torch.nn.Module, checkpoint: dict):
        self.model = model.eval()
        self.checkpoint = checkpoint
        self.mean = checkpoint["normalisation"]["mean"]
        self.std = checkpoint["normalisation"]["std"]

    def as_digit(self, image, where: str = "image") -> torch.Tensor:
        """A path or a 2-D array (any size) -> a pooled 14x14 float digit, 0-255."""
        if isinstance(image, str | os.PathLike):
            where, image = str(image), read_image(image)
        return pool14(mnist_like(image, where)[None])[0]

    @torch.inference_mode()
    def predict_pairs(self, pairs: torch.Tensor) -> list[dict]:
        """Predictions for an N x 2 x 14 x 14 tensor of pooled digits in the 0-255 range."""
        device = next(self.model.parameters()).device
        logits, digits = self.model(((pairs.float() - self.mean) / self.std).to(device))
        p_leq = torch.softmax(logits, 1)[:, 1]
        out = [{"p_leq": float(p), "leq": bool(p >= 0.5)} for p in p_leq]
        if digits is not None:
            probs = torch.softmax(digits, 2)
            conf, cls = probs.max(2)
            for row, c, k in zip(out, conf, cls, strict=True):
                row.update(digit_a=int(k[0]), p_digit_a=float(c[0]),
                           digit_b=int(k[1]), p_digit_b=float(c[1]))
        return out

    def predict(self, a, b) -> dict:
        """Compare two digits given as image paths or 2-D arrays: digits, probabilities, a <= b."""
        pair = torch.stack((self.as_digit(a), self.as_digit(b)))[None]
        return self.predict_pairs(pair)[0]


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> Predictor:
    """Load a checkpoint written by ``digitcmp train --save`` as a Predictor on ``device``."""
    return Predictor(*load_checkpoint(path, device))


def load_pairs(path: str | os.PathLike) -> torch.Tensor:
    """An N x 2 x 14 x 14 tensor from .npz (key 'input', or its only array) or .pt."""
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path) as z:
                keys = list(z.keys())
                key = "input" if "input" in keys else keys[0] if len(keys) == 1 else None
                if key is None:
                    raise DataError(f"{path}: several arrays ({', '.join(keys)}) and none named 'input'")
                x = torch.from_numpy(z[key])
        elif path.suffix == ".pt":
            x = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(x, dict):
                x = x.get("input")
        else:
            raise DataError(f"{path}: expected a .npz or .pt file")
    except DataError:
        raise
    except Exception as e:  # corrupt archives raise many types; all mean the same to the user
        raise DataError(f"{path}: cannot read pairs ({str(e).splitlines()[0][:160]})") from None
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != (2, 14, 14):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(f"{path}: expected a tensor of shape N x 2 x 14 x 14, got {shape}")
    if x.is_complex() or x.dtype == torch.bool or not torch.isfinite(x.float()).all():
        raise DataError(f"{path}: pixel values must be finite real numbers (0-255); this "
                        f"{x.dtype} tensor holds others")
    return x
