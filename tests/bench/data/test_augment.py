"""SLidR's augmentations (bench/data/augment.py): the point-pixel pairing stays exact under every transform, the
teacher features of the surviving pairs are the cached ones at their original pixels, determinism, identity."""

from __future__ import annotations

from dataclasses import fields, replace

import numpy as np
import pytest
import torch

from bench.data.augment import Augmentation, AugmentedScene, augment, scene_seed
from bench.data.scan import project_points
from bench.data.scene import Scene, crop_scan
from bench.data.synthetic import generate_scene

OFF = Augmentation.off()
SEEDS = range(8)


@pytest.fixture(scope="module")
def scan(small_config):
    return generate_scene(0, "nuscenes", small_config())


@pytest.fixture(scope="module")
def scene(scan) -> Scene:
    points, labels, pairs = crop_scan(scan, None)
    sizes = tuple(cam.size for cam in scan.cameras)
    grids = torch.randn(
        (len(sizes), 8) + (sizes[0][0] // 16, sizes[0][1] // 16), generator=torch.Generator().manual_seed(0)
    )
    return Scene(scan.scan_id, points, labels, pairs, grids.half(), sizes)


def _uv(scan, cam: int, xyz: np.ndarray) -> np.ndarray:
    """Unrounded ``(u, v)`` of lidar-frame points (all in front of the camera) in camera ``cam``."""
    proj = project_points(xyz, scan.cameras[cam].calibration, min_depth=-np.inf, margin=-np.inf)
    assert len(proj.indices) == len(xyz)
    return proj.uv


def _undo_cloud(aug: AugmentedScene) -> np.ndarray:
    """Lidar-frame xyz of the output points: ``A^T xyz'`` (``A`` orthogonal)."""
    return aug.points[:, :3].astype(np.float64) @ aug.augmentation.cloud_transform


def _same_physical_points(scene: Scene, aug: AugmentedScene) -> None:
    """Every output pair is an input pair whose point is the same physical point, re-indexed."""
    rec = aug.augmentation
    src = scene.pairs[rec.source_pairs]
    np.testing.assert_array_equal(rec.source_points[aug.pairs[:, 0]], src[:, 0])
    np.testing.assert_array_equal(aug.pairs[:, 1:], src[:, 1:])
    np.testing.assert_array_equal(aug.labels, scene.labels[rec.source_points])
    np.testing.assert_array_equal(aug.points[:, 3], scene.points[rec.source_points, 3])
    np.testing.assert_allclose(_undo_cloud(aug), scene.points[rec.source_points, :3], atol=1e-4)


def test_defaults_are_slidr_values():
    cfg = Augmentation()
    assert (cfg.rotation, cfg.flip_axis, cfg.drop_cuboids, cfg.resized_crop, cfg.flip_horizontal) == (True,) * 5
    assert cfg.max_angle == 2 * np.pi and cfg.flip_axis_p == 0.5 and cfg.flip_horizontal_p == 0.5
    assert cfg.cuboid_max_fraction == 0.2 and cfg.cuboid_min_pairs == 1024
    assert cfg.crop_size == (224, 416) and cfg.crop_scale == (0.3, 1.0)
    np.testing.assert_allclose(cfg.crop_ratio, (1.5555555555555556, 1.8888888888888888))
    assert cfg.crop_min_pairs == 1024 and cfg.crop_min_fraction == 0.75 and cfg.crop_attempts == 10
    assert Augmentation(crop_size=[224, 416]).crop_size == (224, 416)  # YAML lists
    assert not OFF.enabled and cfg.enabled
    assert {f.name for f in fields(OFF) if getattr(OFF, f.name) is False} == {
        "rotation",
        "flip_axis",
        "drop_cuboids",
        "resized_crop",
        "flip_horizontal",
    }
    with pytest.raises(ValueError):
        Augmentation(crop_scale=(0.0, 1.0))


def test_all_off_is_identity_and_augment_is_pure(scene):
    before = (scene.points.copy(), scene.labels.copy(), scene.pairs.copy())
    same = augment(scene, OFF, 3)
    assert isinstance(same, AugmentedScene) and same.grids is scene.grids and same.image_sizes == scene.image_sizes
    np.testing.assert_array_equal(same.points, scene.points)
    np.testing.assert_array_equal(same.labels, scene.labels)
    np.testing.assert_array_equal(same.pairs, scene.pairs)
    np.testing.assert_array_equal(same.augmentation.pixels, scene.pairs[:, 2:])
    assert same.augmentation.augmented_sizes == scene.image_sizes and same.augmentation.cuboid is None
    np.testing.assert_array_equal(same.augmentation.cloud_transform, np.eye(3))
    augment(scene, Augmentation(), 3)
    for a, b in zip(before, (scene.points, scene.labels, scene.pairs), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="already augmented"):
        augment(same, OFF, 0)


def test_same_seed_same_scene(scene):
    cfg = Augmentation()
    a, b = augment(scene, cfg, 11), augment(scene, cfg, np.random.default_rng(11))
    for name in ("points", "labels", "pairs"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for f in fields(a.augmentation):
        x, y = getattr(a.augmentation, f.name), getattr(b.augmentation, f.name)
        assert (x is None and y is None) or np.array_equal(np.asarray(x), np.asarray(y)), f.name
    c = augment(scene, cfg, 12)
    assert not np.array_equal(a.points[:100], c.points[:100])
    assert scene_seed(0, 1, "x") == scene_seed(0, 1, "x") != scene_seed(0, 2, "x")


def test_cloud_transforms_move_points_and_keep_their_pixels(scan, scene):
    cfg = replace(OFF, rotation=True, flip_axis=True)
    flips = set()
    for seed in SEEDS:
        aug = augment(scene, cfg, seed)
        matrix = aug.augmentation.cloud_transform
        np.testing.assert_allclose(matrix.T @ matrix, np.eye(3), atol=1e-12)
        np.testing.assert_array_equal(matrix[2], [0, 0, 1])
        flips.add(round(np.linalg.det(matrix)))
        np.testing.assert_array_equal(aug.pairs, scene.pairs)
        assert not np.allclose(aug.points[:, :3], scene.points[:, :3], atol=1e-2)
        _same_physical_points(scene, aug)
        # The undone point projects to the pair's (unchanged) pixel.
        xyz = _undo_cloud(aug)
        for cam in range(len(scan.cameras)):
            sel = aug.pairs[:, 1] == cam
            uv = _uv(scan, cam, xyz[aug.pairs[sel, 0]])
            assert np.abs(uv[:, ::-1] - aug.pairs[sel, 2:]).max() <= 0.5 + 1e-3
    assert flips == {-1, 1}  # some seeds flip one axis (det -1), some none or both (det +1)


def test_drop_cuboids_removes_exactly_the_cuboid(scene):
    cfg = replace(OFF, rotation=True, drop_cuboids=True)
    removed = 0
    for seed in SEEDS:
        aug = augment(scene, cfg, seed)
        rec = aug.augmentation
        moved = (scene.points[:, :3].astype(np.float64) @ rec.cloud_transform.T).astype(np.float32)
        if rec.cuboid is None:
            np.testing.assert_array_equal(rec.source_points, np.arange(len(scene.points)))
            continue
        low, high = rec.cuboid
        inside = np.all((moved > low) & (moved < high), axis=1)
        removed += int(inside.sum())
        np.testing.assert_array_equal(rec.source_points, np.flatnonzero(~inside))
        np.testing.assert_array_equal(aug.points[:, :3], moved[~inside])
        np.testing.assert_array_equal(rec.source_pairs, np.flatnonzero(~inside[scene.pairs[:, 0]]))
        _same_physical_points(scene, aug)
        # the cuboid's side is at most 20% of the cloud's extent and it is centred on a point of the cloud
        extent = moved.max(axis=0) - moved.min(axis=0)
        assert np.all(high - low <= 0.2 * extent + 1e-4)
        assert np.isclose(moved, (low + high) / 2, atol=1e-4).all(axis=1).any()
        assert np.bincount(aug.pairs[:, 1], minlength=len(scene.image_sizes)).min() >= cfg.cuboid_min_pairs
    assert removed > 0
    skipped = augment(scene, replace(cfg, cuboid_min_pairs=10**9), 0)
    assert skipped.augmentation.cuboid is None and len(skipped.points) == len(scene.points)
    # strict inequalities (SLidR): a cuboid of side 0 around a point removes nothing, not even that point
    empty = augment(scene, replace(cfg, cuboid_max_fraction=0.0), 0)
    assert empty.augmentation.cuboid is not None and len(empty.points) == len(scene.points)


@pytest.mark.parametrize("everything", [False, True])
def test_crop_resize_flip_pixels_map_back_to_the_projection(scan, scene, everything):
    cfg = Augmentation() if everything else replace(OFF, resized_crop=True, flip_horizontal=True)
    out_h, out_w = cfg.crop_size
    flipped = []
    for seed in SEEDS:
        aug = augment(scene, cfg, seed)
        rec = aug.augmentation
        assert rec.augmented_sizes == (cfg.crop_size,) * len(scene.image_sizes)
        _same_physical_points(scene, aug)
        for cam, (i, j, h, w) in enumerate(rec.crops):
            height, width = scene.image_sizes[cam]
            assert 0 <= i and i + h <= height and 0 <= j and j + w <= width
            assert cfg.crop_scale[0] - 0.05 <= h * w / (height * width) <= 1
            assert cfg.crop_ratio[0] - 0.1 <= w / h <= cfg.crop_ratio[1] + 0.1
            sel = aug.pairs[:, 1] == cam
            rows, cols = rec.pixels[sel].T
            assert (rows >= 0).all() and (rows < out_h).all() and (cols >= 0).all() and (cols < out_w).all()
            cols = out_w - 1 - cols if rec.flips[cam] else cols
            # inverse resize + crop: within half an augmented pixel of the original pixel ...
            back = np.stack([i + rows * h / out_h, j + cols * w / out_w], axis=1)
            tol = np.array([0.5 * h / out_h, 0.5 * w / out_w]) + 1e-9
            assert (np.abs(back - aug.pairs[sel, 2:]) <= tol).all()
            # ... where the (undone) point projects
            uv = _uv(scan, cam, _undo_cloud(aug)[aug.pairs[sel, 0]])
            assert (np.abs(uv[:, ::-1] - back) <= tol + 0.5 + 1e-3).all()
            # a pair is dropped iff its pixel leaves the crop: -1/2 <= (r - i) H'/h < H' - 1/2 (same for columns)
            cand = np.flatnonzero(scene.pairs[:, 1] == cam)
            if everything and rec.cuboid is not None:
                low, high = rec.cuboid
                moved = (scene.points[:, :3].astype(np.float64) @ rec.cloud_transform.T).astype(np.float32)
                cand = cand[~np.all((moved > low) & (moved < high), axis=1)[scene.pairs[cand, 0]]]
            r = (scene.pairs[cand, 2] - i) * out_h / h
            c = (scene.pairs[cand, 3] - j) * out_w / w
            within = (r >= -0.5) & (r < out_h - 0.5) & (c >= -0.5) & (c < out_w - 0.5)
            np.testing.assert_array_equal(np.intersect1d(rec.source_pairs, cand), cand[within])
            # SLidR's acceptance rule
            assert within.sum() > cfg.crop_min_pairs or within.mean() > cfg.crop_min_fraction
            flipped.append(bool(rec.flips[cam]))
    assert any(flipped) and not all(flipped)


def test_flip_without_crop_mirrors_the_original_image(scene):
    aug = augment(scene, replace(OFF, flip_horizontal=True), 1)
    rec = aug.augmentation
    assert rec.flips.any() and len(aug.pairs) == len(scene.pairs)
    width = np.array([w for _, w in scene.image_sizes])[aug.pairs[:, 1]]
    expected = np.where(rec.flips[aug.pairs[:, 1]], width - 1 - aug.pairs[:, 3], aug.pairs[:, 3])
    np.testing.assert_array_equal(rec.pixels[:, 1], expected)
    np.testing.assert_array_equal(rec.pixels[:, 0], aug.pairs[:, 2])


def test_pair_features_are_the_cached_teacher_at_the_original_pixels(scene):
    aug = augment(scene, Augmentation(), 5)
    assert 0 < len(aug.pairs) < len(scene.pairs)
    rows = aug.augmentation.source_pairs
    torch.testing.assert_close(aug.pair_features(), scene.pair_features(rows), rtol=0, atol=0)
    first = aug.first_pairs()
    torch.testing.assert_close(aug.pair_features(first), scene.pair_features(rows[first]), rtol=0, atol=0)


def test_cameras_without_pairs_and_unreachable_thresholds_terminate(scene):
    no_cam0 = replace(scene, pairs=scene.pairs[scene.pairs[:, 1] != 0])
    aug = augment(no_cam0, replace(OFF, resized_crop=True), 0)
    assert (aug.pairs[:, 1] != 0).all() and len(aug.pairs)
    strict = replace(OFF, resized_crop=True, crop_min_pairs=10**9, crop_min_fraction=1.0, crop_max_tries=5)
    aug = augment(scene, strict, 0)
    assert 0 < len(aug.pairs) < len(scene.pairs) and (aug.augmentation.crops[:, 2:] > 0).all()
