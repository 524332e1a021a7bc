"""WaffleIron against MinkUNet per point: forward + backward of the two ``small`` students on the same scan.

Run: ``pytest benchmarks/test_bench_waffleiron.py --benchmark-only`` (or ``python benchmarks/test_bench_waffleiron.py``
for the printed comparison). Both students (512 outputs, 0.1 m voxels, the intensity input) map the points of
:func:`test_bench_sparse.lidar_scan` within ``RADIUS`` metres to per-point features and back-propagate their sum.
Each keeps its per-scan structures (MinkUNet: voxels and kernel maps; WaffleIron: tokens, neighbours, cells) in its
scan cache, as the CPU training loop does (``bench.train.train_student``); one uncached round of each is timed too.
The rounds alternate between the students in one process, so the ratio ``waffleiron time / minkunet time``
(``extra_info["ratio_vs_minkunet"]``) is meaningful on a shared machine even where the absolute times are not.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_bench_sparse import lidar_scan  # noqa: E402

from models.students import build_student  # noqa: E402

RADIUS = 30.0
OUT_DIM = 512


def scan_points(radius: float = RADIUS) -> torch.Tensor:
    """The points (N, 4) of the lidar-like scan within ``radius`` metres of the sensor (horizontally)."""
    points = lidar_scan(0)
    return points[torch.linalg.vector_norm(points[:, :2], dim=1) < radius]


def students(cache: int = 1) -> dict[str, torch.nn.Module]:
    """The two ``small`` students, seeded, with a scan cache of ``cache`` scans."""
    out = {}
    for name in ("minkunet", "waffleiron"):
        torch.manual_seed(0)
        model = build_student(name, out_dim=OUT_DIM, preset="small", voxel_size=0.1, inputs=("intensity",))
        model.scan_cache.capacity = cache
        out[name] = model.train()
    return out


def step(model: torch.nn.Module, points: torch.Tensor, batch: torch.Tensor) -> None:
    """One forward + backward on every point."""
    model.zero_grad(set_to_none=True)
    model(points, batch).sum().backward()


def compare(rounds: int = 3) -> dict[str, float]:
    """Best seconds per point of each student (rounds interleaved, after one warm-up round that fills the
    caches) and the ratio; ``*_uncached``: the warm-up round itself (per-scan structures built)."""
    points = scan_points()
    batch = torch.zeros(len(points), dtype=torch.int64)
    models = students()
    best = {name: math.inf for name in models}
    result: dict[str, float] = {"points": float(len(points))}
    for r in range(rounds + 1):
        for name, model in models.items():
            t0 = time.perf_counter()
            step(model, points, batch)
            seconds = (time.perf_counter() - t0) / len(points)
            if r == 0:
                result[f"{name}_uncached_s_per_point"] = seconds
            else:
                best[name] = min(best[name], seconds)
    for name, seconds in best.items():
        result[f"{name}_s_per_point"] = seconds
    result["ratio_vs_minkunet"] = best["waffleiron"] / best["minkunet"]
    result["ratio_uncached"] = result["waffleiron_uncached_s_per_point"] / result["minkunet_uncached_s_per_point"]
    return result


def test_waffleiron_vs_minkunet_per_point(benchmark):
    """WaffleIron ``small`` forward + backward on the scan (cached structures), with the interleaved ratio
    against MinkUNet ``small`` in ``extra_info``."""
    result = compare(rounds=2)
    benchmark.extra_info.update(result)
    points = scan_points()
    batch = torch.zeros(len(points), dtype=torch.int64)
    model = students()["waffleiron"]
    step(model, points, batch)  # fills the cache
    benchmark.pedantic(step, args=(model, points, batch), rounds=2, iterations=1)


if __name__ == "__main__":
    out = compare()
    print(f"threads={torch.get_num_threads()} points={int(out['points'])}")
    for key, value in out.items():
        print(f"{key:<36} {value:.3e}" if "per_point" in key else f"{key:<36} {value:.2f}")
