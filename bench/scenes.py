"""Scenes as the harness uses them: points, labels, point-pixel pairs and the teacher's patch grids, in memory.

A :class:`Scene` is a :class:`~bench.data.scan.Scan` reduced to what distillation and evaluation read:

- ``points`` (N, 4) and ``labels`` (N,), optionally cropped to a horizontal radius around the sensor
  (``crop_radius``, a choice to keep CPU runs small; ``None`` keeps every point);
- ``pairs`` (M, 4) int64 rows ``(point index, camera index, row, col)``: every valid point-pixel pair of every
  camera (the devkit's pairing rule, :func:`bench.data.scan.project_points`), re-indexed after the crop;
- ``grids`` (n_cameras, D, h, w) float16: the teacher's patch-grid features of every camera, from the feature
  cache (:class:`models.teachers.cache.FeatureCache`) or computed on the fly; the features of a pair are the
  bilinear upsampling at its pixel (:func:`models.teachers.base.sample`, MaskCLIP's interpolation).

Keeping patch grids (not per-pair features) in memory costs ``6 x 512 x 14 x 26 x 2`` bytes = 2.2 MB per
synthetic scene, so a whole small split stays resident while training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bench.data.base import ScanDataset
from bench.data.classes import IGNORE_INDEX
from bench.data.fewshot import few_shot_ids
from bench.data.scan import Scan
from models.teachers.base import Teacher, sample
from models.teachers.cache import FeatureCache

DATASETS = ("synthetic", "nuscenes", "semantickitti")
"""Datasets the harness can train and evaluate on."""


@dataclass
class Scene:
    """One scan as the harness keeps it in memory (see the module docstring)."""

    scan_id: str
    points: np.ndarray
    labels: np.ndarray
    pairs: np.ndarray
    grids: torch.Tensor | None
    image_sizes: tuple[tuple[int, int], ...]

    def pair_features(self, rows: np.ndarray | None = None) -> torch.Tensor:
        """Teacher features ``(M', D)`` float32 of ``pairs[rows]`` (all pairs when ``rows`` is None)."""
        if self.grids is None:
            raise ValueError(f"scene {self.scan_id} was loaded without teacher features")
        chosen = self.pairs if rows is None else self.pairs[rows]
        out = torch.empty(len(chosen), self.grids.shape[1], dtype=torch.float32)
        for cam in np.unique(chosen[:, 1]):
            sel = np.flatnonzero(chosen[:, 1] == cam)
            grid = self.grids[int(cam)].float()
            out[torch.from_numpy(sel)] = sample(grid, chosen[sel, 2], chosen[sel, 3], self.image_sizes[int(cam)])
        return out

    def first_pairs(self) -> np.ndarray:
        """Row indices into ``pairs`` keeping the first pair of every paired point (one pixel per point)."""
        _, first = np.unique(self.pairs[:, 0], return_index=True)
        return np.sort(first)


def crop_scan(scan: Scan, radius: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points, labels and pairing table of ``scan`` restricted to ``sqrt(x^2 + y^2) < radius`` metres."""
    labels = scan.labels if scan.labels is not None else np.full(len(scan.points), IGNORE_INDEX, dtype=np.int64)
    pairs = scan.pairing_table()
    if radius is None:
        return scan.points, labels.astype(np.int64), pairs
    keep = np.hypot(scan.points[:, 0], scan.points[:, 1]) < radius
    new_index = np.full(len(keep), -1, dtype=np.int64)
    new_index[keep] = np.arange(int(keep.sum()))
    pairs = pairs[keep[pairs[:, 0]]].copy()
    pairs[:, 0] = new_index[pairs[:, 0]]
    return scan.points[keep], labels[keep].astype(np.int64), pairs


class TeacherFeatures:
    """Patch grids of a scan's cameras: read from a feature cache when given, else computed by the teacher."""

    def __init__(self, teacher: Teacher, cache: FeatureCache | None = None) -> None:
        self.teacher, self.cache = teacher, cache

    def grids(self, scan: Scan) -> torch.Tensor:
        """``(n_cameras, D, h, w)`` float16 on the CPU."""
        if self.cache is not None and self.cache.has(scan.scan_id):
            return torch.from_numpy(np.array(self.cache.load(scan.scan_id)))
        with torch.no_grad():
            return self.teacher.scan_features(scan).to("cpu", dtype=torch.float16)


def load_scenes(
    dataset: ScanDataset,
    features: TeacherFeatures | None,
    crop_radius: float | None,
    ids: Sequence[str] | None = None,
    progress: bool = True,
) -> list[Scene]:
    """Load ``ids`` (default: every scan) of ``dataset`` as :class:`Scene` records, with teacher grids if given."""
    scenes = []
    for scan_id in tqdm(list(ids or dataset.ids), desc=f"load {dataset.name} {dataset.split}", disable=not progress):
        scan = dataset.load(scan_id)
        points, labels, pairs = crop_scan(scan, crop_radius)
        grids = features.grids(scan) if features is not None and scan.cameras else None
        sizes = tuple(cam.size for cam in scan.cameras)
        scenes.append(Scene(scan_id, points, labels, pairs, grids, sizes))
    return scenes


def open_dataset(
    name: str,
    split: str,
    dataroot: str | Path | None,
    variant: str = "nuscenes",
    sizes: dict[str, int] | None = None,
    few_shot_every: int = 100,
    progress: bool = True,
) -> ScanDataset:
    """A dataset split by name; ``split="train_1pct"`` keeps every ``few_shot_every``-th train scan (SLidR).

    For ``synthetic`` the dataroot is the scene cache (scenes are generated into it on first use) and ``sizes``
    sets the scenes per split. ``nuscenes`` and ``semantickitti`` need an existing dataroot.
    """
    base = "train" if split == "train_1pct" else split
    if name == "synthetic":
        from bench.data.synthetic import SyntheticDataset

        dataset: ScanDataset = SyntheticDataset(
            Path(dataroot or "cache/synthetic"), base, variant=variant, sizes=sizes, progress=progress
        )
    elif name in ("nuscenes", "semantickitti"):
        if dataroot is None or not Path(dataroot).is_dir():
            raise ValueError(f"{name} needs --dataroot pointing to an existing folder; got {dataroot!r}")
        if name == "nuscenes":
            from bench.data.nuscenes import NuScenesDataset

            dataset = NuScenesDataset(dataroot, split=base)
        else:
            from bench.data.semantickitti import SemanticKITTIDataset

            dataset = SemanticKITTIDataset(dataroot, split=base)
    else:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")
    if split == "train_1pct":
        dataset.split = "train_1pct"
        dataset.ids = few_shot_ids(dataset.ids, few_shot_every)
    return dataset


def batch_tensors(scenes: Sequence[Scene], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Concatenated points ``(sum N, 4)``, scan index per point and the point offset of every scene."""
    offsets = np.cumsum([0] + [len(s.points) for s in scenes])
    points = torch.from_numpy(np.concatenate([s.points for s in scenes])).to(device)
    batch = torch.cat([torch.full((len(s.points),), i, dtype=torch.int64) for i, s in enumerate(scenes)]).to(device)
    return points, batch, offsets
