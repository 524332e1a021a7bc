"""Class-balanced point sets for the geometry of a student against the teacher (METHOD.md section 4).

A :class:`GeometrySet` is drawn from the paired points of some scenes (choice: only points that project into
a camera, so both the 3D and the 2D feature exist; one pixel per point, its first pairing): up to
``n_per_class`` points of every class (:func:`geomstruct.sampling.balanced_sample`, fixed seed). It holds the
teacher's 2D features of those points; :meth:`GeometrySet.student_features` runs a student on the scenes and
reads its 3D features at the same points (split over the ranks under ``torchrun`` and gathered). The trainer's
trajectory probe and the final geometry both use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bench import distributed as dist
from bench.data.classes import IGNORE_INDEX
from bench.scenes import Scene, batch_tensors
from geomstruct.metrics import geometry
from geomstruct.sampling import balanced_sample


@dataclass
class GeometrySet:
    """Balanced points: per scene the chosen point indices, their labels and the teacher's features."""

    scenes: list[Scene]
    point_index: list[np.ndarray]
    labels: np.ndarray
    q2d: torch.Tensor
    counts: dict[int, int]
    seed: int

    @classmethod
    def draw(cls, scenes: Sequence[Scene], n_per_class: int, seed: int) -> GeometrySet:
        """Up to ``n_per_class`` paired points per class over ``scenes`` (ignored labels excluded)."""
        rows = [s.first_pairs() for s in scenes]
        points = [s.pairs[r, 0] for s, r in zip(scenes, rows, strict=True)]
        labels = np.concatenate([s.labels[p] for s, p in zip(scenes, points, strict=True)])
        scene_of = np.concatenate([np.full(len(p), i) for i, p in enumerate(points)])
        chosen = balanced_sample(labels, n_per_class, seed=seed, ignore_index=IGNORE_INDEX)
        order = np.sort(chosen.indices)  # scene-major order: features can be read scene by scene
        starts = np.cumsum([0] + [len(p) for p in points])
        point_index, q_parts = [], []
        for i, scene in enumerate(scenes):
            local = order[scene_of[order] == i] - starts[i]
            point_index.append(points[i][local])
            q_parts.append(scene.pair_features(rows[i][local]))
        return cls(list(scenes), point_index, labels[order], torch.cat(q_parts), chosen.counts, seed)

    @torch.no_grad()
    def student_features(self, student: torch.nn.Module, device: torch.device) -> torch.Tensor:
        """``(n, D)`` float32 CPU features of the student (in eval mode) at the set's points.

        Under ``torchrun`` every rank runs the student on its share of the scenes (scene i on rank
        ``i mod W``) and the parts are gathered, in scene order, on every rank; call it on all ranks.
        """
        was_training = student.training
        student.eval()
        mine = {}
        for i in range(dist.rank(), len(self.scenes), dist.world_size()):
            if len(self.point_index[i]):
                points, batch, _ = batch_tensors([self.scenes[i]], device)
                index = torch.from_numpy(self.point_index[i]).to(device)
                mine[i] = student(points, batch)[index].float().cpu()
        student.train(was_training)
        parts = {i: f for gathered in dist.all_gather_objects(mine) for i, f in gathered.items()}
        return torch.cat([parts[i] for i in sorted(parts)])

    def geometry(self, k3d: torch.Tensor, t: float = 2.0) -> dict[str, float]:
        """:func:`geomstruct.metrics.geometry` of ``k3d`` against the set's 2D features."""
        return geometry(k3d, self.q2d, self.labels, t=t)


def half_precision(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded to float16 and back to float32: the values ``features.npz`` stores, so that the geometry
    recomputed from the file equals the geometry in ``metrics.json``."""
    return x.to(torch.float16).to(torch.float32)
