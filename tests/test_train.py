import dataclasses

import pytest
import torch

from conftest import DEVICE, TINY
from digitcmp.config import Config
from digitcmp.data.pairs import round_data
from digitcmp.data.sources import Source
from digitcmp.errors import TrainingError
from digitcmp.models import MODELS
from digitcmp.seeds import generator
from digitcmp.train import fit, pair_losses, train_mode_errors, train_rounds

CPU = torch.device("cpu")


def _separable_pool():
    """Digits drawn as their class: a bright square whose position is the label. Easy to learn."""
    y = torch.arange(1000) % 10
    x = torch.zeros(1000, 14, 14)
    for i, c in enumerate(y.tolist()):
        x[i, c : c + 4, 2:6] = 255
    return x + torch.rand(1000, 14, 14, generator=torch.Generator().manual_seed(0)) * 30, y


def test_short_training_lowers_the_loss():
    d = round_data(Source("fake", "", *_separable_pool()), seed=0, round=0, n_pairs=200)
    torch.manual_seed(0)
    model = MODELS["baseline"]()
    history = fit(model, [d.train], [generator(0, 0, "batches")], MODELS["baseline"], 1e-3, 0.0,
                  Config(epochs=4, batch_size=50), ["baseline round 0"], CPU)
    losses = history["loss"][:, 0]
    assert history["loss"].shape == (4, 1) and losses[-1] < 0.7 * losses[0]
    assert set(history) == {"loss", "target_loss", "running_train_error"}  # no digit head: no aux


def test_loss_is_target_plus_weighted_aux_per_slot():
    torch.manual_seed(0)
    logits, digits = torch.randn(6, 2), torch.randn(6, 2, 10)
    from digitcmp.data.pairs import Pairs

    batch = Pairs(torch.zeros(6, 2, 14, 14), torch.randint(0, 2, (6,)), torch.randint(0, 10, (6, 2)))
    parts = pair_losses((logits, digits), batch, 2, MODELS["siamese_aux"], 0.5)
    assert parts["loss"].shape == (2,)
    torch.testing.assert_close(parts["loss"], parts["target_loss"] + 0.5 * parts["aux_loss"])
    first = torch.nn.functional.cross_entropy(logits[:3], batch.target[:3])
    torch.testing.assert_close(parts["target_loss"][0], first)
    no_aux = pair_losses((logits, digits), batch, 2, MODELS["siamese"], 0.0)
    torch.testing.assert_close(no_aux["loss"], no_aux["target_loss"])  # aux logged, not trained on


@pytest.mark.parametrize("engine", ["stacked", "reference"])
def test_same_seed_same_results_different_seed_different(engine):
    cfg = Config(**TINY, engine=engine)
    a, b = (train_rounds(cfg, "baseline", [2])[0].record for _ in range(2))
    a.pop("seconds"), b.pop("seconds")
    assert a == b and a["engine"] == engine
    c = train_rounds(dataclasses.replace(cfg, seed=1), "baseline", [2])[0].record
    assert c["train_loss"] != a["train_loss"]


@pytest.mark.parametrize("engine", ["stacked", "reference"])
def test_round_record_fields(engine):
    cfg = Config(data="embedded", pairs=100, val_pairs=20, epochs=2, batch_size=40, engine=engine,
                 device=DEVICE)
    [t] = train_rounds(cfg, "siamese_aux", [0])
    r = t.record
    assert r["model"] == "siamese_aux" and r["round"] == 0 and r["params"] == 69849
    assert r["arch"] == "siamese_aux" and r["lr"] == 1e-3 and r["aux_weight"] == 1.0
    assert r["engine"] == engine and r["device"].startswith(DEVICE)
    assert len(r["train_loss"]) == 2 and r["val_error"] == round(r["val_error"] * 20) / 20
    for key in ("train_error", "test_error", "val_error", "test_digit_error", "train_mode_train_error",
                "train_mode_test_error"):
        assert 0 <= r[key] <= 1, key
    assert r["test_error"] == round(r["test_error"] * 100) / 100  # an exact count out of 100
    curves = r["curves"]
    assert set(curves) == {"target_loss", "aux_loss", "running_train_error", "test_error", "val_error"}
    assert all(len(v) == 2 for v in curves.values())
    # With all test pairs in the curves (100 < curve_pairs), the last point is the final error.
    assert curves["test_error"][-1] == r["test_error"] and curves["val_error"][-1] == r["val_error"]
    assert t.model.training is False


def test_curves_evaluate_a_subset_of_the_test_pairs_or_none():
    [t] = train_rounds(Config(**TINY, curve_pairs=10), "baseline", [0])
    assert all(e * 10 == round(e * 10) for e in t.record["curves"]["test_error"])  # out of 10 pairs
    [t] = train_rounds(Config(**TINY, curve_pairs=0), "baseline", [0])
    assert "test_error" not in t.record["curves"] and "running_train_error" in t.record["curves"]


def test_train_mode_errors_leave_batchnorm_statistics_alone():
    [t] = train_rounds(Config(**TINY, engine="reference"), "cnn", [0])
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    errs = train_mode_errors(t.model, [t.data.train], 20)
    assert 0 <= errs[0] <= 1
    assert all(torch.equal(before[k], v) for k, v in t.model.state_dict().items())


@pytest.mark.parametrize("engine", ["stacked", "reference"])
def test_a_diverging_training_is_an_error_naming_model_round_and_epoch(engine):
    cfg = Config(**{**TINY, "epochs": 3}, lr=1e30, engine=engine)
    with pytest.raises(TrainingError, match=r"cnn round 1: .*(loss became nan|non-finite) in epoch \d"):
        train_rounds(cfg, "cnn", [1])


def test_progress_is_told_of_every_round_epoch():
    told = []
    train_rounds(Config(**{**TINY, "epochs": 2}), "baseline", [0, 1], told.append)
    assert sum(told) == 4


def test_the_kernels_training_uses_are_built_before_the_workers_start(monkeypatch):
    """load_kernels (the driver's, before its workers start) builds the C kernels the stacked
    engine will use on a CPU, and only those."""
    from digitcmp import directconv, fused
    from digitcmp.train import load_kernels

    built = []
    monkeypatch.setattr(fused, "library", lambda: built.append("fused"))
    monkeypatch.setattr(directconv, "library", lambda: built.append("directconv"))
    cpu = torch.device("cpu")
    load_kernels(Config(threads=1), cpu)
    assert sorted(built) == ["directconv", "fused"]
    built.clear()
    load_kernels(Config(threads=2), cpu)  # the direct convolutions run on one thread only
    assert built == ["fused"]
    built.clear()
    load_kernels(Config(engine="reference"), cpu)
    load_kernels(Config(), torch.device("meta"))
    assert built == []
