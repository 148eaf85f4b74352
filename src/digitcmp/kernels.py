"""digitcmp's C kernels (``fused.c``, ``directconv.c``): compiled on first use by the system's C
compiler (``$CC``, else ``cc``) into digitcmp's cache, once per source, compiler and flags, and
loaded with ctypes. They target x86-64 CPUs with AVX2 and FMA (AVX-512 where the kernel has a
build for it); elsewhere, or where the build fails, ``load`` returns None and the callers use
PyTorch's operators."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import subprocess
from pathlib import Path

import torch

from .data.sources import cache_dir


def vector_isa() -> str | None:
    """"AVX512" or "AVX2" as PyTorch's own kernels see this CPU, None on any other CPU."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    isa = torch.backends.cpu.get_cpu_capability()
    return isa if isa in ("AVX2", "AVX512") else None


@functools.cache
def load(source: str, flags: tuple[str, ...]) -> ctypes.CDLL | None:
    """The library built from ``source`` (a file beside this module) with ``flags``, building it
    into the cache on first use; None where that fails (no compiler, a read-only cache)."""
    src = Path(__file__).with_name(source)
    compiler = os.environ.get("CC") or "cc"
    key = hashlib.sha256(src.read_bytes() + " ".join((compiler, *flags)).encode()).hexdigest()[:16]
    path = cache_dir() / "kernels" / f"{src.stem}-{key}.so"
    if not path.exists():
        # Built aside and renamed: workers starting together never load a half-written file.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([compiler, *flags, "-shared", "-fPIC", "-o", str(tmp), str(src)],
                           check=True, capture_output=True, timeout=300)
            os.replace(tmp, path)
        except (OSError, subprocess.SubprocessError):
            tmp.unlink(missing_ok=True)
            return None
    try:
        return ctypes.CDLL(str(path))
    except OSError:
        return None


def named(name: str) -> contextlib.AbstractContextManager:
    """A profiler range around a kernel call, so that profiles (``benchmarks/profile_step.py``)
    name it; nothing unless a profiler runs (entering a range costs time even when none runs,
    and a step calls a dozen kernels)."""
    if torch.autograd.profiler._is_profiler_enabled:
        return torch.profiler.record_function(name)
    return contextlib.nullcontext()


def ptr(t: torch.Tensor) -> int:
    """``t``'s data, for a kernel's pointer argument (declared ``c_void_p``, which takes the
    address as an int)."""
    return t.data_ptr()


# The lanes layout (directconv.c, fused.c): a map of N images is an H x W x C x Np buffer with
# the images innermost, Np a multiple of 8 and lanes N .. Np - 1 zero. Between layers it travels
# as an ordinary N x C x H x W tensor viewing that buffer, so that every PyTorch operator still
# takes it, and the next kernel finds the buffer again without a copy.


def padded_lanes(n: int) -> int:
    """Np for N images: N rounded up to whole vectors of this CPU (16 floats with AVX-512, else 8)."""
    width = 16 if vector_isa() == "AVX512" else 8
    return -(-n // width) * width


def lanes_view(buf: torch.Tensor, n: int) -> torch.Tensor:
    """The N x C x H x W tensor of the first ``n`` lanes of an H x W x C x Np buffer."""
    return buf[..., :n].permute(3, 2, 0, 1)


def lanes_of(x: torch.Tensor) -> torch.Tensor | None:
    """The H x W x C x Np buffer that ``x`` (N x C x H x W) views, if it is such a view."""
    if x.dim() != 4 or x.dtype != torch.float32 or x.device.type != "cpu":
        return None
    n, c, h, w = x.shape
    np_ = x.stride(1)
    if x.stride() != (1, np_, w * c * np_, c * np_) or np_ < n or np_ % 8:
        return None
    return x.as_strided((h, w, c, np_), (w * c * np_, c * np_, np_, 1))
