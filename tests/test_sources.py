import gzip
import hashlib
import re

import numpy as np
import pytest
import torch

from conftest import write_idx
from digitcmp.data import sources
from digitcmp.data.pairs import round_data
from digitcmp.errors import DataError


@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_load_mnist_dir(fake_mnist, tmp_path, layout):
    directory = fake_mnist
    if layout == "torchvision":
        directory = tmp_path / "root"
        (directory / "MNIST").mkdir(parents=True)
        fake_mnist.rename(directory / "MNIST" / "raw")
    src = sources.load_mnist_dir(directory)
    assert src.name == "mnist"
    assert src.train_x.shape == (60, 14, 14) and src.test_x.shape == (40, 14, 14)
    assert src.train_y.tolist() == [i % 10 for i in range(60)]


def test_load_mnist_dir_names_missing_file(fake_mnist):
    (fake_mnist / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing MNIST file.*t10k-labels-idx1-ubyte"):
        sources.load_mnist_dir(fake_mnist)


def test_a_directory_where_a_file_should_be_is_named(fake_mnist):
    (fake_mnist / "t10k-labels-idx1-ubyte.gz").unlink()
    (fake_mnist / "t10k-labels-idx1-ubyte.gz").mkdir()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: not a regular file"):
        sources.load_mnist_dir(fake_mnist)


@pytest.mark.parametrize("change, message", [
    (("train-labels-idx1-ubyte.gz", np.zeros(59, dtype=np.uint8)), "59 labels for 60 images"),
    (("train-labels-idx1-ubyte.gz", np.full(60, 12, dtype=np.uint8)), "labels outside 0-9"),
    (("train-images-idx3-ubyte.gz", np.zeros((60, 14, 14), dtype=np.uint8)), r"expected N x 28 x 28"),
])
def test_load_mnist_dir_checks_the_digits(fake_mnist, change, message):
    write_idx(fake_mnist / change[0], change[1])
    with pytest.raises(DataError, match=message):
        sources.load_mnist_dir(fake_mnist)


def test_auto_falls_back_to_embedded_and_says_so_once(tmp_path, no_network, monkeypatch):
    monkeypatch.setattr(sources, "load_embedded", lambda: "EMBEDDED")
    said = []
    assert sources.load_source("auto", tmp_path, say=said.append) == "EMBEDDED"
    assert "downloading" in said[0] and "shipped" in said[-1]
    said.clear()  # the failed attempt is remembered: no retry, nothing said
    assert sources.load_source("auto", tmp_path, say=said.append) == "EMBEDDED"
    assert said == []
    with pytest.raises(DataError, match="MNIST not found"):  # --data mnist always tries
        sources.load_source("mnist", tmp_path, say=said.append)


def test_a_missing_data_dir_is_an_error_not_created(tmp_path, no_network):
    with pytest.raises(DataError, match="--data-dir .*absent: no such directory"):
        sources.load_source("mnist", tmp_path / "absent")
    assert not (tmp_path / "absent").exists()


def test_auto_prefers_local_mnist(fake_mnist):
    assert sources.load_source("auto", fake_mnist).name == "mnist"


def test_test_dir_replaces_the_test_pool(fake_mnist, tmp_path):
    (fake_mnist / "train-images-idx3-ubyte.gz").rename(tmp_path / "elsewhere.gz")  # t10k alone
    src = sources.load_source("embedded", test_dir=fake_mnist)
    assert src.name == "embedded" and src.train_x.shape == (5000, 14, 14)
    assert src.test_x.shape == (40, 14, 14) and src.test_location == str(fake_mnist.resolve())
    assert src.info()["test_location"] == str(fake_mnist.resolve())
    assert str(fake_mnist.resolve()) in src.describe()
    d = round_data(src, 0, 0, n_pairs=20)  # test pairs now come from the t10k digits
    raw = (d.test.input * d.std + d.mean).flatten(0, 1)
    assert all(torch.isclose(src.test_x, digit, atol=1e-3).all((1, 2)).any() for digit in raw)
    (fake_mnist / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing MNIST test file.*t10k-labels-idx1-ubyte"):
        sources.load_source("embedded", test_dir=fake_mnist)


def test_test_pool_train_splits_the_training_digits():
    src = sources.load_source("embedded", test_pool="train")
    assert src.test_x is None and src.train_x.shape == (5000, 14, 14)
    assert "split at random each round" in src.describe()


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DIGITCMP_CACHE", str(tmp_path))
    assert sources.cache_dir() == tmp_path


def test_embedded_source_is_real_mnist_with_a_test_split():
    src = sources.load_embedded()
    assert src.name == "embedded"
    assert src.train_x.shape == (5000, 14, 14) and src.test_x.shape == (10000, 14, 14)
    assert torch.bincount(src.train_y).tolist() == [500] * 10
    assert torch.bincount(src.test_y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert 0 <= src.train_x.min() and src.train_x.max() <= 255
    assert "5,000 MNIST training digits" in src.describe() and "10,000 MNIST test digits" in src.describe()


def test_shipped_files_match_their_checksums_and_readme():
    readme = (sources.shipped_dir() / "README.md").read_text()
    for stem, digest in sources.SHIPPED.items():
        raw = gzip.decompress((sources.shipped_dir() / f"{stem}.gz").read_bytes())
        assert hashlib.sha256(raw).hexdigest() == digest
        assert re.search(rf"{stem}.*{digest}", readme), stem  # the README lists the same digest


def test_shipped_test_split_is_the_real_one(t10k):
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        shipped = gzip.decompress((sources.shipped_dir() / f"{stem}.gz").read_bytes())
        assert shipped == gzip.decompress((t10k / f"{stem}.gz").read_bytes())


def test_a_damaged_shipped_file_is_refused(tmp_path, monkeypatch):
    for f in sources.shipped_dir().iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    labels = tmp_path / "train-5k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[100] = (raw[100] + 1) % 10
    labels.write_bytes(gzip.compress(bytes(raw)))
    monkeypatch.setattr(sources, "shipped_dir", lambda: tmp_path)
    with pytest.raises(DataError, match="does not match its SHA-256"):
        sources.load_embedded()


def test_pool14_is_2x2_average():
    x = np.arange(28 * 28, dtype=np.uint8).reshape(1, 28, 28) % 200
    pooled = sources.pool14(x)
    assert pooled.shape == (1, 14, 14)
    assert pooled[0, 3, 5].item() == x[0, 6:8, 10:12].astype(float).mean()
