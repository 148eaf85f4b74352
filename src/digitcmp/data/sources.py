"""Where digits come from. A *source* is a pool of 14x14 (2x2 average-pooled) MNIST training
digits with labels, and usually a pool of test digits:

- ``embedded``: shipped with digitcmp (``data/shipped``, see its README): 5,000 MNIST training
  digits (the first 500 of each class) and MNIST's 10,000 test digits, so a machine with no
  network trains and tests on real MNIST, test digits written by other people than training ones.
- ``mnist``: the four standard IDX files (60k train / 10k test), from ``--data-dir`` or the
  cache directory, downloaded there with pooch when missing (each archive checked by MD5).
- ``auto``: full MNIST if it is in the cache (or ``--data-dir``), else one download attempt,
  else ``embedded``. A failed attempt is remembered for a day, so offline commands do not retry
  (and say so) every time.

``--test-dir`` replaces a source's test digits with the MNIST test split found in a directory.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import SOURCES
from ..errors import DataError
from ..messages import say
from .idx import read_idx

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
# The shipped files, by the SHA-256 of their decompressed IDX content (data/shipped/README.md).
SHIPPED = {
    "train-5k-images-idx3-ubyte": "a4a9358b9ba319305e7cd69b2c7410e463401e152d7e9e60189b94a3f159d012",
    "train-5k-labels-idx1-ubyte": "704256e87519240fd1d7ecdf681fe209864691e252c6642aeadc21f3c4d44b41",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
RETRY_AFTER = 24 * 3600  # seconds before ``auto`` tries a failed download again


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

    ``test_x is None`` means the source has no test digits of its own, so each round splits the
    training pool into disjoint train and test pools. ``test_location``: where the test digits
    came from when not from the source's own files (``--test-dir``).
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
        return describe(self.info())

    def without_test_split(self) -> Source:
        """This source's training digits alone: each round then splits them into train and
        test pools (``--test-pool train``)."""
        return replace(self, test_x=None, test_y=None, test_location=None)


def describe(info: dict) -> str:
    """One line for people from a source's ``info()`` (as runs record it): which digits."""
    name, where = info.get("name", "?"), info.get("location", "?")
    train, test = info.get("train_digits"), info.get("test_digits")
    if not isinstance(train, int):
        return f"{name} ({where})"
    if test is None:
        return (f"{name} ({where}): {train:,} MNIST digits, split at random each round into train "
                "and test pools")
    from_dir = f" from {info['test_location']}" if info.get("test_location") else ""
    return (f"{name} ({where}): training pairs from {train:,} MNIST training digits, test pairs "
            f"from {test:,} MNIST test digits{from_dir}")


def pool14(images: np.ndarray) -> torch.Tensor:
    """28x28 uint8 digits -> 14x14 float32 by 2x2 average pooling, as the course did."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1)
    return F.avg_pool2d(x, kernel_size=2).squeeze(1)


def _check_digits(images: np.ndarray, labels: np.ndarray, where: str) -> None:
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{where}: images have shape {images.shape}, expected N x 28 x 28")
    if images.dtype != np.uint8:
        raise DataError(f"{where}: images are {images.dtype}, expected unsigned bytes (IDX type 0x08)")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{where}: {len(labels)} labels for {len(images)} images")
    if not len(labels):
        raise DataError(f"{where}: no digits")
    if labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{where}: labels outside 0-9 (found {labels.min()}..{labels.max()})")


def find_idx(directory: Path, stem: str) -> Path | None:
    """A file of MNIST's in a flat directory or in torchvision's MNIST/raw layout, .gz or not.
    Anything at that name counts (a directory too), so that reading it names the problem."""
    for sub in (directory, directory / "MNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (sub / name).exists():
                return sub / name
    return None


def load_idx_pair(images_path: Path, labels_path: Path, checksums: tuple = (None, None)
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled digits and labels from two IDX files, checked to belong together."""
    images, labels = read_idx(images_path, checksums[0]), read_idx(labels_path, checksums[1])
    labels = labels.astype(np.int64)
    _check_digits(images, labels, f"{images_path} + {labels_path}")
    return pool14(images), torch.from_numpy(labels)


