"""The per-process cache of cropped scans in :class:`bench.data.loader.SceneDataset`: equal items, bounded, shared
by views, read-only, not sent to DataLoader workers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from bench.data.base import ScanDataset
from bench.data.classes import NUSCENES_CLASSES
from bench.data.loader import SceneDataset
from bench.data.scan import Scan


class Counting(ScanDataset):
    """Scans made on demand, counting the reads."""

    name = "counting"

    def __init__(self, n: int) -> None:
        super().__init__("train", [f"s{i}" for i in range(n)])
        self.reads: list[str] = []

    def load(self, scan_id: str) -> Scan:
        self.reads.append(scan_id)
        rng = np.random.default_rng(int(scan_id[1:]))
        points = rng.uniform(-30, 30, size=(400, 4)).astype(np.float32)
        return Scan(scan_id, points, rng.integers(0, 16, 400), [], NUSCENES_CLASSES)


def test_a_scan_is_read_once_while_cached_and_items_are_unchanged():
    data = Counting(5)
    cached, plain = SceneDataset(data, 20.0, scan_cache=3), SceneDataset(Counting(5), 20.0, scan_cache=0)
    order = [0, 1, 0, 2, 1, 0]
    for i in order:
        a, b = cached[i], plain[i]
        assert a.scan_id == b.scan_id and np.array_equal(a.points, b.points) and np.array_equal(a.labels, b.labels)
        assert np.array_equal(a.pairs, b.pairs) and len(a.points) < 400  # cropped to 20 m
    assert data.reads == ["s0", "s1", "s2"] and len(plain.dataset.reads) == len(order)
    with pytest.raises(ValueError, match="read-only"):
        cached[0].points[0, 0] = 1.0  # an item never changes what later items of the scan read
    for i in (3, 4):  # the bound: 3 scans; s2 and s1 were read longer ago than s0 (the last hit)
        cached[i]
    cached[0]
    assert data.reads[-2:] == ["s3", "s4"]  # s0 still cached
    cached[1]
    assert data.reads[-1] == "s1"  # s1 had been dropped


def test_views_share_the_cache_and_workers_start_empty():
    data = Counting(4)
    scenes = SceneDataset(data, None)
    scenes[0], scenes[1]
    head, features = scenes.head(2), scenes.without_features()
    head[0], features[1]
    assert data.reads == ["s0", "s1"]
    worker = pickle.loads(pickle.dumps(scenes))  # what a DataLoader worker receives
    worker[0]
    assert worker.dataset.reads[-1] == "s0" and len(scenes._scans) == 2
