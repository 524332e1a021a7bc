"""The set-up of runs: teacher, data and caches, as a :class:`Workspace` passed down explicitly.

A :class:`Workspace` holds what a process sets up once and reuses across the runs it trains or evaluates -- no
module holds such state:

- the teachers built (per configuration and device; :meth:`Workspace.teacher`);
- the dataset splits opened (rank 0 generates synthetic scenes and indexes nuScenes, the other ranks then read
  them) and the feature and superpixel caches filled (:meth:`Workspace.scenes`);
- the nuScenes keyframe indexes read (:class:`bench.data.nuscenes.KeyframeIndexes`);
- the SHA-256 of CLIP checkpoints (:meth:`Workspace.checkpoint_sha256`, read by :func:`bench.distill.resolve_distill`);
- the teacher's side of the geometry of the point sets measured (:class:`bench.probe.TeacherSides`).

``python -m bench.run`` creates one per process and hands it to the suite's resolvers and executors
(:mod:`bench.kinds`); each ``--jobs`` worker is a process of its own with its own workspace; the study tools
(:mod:`bench.study`) create one per command. Nothing in it changes a result: a fresh workspace computes the same
values, only slower.

The dataset's own knowledge (its classes and zero-shot vocabulary) is read from its reader:
:func:`bench.data.registry.class_names`, :func:`bench.data.registry.vocabulary`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bench import distributed as dist
from bench.config import DistillConfig
from bench.data.base import ScanDataset
from bench.data.features import FeatureCache, text_embeddings
from bench.data.loader import SceneDataset
from bench.data.nuscenes import KeyframeIndexes
from bench.data.registry import open_dataset, vocabulary
from bench.data.superpixels import DEFAULT_ROOT as DEFAULT_SUPERPIXELS
from bench.data.superpixels import SuperpixelCache, settings_from
from bench.probe import TeacherSides
from models.losses import loss_inputs
from models.teachers import Teacher, build_teacher
from models.teachers.base import file_sha256

DEFAULT_FEATURE_CACHE = "cache/features"
"""Feature cache folder when a run sets none (relative to the working directory)."""


def feature_root(cfg: DistillConfig) -> str:
    """The run's feature cache folder (:data:`DEFAULT_FEATURE_CACHE` when the configuration sets none)."""
    return cfg.data.feature_cache or DEFAULT_FEATURE_CACHE


def zero_shot_text(cfg: DistillConfig, teacher: Teacher) -> torch.Tensor:
    """The ``(C, D)`` text embeddings of the run's dataset's classes (its reader's zero-shot vocabulary), cached
    beside the run's feature cache (:func:`bench.data.features.text_embeddings`)."""
    return text_embeddings(teacher, vocabulary(cfg.data.dataset), feature_root(cfg))


class Workspace:
    """What one process has set up for its runs (module docstring); create one per process and pass it down."""

    def __init__(self) -> None:
        self.teachers: dict[tuple, Teacher] = {}
        self.datasets: dict[tuple, ScanDataset] = {}
        self.filled: set[tuple] = set()
        self.hashes: dict[tuple, str] = {}
        self.teacher_sides = TeacherSides()
        self.keyframe_indexes = KeyframeIndexes()

    def teacher(self, cfg: DistillConfig, device: torch.device) -> Teacher:
        """The run's teacher (built once per configuration and device); a bad checkpoint is a ``ValueError``."""
        name, options = cfg.teacher.name, cfg.teacher.build_options()
        key = (name, json.dumps(cfg.teacher.options, sort_keys=True, default=str), str(device))
        if key not in self.teachers:
            checkpoint = options.get("checkpoint")
            if checkpoint is None:
                self.teachers[key] = build_teacher(name, device, **options)
            else:  # a teacher with weights: the file must exist and load
                shown = "CLIP" if name == "clip" else f"teacher {name}"
                path = Path(str(checkpoint))
                if not path.is_file():
                    raise ValueError(f"{shown} checkpoint {path} does not exist")
                try:
                    self.teachers[key] = build_teacher(name, device, **{**options, "checkpoint": path})
                except Exception as exc:  # any failure to read or load the weights
                    raise ValueError(f"{shown} checkpoint {path} does not load: {exc}") from None
        return self.teachers[key]

    def checkpoint_sha256(self, path: Path) -> str:
        """The SHA-256 of the file ``path``, computed once per path, size and modification time."""
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in self.hashes:
            self.hashes[key] = file_sha256(path)
        return self.hashes[key]

    def scenes(
        self,
        cfg: DistillConfig,
        split: str,
        teacher: Teacher | None,
        progress: bool,
        ood: bool = False,
        workers: int = 0,
    ) -> SceneDataset:
        """The scans of a split of the run's (OOD when ``ood``) dataset, streamed with teacher grids when
        ``teacher`` is given (its feature cache is filled first, with ``workers`` DataLoader workers, split over
        the ranks; the size and fill rate are printed), with superpixel regions for a region loss's train split."""
        name, root = (cfg.ood.dataset, cfg.ood.dataroot) if ood else (cfg.data.dataset, cfg.data.dataroot)
        variant = "ood" if ood else cfg.data.variant
        sizes = (
            {"train": cfg.ood.train_scenes, "val": cfg.ood.val_scenes, "test": cfg.ood.test_scenes}
            if ood
            else {"train": cfg.data.train_scenes, "val": cfg.data.val_scenes, "test": cfg.data.test_scenes}
        )
        key = (name, root, variant, tuple(sorted(sizes.items())), split, cfg.few_shot.every, cfg.data.version)
        if key not in self.datasets:  # rank 0 generates synthetic scenes and indexes nuScenes; the others read them
            index = Path(feature_root(cfg)) / "index"
            args = (name, split, root, variant, sizes, cfg.few_shot.every)
            if dist.is_main():
                self.datasets[key] = open_dataset(*args, progress, cfg.data.version, index, self.keyframe_indexes)
            dist.barrier()
            if not dist.is_main():
                self.datasets[key] = open_dataset(*args, False, cfg.data.version, index, self.keyframe_indexes)
        dataset = self.datasets[key]
        cache = None
        if teacher is not None:
            cache = FeatureCache(feature_root(cfg), dataset.cache_key, teacher.identity)
            filled = (cache.folder, split, key)
            if filled not in self.filled:
                report = cache.fill(dataset, teacher, workers, progress=progress)
                if dist.is_main() and (report.written or progress):
                    print(report.summary(cache.folder))
                self.filled.add(filled)
        scenes = SceneDataset(dataset, cfg.data.crop_radius, cache)
        if cache is not None and split == cfg.data.train_split and loss_inputs(cfg.distillation.loss) == "superpixels":
            superpixels = SuperpixelCache(cfg.data.superpixel_cache or DEFAULT_SUPERPIXELS, dataset.cache_key,
                                          settings_from(cfg.data.slic))  # fmt: skip
            filled = (superpixels.folder, split, key)
            if filled not in self.filled:
                report = superpixels.fill(dataset, workers, progress=progress)
                if dist.is_main() and (report.written or progress):
                    print(report.summary(superpixels.folder, "superpixel cache"))
                self.filled.add(filled)
            scenes = scenes.with_superpixels(superpixels, pixel_norm=bool(cfg.distillation.region_pixel_norm))
        return scenes
