"""What a result was made with: package versions, machine and command line."""

from __future__ import annotations

import platform

from .version import __version__


def versions() -> dict:
    """The versions and platform that runs, checkpoints and reports record."""
    import numpy
    import torch

    # str(): torch.__version__ is a TorchVersion, which weights-only checkpoint loading refuses.
    return {"digitcmp": __version__, "python": platform.python_version(),
            "torch": str(torch.__version__), "numpy": numpy.__version__, "platform": platform.platform()}
