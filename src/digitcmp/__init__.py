"""digitcmp: does weight sharing and an auxiliary loss help compare two MNIST digits?"""

from .version import __version__

__all__ = ["__version__", "load"]


def load(path, device="cpu"):
    """Load a checkpoint saved by ``digitcmp train --save`` onto ``device``; returns a Predictor
    with ``predict(a, b)`` for two digit images (paths or 2-D arrays)."""
    from .predict import load as _load

    return _load(path, device)

