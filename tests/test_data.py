import gzip

import numpy as np
import pytest
import torch

from conftest import fake_digits, write_idx
from digitcmp import data
from digitcmp.data import DataError, Source, draw_pairs, read_idx, round_data


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_read_idx_round_trip(tmp_path, name):
    x, _ = fake_digits(5, seed=0)
    assert np.array_equal(read_idx(write_idx(tmp_path / name, x)), x)


def test_read_idx_other_types(tmp_path):
    a = np.arange(12, dtype=np.int32).reshape(3, 4) - 5
    out = read_idx(write_idx(tmp_path / "a.idx", a, code=0x0C))
    assert out.dtype == np.int32 and np.array_equal(out, a)


@pytest.mark.parametrize("content, message", [
    (b"\x08\x03\x00\x00\x00\x00\x00\x01", "magic number"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "unknown IDX element type 0x07"),
    (b"\x00\x00", "truncated IDX header"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated IDX header"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", r"truncated: header shape \(5,\) needs 5"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02", "trailing bytes"),
])
def test_read_idx_rejects_bad_files(tmp_path, content, message):
    path = tmp_path / "bad-idx"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_read_idx_rejects_truncated_gzip(tmp_path):
    x, _ = fake_digits(5, seed=0)
    good = gzip.compress(write_idx(tmp_path / "raw", x).read_bytes())
    path = tmp_path / "cut.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="corrupt or truncated gzip") as err:
        read_idx(path)
    assert "cut.gz" in str(err.value)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "nope")


def test_real_t10k(t10k):
    images = read_idx(t10k / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(t10k / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_load_mnist_dir(fake_mnist, tmp_path, layout):
    directory = fake_mnist
    if layout == "torchvision":
        directory = tmp_path / "root"
        (directory / "MNIST").mkdir(parents=True)
        fake_mnist.rename(directory / "MNIST" / "raw")
    src = data.load_mnist_dir(directory)
    assert src.name == "mnist"
    assert src.train_x.shape == (60, 14, 14) and src.test_x.shape == (40, 14, 14)
    assert src.train_y.tolist() == [i % 10 for i in range(60)]


def test_load_mnist_dir_names_missing_file(fake_mnist):
    (fake_mnist / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing MNIST file.*t10k-labels-idx1-ubyte"):
        data.load_mnist_dir(fake_mnist)


def test_load_mnist_dir_checks_labels_match_images(fake_mnist):
    write_idx(fake_mnist / "train-labels-idx1-ubyte.gz", np.zeros(59, dtype=np.uint8))
    with pytest.raises(DataError, match="59 labels for 60 images"):
        data.load_mnist_dir(fake_mnist)


def test_auto_falls_back_to_embedded_without_network(tmp_path, monkeypatch):
    def no_network(directory, timeout):
        raise DataError("could not download (no network)")

    monkeypatch.setattr(data, "download_mnist", no_network)
    monkeypatch.setattr(data, "load_embedded", lambda: "EMBEDDED")
    said = []
    assert data.load_source("auto", tmp_path, say=said.append) == "EMBEDDED"
    assert "downloading" in said[0] and "embedded" in said[-1]
    with pytest.raises(DataError, match="MNIST not found"):
        data.load_source("mnist", tmp_path)


def test_auto_prefers_local_mnist(fake_mnist):
    assert data.load_source("auto", fake_mnist).name == "mnist"


def test_test_dir_replaces_the_test_pool(fake_mnist, tmp_path):
    (fake_mnist / "train-images-idx3-ubyte.gz").rename(tmp_path / "elsewhere.gz")  # t10k alone
    src = data.load_source("embedded", test_dir=fake_mnist)
    assert src.name == "embedded" and src.train_x.shape == (5000, 14, 14)
    assert src.test_x.shape == (40, 14, 14) and src.test_location == str(fake_mnist.resolve())
    assert src.info()["test_location"] == str(fake_mnist.resolve())
    assert str(fake_mnist.resolve()) in src.describe()
    d = round_data(src, 0, 0, n_pairs=20)  # test pairs now come from the t10k digits
    raw = (d.test.input * d.std + d.mean).flatten(0, 1)
    assert all(torch.isclose(src.test_x, digit, atol=1e-3).all((1, 2)).any() for digit in raw)
    (fake_mnist / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing MNIST test file.*t10k-labels-idx1-ubyte"):
        data.load_source("embedded", test_dir=fake_mnist)


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DIGITCMP_CACHE", str(tmp_path))
    assert data.cache_dir() == tmp_path


def test_embedded_source():
    src = data.load_embedded()
    assert src.name == "embedded" and src.test_x is None
    assert src.train_x.shape == (5000, 14, 14)
    assert torch.bincount(src.train_y).tolist() == [500] * 10
    assert 0 <= src.train_x.min() and src.train_x.max() <= 255


def test_pool14_is_2x2_average():
    x = np.arange(28 * 28, dtype=np.uint8).reshape(1, 28, 28) % 200
    pooled = data.pool14(x)
    assert pooled.shape == (1, 14, 14)
    assert pooled[0, 3, 5].item() == x[0, 6:8, 10:12].astype(float).mean()


def id_pool(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A pool whose every pixel holds the digit's index, so pairs reveal which digits they used."""
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1).expand(n, 14, 14).clone()
    return x, torch.arange(n) % 10


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
    with pytest.raises(DataError, match="6 pairs need 12 digits"):
        draw_pairs(x, y, 6, torch.Generator())


def test_round_data_split_per_round_is_disjoint_and_reproducible():
    x, y = id_pool(400)
    src = Source("fake", "ids", x, y)
    a, b = round_data(src, seed=3, round=1, n_pairs=100), round_data(src, seed=3, round=1, n_pairs=100)
    assert torch.equal(a.train.input, b.train.input) and torch.equal(a.test.input, b.test.input)
    ids = lambda p: set((p.input[:, :, 0, 0] * a.std + a.mean).round().long().flatten().tolist())  # noqa: E731
    assert not ids(a.train) & ids(a.test)
    assert not torch.equal(round_data(src, 3, 2, 100).train.input, a.train.input)
    assert abs(a.train.input.mean().item()) < 1e-4 and abs(a.train.input.std().item() - 1) < 1e-4


def test_round_data_uses_test_split_when_present():
    x, y = id_pool(300)
    src = Source("fake", "ids", x[:200], y[:200], x[200:], y[200:])
    d = round_data(src, seed=0, round=0, n_pairs=50)
    test_ids = (d.test.input[:, :, 0, 0] * d.std + d.mean).round()
    assert test_ids.min() >= 200


def test_validation_pairs_are_carved_from_the_training_pairs():
    x, y = id_pool(400)
    src = Source("fake", "ids", x, y)
    full, d = round_data(src, 3, 1, 100), round_data(src, 3, 1, 100, val_pairs=20)
    assert (len(d.train), len(d.val), len(d.test)) == (80, 20, 100) and full.val is None

    def ids(p, data):
        return (p.input[:, :, 0, 0] * data.std + data.mean).round().long()

    # The same 100 training pairs, split 80 / 20; the test pairs do not change.
    assert torch.equal(torch.cat((ids(d.train, d), ids(d.val, d))), ids(full.train, full))
    assert torch.equal(ids(d.test, d), ids(full.test, full))
    # Standardised with the statistics of the 80 pairs trained on only.
    assert abs(d.train.input.mean().item()) < 1e-4 and abs(d.val.input.mean().item()) > 1e-3
    with pytest.raises(DataError, match="val_pairs=99"):
        round_data(src, 3, 1, 100, val_pairs=99)
