"""The nuScenes-format fixture generator: the devkit loads what it writes, and NuScenesDataset reads back the
synthetic scans' points, labels and pairings (up to the devkit's float32 rounding on boundary points)."""

import json
from pathlib import Path

import numpy as np
import pytest
from nuscenes.nuscenes import NuScenes, NuScenesExplorer

from bench.data.classes import IGNORE_INDEX, NUSCENES_CLASSES, NUSCENES_FINE_CLASSES, NUSCENES_FINE_TO_COARSE
from bench.data.io import read_image
from bench.data.nuscenes import NUSCENES_CAMERAS, NuScenesDataset
from bench.data.synthetic import generate_scene
from bench.data.synthetic.nuscenes_format import (
    COARSE_TO_FINE,
    TABLES,
    dataroot_files,
    fine_labels,
    fixture_scene_names,
    keyframe_seed,
    main,
    token,
    write_nuscenes_dataroot,
)

MINI = {"mini_train": 2, "mini_val": 1}
KEYFRAMES = 2
MINI_NAMES = {"mini_train": ["scene-0061", "scene-0553"], "mini_val": ["scene-0103"]}


@pytest.fixture(scope="module")
def mini(tmp_path_factory, small_config):
    """A v1.0-mini dataroot (2 + 1 scenes, 2 keyframes, 160 x 96 cameras) and its synthetic scans."""
    cfg = small_config()
    root = write_nuscenes_dataroot(tmp_path_factory.mktemp("fixture"), "v1.0-mini", MINI, KEYFRAMES, config=cfg)
    scans = {
        (name, k): generate_scene(keyframe_seed(0, name, k), "nuscenes", cfg)
        for names in MINI_NAMES.values()
        for name in names
        for k in range(KEYFRAMES)
    }
    return root, scans


def _table(root: Path, name: str, version: str = "v1.0-mini") -> list[dict]:
    return json.loads((root / version / f"{name}.json").read_text())


def test_scene_names_and_seeds():
    assert fixture_scene_names(MINI, "v1.0-mini") == MINI_NAMES
    seeds = {keyframe_seed(s, n, k) for s in (0, 1) for n in ("scene-0001", "scene-1110") for k in (0, 1, 999)}
    assert len(seeds) == 12 and keyframe_seed(3, "scene-0061", 7) == 30_061_007
    assert len(token(0, "sample", "scene-0061/0")) == 32 and token(0, "sample", "a") != token(1, "sample", "a")


def test_coarse_classes_round_trip_through_fine_classes():
    for coarse, fine in COARSE_TO_FINE.items():
        assert NUSCENES_FINE_TO_COARSE[fine] == coarse
    coarse = np.array([*range(len(NUSCENES_CLASSES)), IGNORE_INDEX])
    fine = fine_labels(coarse)
    assert fine.dtype == np.uint8 and fine[-1] == 0 and NUSCENES_FINE_CLASSES[0] == "noise"
    assert [NUSCENES_FINE_TO_COARSE[NUSCENES_FINE_CLASSES[f]] for f in fine[:-1]] == list(NUSCENES_CLASSES)


def test_devkit_loads_the_tables(mini, small_config):
    root, _ = mini
    nusc = NuScenes(version="v1.0-mini", dataroot=str(root), verbose=False)
    n_keyframes = 3 * KEYFRAMES
    assert sorted(s["name"] for s in nusc.scene) == sorted(n for ns in MINI_NAMES.values() for n in ns)
    assert len(nusc.sample) == n_keyframes and len(nusc.lidarseg) == n_keyframes
    assert len(nusc.sample_data) == len(nusc.ego_pose) == 7 * n_keyframes
    assert len(nusc.sensor) == 7 and len(nusc.calibrated_sensor) == 7 * 3 and len(nusc.log) == 3
    assert nusc.instance == [] and nusc.sample_annotation == [] and len(nusc.map) == 1
    assert [c["name"] for c in sorted(nusc.category, key=lambda c: c["index"])] == list(NUSCENES_FINE_CLASSES)
    assert nusc.lidarseg_idx2name_mapping == dict(enumerate(NUSCENES_FINE_CLASSES))
    width, height = small_config().rig.cameras[0].width, small_config().rig.cameras[0].height
    for scene in nusc.scene:
        tokens, token_ = [], scene["first_sample_token"]
        while token_:
            tokens.append(token_)
            token_ = nusc.get("sample", token_)["next"]
        assert len(tokens) == scene["nbr_samples"] == KEYFRAMES and tokens[-1] == scene["last_sample_token"]
        assert tokens == [token(0, "sample", f"{scene['name']}/{k}") for k in range(KEYFRAMES)]
        samples = [nusc.get("sample", t) for t in tokens]
        assert samples[0]["prev"] == "" and samples[1]["prev"] == tokens[0]
        times = [s["timestamp"] for s in samples]
        assert np.all(np.diff(times) == 500_000)
        poses = []
        for sample in samples:
            assert set(sample["data"]) == {"LIDAR_TOP", *NUSCENES_CAMERAS}
            records = [nusc.get("sample_data", sd) for sd in sample["data"].values()]
            assert all(r["is_key_frame"] and r["timestamp"] == sample["timestamp"] for r in records)
            assert all(Path(nusc.get_sample_data_path(r["token"])).is_file() for r in records)
            assert {(r["width"], r["height"]) for r in records if r["channel"] != "LIDAR_TOP"} == {(width, height)}
            pose = {json.dumps(nusc.get("ego_pose", r["ego_pose_token"])["translation"]) for r in records}
            assert len(pose) == 1  # one ego pose for the lidar and the cameras of a keyframe
            poses.append(np.array(json.loads(pose.pop())))
        assert 50 < np.linalg.norm(poses[0]) < 300 and np.linalg.norm(poses[1] - poses[0]) == pytest.approx(5, abs=1e-3)


