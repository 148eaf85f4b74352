import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

T10K = Path(__file__).resolve().parents[2] / "shared" / "mnist-t10k"


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


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """Tests never read or write the user's cache (downloaded MNIST, parsed embedded digits);
    the environment variable also reaches worker processes the tests spawn."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DIGITCMP_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


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
