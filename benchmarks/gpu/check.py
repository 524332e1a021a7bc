"""The prepared GPU check (issue 30 item 6): four guarded parts, each recorded whether it passes, fails or is skipped.

Parts (``--part``; ``all`` runs them in this process, one after the other):

- ``tests``: ``pytest -m cuda tests/gpu`` (the CUDA tests: CPU/CUDA agreement of the sparse MinkUNet, WaffleIron, every
  loss and the CLIP teacher, and a tiny ``bench.run`` suite on ``--device cuda`` with loader workers); counts of
  passed / failed / skipped from pytest's JUnit XML.
- ``suite``: the shipped ``nuscenes`` suite (SLidR's student and recipe, batch 16, 4096 pairs, a ViT-B-16 CLIP
  teacher) on a nuScenes-format fixture written by :func:`bench.data.synthetic.nuscenes_format.write_nuscenes_dataroot`
  (a few trainval scenes of the synthetic world), with the teacher's randomly initialised weights saved to a file
  (the suite refuses a CLIP teacher without a local checkpoint), one run (contrastive, seed 0), ``--steps`` steps
  or ``--loop-budget`` seconds of training loop, whichever ends first,
  ``--protocols none`` (distillation and the geometry). Measured by wrapping the training loop's
  ``bench.train.scene_loader``: steps per second, the fraction of the loop's wall-clock time spent waiting for the next
  batch (the loop synchronises every step with ``float(loss)``, so that is time the GPU waits on the loader), both
  after ``WARMUP`` steps and overall, the peak GPU memory of the training loop and of the whole run
  (``torch.cuda.max_memory_allocated``), and the harness's own ``timing.json`` (wall-clock seconds per phase).
- ``students``: MinkUNet (``slidr`` preset) and WaffleIron (``wi-48-768``, ScaLR's; ``wi-48-384`` when it does not fit)
  forward + backward on one nuScenes-sized scan (35 000 points, 512 outputs, 0.1 m voxels): the first (uncached: voxels,
  kernel maps, WaffleIron's cells built) and the median of the cached rounds, peak memory, parameter count.
- ``losses``: every registered loss under ``torch.autocast(bfloat16)`` against float32 on the same random inputs
  (pair losses: 4096 pairs x 512; region losses: 65 536 points in 2048 superpixels): relative error of the value and
  of the gradient, the gradients' cosine, and the median time of forward + backward in each dtype
  (generalises ``benchmarks/profile_step.py --compare`` to the region losses and to CUDA).

``--device cpu --tiny`` (the dry run, ``tests/benchmarks/test_gpu_check.py``) runs every part's code path at toy
sizes on the CPU: the CUDA tests are then recorded as skipped. Results: ``OUT/gpu_check.json`` and
``OUT/gpu_check.md`` (``--merge`` gathers the per-part files that ``benchmarks/gpu/run.sh`` wrote, naming a part that
left none as timed out or crashed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PARTS = ("tests", "suite", "students", "losses")
WARMUP = 10
"""Steps of the suite's training loop left out of the steady-state figures (worker start-up, CUDA kernels' first
launches, the allocator's growth)."""
SCAN_POINTS = 35_000
"""Points of a nuScenes keyframe within the sensor's range (about 34 700 on average)."""
TINY_ARCH = "gpu-check-tiny-ViT"
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
"""A 2-block open_clip ViT for the dry run (the tests' tiny architecture)."""


def _sync(device: Any) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _cuda(device: str) -> bool:
    import torch

    return torch.device(device).type == "cuda"


def _peak_reset(device: str) -> None:
    import torch

    if _cuda(device):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: str) -> float | None:
    import torch

    if not _cuda(device):
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)


