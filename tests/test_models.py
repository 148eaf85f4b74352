import pytest
import torch
import torch.nn.functional as F

from digitcmp.models import MODELS, PairModel, count_params, get_model_class, register


@pytest.mark.parametrize("name, params", [("baseline", 73954), ("cnn", 77530), ("siamese_aux", 69849)])
def test_study_parameter_counts(name, params):
    assert count_params(MODELS[name]()) == params


@pytest.mark.parametrize("name", list(MODELS))
def test_output_shapes(name):
    model = MODELS[name]().eval()
    logits, digits = model(torch.randn(7, 2, 14, 14))
    assert logits.shape == (7, 2)
    assert digits is None or digits.shape == (7, 2, 10)
    assert MODELS[name].description and MODELS[name].label


def test_siamese_head_is_binary_cross_entropy():
    model = MODELS["siamese_aux"]().eval()
    logits, _ = model(torch.randn(5, 2, 14, 14))
    target = torch.tensor([0, 1, 1, 0, 1])
    bce = F.binary_cross_entropy_with_logits(logits[:, 1], target.float())
    assert torch.allclose(F.cross_entropy(logits, target), bce, atol=1e-6)


def test_register_rejects_duplicates_and_unknown_names():
    with pytest.raises(ValueError, match="already registered"):
        register("cnn")(type("X", (PairModel,), {}))
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        get_model_class("nope")
