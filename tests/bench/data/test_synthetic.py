"""The synthetic world: determinism, class coverage and balance, the rendered maps and the pairing, the OOD
variant and the dataset cache."""

import numpy as np
import pytest

from bench.data.classes import IGNORE_INDEX, NUSCENES_CLASSES
from bench.data.fewshot import read_split_file
from bench.data.scan import project_points
from bench.data.split_files import expected_split_files
from bench.data.synthetic import SyntheticDataset, generate_scene


def test_same_seed_same_arrays(small_config, ten_scenes):
    again = generate_scene(3, "nuscenes", small_config())
    ref = ten_scenes[3]
    np.testing.assert_array_equal(again.points, ref.points)
    np.testing.assert_array_equal(again.labels, ref.labels)
    for a, b in zip(again.cameras, ref.cameras, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.instance_map, b.instance_map)
        np.testing.assert_array_equal(a.pairing, b.pairing)
    assert not np.array_equal(ten_scenes[4].points[:1000], ref.points[:1000])


def test_ten_scenes_cover_all_classes_with_ground_and_buildings_dominant(ten_scenes):
    counts = sum(np.bincount(s.labels[s.labels != IGNORE_INDEX], minlength=16) for s in ten_scenes)
    assert (counts > 0).all(), [c for c, n in zip(NUSCENES_CLASSES, counts, strict=True) if n == 0]
    share = counts / counts.sum()
    idx = {c: i for i, c in enumerate(NUSCENES_CLASSES)}
    ground = sum(share[idx[c]] for c in ("driveable_surface", "other_flat", "sidewalk", "terrain"))
    static = share[idx["manmade"]] + share[idx["vegetation"]]
    assert ground > 0.4 and ground + static > 0.75
    assert share.argmax() == idx["driveable_surface"]
    assert share[idx["bicycle"]] < 0.01 and share[idx["traffic_cone"]] < 0.01  # rare classes stay rare


def test_lidar_geometry(ten_scenes):
    scan = ten_scenes[0]
    assert scan.points.dtype == np.float32 and 20_000 < len(scan.points) <= 32 * 1088
    rng = np.linalg.norm(scan.points[:, :3], axis=1)
    assert rng.max() <= 70.1
    road = scan.labels == NUSCENES_CLASSES.index("driveable_surface")
    np.testing.assert_allclose(np.median(scan.points[road, 2]), -1.84, atol=0.05)  # ground under a 1.84 m mount
    assert 0 <= scan.points[:, 3].min() and scan.points[:, 3].max() <= 255


def test_pairing_is_projection_and_parallax_gives_some_wrong_pairs(ten_scenes):
    agree, total = 0, 0
    for scan in ten_scenes:
        for cam in scan.cameras:
            np.testing.assert_array_equal(cam.pairing, project_points(scan.points, cam.calibration).pairing())
            h, w = cam.class_map.shape
            assert cam.image.shape == (h, w, 3) and cam.instance_map.shape == (h, w)
            idx, rows, cols = cam.pairing.T
            agree += int((cam.class_map[rows, cols] == scan.labels[idx]).sum())
            total += len(idx)
    # Most pairs see the point's own surface; occlusion and parallax make the rest wrong, as in nuScenes.
    assert 0.75 < agree / total < 0.995


def test_rendered_depth_matches_lidar_where_the_pair_is_right(ten_scenes):
    scan = ten_scenes[1]
    cam = scan.camera("CAM_FRONT")
    idx, rows, cols = cam.pairing.T
    cam_xyz = scan.points[idx, :3] @ cam.calibration.lidar_to_camera[:3, :3].T + cam.calibration.lidar_to_camera[:3, 3]
    same = cam.class_map[rows, cols] == scan.labels[idx]
    err = np.abs(cam.depth[rows, cols][same] - cam_xyz[same, 2])
    assert np.median(err) < 0.3


def test_ood_variant_has_64_beams_and_a_lower_mount(small_config):
    scan = generate_scene(0, "ood", small_config("ood"))
    elevations = np.degrees(np.arctan2(scan.points[:, 2], np.linalg.norm(scan.points[:, :2], axis=1)))
    assert elevations.min() > -25.5 and elevations.max() < 2.5
    assert len(scan.points) > 40_000
    road = scan.labels == NUSCENES_CLASSES.index("driveable_surface")
    np.testing.assert_allclose(np.median(scan.points[road, 2]), -1.73, atol=0.05)
    with pytest.raises(ValueError, match="unknown synthetic variant 'kitti'"):
        generate_scene(0, "kitti")


def test_dataset_generates_into_cache_and_reads_back(tmp_path, small_config):
    cfg = small_config()
    ds = SyntheticDataset(tmp_path, split="val", sizes={"val": 2}, config=cfg, progress=False)
    assert ds.ids == ["nuscenes-1000000", "nuscenes-1000001"]
    files = sorted(ds.folder.glob("*.npz"))
    assert len(files) == 2
    mtimes = [f.stat().st_mtime_ns for f in files]
    again = SyntheticDataset(tmp_path, split="val", sizes={"val": 2}, config=cfg, progress=False)
    assert [f.stat().st_mtime_ns for f in files] == mtimes  # read back, not regenerated
    loaded, fresh = again[1], generate_scene(1_000_001, "nuscenes", cfg)
    np.testing.assert_array_equal(loaded.points, fresh.points)
    np.testing.assert_array_equal(loaded.labels, fresh.labels)
    for a, b in zip(loaded.cameras, fresh.cameras, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.class_map, b.class_map)
        np.testing.assert_array_equal(a.instance_map, b.instance_map)
        np.testing.assert_array_equal(a.pairing, b.pairing)
        np.testing.assert_allclose(a.depth, b.depth, rtol=1e-3)
    geometry = again.load_geometry(again.ids[1])  # what a training item reads: everything but the pixels
    np.testing.assert_array_equal(geometry.points, loaded.points)
    np.testing.assert_array_equal(geometry.labels, loaded.labels)
    np.testing.assert_array_equal(geometry.pairing_table(), loaded.pairing_table())
    for a, b in zip(geometry.cameras, loaded.cameras, strict=True):
        assert a.size == b.size and a.class_map is None and a.instance_map is None and a.depth is None
        with pytest.raises(ValueError, match="neither an image nor an image file"):
            _ = a.image
    with pytest.raises(ValueError, match=r"unknown synthetic split 'dev'; known splits: train, val, test"):
        SyntheticDataset(tmp_path, split="dev")


def test_few_shot_split_files_follow_the_rule():
    for name, (_, ids) in expected_split_files().items():
        assert read_split_file(name) == ids, name
    assert read_split_file("synthetic_train_1pct.txt")[:2] == ["nuscenes-000000", "nuscenes-000100"]