# ----------------------------------------------------------------------------------------------------------- tests
def part_tests(args: argparse.Namespace) -> dict[str, Any]:
    """``pytest -m cuda tests/gpu`` in a child process; its JUnit counts (every test skips without CUDA)."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "-rs"]
        cmd += [str(REPO / "tests" / "gpu"), f"--junitxml={xml}"]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=args.tests_timeout)
        seconds = time.perf_counter() - t0
        cases = []
        if xml.exists():
            for case in ET.parse(xml).getroot().iter("testcase"):
                outcome = "passed"
                for tag in ("failure", "error", "skipped"):
                    node = case.find(tag)
                    if node is not None:
                        outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                        message = (node.get("message") or "")[:300]
                        break
                else:
                    message = ""
                cases.append({"test": case.get("name"), "outcome": outcome, "seconds": float(case.get("time", 0))})
                if message:
                    cases[-1]["message"] = message
    outcomes = [c["outcome"] for c in cases]
    counts = {"passed": outcomes.count("passed"), "failed": outcomes.count("failed"),
              "errors": outcomes.count("error"), "skipped": outcomes.count("skipped")}  # fmt: skip
    status = "ok" if proc.returncode == 0 and counts["passed"] else "skipped" if proc.returncode == 0 else "failed"
    return {
        "status": status,
        "returncode": proc.returncode,
        "seconds": round(seconds, 1),
        **counts,
        "cases": cases,
        "output_tail": (proc.stdout + proc.stderr)[-3000:] if status == "failed" else None,
    }


# ----------------------------------------------------------------------------------------------------------- suite
class LoopBudgetSpent(BaseException):
    """Raised by :class:`TimedLoader` once the loop has run its budget (a ``BaseException``: ``bench.run`` records an
    ``Exception`` as the run's failure and goes on, this one ends the suite)."""


class TimedLoader:
    """Wraps the training loop's ``DataLoader``: the seconds each ``next()`` waited and when each batch arrived; stops
    the loop (:class:`LoopBudgetSpent`) at the first step boundary after ``budget`` seconds."""

    def __init__(self, loader: Any, device: str, record: dict[str, Any], budget: float | None = None) -> None:
        self.loader, self.device, self.record, self.budget = loader, device, record, budget

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        waits: list[float] = []
        arrivals: list[float] = []
        it = iter(self.loader)
        start = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            t1 = time.perf_counter()
            if self.budget is not None and arrivals and t0 - start > self.budget:
                self.record.update(waits=waits, arrivals=arrivals, start=start, end=t0, stopped_at_budget=True)
                self.record["train_peak_gib"] = _peak_gib(self.device)
                raise LoopBudgetSpent
            waits.append(t1 - t0)
            arrivals.append(t1)
            if len(arrivals) == WARMUP + 1:
                _peak_reset(self.device)  # the steady state's peak: from here to the loop's end
            yield batch
        _sync(self.device)
        self.record.update(waits=waits, arrivals=arrivals, start=start, end=time.perf_counter())
        self.record["train_peak_gib"] = _peak_gib(self.device)


def loop_figures(record: dict[str, Any], warmup: int = WARMUP) -> dict[str, Any]:
    """Steps per second and the loader-wait fraction, overall and after ``warmup`` steps."""
    waits, arrivals, start, end = record["waits"], record["arrivals"], record["start"], record["end"]
    n = len(waits)
    out: dict[str, Any] = {
        "steps": n,
        "loop_seconds": round(end - start, 3),
        "steps_per_s": round(n / (end - start), 3),
        "data_wait_fraction": round(sum(waits) / (end - start), 4),
        "first_batch_seconds": round(waits[0], 3) if waits else None,
    }
    if n > warmup + 1:  # steps warmup .. n-1 (0-based), from the arrival of batch `warmup` to the loop's end
        span = end - arrivals[warmup]
        out["steady_steps"] = n - warmup
        out["steady_steps_per_s"] = round((n - warmup) / span, 3)
        out["steady_data_wait_fraction"] = round(sum(waits[warmup + 1 :]) / span, 4)
        out["median_wait_ms"] = round(1e3 * statistics.median(waits[warmup + 1 :]), 3)
        gaps = [b - a for a, b in zip(arrivals[warmup:], arrivals[warmup + 1 :], strict=False)]
        out["median_step_ms"] = round(1e3 * statistics.median(gaps), 3)
    return out


def _fixture(root: Path, tiny: bool, scenes: int, keyframes: int) -> tuple[Path, float]:
    from dataclasses import replace

    from bench.data.synthetic import VARIANTS
    from bench.data.synthetic.nuscenes_format import write_nuscenes_dataroot

    config = VARIANTS["nuscenes"]
    if tiny:
        config = replace(config, rig=config.rig.with_resolution(160, 96))
    t0 = time.perf_counter()
    write_nuscenes_dataroot(root, "v1.0-trainval", {"train": scenes, "val": 1}, keyframes, config=config)
    return root, time.perf_counter() - t0


def _teacher_checkpoint(path: Path, arch: str) -> Path:
    import torch

    from models.teachers.clip import CLIPTeacher

    teacher = CLIPTeacher(arch, None, seed=0)  # seeded random weights, the open_clip state dict a real file holds
    torch.save(teacher.model.state_dict(), path)
    return path


def _register_tiny_arch(folder: Path) -> str:
    from models.teachers._torchvision_shim import import_open_clip

    (folder / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_CLIP))
    import_open_clip().add_model_config(folder)
    return TINY_ARCH


