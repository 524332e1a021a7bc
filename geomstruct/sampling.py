"""Class-balanced sampling of a labelled point set (docs/method.md#point-set).

For each class draw ``n_per_class`` points without replacement (all of them when fewer exist), with a seeded
generator, and report the per-class counts, so that the geometry of every space is measured on the same,
reproducible points.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BalancedSample:
    """Indices into the labelled set (grouped by class, ascending class id) and the count drawn per class."""

    indices: np.ndarray
    counts: dict[int, int]
    seed: int

    @property
    def n(self) -> int:
        """Total number of sampled points."""
        return int(self.indices.shape[0])


def balanced_sample(
    labels: np.ndarray,
    n_per_class: int,
    seed: int = 0,
    classes: Iterable[int] | None = None,
    ignore_index: int | None = None,
) -> BalancedSample:
    """Draw up to ``n_per_class`` points of every class, uniformly without replacement.

    Args:
        labels: (N,) integer class ids.
        n_per_class: points drawn per class; a class with fewer points contributes all of them.
        seed: seed of the numpy generator; the same seed and labels give the same indices.
        classes: the classes to draw from (default: every class present); a listed class with no point gets
            count 0.
        ignore_index: a label excluded from the sample (e.g. the dataset's ignore id).

    Returns:
        A :class:`BalancedSample`; within each class the indices are sorted.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional; got shape {labels.shape}")
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise ValueError("labels must be integer class ids; got non-integer values (e.g. 0.5)")
        labels = labels.astype(np.int64)
    elif labels.dtype.kind not in "iub":
        raise ValueError(f"labels must be integer class ids; got dtype {labels.dtype}")
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1; got {n_per_class}")
    present = np.unique(labels)
    wanted = sorted(int(c) for c in (present if classes is None else classes))
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    counts: dict[int, int] = {}
    for c in wanted:
        if ignore_index is not None and c == ignore_index:
            continue
        members = np.flatnonzero(labels == c)
        if members.size > n_per_class:
            members = np.sort(rng.choice(members, size=n_per_class, replace=False))
        chosen.append(members)
        counts[c] = int(members.size)
    indices = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
    return BalancedSample(indices=indices.astype(np.int64), counts=counts, seed=seed)
