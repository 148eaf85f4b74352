"""Fixtures and helpers shared by the test modules."""

import gzip
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings

from digitcmp.config import Config

T10K = Path(__file__).resolve().parents[2] / "shared" / "mnist-t10k"

# The test command gives the same verdict on every run: the property tests draw a fixed,
# derandomised set of examples. HYPOTHESIS_PROFILE=explore draws new ones on each run, to hunt
# for inputs the fixed set misses (add what it finds to the example-based tests).
settings.register_profile("fixed", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fixed"))

# The smallest runs that still exercise everything: a handful of pairs, one epoch. On a machine
# with a GPU, DIGITCMP_TEST_DEVICE=cuda runs them there (benchmarks/device_check.sh).
DEVICE = os.environ.get("DIGITCMP_TEST_DEVICE", "cpu")
TINY = dict(data="embedded", pairs=40, epochs=1, batch_size=20, device=DEVICE)


def write_idx(path: Path, array: np.ndarray, code: int = 0x08, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file (gzip-compressed when the name ends in .gz)."""
    raw = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.astype(array.dtype.newbyteorder(">")).tobytes()
    if compress if compress is not None else path.name.endswith(".gz"):
        raw = gzip.compress(raw)
    path.write_bytes(raw)
    return path


def fake_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n 28x28 uint8 'digits' whose labels cycle through 0-9."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), (np.arange(n) % 10).astype(np.uint8)


def id_pool(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A pool whose every pixel holds the digit's index, so pairs reveal which digits they used."""
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1).expand(n, 14, 14).clone()
    return x, torch.arange(n) % 10


def tiny(**kw) -> Config:
    """A Config for a run of a few seconds; keyword arguments override."""
    return Config(**{**TINY, "models": ["baseline"], "rounds": 2, **kw})


def synthetic_run(path: Path, rounds: int = 4, models=("baseline", "cnn", "siamese_aux"), planned=None,
                  curves: bool = True) -> Path:
    """A run directory with made-up results: report code must not care where numbers come from.
    ``curves=False`` writes records as digitcmp 0.1 did, without per-epoch metrics."""
    path.mkdir()
    config = {"models": list(models), "rounds": planned or rounds, "epochs": 3, "data": "embedded",
              "test_pool": "test"}
    (path / "config.json").write_text(json.dumps({
        "config": config, "source": {"name": "embedded", "location": "test"},
        "command": ["digitcmp", "reproduce", "--rounds", str(rounds)]}))
    with open(path / "rounds.jsonl", "w") as f:
        for k, m in enumerate(models):
            for r in range(rounds):
                rec = {"model": m, "round": r, "params": 1000 * (k + 1),
                       "train_error": 0.05 * k + 0.01 * r, "test_error": 0.2 - 0.03 * k + 0.01 * r,
                       "train_loss": [1.0 - 0.1 * e + 0.01 * r for e in range(3)]}
                if curves:
                    rec["curves"] = {"target_loss": [0.7 - 0.1 * e for e in range(3)],
                                     "test_error": [0.3 - 0.02 * e + 0.01 * r for e in range(3)],
                                     "train_error": [0.2 - 0.05 * e for e in range(3)]}
                    rec.update(train_mode_train_error=0.1, train_mode_test_error=0.3)
                f.write(json.dumps(rec) + "\n")
    return path


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """Tests never read or write the user's cache (downloaded MNIST, download markers); the
    environment variable also reaches worker processes the tests spawn."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DIGITCMP_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture
def no_network(monkeypatch):
    """Downloads fail at once, as on a machine without network."""
    from digitcmp.data import sources
    from digitcmp.errors import DataError

    def fail(directory, timeout):
        raise DataError("could not download (no network)")

    monkeypatch.setattr(sources, "download_mnist", fail)


@pytest.fixture
def fake_mnist(tmp_path) -> Path:
    """A tiny MNIST directory: 60 train and 40 test digits, in the standard file names."""
    d = tmp_path / "mnist"
    d.mkdir()
    for split, n in (("train", 60), ("t10k", 40)):
        x, y = fake_digits(n, seed=n)
        write_idx(d / f"{split}-images-idx3-ubyte.gz", x)
        write_idx(d / f"{split}-labels-idx1-ubyte.gz", y)
    return d


@pytest.fixture
def t10k() -> Path:
    if not (T10K / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("../shared/mnist-t10k not present")
    return T10K


@pytest.fixture(scope="session")
def trained_siamese():
    """One siamese_aux round trained for one epoch on 100 pairs (shared: training is the slow part)."""
    from digitcmp.train import train_rounds

    [t] = train_rounds(Config(data="embedded", pairs=100, epochs=1, engine="reference"), "siamese_aux", [0])
    return t


@pytest.fixture
def checkpoint(tmp_path, trained_siamese):
    """A checkpoint file of ``trained_siamese``."""
    from digitcmp.checkpoint import save_trained

    return save_trained(tmp_path / "m.pt", trained_siamese, {"epochs": 1}, {"name": "embedded"})