def part_suite(args: argparse.Namespace) -> dict[str, Any]:
    """The ``nuscenes`` suite, one run, on a fixture written here (see the module docstring)."""
    import torch
    import yaml

    import bench.train
    from bench.run import main as bench_main

    tiny = args.tiny
    steps = args.steps if args.steps is not None else (3 if tiny else 300)
    scenes, keyframes = (2, 2) if tiny else (args.scenes, args.keyframes)
    result: dict[str, Any] = {"status": "ok", "device": args.device, "requested_steps": steps}
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        tmp = Path(tmp)
        root, seconds = _fixture(tmp / "nuscenes", tiny, scenes, keyframes)
        result["fixture"] = {"version": "v1.0-trainval", "train_scenes": scenes, "val_scenes": 1,
                             "keyframes": keyframes, "write_seconds": round(seconds, 1)}  # fmt: skip
        arch = _register_tiny_arch(tmp) if tiny else "ViT-B-16"
        t0 = time.perf_counter()
        checkpoint = _teacher_checkpoint(tmp / "clip-random.pt", arch)
        result["teacher"] = {
            "arch": arch,
            "weights": "random (seed 0)",
            "save_seconds": round(time.perf_counter() - t0, 1),
        }
        suite = yaml.safe_load((REPO / "bench" / "suites" / "nuscenes.yaml").read_text())
        defaults = suite["defaults"]
        defaults.update(
            dataroot=str(root),
            clip_arch=arch,
            clip_checkpoint=str(checkpoint),
            feature_cache=str(tmp / "features"),
            ood_dataset="synthetic",
            ood_dataroot=str(tmp / "ood"),
            checkpoint_every=steps,
            probe_every=steps,
            probe_scenes=1,
            features_per_class=200 if tiny else 2000,
        )
        if tiny:  # toy sizes: a 32-d teacher, small student, few pairs
            defaults.update(out_dim=32, preset="small", batch_size=2, n_pairs=64, probe_per_class=20)
        suite["name"] = "gpu-check-nuscenes"
        suite["grid"] = [{"loss": [{"name": "contrastive", "params": {"tau": 0.07}}], "seed": [0]}]
        suite_path = tmp / "suite.yaml"
        suite_path.write_text(yaml.safe_dump(suite))
        result["suite"] = {k: defaults[k] for k in ("preset", "batch_size", "n_pairs", "out_dim", "voxel_size",
                                                   "voxel_system", "optimizer", "sync_bn")}  # fmt: skip
        record: dict[str, Any] = {}
        original = bench.train.scene_loader

        def timed_loader(*a: Any, **k: Any) -> TimedLoader:
            return TimedLoader(original(*a, **k), args.device, record, args.loop_budget)

        argv = ["--suite", str(suite_path), "--out", str(tmp / "runs"), "--device", args.device, "--steps", str(steps)]
        argv += ["--protocols", "none", "--no-progress"]
        if args.workers is not None:
            argv += ["--workers", str(args.workers)]
        result["argv"] = argv
        _peak_reset(args.device)
        bench.train.scene_loader = timed_loader
        t0 = time.perf_counter()
        try:
            rc = bench_main(argv)
        except LoopBudgetSpent:  # measured: the run is left unfinished (no geometry, no timing.json)
            rc = 0
        finally:
            bench.train.scene_loader = original
        result["run_seconds"] = round(time.perf_counter() - t0, 1)
        result["returncode"] = rc
        result["run_peak_gib"] = _peak_gib(args.device)
        result["train_peak_gib"] = record.get("train_peak_gib")
        if "waits" in record:
            result["loop"] = loop_figures(record)
            result["loop"]["stopped_at_budget"] = bool(record.get("stopped_at_budget"))
        timing = list((tmp / "runs").glob("*/timing.json"))
        result["timing_json"] = json.loads(timing[0].read_text()) if timing else None
        if rc != 0 or "waits" not in record:
            result["status"] = "failed"
        if _cuda(args.device):
            result["gpu"] = torch.cuda.get_device_name(args.device)
    return result


