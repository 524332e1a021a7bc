"""Superpixels for the region losses: exact pooled teacher features (brute force over pixels), the SLIC cache
(atomic files, resume, CLI), pair regions of a scene, and the trainer's per-scan pooling against the loss's own."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from bench.data.features import FeatureCache
from bench.data.loader import SceneDataset
from bench.data.scene import collate_scenes
from bench.data.superpixels import (
    SlicSettings,
    SuperpixelCache,
    main,
    pixel_norms,
    region_features,
    scene_regions,
    segment_image,
)
from bench.data.synthetic import SyntheticDataset
from bench.train import batch_regions
from models.losses import slidr, st_slidr
from models.students import build_student
from models.teachers import build_teacher
from models.teachers.base import sample


@pytest.mark.parametrize("pixel_norm", [True, False])
@pytest.mark.parametrize("size,grid", [((24, 40), (3, 5)), ((17, 9), (4, 2)), ((8, 8), (8, 8)), ((5, 7), (1, 1))])
def test_region_features_equal_the_mean_of_the_upsampled_pixels(size, grid, pixel_norm):
    """Brute force: upsample every pixel (grid_sample), L2-normalise it (SLidR's image head) or not, average."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, size=size).astype(np.uint16)
    patch = torch.from_numpy(rng.standard_normal((5, *grid))).to(torch.float64)
    got = region_features(labels, patch, pixel_norm=pixel_norm)
    rows, cols = np.indices(size)
    pixels = sample(patch, rows.ravel(), cols.ravel(), size)  # (H W, D) bilinear upsampling
    if pixel_norm:
        pixels = torch.nn.functional.normalize(pixels, dim=1)
    for s in range(6):
        expected = pixels[torch.from_numpy(labels.ravel() == s)].mean(dim=0)
        torch.testing.assert_close(got[s].double(), expected, rtol=1e-5, atol=1e-6)  # float32 output
    if pixel_norm:  # means of unit vectors: norm <= 1, and < 1 for these mixed superpixels
        assert float(got.norm(dim=1).max()) <= 1.0 + 1e-6


def test_pixel_norms_equal_the_norms_of_the_upsampled_pixels():
    rng = np.random.default_rng(3)
    patch = torch.from_numpy(rng.standard_normal((7, 4, 6)))
    rows, cols = np.indices((13, 21))
    pixels = sample(patch, rows.ravel(), cols.ravel(), (13, 21))
    np.testing.assert_allclose(pixel_norms(patch, (13, 21)).ravel(), pixels.norm(dim=1).numpy(), rtol=1e-10)


def test_segment_image_gives_contiguous_uint16_labels_near_the_requested_count():
    rng = np.random.default_rng(1)
    image = (rng.random((90, 160, 3)) * 255).astype(np.uint8)
    labels = segment_image(image, SlicSettings(n_segments=40))
    assert labels.dtype == np.uint16 and labels.shape == (90, 160)
    found = np.unique(labels)
    np.testing.assert_array_equal(found, np.arange(len(found)))
    assert 20 <= len(found) <= 60
    with pytest.raises(ValueError, match="n_segments >= 2"):
        SlicSettings(n_segments=1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("sp")
    data = SyntheticDataset(root / "scenes", "train", sizes={"train": 2}, progress=False)
    teacher = build_teacher("synthetic")
    features = FeatureCache(root / "features", data.cache_key, teacher.identity)
    features.fill(data, teacher, progress=False)
    superpixels = SuperpixelCache(root / "superpixels", data.cache_key, SlicSettings(n_segments=60))
    report = superpixels.fill(data, progress=False)
    assert (report.written, report.cached, report.total) == (2, 2, 2) and report.bytes_on_disk > 0
    return data, features, superpixels


@pytest.mark.slow
def test_cache_stores_one_map_per_camera_and_resumes(world):
    data, _, superpixels = world
    maps = superpixels.load(data.ids[0])
    scan = data.load(data.ids[0])
    assert len(maps) == len(scan.cameras)
    np.testing.assert_array_equal(maps[2], segment_image(scan.cameras[2].image, superpixels.settings))
    assert superpixels.fill(data, progress=False).written == 0  # nothing left to do
    assert "slic-n60-c6-s3" in str(superpixels.folder)
    with pytest.raises(KeyError, match="not in the superpixel cache"):
        superpixels.load("missing")


def test_unreadable_file_names_itself(tmp_path, world):
    data, _, superpixels = world
    broken = SuperpixelCache(tmp_path, data.cache_key, superpixels.settings)
    broken.folder.mkdir(parents=True)
    broken.path(data.ids[0]).write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="unreadable superpixel file"):
        broken.load(data.ids[0])


def test_scene_regions_number_superpixels_over_cameras(world):
    data, features, superpixels = world
    scenes = SceneDataset(data, 10.0, features).with_superpixels(superpixels)
    scene = scenes[0]
    maps = superpixels.load(scene.scan_id)
    offsets = np.cumsum([0] + [int(m.max()) + 1 for m in maps])
    assert scene.region_feats.shape == (offsets[-1], scene.grids.shape[1])
    for row in (0, len(scene.pairs) // 2, len(scene.pairs) - 1):
        _, cam, r, c = scene.pairs[row]
        assert scene.pair_regions[row] == offsets[cam] + maps[cam][r, c]
    cam = 3
    torch.testing.assert_close(
        scene.region_feats[offsets[cam] : offsets[cam + 1]], region_features(maps[cam], scene.grids[cam].float())
    )
    # SLidR's unit pixels: every mean has norm <= 1; the raw-pixel variant is carried by the scenes' view
    assert float(scene.region_feats.norm(dim=1).max()) <= 1.0 + 1e-5
    raw = SceneDataset(data, 10.0, features).with_superpixels(superpixels, pixel_norm=False)[0]
    torch.testing.assert_close(
        raw.region_feats[offsets[cam] : offsets[cam + 1]],
        region_features(maps[cam], scene.grids[cam].float(), pixel_norm=False),
    )
    assert not torch.allclose(raw.region_feats, scene.region_feats)
    with pytest.raises(ValueError, match="2 superpixel maps for 6 cameras"):
        scene_regions(maps[:2], scene.pairs, scene.grids)


@pytest.mark.slow
@pytest.mark.parametrize("loss", [slidr, st_slidr])
def test_trainer_pools_per_scan_like_the_loss_pools_the_whole_batch(world, loss):
    data, features, superpixels = world
    scenes = SceneDataset(data, 10.0, features).with_superpixels(superpixels)
    batch = collate_scenes([scenes[0], scenes[1]])
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(len(batch.points), 512, generator=gen, dtype=torch.float64)
    k, q = batch_regions(batch, feats, torch.device("cpu"))
    # the same loss from all pairs, regions numbered over the batch
    index = np.concatenate([s.pairs[:, 0] + batch.offsets[i] for i, s in enumerate(batch.scenes)])
    shift = np.cumsum([0] + [len(s.region_feats) for s in batch.scenes])
    segments = np.concatenate([s.pair_regions + shift[i] for i, s in enumerate(batch.scenes)])
    q_all = torch.cat([s.region_feats for s in batch.scenes]).double()
    whole = loss(feats[torch.from_numpy(index)], q_all, torch.from_numpy(segments)).item()
    assert loss(k, q.double()).item() == pytest.approx(whole, rel=1e-9)
    assert k.shape[0] == len(np.unique(segments))  # one row per reached superpixel
    norms = k.norm(dim=1)  # means of unit rows: at most 1, below 1 where a superpoint's rows differ
    assert (norms <= 1 + 1e-9).all() and (norms < 1 - 1e-6).any()
    # the student's output has unit rows (its head normalises): skipping the second normalisation changes
    # neither K nor the gradient that reaches the network
    raw = feats.clone().requires_grad_(True)
    grads = []
    for unit_rows in (False, True):
        k, _ = batch_regions(batch, torch.nn.functional.normalize(raw, dim=1), torch.device("cpu"), unit_rows)
        loss(k, q.double()).backward()
        grads.append((k.detach(), raw.grad.clone()))
        raw.grad = None
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-10, atol=1e-12)


def test_cli_fills_a_split(tmp_path, capsys):
    root = tmp_path / "superpixels"
    args = ["--root", str(root), "--dataroot", str(tmp_path / "scenes"), "--split", "val", "--size", "1"]
    assert main([*args, "--n-segments", "30", "--no-progress"]) == 0
    assert "superpixel cache" in capsys.readouterr().out
    assert len(list(root.rglob("*.npz"))) == 1
    assert main([*args, "--n-segments", "1", "--no-progress"]) == 2


@pytest.mark.parametrize("loss", [slidr, st_slidr])
def test_trainer_pools_the_students_voxel_rows_like_its_point_rows(world, loss):
    """The training step's path (the student's head once per voxel holding a pair, pooled without copying rows to
    points) gives the loss and gradients of pooling every point's output (float64)."""
    data, features, superpixels = world
    scenes = SceneDataset(data, 10.0, features).with_superpixels(superpixels)
    batch = collate_scenes([scenes[0], scenes[1]])
    torch.manual_seed(0)
    student = build_student(out_dim=512, planes=(4, 8, 8, 4), layers=(1, 1, 1, 1), init_dim=4, voxel_size=0.3)
    student = student.double()
    points, index = batch.points.double(), batch.batch
    values, grads = [], []
    for feats in (lambda: student(points, index), lambda: functools.partial(student, points, index, distinct=True)):
        student.zero_grad()
        k, q = batch_regions(batch, feats(), torch.device("cpu"), unit_rows=True)
        value = loss(k, q.double())
        value.backward()
        values.append(value.item())
        grads.append([p.grad.clone() for p in student.parameters()])
    assert values[1] == pytest.approx(values[0], rel=1e-12)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_scene_regions_are_kept_per_scan_unless_augmented(world):
    """Un-augmented items reuse the scan's regions (the same read-only arrays, equal to a fresh computation);
    augmented items and a dataset without a scan cache compute their own."""
    from bench.data.augment import Augmentation

    data, features, superpixels = world
    scenes = SceneDataset(data, 10.0, features).with_superpixels(superpixels)
    first, again = scenes[0], scenes[0]
    assert first.pair_regions is again.pair_regions and first.region_feats is again.region_feats
    assert not first.pair_regions.flags.writeable
    fresh = scene_regions(superpixels.load(first.scan_id), first.pairs, first.grids)
    np.testing.assert_array_equal(first.pair_regions, fresh[0])
    torch.testing.assert_close(first.region_feats, fresh[1], rtol=0, atol=0)
    uncached = SceneDataset(data, 10.0, features, scan_cache=0).with_superpixels(superpixels)
    assert uncached[0].pair_regions is not uncached[0].pair_regions
    augmented = scenes.augmented(Augmentation(rotation=True))
    assert augmented[(0, 1)].pair_regions is not augmented[(0, 1)].pair_regions
