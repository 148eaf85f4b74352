import pytest
import torch

from conftest import id_pool
from digitcmp.data.pairs import Pairs, check_pool_sizes, draw_pairs, round_data
from digitcmp.data.sources import Source, load_embedded
from digitcmp.errors import DataError


def test_draw_pairs_semantics():
    x, y = id_pool(100)
    p = draw_pairs(x, y, 30, torch.Generator().manual_seed(0))
    assert p.input.shape == (30, 2, 14, 14) and p.input.dtype == torch.float32
    assert p.target.dtype == torch.long and p.classes.shape == (30, 2)
    ids = p.input[:, :, 0, 0].long()
    assert len(set(ids.flatten().tolist())) == 60  # no digit used twice
    assert torch.equal(p.classes, y[ids])
    assert torch.equal(p.target, (p.classes[:, 0] <= p.classes[:, 1]).long())


def test_draw_pairs_needs_enough_digits():
    x, y = id_pool(10)
    with pytest.raises(DataError, match="--pairs 6: 6 pairs need 12 digits"):
        draw_pairs(x, y, 6, torch.Generator())


def test_pool_sizes_are_checked_before_a_run_and_name_pairs():
    src = load_embedded()
    check_pool_sizes(src, 2500)
    with pytest.raises(DataError, match="--pairs 2501: 2501 train pairs need 5,002 digits"):
        check_pool_sizes(src, 2501)
    with pytest.raises(DataError, match="--pairs 1251: .*the train pool of embedded has 2,500"):
        check_pool_sizes(src.without_test_split(), 1251)


def ids(p: Pairs, data) -> torch.Tensor:
    """The pool indices of the digits of pairs drawn from an ``id_pool``."""
    return (p.input[:, :, 0, 0] * data.std + data.mean).round().long()


def test_round_data_split_per_round_is_disjoint_and_reproducible():
    x, y = id_pool(400)
    src = Source("fake", "ids", x, y)
    a, b = round_data(src, seed=3, round=1, n_pairs=100), round_data(src, seed=3, round=1, n_pairs=100)
    assert torch.equal(a.train.input, b.train.input) and torch.equal(a.test.input, b.test.input)
    assert not set(ids(a.train, a).flatten().tolist()) & set(ids(a.test, a).flatten().tolist())
    assert not torch.equal(round_data(src, 3, 2, 100).train.input, a.train.input)
    assert abs(a.train.input.mean().item()) < 1e-4 and abs(a.train.input.std().item() - 1) < 1e-4


def test_round_data_uses_test_split_when_present():
    x, y = id_pool(300)
    src = Source("fake", "ids", x[:200], y[:200], x[200:], y[200:])
    d = round_data(src, seed=0, round=0, n_pairs=50)
    assert ids(d.test, d).min() >= 200


def test_validation_pairs_are_carved_from_the_training_pairs():
    x, y = id_pool(400)
    src = Source("fake", "ids", x, y)
    full, d = round_data(src, 3, 1, 100), round_data(src, 3, 1, 100, val_pairs=20)
    assert (len(d.train), len(d.val), len(d.test)) == (80, 20, 100) and full.val is None
    assert list(d.splits()) == ["train", "test", "val"] and list(full.splits()) == ["train", "test"]
    # The same 100 training pairs, split 80 / 20; the test pairs do not change.
    assert torch.equal(torch.cat((ids(d.train, d), ids(d.val, d))), ids(full.train, full))
    assert torch.equal(ids(d.test, d), ids(full.test, full))
    # Standardised with the statistics of the 80 pairs trained on only.
    assert abs(d.train.input.mean().item()) < 1e-4 and abs(d.val.input.mean().item()) > 1e-3
    with pytest.raises(DataError, match="--val-pairs 99"):
        round_data(src, 3, 1, 100, val_pairs=99)


def test_blank_digits_are_refused_not_divided_by_zero():
    x, y = torch.full((100, 14, 14), 7.0), torch.arange(100) % 10
    with pytest.raises(DataError, match="no spread"):
        round_data(Source("flat", "test", x, y), 0, 0, n_pairs=20)


def test_inputs_can_stay_unstandardised():
    x, y = id_pool(400)
    d = round_data(Source("fake", "ids", x, y), 0, 0, 50, standardise_inputs=False)
    assert (d.mean, d.std) == (0.0, 1.0) and d.train.input.max() > 100