# -------------------------------------------------------------------------------------------------------- students
def _scan(n: int):
    import torch

    sys.path.insert(0, str(REPO / "benchmarks"))
    from test_bench_sparse import lidar_scan

    points = lidar_scan(0)
    points = points[torch.linalg.vector_norm(points[:, :2], dim=1) < 50.0]
    pick = torch.randperm(len(points), generator=torch.Generator().manual_seed(0))[:n]
    return points[pick]


def _student_case(name: str, preset: str, points: Any, device: str, rounds: int) -> dict[str, Any]:
    import torch

    from models.students import build_student

    torch.manual_seed(0)
    model = build_student(name, out_dim=512, preset=preset, voxel_size=0.1, inputs=("intensity",)).to(device)
    model.scan_cache.capacity = 1
    model.train()
    pts = points.to(device)
    batch = torch.zeros(len(pts), dtype=torch.int64, device=device)
    _peak_reset(device)
    times = []
    for _ in range(rounds + 1):
        _sync(device)
        t0 = time.perf_counter()
        model.zero_grad(set_to_none=True)
        model(pts, batch).float().square().mean().backward()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {
        "student": name,
        "preset": preset,
        "parameters": sum(p.numel() for p in model.parameters()),
        "points": len(pts),
        "uncached_seconds": round(times[0], 4),
        "cached_median_seconds": round(statistics.median(times[1:]), 4),
        "cached_rounds": rounds,
        "peak_gib": _peak_gib(device),
    }


def part_students(args: argparse.Namespace) -> dict[str, Any]:
    """Forward + backward of MinkUNet ``slidr`` and WaffleIron ``wi-48-768`` (or their ``small`` presets, tiny)."""
    import torch

    points = _scan(2000 if args.tiny else SCAN_POINTS)
    rounds = 2 if args.tiny else 5
    cases = [("minkunet", "small" if args.tiny else "slidr"), ("waffleiron", "small" if args.tiny else "wi-48-768")]
    out: dict[str, Any] = {"status": "ok", "device": args.device, "cases": []}
    for name, preset in cases:
        try:
            out["cases"].append(_student_case(name, preset, points, args.device, rounds))
        except torch.cuda.OutOfMemoryError as error:  # ScaLR's backbone on one scan: fall back to WaffleIron-48-384
            torch.cuda.empty_cache()
            out["cases"].append({"student": name, "preset": preset, "error": f"out of memory: {error}"[:300]})
            if name == "waffleiron" and preset == "wi-48-768":
                out["cases"].append(_student_case(name, "wi-48-384", points, args.device, rounds))
        torch.cuda.empty_cache() if _cuda(args.device) else None
    return out


# ---------------------------------------------------------------------------------------------------------- losses
def _loss_inputs(kind: str, tiny: bool, device: str):
    import torch

    gen = torch.Generator().manual_seed(0)
    dim = 32 if tiny else 512
    if kind == "pairs":
        n = 64 if tiny else 4096
        k, q = torch.randn(n, dim, generator=gen), torch.randn(n, dim, generator=gen)
        return k.to(device), q.to(device), {}
    n, s = (512, 32) if tiny else (65_536, 2048)
    segments = torch.randint(0, s, (n,), generator=gen)
    segments[:s] = torch.arange(s)  # every region holds a point
    k, q = torch.randn(n, dim, generator=gen), torch.nn.functional.normalize(torch.randn(s, dim, generator=gen), dim=1)
    return k.to(device), q.to(device), {"segments": segments.to(device)}


def _loss_case(name: str, tiny: bool, device: str, rounds: int) -> dict[str, Any]:
    import torch

    from models.losses import LOSSES, get_loss, loss_inputs

    fn = get_loss(name)
    k0, q, extra = _loss_inputs(loss_inputs(name), tiny, device)
    dev = torch.device(device).type
    out: dict[str, Any] = {"loss": name, "inputs": loss_inputs(name), "k_shape": list(k0.shape)}
    values = {}
    for dtype_name, enabled in (("float32", False), ("bfloat16", True)):
        times = []
        for _ in range(rounds + 1):
            k = k0.clone().requires_grad_(True)
            _sync(device)
            t0 = time.perf_counter()
            with torch.autocast(dev, dtype=torch.bfloat16, enabled=enabled):
                loss = fn(k, q, **extra)
            loss.backward()
            _sync(device)
            times.append(time.perf_counter() - t0)
        values[dtype_name] = (float(loss.detach()), k.grad.detach().float().clone())
        out[f"{dtype_name}_median_ms"] = round(1e3 * statistics.median(times[1:]), 3)
    (l32, g32), (l16, g16) = values["float32"], values["bfloat16"]
    out["loss_float32"] = l32
    out["loss_rel_error"] = abs(l16 - l32) / max(abs(l32), 1e-12)
    out["grad_rel_error"] = float((g16 - g32).norm() / g32.norm().clamp_min(1e-30))
    out["grad_cosine"] = float(torch.nn.functional.cosine_similarity(g16.flatten(), g32.flatten(), dim=0))
    out["speedup"] = round(out["float32_median_ms"] / max(out["bfloat16_median_ms"], 1e-9), 3)
    assert name in LOSSES
    return out


