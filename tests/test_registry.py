import pytest
import torch

from digitcmp.errors import ConfigError
from digitcmp.models import MODELS, PairModel, get_model_class, label, register


def test_register_rejects_duplicates_and_unknown_names():
    with pytest.raises(ValueError, match="already registered"):
        register("cnn")(type("X", (PairModel,), {}))
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        get_model_class("nope")


def test_built_in_models_are_registered_by_importing_the_package():
    assert list(MODELS)[:3] == ["baseline", "cnn", "siamese_aux"]
    assert {"probcmp", "probcmp_small", "siamese", "separate", "separate_aux"} <= set(MODELS)
    assert label("cnn") == "CNN" and label("not-a-model") == "not-a-model"


def test_the_default_recipe_shuffles_pairs_and_trains_the_model_itself():
    from digitcmp.data.pairs import Pairs

    pairs = Pairs(torch.arange(10.0).view(10, 1, 1, 1), torch.zeros(10, dtype=torch.long),
                  torch.zeros(10, 2, dtype=torch.long))
    shuffled = PairModel.epoch_pairs(pairs, torch.Generator().manual_seed(0))
    assert sorted(shuffled.input.flatten().tolist()) == list(range(10))
    assert shuffled.input.flatten().tolist() != list(range(10))
    model = MODELS["cnn"]()
    assert model.members() == [model]
