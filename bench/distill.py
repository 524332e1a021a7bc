"""One distillation run end to end: data, teacher, training, geometry, evaluation protocols, run directory.

Writes into the run directory (rank 0 only): ``config.json`` and ``environment.json`` first, ``checkpoint.pt``
while training, then ``trajectory.csv``, ``features.npz`` (the balanced point set: ``k3d``, ``q2d`` float16,
``labels``) and last ``metrics.json`` (schema in README.md, section Run directories). The geometry in
``metrics.json`` is computed from exactly the float16 values stored in ``features.npz``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import distributed as dist
from bench.config import DistillConfig
from bench.evaluate import fine_tune, linear_probe, zero_shot
from bench.probe import GeometrySet, half_precision
from bench.results import TRAJECTORY_FILE, RunDir, read_json, write_csv, write_npz
from bench.scenes import Scene, TeacherFeatures, load_scenes, open_dataset
from bench.train import TRAJECTORY_COLUMNS, train_student
from models.teachers.base import Teacher, build_teacher, zero_shot_classifier
from models.teachers.cache import FeatureCache

FEATURES_FILE = "features.npz"

_TEACHERS: dict[tuple, Teacher] = {}
_SCENES: dict[tuple, list[Scene]] = {}


def make_teacher(cfg: DistillConfig, device: torch.device) -> Teacher:
    """The run's teacher (built once per process and configuration); a bad checkpoint is a ``ValueError``."""
    key = (cfg.teacher, cfg.clip_arch, cfg.clip_checkpoint, str(device))
    if key not in _TEACHERS:
        if cfg.teacher == "clip":
            path = Path(str(cfg.clip_checkpoint))
            if not path.is_file():
                raise ValueError(f"CLIP checkpoint {path} does not exist")
            try:
                _TEACHERS[key] = build_teacher("clip", device, arch=cfg.clip_arch, checkpoint=path)
            except Exception as exc:  # any failure to read or load the weights
                raise ValueError(f"CLIP checkpoint {path} does not load: {exc}") from None
        else:
            _TEACHERS[key] = build_teacher(cfg.teacher, device)
    return _TEACHERS[key]


def scenes_of(
    cfg: DistillConfig,
    split: str,
    teacher: Teacher | None,
    progress: bool,
    ood: bool = False,
) -> list[Scene]:
    """Scenes of a split (cached in the process, so the runs of a suite share them)."""
    name, root = (cfg.ood_dataset, cfg.ood_dataroot) if ood else (cfg.dataset, cfg.dataroot)
    variant = "ood" if ood else cfg.variant
    sizes = (
        {"train": cfg.ood_train_scenes, "val": cfg.ood_val_scenes}
        if ood
        else {"train": cfg.train_scenes, "val": cfg.val_scenes}
    )
    identity = teacher.identity if teacher is not None else None
    key = (name, root, variant, tuple(sorted(sizes.items())), split, cfg.few_shot_every, cfg.crop_radius, identity)
    key += (cfg.feature_cache if teacher is not None else None,)
    if key not in _SCENES:
        dataset = open_dataset(name, split, root, variant, sizes, cfg.few_shot_every, progress)
        features = None
        if teacher is not None:
            cache = None
            if cfg.feature_cache is not None:
                cache = FeatureCache(cfg.feature_cache, name, teacher.identity)
                cache.fill(dataset, teacher, progress=progress)
            features = TeacherFeatures(teacher, cache)
        _SCENES[key] = load_scenes(dataset, features, cfg.crop_radius, progress=progress)
    return _SCENES[key]


def _class_names(name: str) -> tuple[str, ...]:
    from bench.data.classes import NUSCENES_CLASSES, SEMANTICKITTI_CLASSES

    return SEMANTICKITTI_CLASSES if name == "semantickitti" else NUSCENES_CLASSES


def _json_float(x: float) -> float | None:
    return None if isinstance(x, float) and math.isnan(x) else x


