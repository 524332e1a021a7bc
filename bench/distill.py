"""One distillation run end to end: data, teacher, training, geometry, evaluation protocols, run directory.

Writes into the run directory (rank 0 only): ``config.json`` and ``environment.json`` first, ``checkpoint.pt``
while training, then ``trajectory.csv``, ``features.npz`` (the balanced point set: ``k3d``, ``q2d`` float16,
``labels``) and last ``metrics.json`` (schema: docs/usage.md#run-directories). The geometry in
``metrics.json`` is computed from exactly the float16 values stored in ``features.npz``.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import t as student_t
from tqdm import tqdm

from bench import distributed as dist
from bench.config import DistillConfig, TeacherConfig
from bench.data.fewshot import few_shot_split
from bench.data.loader import SceneDataset
from bench.data.registry import class_names
from bench.evaluate import fine_tune, linear_probe, zero_shot
from bench.files import write_csv, write_json, write_npz
from bench.probe import GeometrySet, half_precision
from bench.results import RunDir
from bench.train import TRAJECTORY_COLUMNS, convergence, train_student
from bench.workspace import Workspace, zero_shot_text
from geomstruct.run_folder import FEATURES_FILE, PROTOCOLS, TIMING_FILE, TRAJECTORY_FILE, read_metrics
from models.students.checkpoints import LAYOUTS


def _json_float(x: float) -> float | None:
    return None if isinstance(x, float) and math.isnan(x) else x


CI_LEVEL = 0.95
"""Level of the Student-t interval over 1% subsets (and over seeds, :mod:`bench.study.reference`)."""


def mean_interval(values: Sequence[float | None]) -> tuple[float | None, float | None, list[float] | None]:
    """``(mean, sample standard deviation, [low, high])`` of ``values``: the interval is
    ``mean -/+ t_{0.975, k-1} s / sqrt(k)`` (Student-t, 95%, ``k`` values); std and interval are None for fewer
    than 2 values, and all three are None when a value is None or NaN (an undefined mIoU)."""
    if not values or any(v is None or not math.isfinite(v) for v in values):
        return None, None, None
    data = np.asarray(values, dtype=np.float64)
    mean = float(data.mean())
    if len(data) < 2:
        return mean, None, None
    std = float(data.std(ddof=1))
    half = float(student_t.ppf(0.5 + CI_LEVEL / 2, len(data) - 1)) * std / math.sqrt(len(data))
    return mean, std, [mean - half, mean + half]


def combine_scores(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The mean of several mIoU results of one evaluation set (:func:`bench.evaluate.miou` dictionaries, e.g. one
    per 1% subset): ``miou`` the mean of their mIoU, with ``miou_std`` and the Student-t interval ``miou_ci``
    (:func:`mean_interval`); ``per_class`` per class the mean of the IoUs that are defined (None where none is);
    ``points`` and ``chance`` those of the first result (the same evaluation points for all); ``below_chance`` the
    classes whose mean IoU does not exceed chance."""
    mean, std, ci = mean_interval([r.get("miou") for r in results])
    names = list(results[0].get("per_class") or {})
    per_class: dict[str, float | None] = {}
    for name in names:
        defined = [r["per_class"][name] for r in results if r.get("per_class", {}).get(name) is not None]
        per_class[name] = float(np.mean(defined)) if defined else None
    chance = results[0].get("chance") or {}
    below = [n for n in names if chance.get(n) is not None and not (per_class[n] or 0.0) > chance[n]]
    out = {"miou": mean, "miou_std": std, "miou_ci": ci, "per_class": per_class, "points": results[0].get("points")}
    if "chance" in results[0]:
        out |= {"chance": chance, "below_chance": below}
    return out


def subset_hash(ids: Sequence[str]) -> str:
    """A short identity of a subset's scan ids (SHA-1 of the ids joined by newlines, 12 hex digits)."""
    return hashlib.sha1("\n".join(ids).encode()).hexdigest()[:12]


