"""Teacher feature cache: patch-grid features of every camera image, computed once per dataset and teacher.

Layout::

    <root>/<dataset key>/<teacher identity>/manifest.json
    <root>/<dataset key>/<teacher identity>/<quoted scan id>.npy     (n_cameras, D, h, w) float16
    <root>/text/<teacher identity>/<dataset>-<prompt hash>.npy         (C, D) float32 text embeddings

The dataset key is :attr:`bench.data.base.ScanDataset.cache_key` (the synthetic world's includes its generator
hash, so regenerated scenes never read stale features). One file per scan, written to a temporary file in the
same folder and moved into place with ``os.replace`` (atomic on POSIX and Windows), so a file that exists is
complete and an interrupted fill resumes where it stopped (:func:`bench.files.write_bytes`, the harness's one
atomic writer). The manifest records the teacher identity,
dimension, stride, grid, camera names and the ids written. Training reads the features back memory-mapped
(:meth:`FeatureCache.load`) and samples them at paired pixels with :func:`models.teachers.base.sample`, so
distillation never runs the 2D network.

Filling (:meth:`FeatureCache.fill`) runs the teacher's CPU part (:meth:`models.teachers.base.Teacher.preprocessor`:
image decoding, resizing and normalisation, or the synthetic teacher's whole computation) in the workers of a
``torch.utils.data.DataLoader`` and the network on the teacher's device in the main process; under ``torchrun``
the missing scans are split over the ranks (rank ``r`` fills missing scans ``r, r + W, ...``; the folder must be
shared by the ranks, as on one node). Size on disk: ``n_cameras x D x h x w x 2`` bytes per scan (nuScenes with
CLIP ViT-B/16 at 224 x 416: 6 x 512 x 14 x 26 x 2 = 2.24 MB; 76 GB for the 34 149 trainval keyframes).

CLI::

    python -m bench.data.features --root cache/features --dataset synthetic --split val --teacher synthetic
    python -m bench.data.features ... --teacher mypkg.teachers:MyTeacher --teacher-option depth=12   # a plug-in
    python -m bench.data.features --root cache/features --dataset nuscenes --dataroot /data/nuscenes \\
        --version v1.0-trainval --split train --teacher clip --clip-checkpoint /models/ViT-B-16.pt --device cuda \\
        --workers 8
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import torch
import yaml
from tqdm import tqdm

from bench import distributed as dist
from bench.data.base import ScanDataset
from bench.data.registry import add_dataset_arguments, dataset_from_args
from bench.files import locked, remove_stale_temporaries, write_bytes, write_npy
from models.teachers import TEACHERS, Teacher, build_teacher, class_phrases, prompt_templates, zero_shot_classifier

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_LOCK = ".manifest.lock"
TEXT_FOLDER = "text"


def _size(n_bytes: int) -> str:
    """``1.23 GB`` from 1 GB up, else ``12.3 MB``."""
    return f"{n_bytes / 1e9:.2f} GB" if n_bytes >= 1e9 else f"{n_bytes / 1e6:.1f} MB"


@dataclass(frozen=True)
class FillReport:
    """What one :meth:`FeatureCache.fill` did: scans written (by all ranks), seconds, scans cached, bytes."""

    written: int
    seconds: float
    cached: int
    total: int
    bytes_on_disk: int
    workers: int

    @property
    def rate(self) -> float:
        """Scans written per second (0 when nothing was written)."""
        return self.written / self.seconds if self.written and self.seconds > 0 else 0.0

    def summary(self, folder: Path, what: str = "feature cache") -> str:
        """One line for the log: size on disk and fill rate."""
        rate = f", {self.rate:.2f} scans/s with {self.workers} workers" if self.written else ""
        return (
            f"{what} {folder}: {self.cached}/{self.total} scans cached, "
            f"{_size(self.bytes_on_disk)}; wrote {self.written} in {self.seconds:.1f} s{rate}"
        )


class _Prepared(torch.utils.data.Dataset):
    """Scans of ``ids`` turned into the teacher's input by its CPU part (runs in DataLoader workers)."""

    def __init__(self, dataset: ScanDataset, ids: Sequence[str], prepare: Callable) -> None:
        self.dataset, self.ids, self.prepare = dataset, list(ids), prepare

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor, list[str]]:
        scan = self.dataset.load(self.ids[index])
        return scan.scan_id, self.prepare(scan), [view.name for view in scan.cameras]


