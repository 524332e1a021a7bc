"""Shared fixtures of the performance benchmarks (pytest-benchmark).

Absolute times mean nothing on shared machines, so every benchmark also times a *reference* float32 matrix
product, ``(4096 x 512) @ (512 x 4096)``, in the same process, right before itself, and records in
``benchmark.extra_info``:

- ``macs``: the nominal multiply-add count of the benchmarked operation (documented next to each benchmark),
- ``ref_seconds``: the best time of the reference product, and ``ref_macs`` its multiply-add count.

``benchmarks/check_regression.py`` turns these into the ratio
``time / (ref_seconds * macs / ref_macs)`` -- the benchmark's time relative to a matrix product of the same
multiply-add count -- and compares it against ``benchmarks/baselines/*.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import torch

REF_M, REF_K, REF_N = 4096, 512, 4096
REF_MACS = REF_M * REF_K * REF_N


def time_reference_matmul(repeats: int = 5, device: torch.device | None = None) -> float:
    """Best wall time (s) of one float32 ``(4096 x 512) @ (512 x 4096)`` product on ``device``."""
    device = device or torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(REF_M, REF_K, generator=gen).to(device)
    b = torch.randn(REF_K, REF_N, generator=gen).to(device)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best


@pytest.fixture
def record_reference(benchmark) -> Callable[[float], None]:
    """Call with the benchmark's nominal multiply-add count; times the reference product and records both."""

    def _record(macs: float) -> None:
        benchmark.extra_info["macs"] = float(macs)
        benchmark.extra_info["ref_macs"] = float(REF_MACS)
        benchmark.extra_info["ref_seconds"] = time_reference_matmul()

    return _record