def few_shot_scores(
    workspace: Workspace,
    student: torch.nn.Module,
    cfg: DistillConfig,
    evaluation: SceneDataset,
    classes: Sequence[str],
    device: torch.device,
    progress: bool = False,
    workers: int = 0,
    ood: bool = False,
) -> dict[str, Any]:
    """Few-shot fine-tuning of ``student`` (:func:`bench.evaluate.fine_tune`) on each of the ``few_shot_subsets``
    1% subsets of the (OOD when ``ood``) dataset, scored on ``evaluation``.

    One subset (the default): the fine-tuning result of the 1% split with its ``train_scans``, as always. Several:
    the same student is fine-tuned once per subset (a fresh copy and head each time, the run's seed) and the result
    is :func:`combine_scores` of the subsets (``miou`` their mean, ``miou_std``, 95% Student-t ``miou_ci``,
    ``per_class`` the per-class mean) with ``train_scans`` (every subset has as many) and ``subsets``: per subset
    ``subset`` (0 = the 1% split, ``j`` = drawn with seed ``j``, :mod:`bench.data.fewshot`), ``split``,
    ``miou``, ``per_class``, ``below_chance``, ``train_scans``, ``ids_sha1`` (:func:`subset_hash`) and the
    optimisation trace (``train_loss``, ``grad_norm_max``).
    """
    results = []
    for subset in range(cfg.few_shot.subsets):
        few = workspace.scenes(cfg, few_shot_split(subset), None, progress, ood=ood)
        result = fine_tune(
            student, few, evaluation, classes, cfg.few_shot, device, progress, workers, **fine_tuning(cfg)
        )
        result["train_scans"] = len(few)
        if cfg.few_shot.subsets == 1:
            return result
        kept = ("miou", "per_class", "below_chance", "train_scans", "train_loss", "grad_norm_max")
        entry = {"subset": subset, "split": few_shot_split(subset), "ids_sha1": subset_hash(few.ids)}
        entry |= {k: result[k] for k in kept if k in result}
        entry["miou"] = _json_float(entry["miou"])
        results.append((entry, result))
    combined = combine_scores([result for _, result in results])
    return {**combined, "train_scans": results[0][1]["train_scans"], "subsets": [entry for entry, _ in results]}


def fine_tuning(cfg: DistillConfig) -> dict[str, Any]:
    """The keywords :func:`bench.evaluate.fine_tune` takes from the run beside its ``few_shot`` section."""
    return {
        "segmentation": cfg.segmentation,
        "seed": cfg.seed,
        "out_dim": cfg.student.out_dim,
        "sync_bn": cfg.distillation.sync_bn,
    }


def probing_of(cfg: DistillConfig) -> dict[str, Any]:
    """The keywords :func:`bench.evaluate.linear_probe` takes from the run beside its ``linear_probe`` section."""
    return {
        "segmentation": cfg.segmentation,
        "seed": cfg.seed,
        "momentum": cfg.distillation.momentum,
        "weight_decay": cfg.distillation.weight_decay,
    }


def published_label(cfg: DistillConfig) -> str:
    """The report's row of a published backbone (``metrics.json`` ``loss``): ``"<layout label> (published)"``."""
    return f"{LAYOUTS[str(cfg.student.checkpoint_layout)].label} (published)"


