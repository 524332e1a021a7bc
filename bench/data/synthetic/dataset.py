"""The synthetic world as a dataset: scenes generated on first use into a cache folder and read back.

Scene ids are ``"<variant>-<seed>"``; the train split uses seeds ``0 .. n-1``, val seeds
``VAL_SEED_OFFSET + i`` and test seeds ``TEST_SEED_OFFSET + i`` (disjoint). ``train_1pct`` is every 100th train
scene (SLidR's rule, :func:`bench.data.fewshot.few_shot_ids`); ``train_1pct@j`` is 1% subset ``j``, as many train
scenes drawn with seed ``j`` (:func:`bench.data.fewshot.subset_ids`). Default sizes mirror nuScenes' scene counts
(700 train / 150 val / 150 test scenes), one keyframe per scene.

Cache layout: ``<cache>/<variant>-<config hash>/<scene id>.npz`` holding the points, labels and per camera the
image, class map, instance map (uint16) and depth (float16); the hash covers every generation parameter and
the generator version, so changing a parameter never reads stale scenes. Writes are atomic (temporary file
then rename).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench.data.base import ScanDataset, unknown_split_error
from bench.data.classes import NUSCENES_CLASSES
from bench.data.fewshot import few_shot_ids, few_shot_subset, subset_ids
from bench.data.scan import CameraView, Scan, project_points
from bench.data.synthetic.generate import VARIANTS, SyntheticConfig, generate_scene
from bench.files import write_npz

GENERATOR_VERSION = 1
"""Bump when the generator's output changes for the same parameters."""
DEFAULT_SIZES = {"train": 700, "val": 150, "test": 150}
VAL_SEED_OFFSET = 1_000_000
TEST_SEED_OFFSET = 2_000_000
_OFFSETS = {"train": 0, "val": VAL_SEED_OFFSET, "test": TEST_SEED_OFFSET}


def synthetic_ids(variant: str, split: str, size: int) -> list[str]:
    """Scene ids of a base split (``train``, ``val`` or ``test``) of ``size`` scenes."""
    return [f"{variant}-{_OFFSETS[split] + i:06d}" for i in range(size)]


def config_hash(config: SyntheticConfig) -> str:
    """Short hash of every generation parameter and the generator version."""
    text = repr((GENERATOR_VERSION, asdict(config)))
    return hashlib.sha1(text.encode()).hexdigest()[:10]


class SyntheticDataset(ScanDataset):
    """Synthetic scenes of one split, generated into ``cache`` on first use.

    Args:
        cache: cache folder (created if needed).
        split: ``train``, ``val``, ``test``, ``train_1pct`` or ``train_1pct@j`` (1% subset ``j``).
        variant: ``"nuscenes"`` or ``"ood"``.
        sizes: scenes per base split (default :data:`DEFAULT_SIZES`).
        config: generation parameters (default: the variant's).
        progress: show a progress bar while generating.
    """

    name = "synthetic"
    classes = NUSCENES_CLASSES
    vocabulary = "nuscenes"

    def __init__(
        self,
        cache: str | Path,
        split: str = "train",
        variant: str = "nuscenes",
        sizes: dict[str, int] | None = None,
        config: SyntheticConfig | None = None,
        progress: bool = True,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown synthetic variant {variant!r}; known variants: {', '.join(VARIANTS)}")
        sizes = {**DEFAULT_SIZES, **(sizes or {})}
        subset = few_shot_subset(split)
        if split in _OFFSETS:
            ids = synthetic_ids(variant, split, sizes[split])
        elif subset is not None:
            train = synthetic_ids(variant, "train", sizes["train"])
            ids = subset_ids(few_shot_ids(train), train, subset)
        else:
            raise unknown_split_error("synthetic", split, [*_OFFSETS, "train_1pct", "train_1pct@j"])
        self.variant = variant
        self.config = config if config is not None else VARIANTS[variant]
        self.folder = Path(cache) / f"{variant}-{config_hash(self.config)}"
        super().__init__(split, ids)
        self.generate_missing(progress)

    @property
    def cache_key(self) -> str:
        """``synthetic-<variant>-<generator hash>``: scenes of another generator configuration are other scans."""
        return f"synthetic-{self.folder.name}"

    def path(self, scan_id: str) -> Path:
        """Cache file of scene ``scan_id``."""
        return self.folder / f"{scan_id}.npz"

    def generate_missing(self, progress: bool = True) -> None:
        """Generate and cache every scene of the split that is not cached yet."""
        missing = [i for i in self.ids if not self.path(i).is_file()]
        if not missing:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for scan_id in tqdm(missing, desc=f"synthetic {self.variant} {self.split}", disable=not progress):
            seed = int(scan_id.rsplit("-", 1)[1])
            save_scan(generate_scene(seed, self.variant, self.config), self.path(scan_id))

    def load(self, scan_id: str) -> Scan:
        """Read scene ``scan_id`` from the cache (pairings are recomputed from the stored calibration)."""
        return load_scan(self.path(scan_id), self.config)

    def load_geometry(self, scan_id: str) -> Scan:
        """Scene ``scan_id`` without its rendered images and maps (about half the time of :meth:`load`)."""
        return load_scan(self.path(scan_id), self.config, pixels=False)


def save_scan(scan: Scan, path: Path) -> None:
    """Write a synthetic scan atomically as a compressed ``.npz``, with the mode ``open()`` would give it
    (:func:`bench.files.write_bytes`: readable by others under the usual umask, like every file of the harness)."""
    arrays: dict[str, np.ndarray] = {"points": scan.points, "labels": scan.labels.astype(np.uint8)}
    for k, cam in enumerate(scan.cameras):
        arrays[f"image_{k}"] = cam.image
        arrays[f"class_map_{k}"] = cam.class_map
        arrays[f"instance_map_{k}"] = cam.instance_map.astype(np.uint16)
        arrays[f"depth_{k}"] = cam.depth.astype(np.float16)
    write_npz(path, **arrays)


def load_scan(path: Path, config: SyntheticConfig, pixels: bool = True) -> Scan:
    """Read a scan written by :func:`save_scan` with the rig of ``config``; ``pixels=False`` leaves out the
    cameras' image, class map, instance map and depth (their decompression is 40% of a read)."""
    if not path.is_file():
        raise FileNotFoundError(f"synthetic scene not in the cache: {path}")
    with np.load(path) as data:
        points = data["points"]
        labels = data["labels"].astype(np.int64)
        cameras = []
        for k, spec in enumerate(config.rig.cameras):
            calib = config.rig.calibration(spec)
            proj = project_points(points, calib, min_depth=config.min_depth, margin=config.margin)
            cameras.append(
                CameraView(
                    name=spec.name,
                    calibration=calib,
                    pairing=proj.pairing(),
                    class_map=data[f"class_map_{k}"] if pixels else None,
                    instance_map=data[f"instance_map_{k}"].astype(np.int32) if pixels else None,
                    depth=data[f"depth_{k}"].astype(np.float32) if pixels else None,
                    _image=data[f"image_{k}"] if pixels else None,
                )
            )
    return Scan(scan_id=path.stem, points=points, labels=labels, cameras=cameras, classes=NUSCENES_CLASSES)