class FeatureCache:
    """The cached features of one dataset under one teacher identity.

    Args:
        root: cache root folder.
        dataset: dataset key (:attr:`ScanDataset.cache_key`); scan ids must be unique within it.
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
        try:
            return np.load(path, mmap_mode="r" if mmap else None)
        except (ValueError, OSError) as exc:
            raise ValueError(f"{path}: unreadable feature file ({exc}); delete it and run again to recompute") from None

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        write_bytes(self.folder / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())

    def _header(self, teacher: Teacher) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "dataset": self.dataset,
            "teacher": teacher.identity,
            "teacher_name": teacher.name,
            "dim": teacher.dim,
            "stride": teacher.stride,
            "dtype": "float16",
        }

    def _check_manifest(self, teacher: Teacher) -> None:
        path = self.folder / MANIFEST
        if path.is_file():
            manifest = json.loads(path.read_text())
            clash = {k: (manifest.get(k), v) for k, v in self._header(teacher).items() if manifest.get(k) != v}
            if clash:
                raise ValueError(f"feature cache {self.folder} was written with different settings: {clash}")

    def _update_manifest(self, teacher: Teacher, ids: Sequence[str], extra: dict[str, Any]) -> dict[str, Any]:
        """Add the cached ``ids`` to the manifest, under :data:`MANIFEST_LOCK` so that processes filling the same
        cache at once (``bench.run --jobs``, two users) never drop each other's entries."""
        path = self.folder / MANIFEST
        with locked(self.folder / MANIFEST_LOCK):
            manifest = json.loads(path.read_text()) if path.is_file() else {**self._header(teacher), "samples": {}}
            manifest.update({k: v for k, v in extra.items() if k not in manifest})
            manifest["samples"].update({i: self.path(i).name for i in ids if self.has(i)})
            manifest["complete"] = all(i in manifest["samples"] for i in ids)
            self._write_manifest(manifest)
        return manifest

    def fill(
        self,
        dataset: ScanDataset,
        teacher: Teacher,
        workers: int = 0,
        progress: bool = True,
        max_new: int | None = None,
    ) -> FillReport:
        """Compute and store the features of every scan of ``dataset`` not cached yet (call on every rank).

        Args:
            dataset: the scans (any :class:`~bench.data.base.ScanDataset`).
            teacher: must have identity :attr:`teacher_identity`.
            workers: DataLoader worker processes reading and preprocessing scans (0: in this process).
            progress: show a tqdm progress bar.
            max_new: stop after writing this many new scans (resume later by calling again).

        Returns:
            A :class:`FillReport` (size on disk and fill rate).
        """
        if teacher.identity != self.teacher_identity:
            raise ValueError(f"teacher {teacher.identity} does not match the cache's identity {self.teacher_identity}")
        if dist.is_main():
            self.folder.mkdir(parents=True, exist_ok=True)
            self._check_manifest(teacher)
            remove_stale_temporaries(self.folder)
        dist.barrier()
        todo = [i for i in dataset.ids if not self.has(i)]
        if max_new is not None:
            todo = todo[:max_new]
        mine = todo[dist.rank() :: dist.world_size()]
        start = time.perf_counter()
        extra: dict[str, Any] = {}
        if mine:
            loader = torch.utils.data.DataLoader(
                _Prepared(dataset, mine, teacher.preprocessor()),
                batch_size=None,
                num_workers=workers,
                prefetch_factor=2 if workers else None,
            )
            bar = tqdm(loader, total=len(mine), desc=f"{teacher.name} features {dataset.name} {dataset.split}",
                       disable=not progress)  # fmt: skip
            with torch.no_grad():
                for scan_id, prepared, cameras in bar:
                    feats = teacher.encode(prepared).to("cpu", dtype=torch.float16).numpy()
                    write_npy(self.path(scan_id), feats)
                    extra = {"cameras": list(cameras), "grid": list(feats.shape[-2:])}
        seconds = time.perf_counter() - start
        written = int(dist.all_reduce_sum(torch.tensor([len(mine)]))[0])
        gathered = [e for e in dist.all_gather_objects(extra) if e]
        dist.barrier()
        cached = sum(self.has(i) for i in dataset.ids)
        if dist.is_main():
            self._update_manifest(teacher, dataset.ids, gathered[0] if gathered else {})
        sizes = [self.path(i).stat().st_size for i in dataset.ids[:1] if self.has(i)]
        return FillReport(written, seconds, cached, len(dataset.ids), cached * (sizes[0] if sizes else 0), workers)