def run_distill(
    cfg: DistillConfig,
    run_dir: RunDir | None,
    device: torch.device,
    progress: bool = True,
    workers: int = 0,
    on_ready: Callable[[], None] | None = None,
    on_bind: Callable[[], None] | None = None,
    workspace: Workspace | None = None,
) -> dict[str, Any]:
    """Train and evaluate one student; returns ``metrics`` (and writes the run directory when given).

    ``workspace``: the process's set-up (teacher, data, caches; :class:`bench.workspace.Workspace`), a fresh one
    when None.

    ``workers``: DataLoader worker processes reading scans ahead of the student (0: in the main process);
    they change the speed, never the result. ``on_ready`` is called once the teacher, the data and the feature
    caches are set up, before training. ``on_bind`` is called (rank 0) once the run folder holds state of this
    configuration: when a checkpoint was resumed, else just before the first checkpoint is written
    (:func:`bench.train.train_student`; the harness writes ``config.json`` then, so a run that fails during set-up
    or before its first checkpoint does not bind its folder to a configuration).
    """
    workspace = Workspace() if workspace is None else workspace
    teacher = workspace.teacher(cfg, device)
    if teacher.dim != cfg.student.out_dim:
        raise ValueError(
            f"student out_dim {cfg.student.out_dim} differs from the teacher's feature dimension {teacher.dim}"
        )
    classes = class_names(cfg.data.dataset)
    train = workspace.scenes(cfg, cfg.data.train_split, teacher, progress, workers=workers)
    val = workspace.scenes(cfg, cfg.data.eval_split, teacher, progress, workers=workers)
    evaluation = val.head(cfg.data.eval_scenes)
    probe_split = cfg.probe.split or cfg.data.eval_split  # None: the evaluation split, as before the field existed
    probing = (
        val
        if probe_split == cfg.data.eval_split
        else workspace.scenes(cfg, probe_split, teacher, progress, workers=workers)
    )
    sides = workspace.teacher_sides
    probe = GeometrySet.draw(
        probing.head(cfg.probe.scenes), cfg.probe.per_class, cfg.geometry.seed, len(classes), workers, sides
    )
    run_path = run_dir.path if run_dir is not None else None
    path = run_path if dist.is_main() else None  # where files are written: rank 0 only
    name = run_dir.path.name if run_dir is not None else "run"
    if on_ready is not None:
        on_ready()
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(phase: str) -> None:  # wall-clock seconds of each phase, for budgeting a suite (not a result)
        nonlocal clock
        now = time.perf_counter()
        seconds[phase] = round(now - clock, 2)
        clock = now

    with tqdm(total=cfg.distillation.steps, desc=f"{name} distil", leave=False, disable=not progress) as bar:
        student, trajectory = train_student(
            cfg, train, probe, device, run_path, on_step=lambda _: bar.update(), workers=workers, on_bind=on_bind
        )

    metrics: dict[str, Any] = {
        "kind": "distill",
        "loss": cfg.distillation.loss,
        "params": dict(cfg.distillation.loss_params),
        "seed": cfg.seed,
        "dataset": cfg.data.dataset,
        "teacher": teacher.identity,
        "teacher_checkpoint_sha256": cfg.teacher.options.get("checkpoint_sha256"),
        "class_names": list(classes),  # label id -> name, for the report's legends
        "steps": cfg.distillation.steps,
        "final_loss": trajectory[-1]["loss"],
        "convergence": convergence(trajectory),
    }
    if cfg.student.checkpoint is not None:  # a published backbone, not distilled here (python -m bench.lens)
        metrics |= {"loss": published_label(cfg), "params": {}, "steps": 0, "final_loss": float("nan")}
        metrics["pretrained"] = {
            "layout": cfg.student.checkpoint_layout,
            "checkpoint": cfg.student.checkpoint,
            "checkpoint_sha256": cfg.student.checkpoint_sha256,
        }
    lap("distill")
    geo_set = GeometrySet.draw(
        evaluation, cfg.geometry.features_per_class, cfg.geometry.seed, len(classes), workers, sides
    )
    k3d = half_precision(geo_set.student_features(student, device, workers))  # on every rank: gathered
    if dist.is_main():
        q2d = half_precision(geo_set.q2d)
        geo_set.q2d = q2d
        metrics["geometry"] = geo_set.geometry(k3d, t=cfg.geometry.uniformity_t)
        metrics["geometry_set"] = {
            "seed": cfg.geometry.seed,
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
    lap("geometry")
    if "zero_shot" in cfg.protocols:
        text = zero_shot_text(cfg, teacher)
        metrics["zero_shot"] = zero_shot(student, evaluation, text, classes, device, workers)
        lap("zero_shot")
    if "linear_probe" in cfg.protocols:
        metrics["linear_probe"] = linear_probe(
            student, train, evaluation, classes, cfg.linear_probe, device, progress, workers, **probing_of(cfg)
        )
        lap("linear_probe")
    if "few_shot" in cfg.protocols:  # once per 1% subset (few_shot_subsets), their mean
        metrics["few_shot"] = few_shot_scores(workspace, student, cfg, evaluation, classes, device, progress, workers)
        lap("few_shot")
    if "few_shot_ood" in cfg.protocols:
        eval_ood = workspace.scenes(cfg, cfg.ood.eval_split, None, progress, ood=True)
        metrics["few_shot_ood"] = few_shot_scores(
            workspace, student, cfg, eval_ood, class_names(cfg.ood.dataset), device, progress, workers, ood=True
        )
        metrics["few_shot_ood"]["dataset"] = cfg.ood.dataset
        metrics["few_shot_ood"]["split"] = cfg.ood.eval_split
        lap("few_shot_ood")
    for key in PROTOCOLS:
        if key in metrics:
            metrics[key]["miou"] = _json_float(metrics[key]["miou"])
    metrics["final_loss"] = _json_float(metrics["final_loss"])
    if path is not None:  # wall-clock, machine-dependent: beside the results, never in metrics.json
        write_json(path / TIMING_FILE, {"seconds": seconds, "total": round(sum(seconds.values()), 2)})
    return metrics


def execute_distill(
    resolved: dict[str, Any],
    run_dir: RunDir,
    device: torch.device,
    progress: bool,
    workers: int = 0,
    workspace: Workspace | None = None,
) -> dict[str, Any]:
    """Run (or skip, when finished) one distill run of a suite and return its metrics.

    The folder is bound to this configuration (``config.json`` and ``environment.json`` written,
    :meth:`bench.results.RunDir.start`) only once it holds state worth protecting: when training resumes from a
    checkpoint, or just before the first checkpoint is written. A run that fails earlier (set-up, teacher, the
    first steps) leaves no ``config.json``, so a corrected rerun into the same folder is not refused. The caller
    holds the folder's lock (:class:`bench.results.RunLock`) on rank 0; ``workspace`` is the process's set-up
    (:class:`bench.workspace.Workspace`; a fresh one when None).
    """
    if run_dir.finished:
        run_dir.check_config(resolved, DistillConfig.field_defaults())
        return read_metrics(run_dir.path)[0]
    cfg = DistillConfig.from_run({k: v for k, v in resolved.items() if k != "kind"})
    defaults = DistillConfig.field_defaults()
    run_dir.check_config(resolved, defaults)  # a conflicting folder is refused before any set-up

    def bind() -> None:  # called by the trainer on rank 0 only; config.json in sections (format 2)
        run_dir.start(cfg.resolved(), device, defaults)

    metrics = run_distill(cfg, run_dir, device, progress, workers, on_bind=bind, workspace=workspace)
    if dist.is_main():
        run_dir.finish(metrics)
    dist.barrier()
    return metrics


def resolve_distill(run: dict[str, Any], workspace: Workspace | None = None) -> dict[str, Any]:
    """The full configuration of a distill run in its flat form (:meth:`bench.config.DistillConfig.flat`: the
    run's identity, whose keys name it; its ``config.json`` is written in sections when the run binds its folder);
    ``ValueError`` (naming the valid choices) on bad values. A CLIP checkpoint is identified by its content
    (``clip_checkpoint_sha256``), hashed once per ``workspace``."""
    try:
        cfg = DistillConfig.from_run(run)
        options = cfg.teacher.options
        if options.get("checkpoint") is not None and "checkpoint_sha256" in options:
            # the weights' content, not their path, identifies the teacher (CLIP's checkpoint_sha256)
            workspace = Workspace() if workspace is None else workspace
            digest = workspace.checkpoint_sha256(Path(str(options["checkpoint"])))
            teacher = TeacherConfig(cfg.teacher.name, {**options, "checkpoint_sha256": digest})
            cfg = replace(cfg, teacher=teacher)
        if cfg.student.checkpoint is not None:  # a published backbone: identified by its content too
            workspace = Workspace() if workspace is None else workspace
            digest = workspace.checkpoint_sha256(Path(cfg.student.checkpoint))
            cfg = replace(cfg, student=replace(cfg.student, checkpoint_sha256=digest))
        return cfg.flat()
    except KeyError as exc:  # unknown loss name
        raise ValueError(exc.args[0]) from None
    except TypeError as exc:
        raise ValueError(f"bad distill run parameters: {exc}") from None
