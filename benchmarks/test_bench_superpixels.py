"""Superpixels: scikit-image's SLIC at SLidR's settings (``reference``) against SLIC at a quarter of the resolution
per side (``downscaled``, scale 4) on the six real 1600 x 900 nuScenes camera images of ``tests/data/nuscenes-sample``.

Run: ``pytest benchmarks/test_bench_superpixels.py --benchmark-only`` (one image each), or
``python benchmarks/test_bench_superpixels.py [rounds]`` for the printed comparison: seconds per image of each method
with the rounds alternating between the methods in one process (so the ratio ``reference / downscaled`` means
something on a shared machine even where the absolute times do not), and the agreement of the downscaled label maps
with the reference's (:func:`bench.data.superpixels.agreement`: adjusted Rand index, boundary recall and precision at
2 px, segment counts) per image and their mean. Numbers: docs/data.md#superpixels.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.data.io import read_image  # noqa: E402
from bench.data.superpixels import SlicSettings, agreement, segment_image  # noqa: E402

SAMPLES = ROOT / "tests" / "data" / "nuscenes-sample" / "samples"
METHODS = {"reference": SlicSettings(), "downscaled": SlicSettings(method="downscaled", scale=4)}


def images() -> dict[str, np.ndarray]:
    """The six camera images (H, W, 3) uint8 of the real keyframe, by camera name."""
    return {path.parent.name: read_image(path) for path in sorted(SAMPLES.glob("CAM_*/*.jpg"))}


def compare(rounds: int = 2) -> dict[str, object]:
    """Best seconds per image of each method over ``rounds`` alternating rounds of the six images, their ratio,
    and the agreement per camera and mean."""
    views = images()
    best = {name: math.inf for name in METHODS}
    labels: dict[str, dict[str, np.ndarray]] = {name: {} for name in METHODS}
    for _ in range(rounds):
        for name, settings in METHODS.items():
            start = time.perf_counter()
            labels[name] = {cam: segment_image(img, settings) for cam, img in views.items()}
            best[name] = min(best[name], (time.perf_counter() - start) / len(views))
    per_camera = {cam: agreement(labels["reference"][cam], labels["downscaled"][cam]) for cam in views}
    mean = {key: float(np.mean([a[key] for a in per_camera.values()])) for key in next(iter(per_camera.values()))}
    return {"seconds": best, "ratio": best["reference"] / best["downscaled"], "per_camera": per_camera, "mean": mean}


def test_reference_slic(benchmark):
    image = images()["CAM_FRONT"]
    labels = benchmark.pedantic(segment_image, args=(image, METHODS["reference"]), rounds=2, iterations=1)
    assert labels.shape == image.shape[:2]


def test_downscaled_slic(benchmark):
    image = images()["CAM_FRONT"]
    labels = benchmark.pedantic(segment_image, args=(image, METHODS["downscaled"]), rounds=5, iterations=1)
    assert labels.shape == image.shape[:2]


if __name__ == "__main__":
    result = compare(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    seconds = result["seconds"]
    print(f"s/image: reference {seconds['reference']:.3f}, downscaled {seconds['downscaled']:.3f}; "
          f"ratio {result['ratio']:.1f}x")  # fmt: skip
    print(f"{'camera':18s} {'ARI':>6s} {'recall':>7s} {'precision':>9s} {'segments ref/fast':>18s}")
    for cam, a in [*result["per_camera"].items(), ("mean", result["mean"])]:
        print(f"{cam:18s} {a['ari']:6.3f} {a['boundary_recall']:7.3f} {a['boundary_precision']:9.3f} "
              f"{a['segments_reference']:>9.1f}/{a['segments']:.1f}")  # fmt: skip
