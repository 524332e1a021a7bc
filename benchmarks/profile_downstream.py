"""Time a downstream fine-tuning step with the head per voxel against the head per point, in one process.

:func:`models.students.point_outputs` runs a row-wise map (the segmentation head, zero-shot's argmax) once per
occupied voxel and gathers the result to the points; the alternative computes every point's ``out_dim``-wide
feature first and applies the head to each point. Both give the same logits (tested in float64,
``tests/models/students/test_minkunet.py``). A step is the forward, the suite's ``seg_loss`` and the backward over
``--scans`` train scans; the two ways alternate ``--repeats`` times and the medians are compared. Run with nothing
else on the machine.

Usage::

    python benchmarks/profile_downstream.py --suite full --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.config import DistillConfig  # noqa: E402
from bench.data.classes import IGNORE_INDEX  # noqa: E402
from bench.data.loader import ShardSampler, scene_loader  # noqa: E402
from bench.data.registry import class_names  # noqa: E402
from bench.segmentation_loss import segmentation_loss  # noqa: E402
from bench.suites import load_suite  # noqa: E402
from bench.train import build_distill_student  # noqa: E402
from bench.workspace import Workspace  # noqa: E402
from models.students import point_outputs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Print the median seconds of both ways and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="full", help="suite whose first run sets the student and data")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--scans", type=int, default=6, help="train scans per measurement (default 6)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating measurements of each way (default 3)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    run = load_suite(args.suite).runs[0]
    cfg = DistillConfig.from_run({k: v for k, v in run.items() if k not in ("kind", "suite")})
    train = Workspace().scenes(cfg, cfg.train_split, None, progress=False).head(args.scans)
    batches = list(scene_loader(train, ShardSampler(len(train)), 0, cpu))
    torch.manual_seed(0)
    student = build_distill_student(cfg)
    student.network.normalize = False  # as in fine-tuning: the head reads the projection
    head = torch.nn.Linear(cfg.out_dim, len(class_names(cfg.dataset)))
    voxels = sum(len(student.voxel_forward(*b.inputs(cpu))[0]) for b in batches)
    points = sum(len(b.labels) for b in batches)
    ways = {
        "head per point": lambda p, b: head(student(p, b)),
        "head per voxel": lambda p, b: point_outputs(student, p, b, head),
    }
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.repeats):
        for name, forward in ways.items():
            start = time.perf_counter()
            for batch in batches:
                loss = segmentation_loss(forward(*batch.inputs(cpu)), batch.labels, cfg.seg_loss, IGNORE_INDEX, None)
                loss.backward()
            seconds[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"{args.suite} suite, {args.threads} thread(s), {args.scans} scans: {points} points in {voxels} voxels")
    for name, value in median.items():
        print(f"  {name:<16} {value:8.3f} s")
    print(f"  per voxel / per point: {median['head per voxel'] / median['head per point']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