def part_losses(args: argparse.Namespace) -> dict[str, Any]:
    """Every registered loss: bfloat16 autocast against float32 (see the module docstring)."""
    from models.losses import LOSSES

    out: dict[str, Any] = {"status": "ok", "device": args.device, "cases": []}
    for name in LOSSES.names():
        try:
            out["cases"].append(_loss_case(name, args.tiny, args.device, 2 if args.tiny else 10))
        except Exception as error:  # one loss failing leaves the others measured
            out["cases"].append({"loss": name, "error": f"{type(error).__name__}: {error}"[:500]})
            out["status"] = "failed"
    return out


# ------------------------------------------------------------------------------------------------------ the runner
RUNNERS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "tests": part_tests,
    "suite": part_suite,
    "students": part_students,
    "losses": part_losses,
}


def run_part(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One part, guarded: an exception is recorded as the part's failure; CUDA-only work on a CPU is skipped."""
    t0 = time.perf_counter()
    try:
        result = RUNNERS[name](args)
    except Exception as error:
        result = {"status": "failed", "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return result


def environment() -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    with contextlib.suppress(Exception):
        env["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env |= {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda}
    for package in ("open_clip_torch", "timm", "nuscenes-devkit", "scikit-image", "numpy"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            env[package] = version(package)
    return env


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.3g}" if (x != 0 and (abs(x) < 1e-2 or abs(x) >= 1e4)) or math.isnan(x) else f"{x:.3f}"
    return "-" if x is None else str(x)


def summary(report: dict[str, Any]) -> str:
    """The markdown summary of a report."""
    env = report["environment"]
    lines = [f"# GPU check: {env.get('gpu', 'no GPU')} ({report['device']}{', tiny' if report['tiny'] else ''})", ""]
    lines.append(f"{env.get('date')} · Python {env.get('python')} · torch {env.get('torch')} · commit "
                 f"{str(env.get('git_commit'))[:10]}")  # fmt: skip
    lines.append("")
    lines.append("| part | status | seconds |")
    lines.append("| --- | --- | --- |")
    for name, part in report["parts"].items():
        lines.append(f"| {name} | {part.get('status')} | {_fmt(part.get('wall_seconds'))} |")
    tests = report["parts"].get("tests", {})
    if "passed" in tests:
        lines += ["", f"**CUDA tests**: {tests['passed']} passed, {tests['failed']} failed, {tests['errors']} errors, "
                  f"{tests['skipped']} skipped."]  # fmt: skip
    suite = report["parts"].get("suite", {})
    loop = suite.get("loop")
    if loop:
        lines += ["", f"**nuscenes suite** ({suite.get('teacher', {}).get('arch')} teacher, random weights; "
                  f"{suite.get('suite')}):", ""]  # fmt: skip
        lines.append("| steps | steps/s (after warm-up) | steps/s (all) | data-wait fraction (after warm-up) | "
                     "data-wait (all) | train peak GiB | run peak GiB |")  # fmt: skip
        lines.append("| --- | --- | --- | --- | --- | --- | --- |")
        lines.append(f"| {loop['steps']} | {_fmt(loop.get('steady_steps_per_s'))} | {_fmt(loop['steps_per_s'])} | "
                     f"{_fmt(loop.get('steady_data_wait_fraction'))} | {_fmt(loop['data_wait_fraction'])} | "
                     f"{_fmt(suite.get('train_peak_gib'))} | {_fmt(suite.get('run_peak_gib'))} |")  # fmt: skip
        if suite.get("timing_json"):
            lines += ["", f"timing.json: `{json.dumps(suite['timing_json'])}`"]
    students = report["parts"].get("students", {})
    if students.get("cases"):
        lines += ["", "**Students**, forward + backward on one scan:", ""]
        lines.append("| student | preset | parameters | points | uncached s | cached s (median) | peak GiB |")
        lines.append("| --- | --- | --- | --- | --- | --- | --- |")
        for c in students["cases"]:
            if "error" in c:
                lines.append(f"| {c['student']} | {c['preset']} | {c['error'][:80]} | | | | |")
            else:
                lines.append(f"| {c['student']} | {c['preset']} | {c['parameters']} | {c['points']} | "
                             f"{_fmt(c['uncached_seconds'])} | {_fmt(c['cached_median_seconds'])} | "
                             f"{_fmt(c['peak_gib'])} |")  # fmt: skip
    losses = report["parts"].get("losses", {})
    if losses.get("cases"):
        lines += ["", "**Losses**, bfloat16 autocast against float32:", ""]
        lines.append("| loss | inputs | loss rel. error | grad rel. error | grad cosine | fp32 ms | bf16 ms |")
        lines.append("| --- | --- | --- | --- | --- | --- | --- |")
        for c in losses["cases"]:
            if "error" in c:
                lines.append(f"| {c['loss']} | {c['error'][:80]} | | | | | |")
            else:
                lines.append(f"| {c['loss']} | {c['inputs']} | {_fmt(c['loss_rel_error'])} | "
                             f"{_fmt(c['grad_rel_error'])} | {_fmt(c['grad_cosine'])} | "
                             f"{_fmt(c['float32_median_ms'])} | {_fmt(c['bfloat16_median_ms'])} |")  # fmt: skip
    for name, part in report["parts"].items():
        if part.get("status") in ("failed", "timeout"):
            lines += ["", f"**{name} failed**: {part.get('error') or ''}"]
    return "\n".join(lines) + "\n"


def write_report(out: Path, parts: dict[str, dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    report = {"device": args.device, "tiny": args.tiny, "environment": environment(), "parts": parts}
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / "gpu_check.md").write_text(summary(report))
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", default="all", choices=("all", *PARTS), help="the part to run (default: all)")
    parser.add_argument("--merge", action="store_true", help="gather the parts' files of --parts-dir into the report")
    parser.add_argument("--parts-dir", type=Path, default=None, help="where each --part writes part_<name>.json")
    parser.add_argument(
        "--out", type=Path, default=Path(os.environ.get("OUT") or REPO / "benchmarks/gpu/results/local")
    )
    parser.add_argument("--device", default="cuda", help="cuda (the check) or cpu (with --tiny: the dry run)")
    parser.add_argument("--tiny", action="store_true", help="toy sizes: exercise every code path in seconds")
    parser.add_argument("--steps", type=int, default=None, help="suite: training steps (default 300; tiny 3)")
    parser.add_argument("--scenes", type=int, default=4, help="suite: train scenes of the fixture")
    parser.add_argument("--keyframes", type=int, default=8, help="suite: keyframes per scene")
    parser.add_argument(
        "--loop-budget",
        type=float,
        default=None,
        help="suite: stop the training loop after this many seconds (measured; default: run --steps)",
    )
    parser.add_argument("--workers", type=int, default=None, help="suite: loader workers (default: the harness's)")
    parser.add_argument("--tests-timeout", type=int, default=150, help="tests: seconds before pytest is stopped")
    parser.add_argument("--scratch", default=None, help="temporary folder for the fixture and the run")
    parser.add_argument("--note", action="append", default=[], help="name=text notes (run.sh: a part's exit code)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.merge:
        parts = {}
        notes = dict(n.split("=", 1) for n in args.note)
        for name in PARTS:
            path = args.parts_dir / f"part_{name}.json" if args.parts_dir else None
            if path is not None and path.exists():
                parts[name] = json.loads(path.read_text())
            else:
                code = notes.get(name)
                why = (
                    "timed out" if code in ("124", "137") else f"exited {code} without a result" if code else "not run"
                )
                parts[name] = {"status": "timeout" if code in ("124", "137") else "failed", "error": why}
        report = write_report(args.out, parts, args)
    elif args.part != "all":
        result = run_part(args.part, args)
        folder = args.parts_dir or args.out
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"part_{args.part}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(json.dumps({args.part: {k: result.get(k) for k in ("status", "wall_seconds", "error")}}), flush=True)
        return 0
    else:
        parts = {}
        for name in PARTS:
            parts[name] = run_part(name, args)
            print(f"{name}: {parts[name]['status']} ({parts[name]['wall_seconds']} s)", flush=True)
        report = write_report(args.out, parts, args)
    print(summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