def test_dataset_reads_splits_in_scene_and_time_order(mini):
    root, _ = mini
    for split, names in MINI_NAMES.items():
        ds = NuScenesDataset(root, split=split, version="v1.0-mini")
        assert ds.ids == [token(0, "sample", f"{name}/{k}") for name in names for k in range(KEYFRAMES)]


def _check_pairing(got: np.ndarray, ref_cam, points: np.ndarray) -> int:
    """Number of points paired differently; each must sit on a rounding or image-border boundary."""
    calib = ref_cam.calibration
    cam = points[:, :3].astype(np.float64) @ calib.lidar_to_camera[:3, :3].T + calib.lidar_to_camera[:3, 3]
    uv = (cam @ calib.intrinsic.T)[:, :2] / cam[:, 2:3]
    a = {int(i): (int(r), int(c)) for i, r, c in got}
    b = {int(i): (int(r), int(c)) for i, r, c in ref_cam.pairing}
    differ = [i for i in a.keys() | b.keys() if a.get(i) != b.get(i)]
    for i in differ:
        u, v = uv[i]
        if i in a and i in b:  # same point, neighbouring pixel: (u, v) on a half-pixel boundary
            assert min(abs(u % 1 - 0.5), abs(v % 1 - 0.5)) < 1e-2, (i, u, v)
        else:  # paired on one side only: on the 1-pixel margin or at 1 m depth
            border = min(abs(u - 1), abs(u - calib.width + 1), abs(v - 1), abs(v - calib.height + 1))
            assert border < 1e-2 or abs(cam[i, 2] - 1.0) < 1e-4, (i, u, v, cam[i, 2])
    return len(differ)


def test_points_labels_pairings_and_images_match_the_synthetic_scans(mini):
    root, scans = mini
    differ = total = 0
    for split, names in MINI_NAMES.items():
        ds = NuScenesDataset(root, split=split, version="v1.0-mini")
        for i, (name, k) in enumerate((n, k) for n in names for k in range(KEYFRAMES)):
            scan, ref = ds[i], scans[name, k]
            np.testing.assert_array_equal(scan.points, ref.points)
            np.testing.assert_array_equal(scan.labels, ref.labels)
            assert [c.name for c in scan.cameras] == [c.name for c in ref.cameras] == list(NUSCENES_CAMERAS)
            for cam, ref_cam in zip(scan.cameras, ref.cameras, strict=True):
                np.testing.assert_allclose(cam.calibration.intrinsic, ref_cam.calibration.intrinsic, rtol=1e-12)
                np.testing.assert_allclose(cam.calibration.lidar_to_camera, ref_cam.calibration.lidar_to_camera,
                                           atol=1e-9)  # fmt: skip
                differ += _check_pairing(cam.pairing, ref_cam, ref.points)
                total += len(ref_cam.pairing)
                assert cam.image.shape == ref_cam.image.shape
                assert np.abs(cam.image.astype(np.int16) - ref_cam.image).mean() < 3.0  # JPEG quality 95
    assert total > 10_000 and differ <= 1e-3 * total


def test_point_file_has_rings_and_devkit_projection_agrees(mini):
    root, scans = mini
    nusc = NuScenes(version="v1.0-mini", dataroot=str(root), verbose=False)
    sample = nusc.get("sample", token(0, "sample", "scene-0061/0"))
    ref = scans["scene-0061", 0]
    raw = np.fromfile(nusc.get_sample_data_path(sample["data"]["LIDAR_TOP"]), dtype=np.float32).reshape(-1, 5)
    ring = raw[:, 4]
    assert ring.min() == 0 and ring.max() == 31 and np.all(ring == np.rint(ring)) and np.all(np.diff(ring) <= 0)
    labels = np.fromfile(root / nusc.get("lidarseg", sample["data"]["LIDAR_TOP"])["filename"], dtype=np.uint8)
    np.testing.assert_array_equal(labels, fine_labels(ref.labels))
    for channel in ("CAM_FRONT", "CAM_BACK"):
        uv, depth, _ = NuScenesExplorer(nusc).map_pointcloud_to_image(sample["data"]["LIDAR_TOP"],
                                                                      sample["data"][channel])  # fmt: skip
        pairing = ref.camera(channel).pairing
        assert uv.shape[1] == len(pairing) > 100
        np.testing.assert_array_equal(np.rint(uv[1::-1].T).astype(np.int64), pairing[:, 1:])


