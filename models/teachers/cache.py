"""Teacher feature cache: patch-grid features of every camera image, computed once per dataset and teacher.

Layout::

    <root>/<dataset>/<teacher identity>/manifest.json
    <root>/<dataset>/<teacher identity>/<quoted scan id>.npy     (n_cameras, D, h, w) float16

One file per sample, written to a temporary file in the same folder and moved into place with ``os.replace``
(atomic on POSIX and Windows), so a file that exists is complete. The manifest records the teacher identity,
dimension, stride, grid, camera names and the ids written; it is rewritten atomically every ``manifest_every``
samples and at the end, and reconciled with the files on disk when a fill resumes. Training reads the
features back (:meth:`FeatureCache.load`, memory-mapped) and samples them at paired pixels with
:func:`~models.teachers.base.sample`, so distillation never runs the 2D network.

CLI::

    python -m models.teachers.cache --root cache/features --dataset synthetic --split val --teacher synthetic
    python -m models.teachers.cache --root cache/features --dataset nuscenes --dataroot /data/nuscenes \\
        --split val --teacher clip --clip-checkpoint /models/ViT-B-16.pt --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import torch
from tqdm import tqdm

from bench.data.base import ScanDataset
from models.teachers.base import Teacher, build_teacher

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class FeatureCache:
    """The cached features of one dataset under one teacher identity.

    Args:
        root: cache root folder.
        dataset: dataset key (e.g. ``"synthetic"``, ``"nuscenes"``); scan ids must be unique within it.
        teacher_identity: :attr:`Teacher.identity` of the teacher that computes (computed) the features.
    """

    def __init__(self, root: str | Path, dataset: str, teacher_identity: str) -> None:
        self.dataset = dataset
        self.teacher_identity = teacher_identity
        self.folder = Path(root) / quote(dataset, safe="") / quote(teacher_identity, safe="")

    def path(self, scan_id: str) -> Path:
        """File of sample ``scan_id`` (the id percent-quoted, so ``08/000123`` is a valid file name)."""
        return self.folder / f"{quote(scan_id, safe='')}.npy"

    def has(self, scan_id: str) -> bool:
        """Whether the features of ``scan_id`` are cached."""
        return self.path(scan_id).is_file()

    def manifest(self) -> dict[str, Any]:
        """The manifest (an error if the cache has never been filled)."""
        path = self.folder / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"no feature cache manifest at {path}")
        return json.loads(path.read_text())

    def load(self, scan_id: str, mmap: bool = True) -> np.ndarray:
        """Features ``(n_cameras, D, h, w)`` float16 of ``scan_id`` (memory-mapped by default)."""
        path = self.path(scan_id)
        if not path.is_file():
            raise KeyError(f"{scan_id!r} is not in the feature cache {self.folder}")
        return np.load(path, mmap_mode="r" if mmap else None)

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        data = (json.dumps(manifest, indent=1) + "\n").encode()
        _atomic_write(self.folder / MANIFEST, lambda handle: handle.write(data))

    def _start_manifest(self, teacher: Teacher, ids: Sequence[str]) -> dict[str, Any]:
        path = self.folder / MANIFEST
        header = {
            "format": FORMAT_VERSION,
            "dataset": self.dataset,
            "teacher": teacher.identity,
            "teacher_name": teacher.name,
            "dim": teacher.dim,
            "stride": teacher.stride,
            "dtype": "float16",
        }
        if path.is_file():
            manifest = json.loads(path.read_text())
            clash = {k: (manifest.get(k), v) for k, v in header.items() if manifest.get(k) != v}
            if clash:
                raise ValueError(f"feature cache {self.folder} was written with different settings: {clash}")
        else:
            manifest = {**header, "samples": {}}
        on_disk = {i: self.path(i).name for i in ids if self.has(i)}
        manifest["samples"] = {**manifest.get("samples", {}), **on_disk}
        manifest["complete"] = False
        return manifest

    def fill(
        self,
        dataset: ScanDataset,
        teacher: Teacher,
        progress: bool = True,
        max_new: int | None = None,
        manifest_every: int = 50,
    ) -> int:
        """Compute and store the features of every sample of ``dataset`` not cached yet.

        Args:
            dataset: the samples (any :class:`~bench.data.base.ScanDataset`).
            teacher: must have identity :attr:`teacher_identity`.
            progress: show a tqdm progress bar.
            max_new: stop after writing this many new samples (resume later by calling again).
            manifest_every: rewrite the manifest after this many new samples.

        Returns:
            The number of samples written by this call.
        """
        if teacher.identity != self.teacher_identity:
            raise ValueError(f"teacher {teacher.identity} does not match the cache's identity {self.teacher_identity}")
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob(".*.tmp"):  # left by a process killed mid-write
            stale.unlink()
        manifest = self._start_manifest(teacher, dataset.ids)
        self._write_manifest(manifest)
        todo = [i for i in dataset.ids if not self.has(i)]
        if max_new is not None:
            todo = todo[:max_new]
        written = 0
        for scan_id in tqdm(todo, desc=f"{teacher.name} features {self.dataset}", disable=not progress):
            scan = dataset.load(scan_id)
            feats = teacher.scan_features(scan).detach().to("cpu", dtype=torch.float16).numpy()
            _atomic_write(self.path(scan_id), lambda handle, a=feats: np.save(handle, a))
            manifest["samples"][scan_id] = self.path(scan_id).name
            manifest.setdefault("cameras", [view.name for view in scan.cameras])
            manifest.setdefault("grid", list(feats.shape[-2:]))
            written += 1
            if written % manifest_every == 0:
                self._write_manifest(manifest)
        manifest["complete"] = all(i in manifest["samples"] for i in dataset.ids)
        self._write_manifest(manifest)
        return written


def build_dataset(args: argparse.Namespace) -> ScanDataset:
    """The dataset named on the command line."""
    if args.dataset == "synthetic":
        from bench.data.synthetic import SyntheticDataset

        sizes = None if args.size is None else {args.split: args.size}
        return SyntheticDataset(args.dataroot, args.split, variant=args.variant, sizes=sizes)
    if args.dataset == "nuscenes":
        from bench.data.nuscenes import NuScenesDataset

        return NuScenesDataset(args.dataroot, split=args.split, version=args.version)
    if args.dataset == "semantickitti":
        from bench.data.semantickitti import SemanticKITTIDataset

        return SemanticKITTIDataset(args.dataroot, split=args.split)
    raise ValueError(f"unknown dataset {args.dataset!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.teachers.cache",
        description="Fill the teacher feature cache of a dataset split (resumes where a previous run stopped).",
    )
    parser.add_argument("--root", type=Path, required=True, help="cache root folder")
    parser.add_argument("--dataset", choices=["synthetic", "nuscenes", "semantickitti"], default="synthetic")
    parser.add_argument("--split", default="val")
    parser.add_argument(
        "--dataroot", type=Path, default=Path("cache/synthetic"), help="dataset root (synthetic: its scene cache)"
    )
    parser.add_argument("--variant", default="nuscenes", help="synthetic world variant")
    parser.add_argument("--size", type=int, default=None, help="synthetic: scenes in the split")
    parser.add_argument("--version", default="v1.0-trainval", help="nuScenes version")
    parser.add_argument("--teacher", choices=["synthetic", "clip"], default="synthetic")
    parser.add_argument("--clip-arch", default="ViT-B-16")
    parser.add_argument("--clip-checkpoint", type=Path, default=None, help="local CLIP weights (required for clip)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--limit", type=int, default=None, help="write at most this many new samples")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.teacher == "clip":
        if args.clip_checkpoint is None:
            parser.error("--teacher clip needs --clip-checkpoint (a local weight file; nothing is downloaded)")
        teacher = build_teacher("clip", args.device, arch=args.clip_arch, checkpoint=args.clip_checkpoint)
    else:
        teacher = build_teacher("synthetic", args.device)
    dataset = build_dataset(args)
    cache = FeatureCache(args.root, dataset.name, teacher.identity)
    written = cache.fill(dataset, teacher, progress=not args.no_progress, max_new=args.limit)
    done = len(cache.manifest()["samples"])
    print(f"{cache.folder}: wrote {written}, {done}/{len(dataset)} samples cached")
    return 0


if __name__ == "__main__":
    sys.exit(main())
