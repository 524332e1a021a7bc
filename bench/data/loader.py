"""Scans as the harness streams them: one ``torch.utils.data`` path for every dataset (docs/data.md#streaming).

:class:`SceneDataset` is a ``torch.utils.data.Dataset`` of the scan ids of one split whose items are
:class:`~bench.data.scene.Scene` s read on demand (from the dataset's files and the feature cache), so resident
memory does not grow with the number of scans: each process keeps at most ``scan_cache`` cropped scans (points,
labels, pairing) in memory, the least recently read dropped first (:data:`SCAN_CACHE`; a scan read again is not
decompressed and projected again). For the region losses (a :class:`bench.data.superpixels.SuperpixelCache`
given) every item also carries the superpixel of every pair and the teacher feature of every superpixel
(:func:`bench.data.superpixels.scene_regions`), computed in the DataLoader workers; with an augmentation
(:mod:`bench.data.augment`) an item requested as ``(index, seed)`` is augmented.

:func:`scene_loader` batches them with :func:`~bench.data.scene.collate_scenes` in a ``DataLoader`` (worker
processes, pinned memory on CUDA) under one of two batch samplers: :class:`StepSampler` (the scans of training step
``t`` drawn by a generator seeded with ``(seed, t)``, so a resumed run reads exactly what an uninterrupted one
reads; under ``torchrun`` rank ``r`` takes scans ``r, r + W, ...`` of every step) and :class:`ShardSampler` (one
pass over given scans, one scan per batch, scan ``i`` of the list on rank ``i mod W``). The synthetic world,
nuScenes and SemanticKITTI all go through it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from bench import distributed as dist
from bench.data.augment import Augmentation, augment
from bench.data.base import ScanDataset
from bench.data.features import FeatureCache
from bench.data.scene import Scene, collate_scenes, crop_scan
from bench.data.superpixels import SuperpixelCache, scene_regions

SCAN_CACHE = 64
"""Cropped scans a :class:`SceneDataset` (and its views) keeps per process, least recently read first out: the synthetic
train split (40 scans) is read and projected once per process instead of twice per step; at nuScenes scale the bound
keeps memory flat (a cropped scan is about 1-2 MB). Never changes a result: the cached arrays are read-only and every
item copies what it changes."""


class SceneDataset(Dataset):
    """The scans of one split as :class:`Scene` items, read on demand.

    Args:
        dataset: the split's scans (any :class:`~bench.data.base.ScanDataset`).
        crop_radius: horizontal crop in metres (None: every point).
        cache: the teacher's feature cache, filled for every id (None: items without teacher grids).
        ids: a subset of the dataset's ids (default: all, in the dataset's order).
        augmentation: a :class:`bench.data.augment.Augmentation` applied to items requested as ``(index, seed)``.
        superpixels: the superpixel cache, filled for every id (region losses; needs ``cache``).
        pixel_norm: superpixel features average L2-normalised teacher pixels (SLidR; False: raw pixels,
            :func:`bench.data.superpixels.region_features`).
        scan_cache: cropped scans kept in memory (:data:`SCAN_CACHE`; 0: none), shared with the views of this
            dataset (:meth:`head`, :meth:`without_features`, ...) and not sent to DataLoader workers (each
            worker fills its own).
    """

    def __init__(
        self,
        dataset: ScanDataset,
        crop_radius: float | None,
        cache: FeatureCache | None = None,
        ids: Sequence[str] | None = None,
        augmentation: Augmentation | None = None,
        superpixels: SuperpixelCache | None = None,
        scan_cache: int = SCAN_CACHE,
        pixel_norm: bool = True,
    ) -> None:
        if superpixels is not None and cache is None:
            raise ValueError("superpixel regions need the teacher's feature cache")
        self.dataset = dataset
        self.crop_radius = crop_radius
        self.cache = cache
        self.ids = list(dataset.ids if ids is None else ids)
        self.augmentation = augmentation
        self.superpixels = superpixels
        self.pixel_norm = pixel_norm
        self.scan_cache = scan_cache
        self._scans: OrderedDict[str, tuple[Any, ...]] = OrderedDict()
        self._regions: OrderedDict[tuple[str, str, bool], tuple[np.ndarray, torch.Tensor]] = OrderedDict()

    def _copy(self, **changes: Any) -> SceneDataset:
        args = {
            "cache": self.cache,
            "ids": self.ids,
            "augmentation": self.augmentation,
            "superpixels": self.superpixels,
            "pixel_norm": self.pixel_norm,
        }
        view = SceneDataset(self.dataset, self.crop_radius, **(args | changes), scan_cache=self.scan_cache)
        view._scans = self._scans  # the same scans, cropped alike: one cache
        view._regions = self._regions  # keyed by the superpixel cache's folder too
        return view

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_scans"] = OrderedDict()  # a DataLoader worker starts with an empty cache of its own
        state["_regions"] = OrderedDict()
        return state

    def _cropped(self, scan_id: str) -> tuple[Any, ...]:
        """``(scan id, points, labels, pairs, image sizes, has cameras)`` of the cropped scan, from the cache when
        there."""

        def build() -> tuple[Any, ...]:
            scan = self.dataset.load_geometry(scan_id)  # an item needs no pixels
            points, labels, pairs = (_read_only(a) for a in crop_scan(scan, self.crop_radius))  # shared by items
            return scan.scan_id, points, labels, pairs, tuple(cam.size for cam in scan.cameras), bool(scan.cameras)

        return _cached(self._scans, scan_id, build, self.scan_cache)

    def _scene_regions(self, scene: Scene, augmented: bool) -> tuple[np.ndarray, torch.Tensor]:
        """``(pair_regions, region_feats)`` of a scene (:func:`bench.data.superpixels.scene_regions`), kept per
        scan like the cropped scans when the scene is not augmented (its pairs and teacher grids are then the
        scan's own; rebuilding the regions is a sizeable share of a SLidR step)."""

        def build() -> tuple[np.ndarray, torch.Tensor]:
            labels = self.superpixels.load(scene.scan_id)
            regions, feats = scene_regions(labels, scene.pairs, scene.grids, self.pixel_norm)
            return _read_only(regions), feats

        if augmented:
            return build()
        key = (scene.scan_id, str(self.superpixels.folder), self.pixel_norm)
        return _cached(self._regions, key, build, self.scan_cache)

    def augmented(self, augmentation: Augmentation) -> SceneDataset:
        """The same scans, each augmented (:func:`bench.data.augment.augment`, a
        :class:`bench.data.augment.Augmentation`) when it is requested as ``(index, seed)`` (:class:`StepSampler`
        with ``seeded=True``)."""
        return self._copy(augmentation=augmentation)

    def with_superpixels(self, superpixels: SuperpixelCache, pixel_norm: bool = True) -> SceneDataset:
        """The same scans with superpixel regions (a filled :class:`bench.data.superpixels.SuperpixelCache`), whose
        features average L2-normalised teacher pixels (``pixel_norm``, SLidR's) or raw ones."""
        return self._copy(superpixels=superpixels, pixel_norm=pixel_norm)

    def head(self, n: int | None) -> SceneDataset:
        """The first ``n`` scans (all when ``n`` is None), without augmentation or superpixels."""
        return self._copy(ids=self.ids[:n] if n is not None else self.ids, augmentation=None, superpixels=None)

    def without_features(self) -> SceneDataset:
        """The same scans without teacher grids (cheaper items)."""
        return self._copy(cache=None, augmentation=None, superpixels=None)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: int | tuple[int, int]) -> Scene:
        index, seed = key if isinstance(key, tuple) else (key, None)
        scan_id, points, labels, pairs, sizes, has_cameras = self._cropped(self.ids[index])
        grids = None
        if self.cache is not None and has_cameras:
            grids = torch.from_numpy(np.array(self.cache.load(scan_id)))
        scene = Scene(scan_id, points, labels, pairs, grids, sizes)
        augmented = self.augmentation is not None and seed is not None
        if augmented:
            scene = augment(scene, self.augmentation, seed)
        if self.superpixels is not None and grids is not None:
            scene.pair_regions, scene.region_feats = self._scene_regions(scene, augmented)
        return scene


