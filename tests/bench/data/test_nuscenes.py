"""nuScenes through nuscenes-devkit: the real keyframe against the devkit's own projection, a generated
lidarseg dataroot for the label path, and the bad-input errors."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from nuscenes.eval.lidarseg.utils import LidarsegClassMapper
from nuscenes.nuscenes import NuScenes, NuScenesExplorer

from bench.data.classes import IGNORE_INDEX, NUSCENES_CLASSES
from bench.data.io import DataFormatError
from bench.data.nuscenes import NUSCENES_CAMERAS, NuScenesDataset, split_scene_names
from tests.conftest import NUSCENES_SAMPLE

TOKEN = "ca9a282c9e77460f8360f564131a8af5"


@pytest.fixture(scope="module")
def nusc():
    return NuScenes(version="v1.0-mini", dataroot=str(NUSCENES_SAMPLE), verbose=False)


@pytest.fixture(scope="module")
def real_scan(nusc):
    ds = NuScenesDataset(NUSCENES_SAMPLE, split="mini_val", version="v1.0-mini")
    assert ds.ids == [TOKEN]
    return ds, ds[0]


def test_real_keyframe_points_and_lazy_images(real_scan):
    ds, scan = real_scan
    raw = np.fromfile(NUSCENES_SAMPLE / ds.index.lidar_file[0].decode(), dtype=np.float32).reshape(-1, 5)
    assert scan.points.shape == (34688, 4) and scan.points.dtype == np.float32
    np.testing.assert_array_equal(scan.points, raw[:, :4])
    assert scan.labels is None  # no lidarseg in this dataroot
    assert [c.name for c in scan.cameras] == list(NUSCENES_CAMERAS)
    cam = scan.cameras[0]
    assert cam._image is None  # read lazily
    assert cam.image.shape == (900, 1600, 3) and cam.image.dtype == np.uint8


@pytest.mark.parametrize("channel", NUSCENES_CAMERAS)
def test_real_keyframe_pairing_equals_devkit(nusc, real_scan, channel):
    ds, scan = real_scan
    sample = nusc.get("sample", TOKEN)
    lidar_sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    cam_sd = nusc.get("sample_data", sample["data"][channel])
    expected, depth, _ = NuScenesExplorer(nusc).map_pointcloud_to_image(lidar_sd["token"], cam_sd["token"])
    cam = scan.camera(channel)
    slot = NUSCENES_CAMERAS.index(channel)
    proj = ds.project(scan.points, 0, slot, cam.calibration)
    # Same points (the devkit keeps the point order), pixels within 0.01 px before rounding.
    assert len(proj.indices) == expected.shape[1] > 2000
    np.testing.assert_allclose(proj.uv, expected[:2].T, atol=0.01, rtol=0)
    np.testing.assert_allclose(proj.depth, depth, atol=1e-3)
    np.testing.assert_array_equal(cam.pairing, proj.pairing())
    np.testing.assert_array_equal(cam.pairing[:, 1:], np.rint(expected[1::-1].T).astype(np.int64))
    # The stored float64 calibration reproduces the same projection up to the devkit's float32 rounding.
    exact = NuScenesDataset(NUSCENES_SAMPLE, "mini_val", "v1.0-mini", devkit_rounding=False)
    exact_proj = exact.project(scan.points, 0, slot, cam.calibration)
    np.testing.assert_array_equal(exact_proj.indices, proj.indices)
    np.testing.assert_allclose(exact_proj.uv, proj.uv, atol=0.05, rtol=0)


def test_dataroot_without_version(tmp_path):
    shutil.copytree(NUSCENES_SAMPLE / "v1.0-mini", tmp_path / "v1.0-mini")
    with pytest.raises(FileNotFoundError, match=r"has no table folder 'v1.0-trainval' \(found: v1.0-mini\)"):
        NuScenesDataset(tmp_path, split="train", version="v1.0-trainval")
    with pytest.raises(FileNotFoundError, match="dataroot not found"):
        NuScenesDataset(tmp_path / "missing", split="train")


def test_unknown_split_and_empty_split():
    with pytest.raises(ValueError, match=r"unknown nuScenes split 'trian'; known splits: train, val"):
        NuScenesDataset(NUSCENES_SAMPLE, split="trian", version="v1.0-mini")
    with pytest.raises(ValueError, match="split 'mini_train' has no scene in"):
        NuScenesDataset(NUSCENES_SAMPLE, split="mini_train", version="v1.0-mini")


def test_few_shot_split_resolves_scene_names():
    names = split_scene_names("train_1pct")
    assert names == split_scene_names("train")[::100] and len(names) == 7


def test_missing_camera_image(nuscenes_copy):
    image = next((nuscenes_copy / "samples" / "CAM_BACK").glob("*.jpg"))
    image.unlink()
    ds = NuScenesDataset(nuscenes_copy, split="mini_val", version="v1.0-mini")
    with pytest.raises(FileNotFoundError, match=rf"camera image not found: .*{re.escape(image.name)} \(CAM_BACK"):
        ds[0]


def _add_lidarseg(root: Path, labels: np.ndarray) -> Path:
    """Turn a dataroot copy into a nuScenes-lidarseg dataroot with the given fine labels."""
    tables = root / "v1.0-mini"
    sample_data = json.loads((tables / "sample_data.json").read_text())
    lidar = next(sd for sd in sample_data if "LIDAR_TOP" in sd["filename"])
    rel = f"lidarseg/v1.0-mini/{lidar['token']}_lidarseg.bin"
    (root / rel).parent.mkdir(parents=True)
    labels.astype(np.uint8).tofile(root / rel)
    record = {"token": lidar["token"], "sample_data_token": lidar["token"], "filename": rel}
    (tables / "lidarseg.json").write_text(json.dumps([record]))
    return root / rel


def test_lidarseg_labels_are_mapped_to_16_classes(nuscenes_copy):
    fine = np.arange(34688) % 32
    _add_lidarseg(nuscenes_copy, fine)
    ds = NuScenesDataset(nuscenes_copy, split="mini_val", version="v1.0-mini")
    scan = ds[0]
    mapper = LidarsegClassMapper(NuScenes(version="v1.0-mini", dataroot=str(nuscenes_copy), verbose=False))
    expected = np.array([mapper.fine_idx_2_coarse_idx_mapping[int(f)] for f in fine])  # 0 = ignore, 1..16
    expected = np.where(expected == 0, IGNORE_INDEX, expected - 1)
    np.testing.assert_array_equal(scan.labels, expected)
    assert scan.labels[17] == NUSCENES_CLASSES.index("car") and scan.labels[31] == IGNORE_INDEX


def test_lidarseg_label_count_mismatch(nuscenes_copy):
    path = _add_lidarseg(nuscenes_copy, np.zeros(34687))
    ds = NuScenesDataset(nuscenes_copy, split="mini_val", version="v1.0-mini")
    with pytest.raises(
        DataFormatError, match=rf"{re.escape(path.name)}: 34687 labels but the point cloud has 34688 points"
    ):
        ds[0]


def test_truncated_point_cloud(nuscenes_copy):
    lidar = next((nuscenes_copy / "samples" / "LIDAR_TOP").glob("*.bin"))
    data = lidar.read_bytes()
    lidar.write_bytes(data[:-6])
    ds = NuScenesDataset(nuscenes_copy, split="mini_val", version="v1.0-mini")
    with pytest.raises(
        DataFormatError, match=rf"{re.escape(lidar.name)}: size .* not a multiple of the record size 20"
    ):
        ds[0]


@pytest.mark.slow
def test_keyframe_index_cache_is_read_back_without_the_tables(tmp_path, monkeypatch):
    from bench.data import nuscenes

    reference = NuScenesDataset(NUSCENES_SAMPLE, "mini_val", "v1.0-mini")  # built in this process

    def no_tables(*args, **kwargs):
        raise AssertionError("this process read the devkit tables")

    monkeypatch.setattr(nuscenes.NuScenesIndex, "build", no_tables)
    first = NuScenesDataset(NUSCENES_SAMPLE, "mini_val", "v1.0-mini", index_cache=tmp_path)  # built in a child
    (path,) = tmp_path.glob("nuscenes-v1.0-mini-*.npz")
    again = NuScenesDataset(NUSCENES_SAMPLE, "mini_val", "v1.0-mini", index_cache=tmp_path)
    assert reference.ids == first.ids
    assert again.ids == first.ids == [TOKEN]
    for name in nuscenes.NuScenesIndex.__dataclass_fields__:
        a, b = getattr(first.index, name), getattr(again.index, name)
        assert (a is None and b is None) or np.array_equal(a, b), name
    np.testing.assert_array_equal(again[0].cameras[2].pairing, first[0].cameras[2].pairing)
    assert path.stat().st_size < 20_000  # about 1 kB per keyframe (plus the npz headers)
