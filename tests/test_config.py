import math

import pytest

from digitcmp.config import (
    Config,
    arm_name,
    check_config,
    option_problem,
    resolve,
    resolved_options,
    variant_problem,
)
from digitcmp.errors import ConfigError
from digitcmp.models import MODELS


def test_defaults_are_the_studys_protocol():
    c = Config()
    assert (c.models, c.rounds, c.epochs, c.batch_size, c.pairs) == (
        ["baseline", "cnn", "siamese_aux"], 15, 25, 100, 1000)
    check_config(c, list(MODELS))


@pytest.mark.parametrize("change, message", [
    ({"batch_size": 1}, "--batch-size 1: batch_size must be a whole number >= 2"),
    ({"pairs": 1}, "--pairs 1: at least 2 training pairs"),
    ({"val_pairs": 999}, "--val-pairs 999: must be >= 0 and leave at least 2 of the 1000 pairs"),
    ({"lr": math.inf}, "--lr inf: lr must be a finite number >= 0"),
    ({"weight_decay": math.nan}, "--weight-decay nan"),
    ({"aux_weight": -1.0}, "--aux-weight -1.0"),
    ({"rounds": 10**9}, "--rounds 1000000000: must be from 1 to 10,000"),
    ({"threads": 100000}, "--threads 100000: must be from 1 to 256"),
    ({"epochs": 0}, "--epochs 0: epochs must be a whole number from 1"),
    ({"engine": "fast"}, "--engine 'fast': choose one of stacked, reference"),
    ({"device": "tpu"}, "--device 'tpu'"),
    ({"models": []}, "give at least one model"),
    ({"models": ["cnn", "cnn"]}, "listed twice"),
    ({"models": ["nope"]}, "unknown model(s) nope"),
    ({"test_dir": "x", "test_pool": "train"}, "--test-pool 'train'"),
])
def test_check_config_names_the_flag(change, message):
    with pytest.raises(ConfigError) as err:
        check_config(Config(**change), list(MODELS))
    assert message in str(err.value)


@pytest.mark.parametrize("key, value, ok", [
    ("lr", 1e-3, True), ("lr", 0, True), ("lr", -1, False), ("lr", math.inf, False), ("lr", True, False),
    ("lr", "fast", False), ("epochs", 3, True), ("epochs", 2.5, False), ("batch_size", 1, False),
    ("learning_rate", 1, False),
])
def test_option_problem(key, value, ok):
    assert (option_problem(key, value) is None) == ok


def test_variants_and_arms():
    assert variant_problem({"model": "cnn", "lr": 0.1}, MODELS) is None
    assert "'model' must be one of" in variant_problem({"model": ["cnn"]}, MODELS)
    assert "expected a table" in variant_problem([1], MODELS)
    assert arm_name("siamese_aux", {"model": "siamese_aux", "aux_weight": 3.0, "lr": 1e-3}) == \
        "siamese_aux@aux_weight=3,lr=0.001"
    cfg = Config(models=["fast"], variants={"fast": {"model": "baseline", "lr": 0.01}})
    model, arm_cfg = resolve(cfg, "fast")
    assert model == "baseline" and arm_cfg.lr == 0.01 and arm_cfg.variants == {}
    assert resolve(cfg, "baseline") == ("baseline", cfg)
    assert resolved_options(Config(), MODELS["siamese_aux"])["lr"] == 1e-3
    assert resolved_options(arm_cfg, MODELS["baseline"]) == {
        "model": "baseline", "lr": 0.01, "aux_weight": 0.0, "weight_decay": 1e-4, "epochs": 25,
        "batch_size": 100}


def test_from_dict_round_trips_and_fills_what_older_runs_lacked():
    c = Config(models=["cnn"], lr=0.01, variants={"v": {"model": "cnn"}})
    assert Config.from_dict(c.to_dict()) == c
    old = Config.from_dict({"models": ["cnn"], "data": "embedded"})  # written by digitcmp 0.1
    assert (old.device, old.test_pool) == ("cpu", "train")
    assert Config.from_dict({"data": "embedded", "test_dir": "/t"}).test_pool == "test"
    for bad in ([], "hello", {"rounds": "many"}, {"models": [1]}, {"lr": [1]}):
        with pytest.raises(ConfigError):
            Config.from_dict(bad)
