"""Building and loading digitcmp's C kernels."""

import pytest
import torch

from digitcmp import directconv, fused, kernels


@pytest.mark.parametrize("source, flags", [("fused.c", fused.FLAGS),
                                           ("directconv.c", directconv.FLAGS["AVX2"])])
def test_a_failed_build_means_no_kernel(monkeypatch, tmp_path, source, flags):
    """No C compiler: no kernel, nothing half-built left in the cache, no error."""
    monkeypatch.setenv("DIGITCMP_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    assert kernels.load.__wrapped__(source, flags) is None
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_the_kernels_build_into_the_cache(monkeypatch, tmp_path):
    if kernels.vector_isa() is None or kernels.load("fused.c", fused.FLAGS) is None:
        pytest.skip("no C kernels on this machine (not an x86-64 CPU with AVX2, or no C compiler)")
    monkeypatch.setenv("DIGITCMP_CACHE", str(tmp_path))
    assert kernels.load.__wrapped__("fused.c", fused.FLAGS) is not None
    assert [p.name.startswith("fused-") for p in (tmp_path / "kernels").iterdir()] == [True]


@pytest.mark.parametrize("machine, isa, expected", [("x86_64", "AVX512", "AVX512"), ("AMD64", "AVX2", "AVX2"),
                                                    ("x86_64", "DEFAULT", None), ("aarch64", "AVX2", None)])
def test_the_kernels_run_on_x86_64_with_avx2_or_avx512(monkeypatch, machine, isa, expected):
    monkeypatch.setattr(kernels.platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: isa)
    assert kernels.vector_isa() == expected
