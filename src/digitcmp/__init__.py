"""digitcmp: does weight sharing and an auxiliary loss help compare two MNIST digits?"""

__version__ = "0.1.0"


def load(path):
    """Load a checkpoint saved by ``digitcmp train --save``; returns a Predictor with
    ``predict(a, b)`` for two digit images (paths or 2-D arrays)."""
    from .predict import load as _load

    return _load(path)
