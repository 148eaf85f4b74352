import dataclasses

import torch

from digitcmp.data import Source, round_data
from digitcmp.models import MODELS
from digitcmp.train import Config, run_rounds, train_model


def test_short_training_lowers_the_loss():
    src = Source("fake", "", *_separable_pool())
    d = round_data(src, seed=0, round=0, n_pairs=200)
    torch.manual_seed(0)
    model = MODELS["baseline"]()
    losses = train_model(model, d.train, Config(epochs=4, batch_size=50), lr=1e-3, aux_weight=0.0,
                         gen=torch.Generator().manual_seed(0))
    assert len(losses) == 4 and losses[-1] < 0.7 * losses[0]


def _separable_pool():
    """Digits drawn as their class: a bright square whose position is the label. Easy to learn."""
    y = torch.arange(1000) % 10
    x = torch.zeros(1000, 14, 14)
    for i, c in enumerate(y.tolist()):
        x[i, c : c + 4, 2:6] = 255
    return x + torch.rand(1000, 14, 14) * 30, y


def test_same_seed_same_results_different_seed_different():
    for engine in ("stacked", "reference"):
        cfg = Config(data="embedded", pairs=100, epochs=1, engine=engine)
        [a], [b] = run_rounds(cfg, "baseline", [2]), run_rounds(cfg, "baseline", [2])
        a.pop("seconds"), b.pop("seconds")
        assert a == b and a["engine"] == engine
        [c] = run_rounds(Config(data="embedded", pairs=100, epochs=1, seed=1, engine=engine),
                         "baseline", [2])
        assert c["train_loss"] != a["train_loss"]


def test_round_record_fields():
    cfg = Config(data="embedded", pairs=100, val_pairs=20, epochs=2, batch_size=50)
    [r] = run_rounds(cfg, "siamese_aux", [0])
    assert r["model"] == "siamese_aux" and r["round"] == 0 and r["params"] == 69849
    assert r["arch"] == "siamese_aux" and r["lr"] == 1e-3 and r["aux_weight"] == 1.0
    assert len(r["train_loss"]) == 2 and r["val_error"] == round(r["val_error"] * 20) / 20
    [ref] = run_rounds(dataclasses.replace(cfg, engine="reference"), "siamese_aux", [0])
    assert "val_error" in ref
    for key in ("train_error", "test_error", "val_error", "test_digit_error"):
        assert 0 <= r[key] <= 1
    assert r["test_error"] == round(r["test_error"] * 100) / 100  # an exact count out of 100
