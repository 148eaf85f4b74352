import pytest
import torch
import torch.nn.functional as F

from digitcmp.models import MODELS, count_params


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


def test_ablation_arms_are_parameter_matched_and_differ_only_in_the_factor():
    arms = {"separate": False, "separate_aux": True, "siamese": False, "siamese_aux": True}
    counts = {arm: count_params(MODELS[arm]()) for arm in arms}
    assert max(counts.values()) / min(counts.values()) <= 1.05
    assert {arm: MODELS[arm].default_aux_weight > 0 for arm in arms} == arms
    assert len({MODELS[arm].default_lr for arm in arms}) == 1
    # The arms without aux loss are the arms with it, minus the loss: same init in a round.
    for plain, with_aux in (("siamese", "siamese_aux"), ("separate", "separate_aux")):
        torch.manual_seed(0)
        a = MODELS[plain]().state_dict()
        torch.manual_seed(0)
        b = MODELS[with_aux]().state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
