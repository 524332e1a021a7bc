"""Class frequencies of the synthetic world next to nuScenes-lidarseg's.

``python -m bench.data.synthetic.stats --scenes 20`` prints the Markdown table of ``bench/data/README.md``:
the share of labelled lidar points per class over scenes ``0 .. scenes-1``, next to the shares in
nuScenes-lidarseg v1.0-trainval (:data:`~bench.data.classes.NUSCENES_POINT_COUNTS`), and the mean
generation time per scene.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable, Sequence

import numpy as np

from bench.data.classes import IGNORE_INDEX, NUSCENES_CLASSES, NUSCENES_POINT_COUNTS
from bench.data.synthetic.generate import generate_scene


def class_counts(seeds: Iterable[int], variant: str = "nuscenes") -> tuple[np.ndarray, float]:
    """Points per class summed over the scenes of ``seeds``, and the mean generation time per scene (s)."""
    counts = np.zeros(len(NUSCENES_CLASSES), dtype=np.int64)
    times = []
    for seed in seeds:
        start = time.perf_counter()
        scan = generate_scene(seed, variant)
        times.append(time.perf_counter() - start)
        labels = scan.labels[scan.labels != IGNORE_INDEX]
        counts += np.bincount(labels, minlength=len(NUSCENES_CLASSES))
    return counts, float(np.mean(times))


def frequency_table(counts: np.ndarray, variant: str = "nuscenes") -> str:
    """Markdown table: class, synthetic share (%), nuScenes-lidarseg share (%)."""
    ref = np.array([NUSCENES_POINT_COUNTS[c] for c in NUSCENES_CLASSES], dtype=np.float64)
    ours = 100.0 * counts / max(counts.sum(), 1)
    ref = 100.0 * ref / ref.sum()
    lines = [f"| class | synthetic ({variant}) % | nuScenes-lidarseg % |", "|---|---:|---:|"]
    lines += [f"| {c} | {a:.2f} | {b:.2f} |" for c, a, b in zip(NUSCENES_CLASSES, ours, ref, strict=True)]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.data.synthetic.stats",
        description="Print the synthetic world's lidar class frequencies next to nuScenes-lidarseg's.",
    )
    parser.add_argument("--scenes", type=int, default=20, help="number of scenes, seeds 0..N-1 (default 20)")
    parser.add_argument("--variant", choices=("nuscenes", "ood"), default="nuscenes", help="world variant")
    args = parser.parse_args(argv)
    counts, seconds = class_counts(range(args.scenes), args.variant)
    print(frequency_table(counts, args.variant))
    print(f"\n{args.scenes} scenes, {counts.sum() / args.scenes:.0f} labelled points per scene, "
          f"{seconds:.2f} s per scene (lidar + 6 cameras)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
