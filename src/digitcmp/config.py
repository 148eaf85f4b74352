"""The vocabulary of a run: ``Config`` (every option that decides a run's numbers), its checks,
and *arms* (a registered model, or a variant of one with some options changed).

This module sits at the bottom of the import graph: it knows no model, no data and no file.
Where a check needs the registered models, the caller passes their names.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

from .errors import ConfigError

STUDY_MODELS = ("baseline", "cnn", "siamese_aux")  # the study's models 1, 2 and 3
SOURCES = ("auto", "mnist", "embedded")
TEST_POOLS = ("test", "train")
ENGINES = ("stacked", "reference")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "tf32", "bf16")
TUNABLE = ("lr", "weight_decay", "aux_weight", "epochs", "batch_size")  # options an arm may change
ABLATION_AUX_WEIGHTS = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0)  # the ablation's default aux-weight sweep

# Limits against typos that would otherwise hang or exhaust the machine before the first round.
MAX_ROUNDS = 10_000
MAX_EPOCHS = 100_000
MAX_THREADS = 256
MAX_VARIANTS = 1_000


@dataclass
class Config:
    """Everything that determines a run's numbers. Flags of the CLI map onto these fields."""

    models: list[str] = field(default_factory=lambda: list(STUDY_MODELS))
    rounds: int = 15
    seed: int = 0
    data: str = "auto"  # resolved to the source actually used before a run starts
    data_dir: str | None = None
    test_dir: str | None = None  # take test pairs from the MNIST test split (t10k files) here
    test_pool: str = "test"  # "test": test pairs from the source's test digits; "train": from
    # the other half of its training digits, split at random each round (digitcmp 0.1's embedded)
    pairs: int = 1000
    val_pairs: int = 0  # training pairs held out as a validation split (trained on: pairs - val_pairs)
    epochs: int = 25
    batch_size: int = 100
    curve_pairs: int = 250  # test (and validation) pairs evaluated after every epoch, for the
    # learning curves; the round's own test error is always on all its test pairs
    standardise: bool = True  # inputs to mean 0, std 1 with the training pairs' statistics
    lr: float | None = None  # None: the model's default_lr (the study's per-model rates)
    weight_decay: float = 1e-4  # Adam's L2 penalty, the study's "L2 regularization"
    aux_weight: float | None = None  # None: the model's default_aux_weight
    # Threads, device and precision change float summation order, hence the last digits of
    # results: they are part of what a run's numbers depend on.
    threads: int = 1  # torch intra-op threads per training
    engine: str = "stacked"  # "stacked": a model's rounds trained as one network (stacked.py);
    # "reference": one plain training loop per round. Same protocol; dropout masks drawn differently.
    device: str = "auto"  # resolved to the device actually used before a run starts
    precision: str = "fp32"
    plugins: list[str] = field(default_factory=list)  # modules that register models (--plugin);
    # every worker imports them before building a model, so user models run on any executor.
    variants: dict[str, dict] = field(default_factory=dict)  # named arms that ``models`` may list
    # besides registered models: name -> {"model": registered name, option: value, ...}, where
    # each option (one of TUNABLE) overrides this config for that arm, e.g. an aux-weight sweep.

    # The fields that may differ when resuming into an existing run directory: asking for
    # more rounds or more models extends a run without changing what the finished rounds mean.
    EXTENT = ("models", "rounds")
    # What a run directory written before an option existed ran with.
    LEGACY = {"device": "cpu", "precision": "fp32"}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        """The Config a ``to_dict`` (e.g. config.json's "config") describes; ConfigError names a
        field of the wrong type. Fields it does not have take their legacy or default values."""
        if not isinstance(d, dict):
            raise ConfigError(f"expected a table of options, got {type(d).__name__}")
        known = {f.name: f for f in fields(cls)}
        values = {**cls.LEGACY, **{k: v for k, v in d.items() if k in known}}
        if "test_pool" not in d:  # digitcmp 0.1 had no test digits in its embedded source
            values["test_pool"] = "train" if d.get("data") == "embedded" and not d.get("test_dir") else "test"
        for name, value in values.items():
            if not _has_type(value, str(known[name].type)):
                raise ConfigError(f"option {name!r}: {value!r} is not a {known[name].type}")
        return cls(**values)


def _has_type(value, annotation: str) -> bool:
    checks = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "bool": lambda v: isinstance(v, bool),
              "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "str": lambda v: isinstance(v, str), "None": lambda v: v is None,
              "list[str]": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
              "dict[str, dict]": lambda v: isinstance(v, dict) and all(
                  isinstance(k, str) and isinstance(x, dict) for k, x in v.items())}
    return any(checks[a.strip()](value) for a in annotation.split("|"))


def flag(option: str) -> str:
    """The command-line flag of a Config field, for messages: ``batch_size`` -> ``--batch-size``."""
    return "--" + option.replace("_", "-")


