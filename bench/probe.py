"""Class-balanced point sets for the geometry of a student against the teacher (docs/method.md#point-set).

A :class:`GeometrySet` is drawn from the paired points of some scans (choice: only points that project into
a camera, so both the 3D and the 2D feature exist; one pixel per point, its first pairing): up to
``n_per_class`` points of every class (:func:`geomstruct.sampling.balanced_sample`, fixed seed). It is drawn by
streaming the scans twice (labels of the paired points, then the teacher's features of the chosen points) and
keeps only the chosen points (their scans, indices, labels and 2D features), so its memory is bounded by
``n_per_class x classes`` whatever the number of scans (plus one byte per paired point of pass 1). Under
``torchrun`` both passes are split over the ranks and gathered, so the set is the same on every rank.
:meth:`GeometrySet.student_features` streams the scans again through a student and reads its 3D features at
the same points (split over the ranks under ``torchrun`` and gathered). The trainer's trajectory probe and the
final geometry both use it.

Without labels (a nuScenes dataroot without lidarseg) the set is a uniform sample of
``n_per_class x n_classes`` paired points (same seed) and only the label-free geometry is measured
(U, G, A and U of the 2D side; T, ΔT and S are None). The structure metrics (CKA, mutual k-NN, effective
ranks, :mod:`geomstruct.structure`) need no labels and are measured on both kinds of set.

The teacher's side of the geometry (U and T of the 2D features, their mutual k-NN neighbours) is the same for
every student measured on the same set; it is computed once per process and point set (keyed by the content
of the 2D features and labels, :class:`TeacherSides`, held by the process's :class:`bench.workspace.Workspace`)
and reused: every run of a process after the first skips the
teacher's uniformity (a sizeable share of the geometry's time) and its k-NN search. The values are
those a fresh computation gives.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bench import distributed as dist
from bench.data.classes import IGNORE_INDEX
from bench.data.loader import SceneDataset, ShardSampler, scene_loader
from geomstruct.metrics import alignment, geometry, modality_gap, tolerance, uniformity
from geomstruct.sampling import balanced_sample
from geomstruct.structure import DEFAULT_K, MKNN_QUERIES, knn_neighbours, query_sample, structure
from models.students import point_outputs

TEACHER_SIDE_ENTRIES = 4
"""Point sets whose teacher side a :class:`TeacherSides` keeps (the final set, the probe set, an OOD set...)."""


class TeacherSides:
    """The 2D side of the geometry of the last ``capacity`` point sets, memoised: held by the process's
    :class:`bench.workspace.Workspace` and handed to every :class:`GeometrySet` it draws, so every run of a
    process after the first reuses it (the least recently used set dropped first)."""

    def __init__(self, capacity: int = TEACHER_SIDE_ENTRIES) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple, dict[str, Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every point set."""
        self._entries.clear()

    def get(self, q2d: torch.Tensor, labels: np.ndarray | None, t: float, seed: int, structure_too: bool) -> dict:
        """``U_2d``, ``T_2d`` (None without labels) and, when ``structure_too``, ``neighbours_2d`` (the teacher's
        k-NN of the query rows of :func:`geomstruct.structure.structure` with ``MKNN_QUERIES`` and ``seed``; None
        when the set is too small) of the set ``(q2d, labels)``, keyed by their content."""
        digest = hashlib.sha256(q2d.detach().cpu().numpy().tobytes())
        if labels is not None:
            digest.update(np.ascontiguousarray(labels).tobytes())
        key = (digest.hexdigest(), tuple(q2d.shape), t, seed)
        entry = self._entries.get(key)
        if entry is None:
            entry = {"U_2d": uniformity(q2d, t=t), "T_2d": None if labels is None else tolerance(q2d, labels)}
            self._entries[key] = entry
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        self._entries.move_to_end(key)
        if structure_too and "neighbours_2d" not in entry:
            n = q2d.shape[0]
            rows = query_sample(n, MKNN_QUERIES, seed)
            entry["neighbours_2d"] = knn_neighbours(q2d, DEFAULT_K, rows) if n > DEFAULT_K else None
        return entry