def load_mnist_dir(directory: str | os.PathLike) -> Source:
    """The full MNIST source from a directory holding the four IDX files."""
    directory = Path(directory)
    paths = {stem: find_idx(directory, stem) for stem in MNIST_FILES}
    missing = [stem for stem, p in paths.items() if p is None]
    if missing:
        raise DataError(f"{directory}: missing MNIST file(s) {', '.join(missing)} (.gz or raw)")
    train = load_idx_pair(paths["train-images-idx3-ubyte"], paths["train-labels-idx1-ubyte"])
    test = load_idx_pair(paths["t10k-images-idx3-ubyte"], paths["t10k-labels-idx1-ubyte"])
    return Source("mnist", str(directory.resolve()), *train, *test)


def download_mnist(directory: str | os.PathLike, timeout: float = 10.0) -> Path:
    """Fetch the four MNIST archives into ``directory`` with pooch, trying each mirror in turn.

    Each file is checked against its known MD5; pooch writes to a temporary file and renames it,
    so an interrupted download never leaves a half file behind.
    """
    import pooch

    directory = Path(directory)
    pooch.get_logger().setLevel("WARNING")  # one line per file from us, not one per mirror
    for stem, md5 in MNIST_FILES.items():
        if find_idx(directory, stem):
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


def shipped_dir() -> Path:
    """The directory of the digits that ship with digitcmp."""
    return Path(str(resources.files("digitcmp.data") / "shipped"))


def load_embedded() -> Source:
    """The shipped digits: 5,000 MNIST training digits and the 10,000 MNIST test digits."""
    d = shipped_dir()

    def pair(prefix: str):
        stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
        return load_idx_pair(*(d / f"{s}.gz" for s in stems), tuple(SHIPPED[s] for s in stems))

    return Source("embedded", "shipped with digitcmp", *pair("train-5k"), *pair("t10k"))


def with_mnist_test(source: Source, directory: str | os.PathLike) -> Source:
    """``source``'s training digits with the MNIST test split (the two t10k files) in
    ``directory`` as the test pool."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"--test-dir {directory}: no such directory")
    stems = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    paths = [find_idx(directory, stem) for stem in stems]
    if None in paths:
        missing = [s for s, p in zip(stems, paths, strict=True) if p is None]
        raise DataError(f"{directory}: missing MNIST test file(s) {', '.join(missing)} (.gz or raw)")
    x, y = load_idx_pair(*paths)
    return replace(source, test_x=x, test_y=y, test_location=str(directory.resolve()))


def load_source(kind: str = "auto", data_dir: str | os.PathLike | None = None,
                test_dir: str | os.PathLike | None = None, test_pool: str = "test",
                say=say) -> Source:
    """Resolve ``--data``, ``--data-dir``, ``--test-dir`` and ``--test-pool`` to a Source;
    ``say`` tells of download attempts and fallbacks."""
    if kind not in SOURCES:
        raise DataError(f"unknown data source {kind!r}; choose one of {', '.join(SOURCES)}")
    source = _load_source(kind, data_dir, say)
    if test_dir:
        source = with_mnist_test(source, test_dir)
    return source.without_test_split() if test_pool == "train" else source


def _load_source(kind: str, data_dir: str | os.PathLike | None, say) -> Source:
    if kind == "embedded":
        return load_embedded()
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DataError(f"--data-dir {data_dir}: no such directory")
    directory = Path(data_dir) if data_dir else cache_dir() / "mnist"
    if all(find_idx(directory, stem) for stem in MNIST_FILES):
        return load_mnist_dir(directory)
    marker = cache_dir() / "mnist-download-failed"
    if kind == "auto" and _recent(marker):
        return load_embedded()  # said once, when the attempt failed
    say(f"digitcmp: full MNIST not in {directory}; downloading it there")
    created = not directory.exists()
    try:
        download_mnist(directory, timeout=10.0 if kind == "mnist" else 5.0)
    except (DataError, OSError) as e:
        if created and directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()  # leave no empty directory behind a failed download
        if kind == "mnist":
            raise DataError(f"MNIST not found in {directory} and {e}") from None
        _touch(marker)
        say("digitcmp: download failed (no network?); using the MNIST digits shipped with "
            "digitcmp (`--data mnist` retries the download; `auto` waits a day before retrying)")
        return load_embedded()
    marker.unlink(missing_ok=True)
    return load_mnist_dir(directory)


def _recent(marker: Path) -> bool:
    try:
        return time.time() - marker.stat().st_mtime < RETRY_AFTER
    except OSError:
        return False


def _touch(marker: Path) -> None:
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass  # an unwritable cache only means the next command tries again
