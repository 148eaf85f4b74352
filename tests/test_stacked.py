"""The stacked engine against the reference loop it replaces."""

import copy

import pytest
import torch
from torch import nn

from digitcmp import train as T
from digitcmp.data import round_data
from digitcmp.models import MODELS, PairModel
from digitcmp.stacked import stackable, unstack
from digitcmp.train import Config, evaluate, evaluate_stacked, run_rounds

CFG = Config(data="embedded", pairs=100, epochs=2, batch_size=25)
SMALL = Config(data="embedded", pairs=40, epochs=1, batch_size=20)


def _without_dropout(model):
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return model


@pytest.mark.parametrize("name", ["baseline", "cnn", "siamese_aux"])
def test_stacked_training_equals_one_loop_per_round(name):
    """Same data, batches and initialisation per round: with dropout off (the one thing drawn
    from other random numbers) the stacked network ends where R separate loops end, up to float
    summation order, and its per-round evaluation matches."""
    torch.set_num_threads(CFG.threads)
    cls, rounds = MODELS[name], [0, 1]
    datas = [round_data(T.cached_source("embedded", None), 0, r, CFG.pairs) for r in rounds]
    models = [_without_dropout(T.init_model(CFG, cls, r)) for r in rounds]
    refs = copy.deepcopy(models)
    lr, aux = T.lr_for(CFG, cls), T.aux_weight_for(CFG, cls)
    ref_losses = [T.train_model(m, d.train, CFG, lr, aux, T.round_generator(CFG, r, "batches"))
                  for m, d, r in zip(refs, datas, rounds, strict=True)]
    net, losses = T.train_stacked(models, [d.train for d in datas], CFG, lr, aux,
                                [T.round_generator(CFG, r, "batches") for r in rounds],
                                [T.round_generator(CFG, r, "dropout") for r in rounds])
    assert torch.allclose(torch.tensor(losses), torch.tensor(ref_losses), rtol=1e-3)
    evals = evaluate_stacked(net, [d.test for d in datas], chunk=30)
    for i in rounds:
        got = unstack(net, i, copy.deepcopy(refs[i]))
        for (key, a), b in zip(got.state_dict().items(), refs[i].state_dict().values(), strict=True):
            assert torch.allclose(a.float(), b.float(), rtol=1e-2, atol=1e-2), key
        # Errors are counts out of 100 test pairs: allow one pair of float-order disagreement.
        assert evals[i]["error"] == pytest.approx(evaluate(refs[i], datas[i].test)["error"], abs=0.011)
        assert evals[i] == evaluate(got, datas[i].test)


def test_a_rounds_result_does_not_depend_on_its_stack_mates():
    together = run_rounds(SMALL, "siamese_aux", [0, 1])
    alone = run_rounds(SMALL, "siamese_aux", [1])
    for r in together + alone:
        r.pop("seconds")
    assert together[1] == alone[0]


def test_dropout_masks_differ_between_rounds_and_keep_the_rate():
    from digitcmp.stacked import StackedDropout

    drop = StackedDropout(0.5, [torch.Generator().manual_seed(s) for s in (1, 2)]).train()
    y = drop(torch.ones(2000, 50))
    a, b = y[:1000] > 0, y[1000:] > 0
    assert not torch.equal(a, b) and 0.45 < a.float().mean() < 0.55
    assert set(y.unique().tolist()) == {0.0, 2.0}


def test_models_with_other_layers_fall_back_to_the_reference_loop():
    class Odd(PairModel):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))  # a parameter outside any stackable layer
            self.fc = nn.Linear(392, 2)

        def forward(self, x):
            return self.fc(x.flatten(1)) * self.scale, None

    assert not stackable(Odd())
    # Every model stacks but those with their own training recipe (probcmp), which train alone.
    assert {name for name, c in MODELS.items() if not stackable(c())} == {"probcmp", "probcmp_small"}