@dataclass
class GeometrySet:
    """Chosen points: the scans holding them (positions in ``data``), per scan the point indices, the points'
    labels and the teacher's 2D features, in scan order; ``sides`` memoises the teacher's side of the geometry
    (None: computed afresh at every call)."""

    data: SceneDataset
    positions: list[int]
    point_index: list[np.ndarray]
    labels: np.ndarray
    q2d: torch.Tensor
    counts: dict[int, int]
    seed: int
    labelled: bool
    sides: TeacherSides | None = None

    @classmethod
    def draw(
        cls,
        data: SceneDataset,
        n_per_class: int,
        seed: int,
        n_classes: int,
        workers: int = 0,
        sides: TeacherSides | None = None,
    ) -> GeometrySet:
        """Up to ``n_per_class`` paired points per class over the scans of ``data`` (ignored labels excluded);
        ``sides``: the memo of the teacher's side of the geometry (:class:`TeacherSides`)."""
        mine = list(range(len(data)))[dist.rank() :: dist.world_size()]  # pass 1, split over the ranks
        labels_mine = {}
        loader = scene_loader(data.without_features(), ShardSampler(len(data)), workers)
        for position, batch in zip(mine, loader, strict=True):
            scene = batch.scenes[0]
            labels_mine[position] = scene.labels[scene.pairs[scene.first_pairs(), 0]].astype(np.uint8)
        labels_by = {p: a for part in dist.all_gather_objects(labels_mine) for p, a in part.items()}
        labels_of = [labels_by[p] for p in range(len(data))]
        labels = np.concatenate(labels_of) if labels_of else np.zeros(0, dtype=np.uint8)
        labelled = bool((labels != IGNORE_INDEX).any())
        if labelled:
            chosen = balanced_sample(labels, n_per_class, seed=seed, ignore_index=IGNORE_INDEX)
            indices, counts = chosen.indices, chosen.counts
        else:
            take = min(len(labels), n_per_class * n_classes)
            indices = np.random.default_rng(seed).choice(len(labels), size=take, replace=False)
            counts = {}
        order = np.sort(indices)  # scan-major order: features can be read scan by scan
        starts = np.cumsum([0] + [len(x) for x in labels_of])
        scan_of = np.searchsorted(starts, order, side="right") - 1
        positions = np.unique(scan_of).tolist()
        local = {p: order[scan_of == p] - starts[p] for p in positions}
        offsets = dict(zip(positions, np.cumsum([0] + [len(local[p]) for p in positions]).tolist(), strict=False))
        mine = positions[dist.rank() :: dist.world_size()]  # pass 2 (teacher features), split over the ranks
        index_mine: dict[int, np.ndarray] = {}
        rows_mine = np.concatenate([offsets[p] + np.arange(len(local[p])) for p in mine]) if mine else np.zeros(0, int)
        q_mine = torch.zeros(0, 0)
        filled = 0
        for position, batch in zip(mine, scene_loader(data, ShardSampler(len(data), positions), workers), strict=True):
            scene = batch.scenes[0]
            rows = scene.first_pairs()[local[position]]
            index_mine[position] = scene.pairs[rows, 0]
            q = scene.pair_features(rows)
            if not q_mine.numel():  # one allocation (pieces kept between per-scan temporaries fragment the heap)
                q_mine = torch.empty(len(rows_mine), q.shape[1])
            q_mine[filled : filled + len(rows)] = q
            filled += len(rows)
        index_by = {p: a for part in dist.all_gather_objects(index_mine) for p, a in part.items()}
        point_index = [index_by[p] for p in positions]
        if dist.active():
            width = max(int(w) for w in dist.all_gather_objects(q_mine.shape[1]))
            q_mine = q_mine if q_mine.shape[1] else torch.zeros(0, width)
            q2d = torch.empty(len(order), width)
            for part, part_rows in zip(dist.all_gather_rows(q_mine), dist.all_gather_objects(rows_mine), strict=True):
                q2d[torch.from_numpy(np.asarray(part_rows, dtype=np.int64))] = part
        else:
            q2d = q_mine
        return cls(data, positions, point_index, labels[order].astype(np.int64), q2d, counts, seed, labelled, sides)

    @torch.no_grad()
    def student_features(self, student: torch.nn.Module, device: torch.device, workers: int = 0) -> torch.Tensor:
        """``(n, D)`` float32 CPU features of the student (in eval mode) at the set's points.

        Under ``torchrun`` every rank runs the student on its share of the scans (the ``i``-th scan of the set
        on rank ``i mod W``) and the parts are gathered, in scan order, on every rank; call it on all ranks.
        """
        was_training = student.training
        student.eval()
        slots = list(range(len(self.positions)))[dist.rank() :: dist.world_size()]
        starts = np.cumsum([0] + [len(p) for p in self.point_index])
        rows = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in slots]) if slots else np.zeros(0, int)
        sampler = ShardSampler(len(self.data), [self.positions[i] for i in slots], shard=False)
        data = self.data.without_features()
        mine = torch.zeros(len(rows), self.q2d.shape[1])  # one allocation for this rank's share
        filled = 0
        for slot, batch in zip(slots, scene_loader(data, sampler, workers, device), strict=True):
            index = torch.from_numpy(self.point_index[slot]).to(device)
            out = point_outputs(student, *batch.inputs(device), index=index)
            mine[filled : filled + len(index)] = out.float().cpu()
            filled += len(index)
        student.train(was_training)
        if not dist.active():
            return mine
        out = torch.empty(int(starts[-1]), self.q2d.shape[1])
        for part, part_rows in zip(dist.all_gather_rows(mine), dist.all_gather_objects(rows), strict=True):
            out[torch.from_numpy(np.asarray(part_rows, dtype=np.int64))] = part
        return out

    def geometry(self, k3d: torch.Tensor, t: float = 2.0, with_structure: bool = True) -> dict[str, float | None]:
        """:func:`geomstruct.metrics.geometry` of ``k3d`` against the set's 2D features (label-free part only
        when the set has no labels) and, when ``with_structure``, :func:`geomstruct.structure.structure` (CKA,
        mutual k-NN, effective ranks, collapse flag; none of them needs labels). The mutual k-NN averages over
        ``MKNN_QUERIES`` (10 000) query points drawn with the set's seed, neighbours among all its points: exact
        up to 10 000 points, above that an unbiased estimate with its standard error ``mknn_se``. Its cost is
        measured by ``benchmarks/test_bench_structure.py``. ``with_structure=False`` skips it (e.g. for a
        trajectory that records U, T, G only).
        """
        sides = self.sides if self.sides is not None else TeacherSides(capacity=1)
        side = sides.get(self.q2d, self.labels if self.labelled else None, t, self.seed, with_structure)
        if self.labelled:
            reference = (side["U_2d"], side["T_2d"])
            geo: dict[str, float | None] = geometry(k3d, self.q2d, self.labels, t=t, reference=reference)
        else:
            u3, u2 = uniformity(k3d, t=t), side["U_2d"]
            g, a = modality_gap(k3d, self.q2d), alignment(k3d, self.q2d)
            geo = {"U": u3, "T": None, "G": g, "A": a, "dU": u3 - u2, "dT": None, "S": None, "U_2d": u2, "T_2d": None}
        if with_structure:
            neighbours = side["neighbours_2d"]
            geo.update(structure(k3d, self.q2d, mknn_queries=MKNN_QUERIES, seed=self.seed, neighbours_2d=neighbours))
        return geo


def half_precision(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded to float16 and back to float32: the values ``features.npz`` stores, so that the geometry
    recomputed from the file equals the geometry in ``metrics.json``."""
    return x.to(torch.float16).to(torch.float32)