def _cached(cache: OrderedDict, key: Any, build: Callable[[], Any], capacity: int) -> Any:
    """``cache[key]``, built by ``build()`` when absent and kept (at most ``capacity`` entries, the least recently
    used dropped first; ``capacity`` 0 keeps nothing)."""
    hit = cache.get(key)
    if hit is not None:
        cache.move_to_end(key)
        return hit
    entry = build()
    if capacity > 0:
        cache[key] = entry
        while len(cache) > capacity:
            cache.popitem(last=False)
    return entry


def _read_only(array: np.ndarray) -> np.ndarray:
    """A read-only view of ``array`` (the array itself stays writable)."""
    view = array.view()
    view.flags.writeable = False
    return view


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A CPU generator that depends only on ``(seed, step, stream)``."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 101 + stream) % (2**63))


class StepSampler(Sampler[list[int]]):
    """Scans of steps ``start + 1 .. steps``: ``randperm(n, step_generator(seed, t, stream))[:batch_size]``.

    With ``shard=True`` (the distillation trainer under ``torchrun``) rank ``r`` of ``W`` yields positions
    ``r, r + W, ...`` of every step's draw; otherwise every rank yields the whole draw. With ``seeded=True`` every
    position comes as ``(position, augmentation seed)``, the seed a function of ``(seed, step, position)`` only.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        start: int,
        steps: int,
        stream: int = 0,
        shard: bool = True,
        seeded: bool = False,
    ) -> None:
        if n < 1:
            raise ValueError("a training split needs at least one scan")
        self.n, self.batch_size, self.seed, self.stream = n, batch_size, seed, stream
        self.start, self.steps, self.seeded = start, steps, seeded
        self.rank, self.world = (dist.rank(), dist.world_size()) if shard else (0, 1)

    def __len__(self) -> int:
        return max(self.steps - self.start, 0)

    def __iter__(self) -> Iterator[list]:
        for step in range(self.start + 1, self.steps + 1):
            order = torch.randperm(self.n, generator=step_generator(self.seed, step, self.stream))[: self.batch_size]
            mine = order.tolist()[self.rank :: self.world]
            if self.seeded:
                yield [(i, ((self.seed * 1_000_003 + step) * 1_000_033 + i) % 2**63) for i in mine]
            else:
                yield mine


class ShardSampler(Sampler[list[int]]):
    """One pass over ``positions`` (default ``0 .. n-1``), one scan per batch; rank ``r`` of ``W`` takes list
    entries ``r, r + W, ...``."""

    def __init__(self, n: int, positions: Sequence[int] | None = None, shard: bool = True) -> None:
        positions = list(range(n)) if positions is None else list(positions)
        rank, world = (dist.rank(), dist.world_size()) if shard else (0, 1)
        self.positions = positions[rank::world]

    def __len__(self) -> int:
        return len(self.positions)

    def __iter__(self) -> Iterator[list[int]]:
        for position in self.positions:
            yield [position]


def scene_loader(
    data: SceneDataset, sampler: Sampler[list[int]], workers: int = 0, device: torch.device | None = None
) -> DataLoader:
    """A ``DataLoader`` of :class:`SceneBatch` es: ``workers`` processes read scans ahead (2 batches each),
    pinned memory when ``device`` is CUDA."""
    return DataLoader(
        data,
        batch_sampler=sampler,
        collate_fn=collate_scenes,
        num_workers=workers,
        pin_memory=device is not None and device.type == "cuda",
        prefetch_factor=2 if workers else None,
    )
