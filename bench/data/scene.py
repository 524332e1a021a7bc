"""A scan as the harness reads it, and a batch of them (docs/data.md#streaming).

A :class:`Scene` is a :class:`~bench.data.scan.Scan` reduced to what distillation and evaluation read:

- ``points`` (N, 4) and ``labels`` (N,), optionally cropped to a horizontal radius around the sensor
  (``crop_radius``, a choice to keep CPU runs small; ``None`` keeps every point; :func:`crop_scan`);
- ``pairs`` (M, 4) int64 rows ``(point index, camera index, row, col)``: every valid point-pixel pair of every
  camera (the devkit's pairing rule, :func:`bench.data.scan.project_points`), re-indexed after the crop;
- ``grids`` (n_cameras, D, h, w) float16: the teacher's patch-grid features of every camera, read from the
  memory-mapped feature cache (:class:`bench.data.features.FeatureCache`); the features of a pair are the bilinear
  upsampling at its pixel (:func:`models.teachers.base.sample`, MaskCLIP's interpolation);
- for the region losses only: ``pair_regions`` (M,) the superpixel of every pair, numbered over the scan's
  cameras, and ``region_feats`` (R, D) float32 the teacher feature of every superpixel
  (:func:`bench.data.superpixels.scene_regions`).

:func:`collate_scenes` batches scenes into a :class:`SceneBatch` (concatenated points and labels, scan index per
point); :mod:`bench.data.loader` streams them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bench.data.classes import IGNORE_INDEX
from bench.data.scan import Scan
from models.teachers.base import sample


@dataclass
class Scene:
    """One scan as the harness reads it (see the module docstring)."""

    scan_id: str
    points: np.ndarray
    labels: np.ndarray
    pairs: np.ndarray
    grids: torch.Tensor | None
    image_sizes: tuple[tuple[int, int], ...]
    pair_regions: np.ndarray | None = None
    region_feats: torch.Tensor | None = None

    def pair_features(self, rows: np.ndarray | None = None, device: torch.device | None = None) -> torch.Tensor:
        """Teacher features ``(M', D)`` float32 of ``pairs[rows]`` (all pairs when ``rows`` is None), on ``device``
        (default: the CPU)."""
        if self.grids is None:
            raise ValueError(f"scene {self.scan_id} was loaded without teacher features")
        device = torch.device("cpu") if device is None else device
        chosen = self.pairs if rows is None else self.pairs[rows]
        out = torch.empty(len(chosen), self.grids.shape[1], dtype=torch.float32, device=device)
        for cam in np.unique(chosen[:, 1]):
            sel = np.flatnonzero(chosen[:, 1] == cam)
            grid = self.grids[int(cam)].to(device, non_blocking=True).float()
            feats = sample(grid, chosen[sel, 2], chosen[sel, 3], self.image_sizes[int(cam)])
            out[torch.from_numpy(sel).to(device)] = feats
        return out

    def first_pairs(self) -> np.ndarray:
        """Row indices into ``pairs`` keeping the first pair of every paired point (one pixel per point)."""
        _, first = np.unique(self.pairs[:, 0], return_index=True)
        return np.sort(first)

    def pin_memory(self) -> Scene:
        """The scene with its teacher grids in pinned memory (``DataLoader(pin_memory=True)``)."""
        if self.grids is not None:
            self.grids = self.grids.pin_memory()
        if self.region_feats is not None:
            self.region_feats = self.region_feats.pin_memory()
        return self


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


def batch_tensors(scenes: Sequence[Scene], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Concatenated points ``(sum N, 4)``, scan index per point and the point offset of every scene."""
    offsets = np.cumsum([0] + [len(s.points) for s in scenes])
    points = torch.from_numpy(np.concatenate([s.points for s in scenes])).to(device)
    batch = torch.cat([torch.full((len(s.points),), i, dtype=torch.int64) for i, s in enumerate(scenes)]).to(device)
    return points, batch, offsets


@dataclass
class SceneBatch:
    """Scans batched by :func:`collate_scenes`: concatenated points and labels, scan index per point."""

    scenes: list[Scene]
    points: torch.Tensor
    batch: torch.Tensor
    labels: torch.Tensor
    offsets: np.ndarray

    def pin_memory(self) -> SceneBatch:
        """Pinned copies of the tensors (called by ``DataLoader(pin_memory=True)``)."""
        return SceneBatch(
            [s.pin_memory() for s in self.scenes],
            self.points.pin_memory(),
            self.batch.pin_memory(),
            self.labels.pin_memory(),
            self.offsets,
        )

    def inputs(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(points, batch)`` on ``device``: the student's input."""
        return self.points.to(device, non_blocking=True), self.batch.to(device, non_blocking=True)


def collate_scenes(scenes: Sequence[Scene]) -> SceneBatch:
    """Batch scans: points ``(sum N, 4)``, the scan index of every point, labels ``(sum N,)``, point offsets."""
    points, batch, offsets = batch_tensors(scenes, torch.device("cpu"))
    labels = torch.from_numpy(np.concatenate([s.labels for s in scenes])) if scenes else torch.zeros(0)
    return SceneBatch(list(scenes), points, batch, labels, offsets)
