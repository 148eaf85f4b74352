"""Models: the registry (``registry``) and the registered models. Importing this package
registers the built-in ones, in the order ``digitcmp models`` lists them: the study's
(``study``), then ours (``probcmp``)."""

from . import study  # noqa: F401

# isort: split
from . import probcmp  # noqa: F401
from .registry import MODELS, PairModel, count_params, get_model_class, label, register

__all__ = ["MODELS", "PairModel", "count_params", "get_model_class", "label", "register"]
