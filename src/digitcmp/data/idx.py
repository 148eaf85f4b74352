"""The IDX file format of MNIST (http://yann.lecun.com/exdb/mnist/): two zero bytes, a type
code, the number of dimensions, one big-endian uint32 per dimension, then the data in C order.

Files may be gzip-compressed (decided by content, not by name). Reading never holds more than
the header declares: a compressed file is decompressed only up to that size, so a small "gzip
bomb" cannot fill the memory, and a header declaring absurd sizes is refused before any read.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
MAX_NDIM = 8
MAX_BYTES = 2**30  # the largest data section read (MNIST's biggest file holds 47 MB)
_CHUNK = 2**20
_HEADER_MAX = 4 + 4 * MAX_NDIM


def read_idx(path: str | os.PathLike, sha256: str | None = None) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed), checking its header against its length and,
    with ``sha256``, the SHA-256 of its (decompressed) content."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if not stat.S_ISREG(mode):  # a FIFO would block forever, a directory cannot be read
        raise DataError(f"{path}: not a regular file")
    try:
        with open(path, "rb") as f:
            raw = _read_bounded(f, path)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    shape, dtype, header = _header(raw, path)
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise DataError(f"{path}: content does not match its SHA-256 checksum (damaged file?)")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _header(raw: bytes, path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, element type and header length of an IDX file's (decompressed) bytes; checks
    that the data section is exactly as long as the header says."""
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, need at least 4)")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (magic number starts 0x{raw[0]:02x}{raw[1]:02x}, "
                        "expected 0x0000)")
    code, ndim = raw[2], raw[3]
    if code not in TYPES:
        raise DataError(f"{path}: unknown IDX element type 0x{code:02x}")
    if not 1 <= ndim <= MAX_NDIM:
        raise DataError(f"{path}: IDX header declares {ndim} dimensions (digitcmp reads 1 to {MAX_NDIM})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({ndim} dimensions need {header} bytes)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = TYPES[code]
    expected = _data_bytes(shape, dtype, path)
    found = len(raw) - header
    if found != expected:
        what = "truncated" if found < expected else "trailing bytes"
        raise DataError(f"{path}: {what}: header shape {shape} needs {expected} data bytes, "
                        f"file has {found}" + ("" if found <= expected else " or more"))
    return shape, dtype, header


def _data_bytes(shape: tuple[int, ...], dtype: np.dtype, path: Path) -> int:
    size = dtype.itemsize
    for d in shape:
        size *= d
    if size > MAX_BYTES:
        raise DataError(f"{path}: IDX header shape {shape} declares {size:,} data bytes, more "
                        f"than digitcmp reads ({MAX_BYTES:,})")
    return size


def _read_bounded(f, path: Path) -> bytes:
    """The file's bytes, gunzipped if they are gzip data, never more than its IDX header
    declares plus one byte (enough to tell that there are trailing bytes)."""
    if f.read(2) != b"\x1f\x8b":
        f.seek(0)
        head = f.read(_HEADER_MAX)
        return head + f.read(max(0, (_limit(head, path) or len(head)) - len(head)))
    f.seek(0)
    out, limit = bytearray(), None
    d, started = zlib.decompressobj(wbits=31), False  # 31: gzip framing
    data = f.read(_CHUNK)
    try:
        while data and len(out) < (limit or _HEADER_MAX):
            out += d.decompress(data, (limit or _HEADER_MAX) - len(out))
            started, data = True, d.unconsumed_tail
            if d.eof:  # this gzip member ended; another may follow (concatenated archives)
                d, started, data = zlib.decompressobj(wbits=31), False, d.unused_data
            data = data or f.read(_CHUNK)
            limit = limit or _limit(bytes(out), path)
    except zlib.error as e:
        raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from None
    if started and not data and len(out) < (limit or _HEADER_MAX):
        raise DataError(f"{path}: corrupt or truncated gzip data (it ends inside a gzip member)")
    return bytes(out)


def _limit(head: bytes, path: Path) -> int | None:
    """How many bytes of the file to read, from its first bytes: header + declared data + 1 (an
    extra byte tells of trailing data); None if ``head`` is too short to say. A malformed header
    reads nothing more: ``_header`` names the problem."""
    if len(head) < 4:
        return None
    if head[0] or head[1] or head[2] not in TYPES or not 1 <= head[3] <= MAX_NDIM:
        return len(head)
    header = 4 + 4 * head[3]
    if len(head) < header:
        return None
    shape = struct.unpack(f">{head[3]}I", head[4:header])
    return header + _data_bytes(shape, TYPES[head[2]], path) + 1
