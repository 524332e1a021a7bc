"""The base dataset: an indexed, sized sequence of :class:`~bench.data.scan.Scan` records.

Subclasses only resolve a split to a list of scan ids and load one scan by id; iteration, indexing and
sub-setting live here. A dataset is usable directly as a ``torch.utils.data.Dataset`` (``len`` and integer
indexing); batching Scans is the harness's job.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence

from bench.data.scan import Scan


def unknown_split_error(dataset: str, split: str, known: Sequence[str]) -> ValueError:
    """The error raised for a split name a dataset does not know."""
    return ValueError(f"unknown {dataset} split {split!r}; known splits: {', '.join(known)}")


class ScanDataset(ABC):
    """A sequence of scans identified by string ids.

    Attributes:
        name: dataset name (``"nuscenes"``, ``"semantickitti"``, ``"synthetic"``).
        classes: class names of the label space (label id -> name).
        vocabulary: the class-phrase table of the zero-shot classifier (a dataset of
            ``models/teachers/data/prompts.json``, :func:`models.teachers.base.class_phrases`).
        split: the split the ids come from.
        ids: scan ids in canonical order.
    """

    name: str = ""
    classes: tuple[str, ...] = ()
    vocabulary: str = ""

    def __init__(self, split: str, ids: Sequence[str]) -> None:
        self.split = split
        self.ids = list(ids)

    @abstractmethod
    def load(self, scan_id: str) -> Scan:
        """Load the scan with id ``scan_id``."""

    def load_geometry(self, scan_id: str) -> Scan:
        """The scan ``scan_id`` without its cameras' pixel arrays: points, labels, calibrations and pairings, all
        that a training or evaluation item reads (:class:`bench.data.loader.SceneDataset`). The default loads the whole
        scan; a dataset that stores pixels with the points overrides it to skip reading them."""
        return self.load(scan_id)

    @property
    def cache_key(self) -> str:
        """The key of this dataset's scans in a feature cache (:mod:`bench.data.features`): scan ids are unique
        under it."""
        return self.name

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Scan:
        return self.load(self.ids[index])

    def __iter__(self) -> Iterator[Scan]:
        for scan_id in self.ids:
            yield self.load(scan_id)

    def restrict(self, ids: Sequence[str]) -> ScanDataset:
        """Keep only ``ids`` (in their given order); every id must belong to the dataset."""
        missing = sorted(set(ids) - set(self.ids))
        if missing:
            raise ValueError(f"{len(missing)} ids are not in {self.name} split {self.split}: {missing[:5]}")
        self.ids = list(ids)
        return self
