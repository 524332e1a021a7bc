"""Few-shot label subsets (docs/data.md#few-shot-split-files): SLidR's 1% rule, every 100th scene of the train split.

The subsets are written as split files in ``bench/data/splits/`` (one id per line) so that they are fixed,
reviewable and reported with the results. ``python -m bench.data.split_files`` regenerates them
(:mod:`bench.data.split_files`):

- ``nuscenes_train_1pct.txt``: scene *names* of ``create_splits_scenes()["train"][::100]``; the sample tokens
  of those scenes are resolved at run time from the dataroot (no full dataroot is needed to write the file).
- ``semantickitti_train_1pct.txt``: scan ids ``SS/NNNNNN`` of every 100th scan of sequences 00-07, 09, 10
  (frame counts of the KITTI odometry benchmark, :data:`SEMANTICKITTI_TRAIN_FRAMES`).
- ``synthetic_train_1pct.txt``: scene ids of every 100th scene of the synthetic train split at its default
  size (:data:`bench.data.synthetic.dataset.DEFAULT_SIZES`).

Several 1% subsets (split composition alone moves 1% results by several points): the split ``train_1pct@j``
(:func:`few_shot_split`) is subset ``j``. Subset 0 is always ``train_1pct`` itself (the rule above). Subset
``j >= 1`` is a seeded draw of the *same number* of ids from the split's train ids, without replacement, by
``numpy.random.default_rng(j)`` (``choice(n_train, size=n_1pct, replace=False)``), kept in the train split's
canonical order (:func:`draw_subset`). Every dataset reader resolves these names through
:func:`few_shot_subset` and :func:`subset_ids`; the train ids a draw is made from are the synthetic train
scenes, nuScenes' train scene names, and SemanticKITTI's train scans (:func:`semantickitti_train_ids`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

SPLITS_DIR = Path(__file__).resolve().parent / "splits"
"""Folder of the few-shot split files shipped with the package."""

FEW_SHOT_EVERY = 100
"""SLidR's 1% rule: keep every 100th scene of the train split."""
FEW_SHOT_SPLIT = "train_1pct"
"""The 1% split (subset 0)."""
SUBSET_SEPARATOR = "@"
"""``train_1pct@j`` names 1% subset ``j >= 1``."""

SEMANTICKITTI_TRAIN_FRAMES: dict[str, int] = {
    "00": 4541,
    "01": 1101,
    "02": 4661,
    "03": 801,
    "04": 271,
    "05": 2761,
    "06": 1101,
    "07": 1101,
    "09": 1591,
    "10": 1201,
}
"""Scans per SemanticKITTI training sequence (KITTI odometry benchmark; sequence 08 is validation)."""


def few_shot_ids(ids: Sequence[str], every: int = FEW_SHOT_EVERY) -> list[str]:
    """The few-shot subset of a split: every ``every``-th id starting with the first (SLidR's 1% rule).

    ``ids`` must be in the split's canonical order (nuScenes: scene order of ``create_splits_scenes``;
    SemanticKITTI: sequence then frame; synthetic: scene index).
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    return list(ids[::every])


def few_shot_split(subset: int) -> str:
    """The split name of 1% subset ``subset``: ``train_1pct`` for 0, ``train_1pct@j`` for ``j >= 1``."""
    if isinstance(subset, bool) or not isinstance(subset, int) or subset < 0:
        raise ValueError(f"a 1% subset index is an integer >= 0; got {subset!r}")
    return FEW_SHOT_SPLIT if subset == 0 else f"{FEW_SHOT_SPLIT}{SUBSET_SEPARATOR}{subset}"


def few_shot_subset(split: str) -> int | None:
    """The subset index of a 1% split name (``train_1pct``: 0, ``train_1pct@j``: ``j``), None for any other split.

    Raises:
        ValueError: a ``train_1pct@...`` name whose index is not an integer >= 1 (subset 0 is ``train_1pct``).
    """
    if split == FEW_SHOT_SPLIT:
        return 0
    prefix = FEW_SHOT_SPLIT + SUBSET_SEPARATOR
    if not split.startswith(prefix):
        return None
    text = split[len(prefix) :]
    if not (text.isascii() and text.isdigit()) or int(text) < 1 or text != str(int(text)):
        raise ValueError(
            f"bad few-shot split {split!r}: subset j >= 1 is {prefix}j (no leading zero); subset 0 is {FEW_SHOT_SPLIT}"
        )
    return int(text)


def draw_subset(train: Sequence[str], size: int, subset: int) -> list[str]:
    """Subset ``subset >= 1``: ``size`` ids of ``train`` drawn without replacement by
    ``numpy.random.default_rng(subset)``, in the order of ``train``."""
    if subset < 1:
        raise ValueError(f"drawn subsets are numbered from 1 (subset 0 is the 1% split itself); got {subset}")
    if not 0 <= size <= len(train):
        raise ValueError(f"cannot draw {size} ids from a train split of {len(train)}")
    picks = np.sort(np.random.default_rng(subset).choice(len(train), size=size, replace=False))
    return [train[int(i)] for i in picks]


def subset_ids(first: Sequence[str], train: Sequence[str], subset: int) -> list[str]:
    """The ids of 1% subset ``subset``: ``first`` (the 1% split, subset 0) itself, or for ``subset >= 1`` a draw
    of ``len(first)`` ids of ``train`` (:func:`draw_subset`)."""
    return list(first) if subset == 0 else draw_subset(train, len(first), subset)


def semantickitti_train_ids() -> list[str]:
    """Every scan id ``SS/NNNNNN`` of SemanticKITTI's train sequences (:data:`SEMANTICKITTI_TRAIN_FRAMES`), in
    sequence then frame order: what the 1% file and the drawn subsets are taken from."""
    return [f"{seq}/{i:06d}" for seq, n in SEMANTICKITTI_TRAIN_FRAMES.items() for i in range(n)]


def read_split_file(name: str) -> list[str]:
    """Read a split file of ``bench/data/splits`` (one id per line, ``#`` starts a comment)."""
    path = SPLITS_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]
