import gzip
import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import fake_digits, write_idx
from digitcmp.data import idx
from digitcmp.data.idx import read_idx
from digitcmp.errors import DataError


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_read_idx_round_trip(tmp_path, name):
    x, _ = fake_digits(5, seed=0)
    assert np.array_equal(read_idx(write_idx(tmp_path / name, x)), x)


def test_read_idx_other_types(tmp_path):
    a = np.arange(12, dtype=np.int32).reshape(3, 4) - 5
    out = read_idx(write_idx(tmp_path / "a.idx", a, code=0x0C))
    assert out.dtype == np.int32 and np.array_equal(out, a)


def test_concatenated_gzip_members_are_read(tmp_path):
    x, _ = fake_digits(3, seed=1)
    raw = write_idx(tmp_path / "raw", x).read_bytes()
    (tmp_path / "two.gz").write_bytes(gzip.compress(raw[:100]) + gzip.compress(raw[100:]))
    assert np.array_equal(read_idx(tmp_path / "two.gz"), x)


@pytest.mark.parametrize("content, message", [
    (b"\x08\x03\x00\x00\x00\x00\x00\x01", "magic number"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "unknown IDX element type 0x07"),
    (b"\x00\x00", "truncated IDX header"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated IDX header"),
    (b"\x00\x00\x08\x00", "declares 0 dimensions"),
    (b"\x00\x00\x08\xff" + b"\x00" * 16, "declares 255 dimensions"),
    (b"\x00\x00\x08\x02\xff\xff\xff\xff\xff\xff\xff\xff", "more than digitcmp reads"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", r"truncated: header shape \(5,\) needs 5"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02", "trailing bytes"),
])
def test_read_idx_rejects_bad_files(tmp_path, content, message):
    for name, data in (("bad-idx", content), ("bad-idx.gz", gzip.compress(content))):
        path = tmp_path / name
        path.write_bytes(data)
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


def test_a_gzip_bomb_is_not_decompressed_beyond_its_header(tmp_path, monkeypatch):
    # A header declaring 16 bytes followed by 50 MB of zeros: reading stops after 17 data bytes.
    raw = b"\x00\x00\x08\x01\x00\x00\x00\x10" + bytes(50 * 2**20)
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(raw, compresslevel=9))
    produced = []
    real = idx.zlib.decompressobj

    class Counting:
        def __init__(self, *a, **k):
            self.d = real(*a, **k)

        def decompress(self, data, max_length=0):
            out = self.d.decompress(data, max_length)
            produced.append(len(out))
            return out

        def __getattr__(self, name):
            return getattr(self.d, name)

    monkeypatch.setattr(idx.zlib, "decompressobj", Counting)
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(path)
    assert sum(produced) <= 8 + 16 + 1 + idx._HEADER_MAX


def test_read_idx_names_what_is_not_a_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_idx(tmp_path / "nope")
    (tmp_path / "dir").mkdir()
    with pytest.raises(DataError, match="not a regular file"):
        read_idx(tmp_path / "dir")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(DataError, match="not a regular file"):  # would block forever if opened
        read_idx(tmp_path / "fifo")


def test_checksum_is_verified(tmp_path):
    x, _ = fake_digits(2, seed=0)
    path = write_idx(tmp_path / "a.gz", x)
    with pytest.raises(DataError, match="does not match its SHA-256"):
        read_idx(path, sha256="0" * 64)


def test_real_t10k(t10k):
    images = read_idx(t10k / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(t10k / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# Property-based: whatever the bytes, reading raises DataError or returns an array whose header
# matched, and never reads more than the header declares.
VALID = struct.pack(">BBBBI", 0, 0, 8, 1, 6) + bytes(range(6))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=64),
                      st.builds(lambda cut, junk: VALID[:cut] + junk, st.integers(0, len(VALID)),
                                st.binary(max_size=8)),
                      st.builds(lambda i, b: VALID[:i] + bytes([b]) + VALID[i + 1:],
                                st.integers(0, len(VALID) - 1), st.integers(0, 255))),
       compress=st.booleans())
def test_read_idx_on_arbitrary_bytes_raises_only_data_errors(tmp_path, data, compress):
    path = tmp_path / "f"
    path.write_bytes(gzip.compress(data) if compress else data)
    try:
        out = read_idx(path)
    except DataError:
        return
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    assert out.shape == shape


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 200), flip=st.integers(0, 10**6))
def test_read_idx_on_damaged_gzip_raises_only_data_errors(tmp_path, cut, flip):
    x, _ = fake_digits(3, seed=2)
    good = bytearray(gzip.compress(write_idx(tmp_path / "raw", x).read_bytes()))
    good[flip % len(good)] ^= 0xFF
    path = tmp_path / "d.gz"
    path.write_bytes(bytes(good[: len(good) - cut]))
    try:
        assert read_idx(path).shape == (3, 28, 28)
    except DataError:
        pass
