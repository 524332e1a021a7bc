"""Voxels and kernel maps kept per scan (``PointStudent(scan_cache=N)``): merged maps equal the batch-wide ones
exactly, outputs and gradients are bit-for-bit those without the cache, a scan is voxelised once, the cache is
bounded and copies of the student start empty."""

from __future__ import annotations

import copy

import torch

import models.students.sparse.scan_maps as scan_maps
from models.students import build_student
from models.students.sparse.scan_maps import MergedMaps

PLANES, LAYERS = (4, 8, 8, 4), (1, 1, 1, 1)


def _scan(seed: int, n: int = 2000, shift: float = 0.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    xyz = torch.rand(n, 3, generator=gen) * torch.tensor([8.0, 8.0, 1.5]) + shift
    return torch.cat([xyz, torch.rand(n, 1, generator=gen)], dim=1)


def _batch(*scans: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    points = torch.cat(scans)
    batch = torch.repeat_interleave(torch.arange(len(scans)), torch.tensor([len(s) for s in scans]))
    return points, batch


def _student() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_student(out_dim=8, planes=PLANES, layers=LAYERS, init_dim=4, voxel_size=0.25, stem_kernel=5).train()


def _maps(cache) -> dict:
    return {k: v for k, v in cache._maps.items() if isinstance(k, tuple) and k[0] == "torch"}


def _assert_same(a, b) -> None:
    if isinstance(a, tuple) and not hasattr(a, "bounds"):
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a.bounds == b.bounds and a.n_out == b.n_out and a.identity == b.identity
        assert torch.equal(a.src, b.src) and torch.equal(a.dst, b.dst)


def test_merged_maps_equal_the_batch_maps_and_outputs_are_bit_identical():
    """Three scans, overlapping in space (neighbours across scans would be found if the batch index were not a
    coordinate): every map a forward pass builds is the batch-wide map, pair for pair and in the same order."""
    points, batch = _batch(_scan(1), _scan(2), _scan(3, shift=0.1))
    plain, cached = _student(), _student()
    cached.scan_cache.capacity = 8
    sites_plain, inverse_plain = plain._sites(points, batch)
    sites_cached, inverse_cached = cached._sites(points, batch)
    assert isinstance(sites_cached.cache, MergedMaps) and not isinstance(sites_plain.cache, MergedMaps)
    assert torch.equal(sites_plain.coords, sites_cached.coords) and torch.equal(inverse_plain, inverse_cached)
    assert torch.equal(sites_plain.feats, sites_cached.feats)
    outputs = []
    for student, sites in ((plain, sites_plain), (cached, sites_cached)):
        out = student.network(sites)
        outputs.append(out.feats)
    built, merged = _maps(sites_plain.cache), _maps(sites_cached.cache)
    assert set(built) == set(merged) and any(k[1] == "down" for k in built) and ("torch", "subm", 1, 5) in built
    for key in built:
        _assert_same(built[key], merged[key])
    assert torch.equal(outputs[0], outputs[1])
    grads = []
    for student in (plain, cached):
        student.zero_grad()
        (student(points, batch, torch.arange(0, 6000, 7)) ** 2).sum().backward()
        grads.append([p.grad for p in student.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


def test_a_scan_is_voxelised_once_and_the_cache_is_bounded(monkeypatch):
    student = _student()
    student.scan_cache.capacity = 2
    built = []
    original = scan_maps.submanifold_pairs

    def counting(coords, kernel_size):
        built.append(len(coords))
        return original(coords, kernel_size)

    monkeypatch.setattr(scan_maps, "submanifold_pairs", counting)
    a, b, c = _scan(1), _scan(2), _scan(3)
    with torch.no_grad():
        student(*_batch(a, b))
        first = len(built)
        student(*_batch(b, a))  # the same scans in another order: nothing is built
        assert len(built) == first and len(student.scan_cache.entries) == 2
        student(*_batch(c))  # a third scan: the least recently used (b) is dropped
        assert len(student.scan_cache.entries) == 2 and len(built) > first
    copied = copy.deepcopy(student)
    assert copied.scan_cache.capacity == 2 and not copied.scan_cache.entries
    unsorted_points, unsorted_batch = _batch(a, b)
    order = torch.randperm(len(unsorted_batch), generator=torch.Generator().manual_seed(0))
    sites, _ = student._sites(unsorted_points[order], unsorted_batch[order])  # points not grouped by scan
    assert not isinstance(sites.cache, MergedMaps)  # the batch-wide path