def test_trainval_version(tmp_path, small_config):
    root = write_nuscenes_dataroot(tmp_path, "v1.0-trainval", {"train": 2, "val": 1}, 1, config=small_config())
    train = NuScenesDataset(root, split="train", version="v1.0-trainval")
    val = NuScenesDataset(root, split="val", version="v1.0-trainval")
    assert train.ids == [token(0, "sample", f"scene-000{n}/0") for n in (1, 2)]
    assert val.ids == [token(0, "sample", "scene-0003/0")]
    ref = generate_scene(keyframe_seed(0, "scene-0003", 0), "nuscenes", small_config())
    np.testing.assert_array_equal(val[0].labels, ref.labels)
    with pytest.raises(ValueError, match=r"split 'mini_val' belongs to a '\*-mini' version, not 'v1.0-trainval'"):
        write_nuscenes_dataroot(tmp_path / "bad", "v1.0-trainval", {"mini_val": 1})


def test_without_lidarseg_labels_are_none(tmp_path, small_config):
    root = write_nuscenes_dataroot(tmp_path, scenes={"mini_val": 1}, keyframes=1, lidarseg=False, config=small_config())
    assert not (root / "v1.0-mini" / "lidarseg.json").exists() and not (root / "lidarseg").exists()
    assert not hasattr(NuScenes(version="v1.0-mini", dataroot=str(root), verbose=False), "lidarseg")
    scan = NuScenesDataset(root, split="mini_val", version="v1.0-mini")[0]
    assert scan.labels is None and len(scan.points) > 10_000


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_arguments_give_identical_bytes(mini, tmp_path, small_config):
    root, _ = mini
    again = write_nuscenes_dataroot(tmp_path / "again", "v1.0-mini", MINI, KEYFRAMES, config=small_config())
    first, second = _files(root), _files(again)
    assert first.keys() == second.keys() and {f"v1.0-mini/{t}.json" for t in TABLES} <= first.keys()
    assert [name for name in first if first[name] != second[name]] == []
    assert sorted(str(p.relative_to(root)) for p in dataroot_files(root, "v1.0-mini")) == sorted(first)
    with pytest.raises(FileExistsError, match="already exists"):
        write_nuscenes_dataroot(again, "v1.0-mini", MINI, KEYFRAMES, config=small_config())
    # Overwriting with fewer scenes leaves no stale table or label file behind (the devkit counts label files).
    write_nuscenes_dataroot(again, "v1.0-mini", {"mini_val": 1}, 1, seed=1, config=small_config(), overwrite=True)
    nusc = NuScenes(version="v1.0-mini", dataroot=str(again), verbose=False)
    assert len(nusc.sample) == len(nusc.lidarseg) == 1 and nusc.sample[0]["token"] == token(1, "sample", "scene-0103/0")


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown nuScenes split 'mini_tran'"):
        write_nuscenes_dataroot(tmp_path, scenes={"mini_tran": 1})
    with pytest.raises(ValueError, match="3 scenes requested from split 'mini_val', which has 2"):
        write_nuscenes_dataroot(tmp_path, scenes={"mini_val": 3})
    with pytest.raises(ValueError, match="keyframes must be in 1..999"):
        write_nuscenes_dataroot(tmp_path, keyframes=0)
    with pytest.raises(ValueError, match="unknown synthetic variant"):
        write_nuscenes_dataroot(tmp_path, variant="kitti")
    assert not any(tmp_path.iterdir())


def test_cli(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--no-lidarseg" in capsys.readouterr().out
    assert main(["--out", str(tmp_path), "--scenes", "mini_val=1", "--keyframes", "1", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path}/v1.0-mini: 1 scenes (mini_val 1), 1 keyframes, with lidarseg" in out and "MB" in out
    image = read_image(next((tmp_path / "samples" / "CAM_FRONT").glob("*.jpg")))
    assert image.shape == (224, 416, 3)
    assert main(["--out", str(tmp_path), "--scenes", "mini_val=1"]) == 2
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--scenes", "mini_val"])


def test_ood_variant(tmp_path, small_config):
    cfg = small_config("ood")
    root = write_nuscenes_dataroot(tmp_path, scenes={"mini_val": 1}, keyframes=1, variant="ood", config=cfg)
    scan = NuScenesDataset(root, split="mini_val", version="v1.0-mini")[0]
    ref = generate_scene(keyframe_seed(0, "scene-0103", 0), "ood", cfg)
    np.testing.assert_array_equal(scan.points, ref.points)
    np.testing.assert_array_equal(scan.labels, ref.labels)
    for cam, ref_cam in zip(scan.cameras, ref.cameras, strict=True):
        assert _check_pairing(cam.pairing, ref_cam, ref.points) <= 1e-3 * len(ref_cam.pairing) + 1
    rings = np.fromfile(next((root / "samples" / "LIDAR_TOP").glob("*.bin")), dtype=np.float32).reshape(-1, 5)[:, 4]
    assert rings.max() == 63
