"""Profile one distillation step at a suite's sizes, phase by phase, in one process.

Phases of :func:`bench.train.train_student`'s step: reading the batch (``DataLoader``, 0 workers), drawing the
pairs with the student's forward (voxelisation, kernel maps, network trunk, the head on the drawn pairs' points,
for region losses on every point holding a pair; ``--projection all``: on every point, the step before that
change), the loss forward, the loss backward (gradient into K), the network backward and the optimiser step. The
kernel-map share of the forward is measured separately (a second forward on the same voxels reuses the maps).
Every time is the median over ``--steps`` steps after one warm-up step; ``--compare`` reports the loss's value and
gradient error of a variant against float32 on the same K, Q. Run with nothing else on the machine; the report
prints ratios to the step's total measured in the same process.

Usage::

    python benchmarks/profile_step.py --suite full --loss relational --threads 1 --steps 5
    python benchmarks/profile_step.py --suite full --loss relational --threads 2 --loss-dtype bfloat16
    python benchmarks/profile_step.py --suite full --loss relational --against n_pairs=4096   # ratio, one process
    python benchmarks/profile_step.py --suite full --loss contrastive --against-projection all  # before/after
    python benchmarks/profile_step.py --suite full --loss contrastive --against-caches off      # before/after
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.config import DistillConfig, with_overrides  # noqa: E402
from bench.data.loader import SCAN_CACHE, SceneDataset, StepSampler, scene_loader, step_generator  # noqa: E402
from bench.suites import load_suite  # noqa: E402
from bench.train import batch_pairs, batch_regions, build_distill_student, make_optimizer  # noqa: E402
from bench.workspace import Workspace  # noqa: E402
from models.losses import get_loss, loss_inputs  # noqa: E402
from models.students.minkunet import input_channels  # noqa: E402
from models.students.sparse import SparseTensor  # noqa: E402
from models.students.voxelize import voxelize  # noqa: E402


def profile(
    cfg: DistillConfig, steps: int, loss_dtype: str, projection: str = "pairs", caches: str = "warm"
) -> dict[str, float]:
    """Median seconds of every phase over ``steps`` steps (after one warm-up). ``projection``: ``pairs`` (the
    training step: the student's head runs on the drawn pairs' points only) or ``all`` (every point projected,
    then the pairs' rows gathered: the step before that change); region losses project the points holding a pair
    (``pairs``) or every point (``all``).
    ``caches``: ``warm`` (the steps' scans were read and voxelised before, as in a run after its first epoch: the
    scans, their voxels and kernel maps come from the per-process caches, ``bench.data.loader.SCAN_CACHE``) or ``off``
    (no cache: every step reads its scans and builds its voxels and maps, the step before those caches)."""
    device = torch.device("cpu")
    workspace = Workspace()
    teacher = workspace.teacher(cfg, device)
    train = workspace.scenes(cfg, cfg.train_split, teacher, progress=False)
    capacity = SCAN_CACHE if caches == "warm" else 0
    train = SceneDataset(
        train.dataset, train.crop_radius, train.cache, superpixels=train.superpixels, scan_cache=capacity
    )
    student = build_distill_student(cfg)
    student.scan_cache.capacity = capacity
    optimizer = make_optimizer(student.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
    loss_fn = get_loss(cfg.loss)
    sampler = StepSampler(len(train), cfg.batch_size, cfg.seed, 0, steps + 1)
    if caches == "warm":  # a first pass over the same scans fills the caches
        with torch.no_grad():
            for batch in scene_loader(train, sampler, 0, device):
                student(*batch.inputs(device))
    loader = iter(scene_loader(train, sampler, 0, device))
    dtype = {"float32": None, "bfloat16": torch.bfloat16}[loss_dtype]
    times: dict[str, list[float]] = {}

    def tick(name: str, start: float) -> float:
        now = time.perf_counter()
        times.setdefault(name, []).append(now - start)
        return now

    student.train()
    for step in range(1, steps + 2):
        t = time.perf_counter()
        batch = next(loader)
        t = tick("read batch", t)
        points, index = batch.inputs(device)
        with torch.no_grad():
            feats = input_channels(points, student.inputs)
            vox = voxelize(points[:, :3], index, feats, student.voxel_size, student.system, student.reduce)
        t = tick("voxelise", t)
        x = SparseTensor(vox.coords, vox.feats)
        with torch.no_grad():
            student.network(x)  # builds and caches the kernel maps of x
        t = tick("forward, maps built (no grad)", t)
        with torch.no_grad():
            student.network(x)
        t = tick("forward, maps cached (no grad)", t)
        generator = step_generator(cfg.seed, step, 1)
        if loss_inputs(cfg.loss) == "superpixels":
            if projection == "pairs":  # the training step's path: the head once per voxel holding a pair
                feats = functools.partial(student, points, index, distinct=True)
            else:  # every point projected: the step before that change
                feats = student(points, index)
            k, q = batch_regions(batch, feats, device, unit_rows=student.network.normalize)
        elif projection == "pairs":
            k, q = batch_pairs(batch, functools.partial(student, points, index), cfg.n_pairs, generator, device)
        else:
            k, q = batch_pairs(batch, student(points, index), cfg.n_pairs, generator, device)
        t = tick("student forward + pairs (train)", t)
        kk = k.detach().requires_grad_(True)
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = loss_fn(kk, q, **cfg.loss_params)
        t = tick("loss forward", t)
        loss.backward()
        t = tick("loss backward", t)
        optimizer.zero_grad(set_to_none=True)
        k.backward(kk.grad)
        t = tick("network backward", t)
        optimizer.step()
        tick("optimiser step", t)
        if step == 1:
            times.clear()  # warm-up
    return {name: statistics.median(values) for name, values in times.items()}


def compare(cfg: DistillConfig, n: int, dim: int) -> dict[str, float]:
    """Loss value and gradient of bfloat16 autocast against float32 on random K, Q (N x D)."""
    gen = torch.Generator().manual_seed(0)
    k0, q = torch.randn(n, dim, generator=gen), torch.randn(n, dim, generator=gen)
    loss_fn = get_loss(cfg.loss)
    out = {}
    for name, enabled in (("float32", False), ("bfloat16", True)):
        k = k0.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            loss = loss_fn(k, q, **cfg.loss_params)
        loss.backward()
        out[name] = (float(loss.detach()), k.grad.clone())
    (l32, g32), (l16, g16) = out["float32"], out["bfloat16"]
    return {
        "loss_rel_error": abs(l16 - l32) / abs(l32),
        "grad_rel_error": float((g16 - g32).norm() / g32.norm()),
        "grad_cosine": float(torch.nn.functional.cosine_similarity(g16.flatten(), g32.flatten(), dim=0)),
    }


def main(argv: list[str] | None = None) -> int:
    """Print the phase table (and optionally write it as JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="full", help="suite whose defaults set the sizes (default full)")
    parser.add_argument("--loss", default="relational", help="loss to profile (default relational)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--steps", type=int, default=5, help="measured steps (median; default 5)")
    parser.add_argument("--loss-dtype", choices=("float32", "bfloat16"), default="float32",
                        help="autocast dtype around the loss (default float32: no autocast)")  # fmt: skip
    parser.add_argument("--compare", action="store_true", help="also report bfloat16's loss and gradient error")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a configuration field (YAML value), e.g. n_pairs=2048")  # fmt: skip
    parser.add_argument("--projection", choices=("pairs", "all"), default="pairs",
                        help="pairs: the head projects the drawn pairs' points only (the training step); all: "
                        "every point, then the pairs' rows gathered (the step before that change)")  # fmt: skip
    parser.add_argument("--against-projection", choices=("pairs", "all"), default=None,
                        help="also profile, in the same process, with this projection and print the ratio")  # fmt: skip
    parser.add_argument("--caches", choices=("warm", "off"), default="warm",
                        help="warm: the scans, their voxels and kernel maps come from the per-process caches (a run "
                        "after its first epoch); off: no cache (the step before those caches)")  # fmt: skip
    parser.add_argument("--against-caches", choices=("warm", "off"), default=None,
                        help="also profile, in the same process, with these caches and print the ratio")  # fmt: skip
    parser.add_argument("--against", action="append", default=[], metavar="FIELD=VALUE",
                        help="also profile, in the same process, the configuration with these fields changed "
                        "(e.g. n_pairs=4096) and print the step-time ratio")  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    suite = load_suite(args.suite)
    runs = [run for run in suite.runs if run.get("loss") == args.loss]
    if not runs:
        parser.error(f"suite {args.suite} has no run of loss {args.loss}")

    def configured(items: list[str]) -> DistillConfig:
        try:
            return DistillConfig.from_run(with_overrides(runs[0], items))
        except ValueError as exc:
            parser.error(f"--set / --against: {exc}")

    def measure(
        cfg: DistillConfig, label: list[str], projection: str, caches: str | None = None
    ) -> tuple[dict[str, float], float]:
        caches = args.caches if caches is None else caches
        phases = profile(cfg, args.steps, args.loss_dtype, projection, caches)
        label = [*label, f"projection {projection}, caches {caches}"]
        total = sum(v for k, v in phases.items() if "no grad" not in k and k != "voxelise")
        print(f"{args.suite} suite, loss {args.loss}, {args.threads} thread(s), loss dtype {args.loss_dtype}", *label)
        for name, seconds in phases.items():
            print(f"  {name:<34} {seconds:8.3f} s  {seconds / total:6.1%}")
        print(f"  {'step (read .. optimiser)':<34} {total:8.3f} s")
        return phases, total

    cfg = configured(args.set)
    phases, total = measure(cfg, args.set, args.projection)
    result = {"phases": phases, "step_seconds": total, **vars(args)}
    if args.against_projection:
        other, other_total = measure(cfg, args.set, args.against_projection)
        result["against_projection"] = {"phases": other, "step_seconds": other_total, "ratio": other_total / total}
        print(f"  step time with projection {args.against_projection} / {args.projection}: {other_total / total:.2f}")
    if args.against_caches:
        other, other_total = measure(cfg, args.set, args.projection, args.against_caches)
        result["against_caches"] = {"phases": other, "step_seconds": other_total, "ratio": other_total / total}
        print(f"  step time with caches {args.against_caches} / {args.caches}: {other_total / total:.2f}")
    if args.against:
        other, other_total = measure(
            configured([*args.set, *args.against]), [*args.set, *args.against], args.projection
        )
        result["against"] = {"phases": other, "step_seconds": other_total, "ratio": other_total / total}
        print(f"  step time with {' '.join(args.against)} / without: {other_total / total:.2f}")
    if args.compare:
        result["bfloat16_vs_float32"] = compare(cfg, cfg.n_pairs, cfg.out_dim)
        print("  bfloat16 autocast vs float32:", result["bfloat16_vs_float32"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