def run_distill(
    cfg: DistillConfig, run_dir: RunDir | None, device: torch.device, progress: bool = True
) -> dict[str, Any]:
    """Train and evaluate one student; returns ``metrics`` (and writes the run directory when given)."""
    from tqdm import tqdm

    teacher = make_teacher(cfg, device)
    if teacher.dim != cfg.out_dim:
        raise ValueError(f"student out_dim {cfg.out_dim} differs from the teacher's feature dimension {teacher.dim}")
    train = scenes_of(cfg, "train", teacher, progress)
    val = scenes_of(cfg, "val", teacher, progress)
    evaluation = val if cfg.eval_scenes is None else val[: cfg.eval_scenes]
    probe = GeometrySet.draw(val[: cfg.probe_scenes], cfg.probe_per_class, cfg.geometry_seed)
    run_path = run_dir.path if run_dir is not None else None
    path = run_path if dist.is_main() else None  # where files are written: rank 0 only
    name = run_dir.path.name if run_dir is not None else "run"
    with tqdm(total=cfg.steps, desc=f"{name} distil", leave=False, disable=not progress) as bar:
        student, trajectory = train_student(cfg, train, probe, device, run_path, on_step=lambda _: bar.update())

    metrics: dict[str, Any] = {
        "kind": "distill",
        "loss": cfg.loss,
        "params": dict(cfg.loss_params),
        "seed": cfg.seed,
        "dataset": cfg.dataset,
        "teacher": teacher.identity,
        "class_names": list(_class_names(cfg.dataset)),  # label id -> name, for the report's legends
        "steps": cfg.steps,
        "final_loss": trajectory[-1]["loss"],
    }
    geo_set = GeometrySet.draw(evaluation, cfg.features_per_class, cfg.geometry_seed)
    k3d = half_precision(geo_set.student_features(student, device))  # on every rank: gathered over ranks
    if dist.is_main():
        q2d = half_precision(geo_set.q2d)
        geo_set.q2d = q2d
        metrics["geometry"] = geo_set.geometry(k3d, t=cfg.uniformity_t)
        metrics["geometry_set"] = {
            "seed": cfg.geometry_seed,
            "n": len(geo_set.labels),
            "per_class_counts": {str(c): n for c, n in geo_set.counts.items()},
        }
        if path is not None:
            write_csv(path / TRAJECTORY_FILE, trajectory, TRAJECTORY_COLUMNS)
            write_npz(
                path / FEATURES_FILE,
                k3d=k3d.numpy().astype(np.float16),
                q2d=q2d.numpy().astype(np.float16),
                labels=geo_set.labels.astype(np.int64),
            )
    classes = _class_names(cfg.dataset)
    if "zero_shot" in cfg.protocols:
        text = zero_shot_classifier(teacher, "semantickitti" if cfg.dataset == "semantickitti" else "nuscenes")
        metrics["zero_shot"] = zero_shot(student, evaluation, text, classes, device)
    if "linear_probe" in cfg.protocols:
        metrics["linear_probe"] = linear_probe(student, train, evaluation, classes, cfg, device, progress)
    if "few_shot" in cfg.protocols:
        few = scenes_of(cfg, "train_1pct", None, progress)
        metrics["few_shot"] = fine_tune(student, few, evaluation, classes, cfg, device, progress)
    if "few_shot_ood" in cfg.protocols:
        few_ood = scenes_of(cfg, "train_1pct", None, progress, ood=True)
        val_ood = scenes_of(cfg, "val", None, progress, ood=True)
        metrics["few_shot_ood"] = fine_tune(
            student, few_ood, val_ood, _class_names(cfg.ood_dataset), cfg, device, progress
        )
        metrics["few_shot_ood"]["dataset"] = cfg.ood_dataset
    for key in ("zero_shot", "linear_probe", "few_shot", "few_shot_ood"):
        if key in metrics:
            metrics[key]["miou"] = _json_float(metrics[key]["miou"])
    metrics["final_loss"] = _json_float(metrics["final_loss"])
    return metrics


def execute_distill(resolved: dict[str, Any], run_dir: RunDir, device: torch.device, progress: bool) -> dict[str, Any]:
    """Run (or skip, when finished) one distill run of a suite and return its metrics."""
    if run_dir.finished:
        run_dir.check_config(resolved, DistillConfig.field_defaults())
        return read_json(run_dir.path / "metrics.json")
    cfg = DistillConfig.from_run({k: v for k, v in resolved.items() if k != "kind"})
    if dist.is_main():
        run_dir.start(resolved, device, DistillConfig.field_defaults())
    metrics = run_distill(cfg, run_dir, device, progress)
    if dist.is_main():
        run_dir.finish(metrics)
    dist.barrier()
    return metrics


def resolve_distill(run: dict[str, Any]) -> dict[str, Any]:
    """The full configuration of a distill run; ``ValueError`` (naming the valid choices) on bad values."""
    try:
        return DistillConfig.from_run(run).resolved()
    except KeyError as exc:  # unknown loss name
        raise ValueError(exc.args[0]) from None
    except TypeError as exc:
        raise ValueError(f"bad distill run parameters: {exc}") from None