def option_problem(key: str, value) -> str | None:
    """Why ``value`` cannot be the value of training option ``key`` of an arm, or None if it can."""
    if key not in TUNABLE:
        return f"unknown option {key!r}; options: {', '.join(TUNABLE)}"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if key == "epochs":
        if not (number and isinstance(value, int) and 1 <= value <= MAX_EPOCHS):
            return f"epochs must be a whole number from 1 to {MAX_EPOCHS:,}, got {value!r}"
    elif key == "batch_size":
        if not (number and isinstance(value, int) and value >= 2):
            return (f"batch_size must be a whole number >= 2 (BatchNorm needs two samples to "
                    f"train on), got {value!r}")
    elif not (number and 0 <= value < math.inf):
        return f"{key} must be a finite number >= 0, got {value!r}"
    return None


def check_config(config: Config, known_models=None) -> None:
    """Refuse a config that cannot run, naming the flag: called before anything is written.
    ``known_models``: the registered model names, to check ``models`` and ``variants``."""

    def bad(option: str, why: str):
        raise ConfigError(f"{flag(option)} {getattr(config, option)!r}: {why}")

    if not config.models:
        bad("models", "give at least one model")
    if len(set(config.models)) < len(config.models):
        bad("models", "a model is listed twice")
    if not 1 <= config.rounds <= MAX_ROUNDS:
        bad("rounds", f"must be from 1 to {MAX_ROUNDS:,}")
    if config.pairs < 2:
        bad("pairs", "at least 2 training pairs are needed (BatchNorm trains on batches of >= 2)")
    if not 0 <= config.val_pairs <= config.pairs - 2:
        bad("val_pairs", f"must be >= 0 and leave at least 2 of the {config.pairs} pairs "
                         "(--pairs) to train on")
    if config.curve_pairs < 0:
        bad("curve_pairs", "must be >= 0 (0: no per-epoch evaluation)")
    if not 1 <= config.threads <= MAX_THREADS:
        bad("threads", f"must be from 1 to {MAX_THREADS}")
    for option, choices in (("data", SOURCES), ("test_pool", TEST_POOLS), ("engine", ENGINES),
                            ("device", DEVICES), ("precision", PRECISIONS)):
        if getattr(config, option) not in choices:
            bad(option, f"choose one of {', '.join(choices)}")
    if config.test_dir and config.test_pool == "train":
        bad("test_pool", "--test-dir gives test digits; --test-pool train would ignore them")
    for key in TUNABLE:
        value = getattr(config, key)
        problem = option_problem(key, value) if value is not None else None
        if problem:
            bad(key, problem.split(" got ")[0].rstrip(", "))
    if len(config.variants) > MAX_VARIANTS:
        raise ConfigError(f"{len(config.variants):,} variants (sweep points): at most {MAX_VARIANTS:,}")
    if known_models is not None:
        unknown = [m for m in config.models if m not in known_models and m not in config.variants]
        if unknown:
            raise ConfigError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(known_models)}")
        for name, spec in config.variants.items():
            problem = variant_problem(spec, known_models)
            if problem:
                raise ConfigError(f"variant {name!r}: {problem}")


def variant_problem(spec, known_models) -> str | None:
    """Why ``spec`` ({"model": name, option: value, ...}) is not a well-formed variant, or None."""
    if not isinstance(spec, dict):
        return f"expected a table of options, got {spec!r}"
    if not isinstance(spec.get("model"), str) or spec["model"] not in known_models:
        return f"'model' must be one of {', '.join(known_models)}, got {spec.get('model')!r}"
    for key, value in spec.items():
        problem = option_problem(key, value) if key != "model" else None
        if problem:
            return problem
    return None


def arm_name(model: str, options: dict) -> str:
    """An arm's name from its model and changed options, e.g. ``siamese_aux@aux_weight=3,lr=0.001``."""
    opts = ",".join(f"{k}={v:g}" for k, v in options.items() if k != "model")
    return f"{model}@{opts}" if opts else model


def resolve(config: Config, arm: str) -> tuple[str, Config]:
    """The registered model and the config with which ``arm`` (a name in config.models) trains."""
    spec = config.variants.get(arm)
    if spec is None:
        return arm, config
    options = {k: v for k, v in spec.items() if k != "model"}
    return spec["model"], replace(config, variants={}, **options)


def lr_for(config: Config, model_cls) -> float:
    """The learning rate ``model_cls`` trains with under ``config``."""
    return model_cls.default_lr if config.lr is None else config.lr


def aux_weight_for(config: Config, model_cls) -> float:
    """The auxiliary-loss weight ``model_cls`` trains with under ``config``."""
    return model_cls.default_aux_weight if config.aux_weight is None else config.aux_weight


def resolved_options(config: Config, model_cls) -> dict:
    """The training options ``model_cls`` actually uses under ``config``, defaults filled in."""
    return {"model": model_cls.name, "lr": lr_for(config, model_cls),
            "aux_weight": aux_weight_for(config, model_cls), "weight_decay": config.weight_decay,
            "epochs": config.epochs, "batch_size": config.batch_size}