def text_embeddings(teacher: Teacher, dataset: str, root: str | Path | None) -> torch.Tensor:
    """The zero-shot classifier ``(C, D)`` of ``dataset``'s classes (:func:`zero_shot_classifier`), cached.

    The file ``<root>/text/<teacher identity>/<dataset>-<hash>.npy`` is keyed by the teacher's identity (its
    weights' hash) and a hash of the templates and class phrases, so a change of either recomputes it.
    ``root=None`` computes without caching.
    """
    if root is None:
        return zero_shot_classifier(teacher, dataset).cpu()
    key = json.dumps([prompt_templates(), class_phrases(dataset)], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    path = Path(root) / TEXT_FOLDER / quote(teacher.identity, safe="") / f"{dataset}-{digest}.npy"
    if dist.broadcast_object(path.is_file()):  # one decision for every rank (rank 0 may be writing it)
        return torch.from_numpy(np.load(path))
    text = None
    if dist.is_main():  # computed once, on rank 0, and sent to the other ranks
        text = zero_shot_classifier(teacher, dataset).to("cpu", dtype=torch.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_npy(path, text.numpy())
    return dist.broadcast_object(text)


def _cli_options(args: argparse.Namespace) -> dict[str, Any]:
    """The teacher options of the command line: every ``--teacher-option KEY=VALUE`` (VALUE read as YAML) and the
    CLIP shorthands (``--clip-arch``, ``--clip-checkpoint``, ``--allow-torchscript``) where given."""
    options: dict[str, Any] = {}
    for item in args.teacher_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--teacher-option takes KEY=VALUE; got {item!r}")
        options[key] = yaml.safe_load(value)
    shorthands = {
        "arch": args.clip_arch,
        "checkpoint": args.clip_checkpoint,
        "allow_torchscript": args.allow_torchscript,
    }
    options.update({k: str(v) if isinstance(v, Path) else v for k, v in shorthands.items() if v not in (None, False)})
    return options


def teacher_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The builder keywords of teacher ``name`` (:data:`models.teachers.TEACHERS` or a plug-in) for ``options``:
    checked by the teacher's options dataclass where it declares one (an unknown option names the valid ones) and
    reduced to its ``build_options()``; a teacher that declares none gets ``options`` as given.

    Raises:
        ValueError: an unknown teacher or option, or the CLIP teacher without a local checkpoint.
    """
    TEACHERS.get(name)  # raises naming the valid teachers, or what is wrong with a plug-in
    kind = TEACHERS.meta(name, "options")
    if not (isinstance(kind, type) and is_dataclass(kind)):
        return dict(options)
    valid = [f.name for f in fields(kind)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"teacher {name} has no option {', '.join(unknown)} (its options: {', '.join(valid) or 'none'})"
        )
    typed = kind(**options)
    if name == "clip" and typed.checkpoint is None:
        raise ValueError("--teacher clip needs --clip-checkpoint (a local weight file; nothing is downloaded)")
    return dict(typed.build_options()) if hasattr(typed, "build_options") else asdict(typed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.data.features",
        description=(
            "Fill the teacher feature cache of a dataset split: DataLoader workers read and preprocess the scans, "
            "the teacher runs on --device; resumes where a previous run stopped; prints size and fill rate. "
            "Under torchrun the missing scans are split over the ranks."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--root", type=Path, required=True, help="cache root folder")
    add_dataset_arguments(parser, split="val")
    parser.add_argument(
        "--teacher",
        default="synthetic",
        help="a registered teacher (models.teachers.TEACHERS: synthetic, clip) or a plug-in module:object",
    )
    parser.add_argument(
        "--teacher-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the teacher (its options dataclass, e.g. arch=ViT-L-14 for clip; VALUE read as YAML); "
        "repeat for several",
    )
    parser.add_argument("--clip-arch", default=None, help="clip's option arch (default ViT-B-16)")
    parser.add_argument("--clip-checkpoint", type=Path, default=None, help="local CLIP weights (required for clip)")
    parser.add_argument(
        "--allow-torchscript",
        action="store_true",
        help="read a TorchScript CLIP checkpoint (OpenAI's ViT-B-16.pt): loading one runs code stored in the file",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (0: main process)")
    parser.add_argument("--limit", type=int, default=None, help="write at most this many new samples")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    device = dist.init(torch.device(args.device))
    try:
        try:
            options = teacher_options(args.teacher, _cli_options(args))
        except ValueError as exc:
            parser.error(str(exc))
        teacher = build_teacher(args.teacher, device, **options)
        try:
            dataset = dataset_from_args(args, index_cache=args.root / "index")
        except (ValueError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        cache = FeatureCache(args.root, dataset.cache_key, teacher.identity)
        report = cache.fill(dataset, teacher, args.workers, progress=not args.no_progress, max_new=args.limit)
        if dist.is_main():
            print(report.summary(cache.folder))
        return 0
    finally:
        dist.shutdown()


if __name__ == "__main__":
    sys.exit(main())
