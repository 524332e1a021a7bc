"""The datasets the harness trains and evaluates on, by name: name -> reader class, declared once.

A new dataset is one file with its reader (a :class:`~bench.data.base.ScanDataset` subclass setting ``name``,
``classes`` and ``vocabulary``, built as ``Reader(dataroot, split=split)``) and one line ``READERS.register(...)``
below; a plug-in reader ``"module:ReaderClass"`` (:mod:`models.registry`) needs neither.

Every reader (a :class:`~bench.data.base.ScanDataset`) carries its label space (``classes``, label id -> name) and
the class-phrase table of its zero-shot classifier (``vocabulary``), so what the harness knows of a dataset is
read from the reader: :func:`class_names`, :func:`vocabulary`. :func:`open_dataset` opens a split by name (the
few-shot subsets included); :func:`add_dataset_arguments` and :func:`dataset_from_args` are the command-line
options of the cache CLIs (:mod:`bench.data.features`, :mod:`bench.data.superpixels`).
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

from bench.data.base import ScanDataset
from bench.data.fewshot import few_shot_ids, few_shot_subset, subset_ids
from bench.data.nuscenes import KeyframeIndexes, NuScenesDataset
from bench.data.semantickitti import SemanticKITTIDataset
from bench.data.synthetic import SyntheticDataset
from models.registry import Registry


def reader_problem(name: str, cls: object) -> str | None:
    """What keeps ``cls`` from being a dataset reader, None when nothing does: a concrete
    :class:`~bench.data.base.ScanDataset` subclass with a non-empty ``classes`` tuple of names and a ``vocabulary``
    string."""
    if not (isinstance(cls, type) and issubclass(cls, ScanDataset)):
        return f"a dataset reader must be a subclass of bench.data.base.ScanDataset; got {cls!r}"
    if inspect.isabstract(cls):
        return (
            f"reader {cls.__name__} leaves abstract methods unimplemented: {', '.join(sorted(cls.__abstractmethods__))}"
        )
    classes = cls.classes
    if not (isinstance(classes, (tuple, list)) and classes and all(isinstance(c, str) for c in classes)):
        return f"reader {cls.__name__} must set classes, its label space (label id -> class name); got {classes!r}"
    if not isinstance(cls.vocabulary, str):
        return f"reader {cls.__name__} must set vocabulary, a class-phrase table of prompts.json (a string)"
    return None


READERS: Registry[type[ScanDataset]] = Registry("dataset", reader_problem)
"""Dataset name -> reader class, in declaration order."""
READERS.register("synthetic", SyntheticDataset)
READERS.register("nuscenes", NuScenesDataset)
READERS.register("semantickitti", SemanticKITTIDataset)
DATASETS = READERS.names()
"""The built-in datasets the harness can train and evaluate on."""


def reader(name: str) -> type[ScanDataset]:
    """The reader class of dataset ``name`` or plug-in ``"module:ReaderClass"``; a ``ValueError`` naming the valid
    datasets (or what is wrong with the plug-in) otherwise."""
    return READERS.get(name)


def class_names(name: str) -> tuple[str, ...]:
    """The label space of dataset ``name`` (label id -> class name)."""
    return tuple(reader(name).classes)


def vocabulary(name: str) -> str:
    """The class-phrase table of dataset ``name``'s zero-shot classifier (the synthetic world: nuScenes')."""
    return reader(name).vocabulary


def open_dataset(
    name: str,
    split: str,
    dataroot: str | Path | None,
    variant: str = "nuscenes",
    sizes: dict[str, int] | None = None,
    few_shot_every: int = 100,
    progress: bool = True,
    version: str = "v1.0-trainval",
    index_cache: str | Path | None = None,
    indexes: KeyframeIndexes | None = None,
) -> ScanDataset:
    """A dataset split by name.

    ``split="train_1pct"`` is SLidR's 1% few-shot subset: for nuScenes and SemanticKITTI the scenes (scans) of
    the shipped split files (:mod:`bench.data.fewshot`; nuScenes versions without a file: every 100th train
    scene); for the synthetic world (one keyframe per scene) every ``few_shot_every``-th train scene.
    ``split="train_1pct@j"`` is 1% subset ``j >= 1``: as many train ids drawn with seed ``j``
    (:func:`bench.data.fewshot.subset_ids`; subset 0 is ``train_1pct``). For
    ``synthetic`` the dataroot is the scene cache (scenes are generated into it on first use) and ``sizes`` sets
    the scenes per split. ``nuscenes`` (table ``version``; its keyframe index kept in ``index_cache``) and
    ``semantickitti`` need an existing dataroot (nuScenes' index kept in ``indexes``, the caller's
    :class:`bench.data.nuscenes.KeyframeIndexes`), as does any other reader (a plug-in), built as
    ``Reader(dataroot, split=split)``.
    """
    cls = reader(name)
    if name == "synthetic":
        subset = few_shot_subset(split)
        base = "train" if subset is not None else split
        dataset: ScanDataset = SyntheticDataset(
            Path(dataroot or "cache/synthetic"), base, variant=variant, sizes=sizes, progress=progress
        )
        if subset is not None:
            dataset.split = split
            dataset.ids = subset_ids(few_shot_ids(dataset.ids, few_shot_every), dataset.ids, subset)
        return dataset
    if dataroot is None or not Path(dataroot).is_dir():
        raise ValueError(f"{name} needs --dataroot pointing to an existing folder; got {dataroot!r}")
    if name == "nuscenes":
        return NuScenesDataset(dataroot, split=split, version=version, index_cache=index_cache, indexes=indexes)
    return cls(dataroot, split=split)  # type: ignore[call-arg]


def add_dataset_arguments(parser: argparse.ArgumentParser, split: str) -> None:
    """The options naming a dataset split (read by :func:`dataset_from_args`), shared by the cache CLIs."""
    parser.add_argument("--dataset", default="synthetic", help=f"{', '.join(DATASETS)} or a plug-in module:Reader")
    parser.add_argument("--split", default=split, help="split (nuScenes: train, val, holdout, train_fit, ...)")
    parser.add_argument(
        "--dataroot", type=Path, default=Path("cache/synthetic"), help="dataset root (synthetic: its scene cache)"
    )
    parser.add_argument("--variant", default="nuscenes", help="synthetic world variant")
    parser.add_argument("--size", type=int, default=None, help="synthetic: scenes in the split")
    parser.add_argument("--version", default="v1.0-trainval", help="nuScenes table version (v1.0-mini, ...)")


def dataset_from_args(args: argparse.Namespace, index_cache: Path | None = None) -> ScanDataset:
    """The dataset split named on the command line (:func:`add_dataset_arguments`); a nuScenes keyframe index is
    kept in ``index_cache``."""
    sizes = None if args.size is None else {args.split: args.size}
    return open_dataset(args.dataset, args.split, args.dataroot, args.variant, sizes, version=args.version,
                        index_cache=index_cache)  # fmt: skip
