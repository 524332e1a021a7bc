"""Scale benchmarks of the streaming data path (not a timed test; run by hand, results in docs/data.md).

1. **Peak RSS of ``bench.run`` against the number of keyframes.** nuScenes-format dataroots (the synthetic
   world in the devkit layout, :mod:`bench.data.synthetic.nuscenes_format`, v1.0-trainval, 10 keyframes per
   scene, 80% train / 20% val scenes) of 40, 160 and 640 keyframes; the same suite on each (CLIP-shaped teacher:
   a 2-block ViT with patch 16 and 512-d output, random weights saved to a file, so the cached patch grids have
   nuScenes' size, 6 x 512 x 14 x 26 float16 per keyframe; every protocol that reads nuScenes labels; fixed
   step counts), one process (``--workers 0``), a fresh feature cache. The child process reports its own peak
   resident set (``getrusage(RUSAGE_SELF).ru_maxrss``). The two parts whose size is bounded by a setting, not
   by the data, are saturated at the smallest size so that what is measured is growth with the data:
   linear-probe points are capped (``lp_max_points``) below what the smallest size offers, and the geometry
   set draws ``--features-per-class`` points per class (default 100, which the 8 val keyframes of the smallest
   size already fill; the paper's 5000 per class reach their 80 000-point bound only with hundreds of val
   keyframes, so with 5000 the run's memory grows with the data until that bound: measure it with
   ``--features-per-class 5000``).
2. **Feature-cache fill rate** with 0 and with ``--fill-workers`` DataLoader workers: the real architecture
   (ViT-B-16, random weights) on keyframes with nuScenes' 1600 x 900 JPEG images, so decoding and resizing are
   what they cost on nuScenes.

``python benchmarks/scale/memory_and_fill.py --work cache/scale-benchmark`` (``--help``); writes ``results.json`` into
``--work`` and prints a table. Measured numbers are in docs/data.md#measured-memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import yaml

ARCH = "bench-ViT-512"
ARCH_CONFIG = {
    "embed_dim": 512,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 128, "patch_size": 16, "head_width": 64},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 1},
}
"""A 2-block ViT with CLIP ViT-B/16's patch size and output dimension (grids of nuScenes' size, fast on a CPU)."""


def register_arch(folder: Path) -> None:
    """Register :data:`ARCH` with open_clip (config file written into ``folder``)."""
    from models.teachers._torchvision_shim import import_open_clip

    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{ARCH}.json").write_text(json.dumps(ARCH_CONFIG))
    import_open_clip().add_model_config(folder)


def suite(root: Path, checkpoint: Path, work: Path, steps: int, per_class: int) -> dict:
    """The suite run at every size (only the dataroot changes)."""
    return {
        "name": "scale",
        "kind": "distill",
        "description": "peak RSS against the number of keyframes",
        "defaults": {
            "dataset": "nuscenes",
            "dataroot": str(root),
            "version": "v1.0-trainval",
            "teacher": "clip",
            "clip_arch": ARCH,
            "clip_checkpoint": str(checkpoint),
            "out_dim": 512,
            "crop_radius": None,
            "feature_cache": str(work / f"features-{root.name}"),
            "student_overrides": {"init_dim": 8, "planes": [16, 16, 32, 32, 32, 16, 16, 16]},
            "voxel_size": 0.2,
            "steps": steps,
            "batch_size": 2,
            "n_pairs": 4096,
            "checkpoint_every": steps,
            "probe_every": steps,
            "probe_scenes": 2,
            "probe_per_class": 300,
            "features_per_class": per_class,
            "lp_steps": 50,
            "lp_points_per_scan": 2000,
            "lp_max_points": 50_000,
            "ft_steps": 10,
            "protocols": ["zero_shot", "linear_probe", "few_shot"],
        },
        "grid": {"loss": [{"name": "contrastive", "params": {"tau": 0.07}}], "seed": [0]},
    }


def child(args: argparse.Namespace) -> int:
    """Run ``bench.run`` in this process and print its peak RSS (a JSON line)."""
    register_arch(Path(args.work) / "configs")
    from bench.run import main

    start = time.perf_counter()
    code = main(["--suite", args.suite, "--out", args.out, "--no-progress", "--workers", "0"])
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"code": code, "peak_rss_mb": peak_kib / 1024, "seconds": time.perf_counter() - start}))
    return code


def make_dataroot(work: Path, keyframes: int, per_scene: int, resolution: tuple[int, int] | None = None) -> Path:
    """A v1.0-trainval fixture of ``keyframes`` keyframes (80% train scenes), reused when present."""
    from bench.data.synthetic import VARIANTS
    from bench.data.synthetic.nuscenes_format import write_nuscenes_dataroot

    scenes = keyframes // per_scene
    train = max(1, round(0.8 * scenes))
    name = f"nuscenes-{keyframes}" + (f"-{resolution[0]}x{resolution[1]}" if resolution else "")
    root = work / name
    if (root / "v1.0-trainval").is_dir():
        return root
    config = VARIANTS["nuscenes"]
    if resolution is not None:
        config = replace(config, rig=config.rig.with_resolution(*resolution))
    split = {"train": train, "val": scenes - train} if scenes > train else {"train": train}
    return write_nuscenes_dataroot(root, "v1.0-trainval", split, per_scene, config=config, progress=True)


def memory(args: argparse.Namespace, work: Path) -> list[dict]:
    register_arch(work / "configs")
    from models.teachers.clip import CLIPTeacher

    checkpoint = work / f"{ARCH}.pt"
    torch.save(CLIPTeacher(ARCH, seed=0).model.state_dict(), checkpoint)
    rows = []
    for keyframes in args.sizes:
        root = make_dataroot(work, keyframes, args.per_scene)
        spec = work / f"suite-{keyframes}.yaml"
        spec.write_text(yaml.safe_dump(suite(root, checkpoint, work, args.steps, args.features_per_class)))
        out = work / f"runs-{keyframes}"
        for stale in (out, work / f"features-{root.name}"):  # a fresh run and a fresh feature cache
            shutil.rmtree(stale, ignore_errors=True)
        command = [sys.executable, __file__, "--child", "--work", str(work), "--suite", str(spec), "--out", str(out)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"bench.run failed on {keyframes} keyframes:\n{done.stderr[-3000:]}")
        row = {"keyframes": keyframes, **json.loads(done.stdout.strip().splitlines()[-1])}
        rows.append(row)
        print(f"{keyframes:5d} keyframes: peak RSS {row['peak_rss_mb']:8.1f} MB, {row['seconds']:6.0f} s", flush=True)
    return rows


def fill_rate(args: argparse.Namespace, work: Path) -> list[dict]:
    from bench.data.features import FeatureCache
    from bench.data.nuscenes import NuScenesDataset
    from models.teachers.clip import CLIPTeacher

    root = make_dataroot(work, args.fill_keyframes, args.fill_keyframes, (1600, 900))
    dataset = NuScenesDataset(root, "train", "v1.0-trainval")
    teacher = CLIPTeacher("ViT-B-16", seed=0)
    rows = []
    for workers in (0, args.fill_workers):
        cache = FeatureCache(work / f"fill-{workers}", dataset.cache_key, teacher.identity)
        report = cache.fill(dataset, teacher, workers, progress=False)
        rows.append({"workers": workers, "keyframes": report.written, "seconds": report.seconds, "rate": report.rate})
        print(f"fill with {workers} workers: {report.rate:.3f} keyframes/s ({report.seconds:.1f} s)", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("cache/scale-benchmark"), help="working folder")
    parser.add_argument("--sizes", type=int, nargs="+", default=[40, 160, 640], help="keyframes per dataroot")
    parser.add_argument("--per-scene", type=int, default=10, help="keyframes per scene")
    parser.add_argument("--steps", type=int, default=20, help="distillation steps of the suite")
    parser.add_argument(
        "--features-per-class", type=int, default=100, help="geometry-set points per class (module docstring)"
    )
    parser.add_argument("--fill-keyframes", type=int, default=8, help="keyframes of the fill-rate measurement")
    parser.add_argument("--fill-workers", type=int, default=2, help="workers of the second fill measurement")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-fill", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--suite", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    results = {"threads": torch.get_num_threads(), "features_per_class": args.features_per_class}
    if not args.skip_memory:
        results["memory"] = memory(args, work)
        base = results["memory"][0]["peak_rss_mb"]
        for row in results["memory"]:
            row["growth_vs_smallest"] = row["peak_rss_mb"] / base - 1
    if not args.skip_fill:
        results["fill"] = fill_rate(args, work)
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
