"""SemanticKITTI on generated files in the real format (float32 .bin, uint32 .label, calib.txt, image_2/)."""

import numpy as np
import pytest
from PIL import Image

from bench.data.classes import IGNORE_INDEX, SEMANTICKITTI_CLASSES
from bench.data.fewshot import read_split_file
from bench.data.io import DataFormatError
from bench.data.semantickitti import SemanticKITTIDataset

# Calibration of KITTI odometry sequence 08 (P2 and Tr of its calib.txt, rounded).
P2 = np.array([[718.856, 0.0, 607.1928, 45.38225], [0.0, 718.856, 185.2157, -0.1130887], [0.0, 0.0, 1.0, 0.003779761]])
TR = np.array(
    [
        [-0.001857739, -0.9999659, -0.008039975, -0.004784029],
        [-0.006481465, 0.008051860, -0.9999466, -0.07337429],
        [0.9999773, -0.001805528, -0.006496203, -0.3339968],
    ]
)
RAW = np.array([10, 40, 252, 0, 70, 81, 60, 52], dtype=np.uint32)


def write_sequence(root, seq="08", frames=2, calib=True, labels=True, images=True):
    folder = root / "sequences" / seq
    (folder / "velodyne").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for f in range(frames):
        pts = np.concatenate([rng.uniform(-20, 20, (200, 3)), rng.uniform(0, 1, (200, 1))], axis=1)
        pts[:100, 0] = np.abs(pts[:100, 0]) + 2.0  # half of them in front of the car
        pts.astype(np.float32).tofile(folder / "velodyne" / f"{f:06d}.bin")
        if labels:
            (folder / "labels").mkdir(exist_ok=True)
            raw = RAW[np.arange(200) % len(RAW)] | (np.arange(200, dtype=np.uint32) << 16)  # instance ids on top
            raw.astype("<u4").tofile(folder / "labels" / f"{f:06d}.label")
        if images:
            (folder / "image_2").mkdir(exist_ok=True)
            Image.fromarray(np.full((370, 1226, 3), 90, np.uint8)).save(folder / "image_2" / f"{f:06d}.png")
    if calib:
        lines = [f"P{i}: " + " ".join(f"{v:.12e}" for v in P2.ravel()) for i in range(4)]
        lines.append("Tr: " + " ".join(f"{v:.12e}" for v in TR.ravel()))
        (folder / "calib.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_points_labels_and_split(tmp_path):
    write_sequence(tmp_path)
    ds = SemanticKITTIDataset(tmp_path, split="val")
    assert ds.ids == ["08/000000", "08/000001"]
    scan = ds[0]
    assert scan.points.shape == (200, 4) and scan.points.dtype == np.float32
    names = [SEMANTICKITTI_CLASSES[i] if i != IGNORE_INDEX else None for i in scan.labels[: len(RAW)]]
    assert names == ["car", "road", "car", None, "vegetation", "traffic-sign", "road", None]


def test_camera_pairing_matches_p2_tr(tmp_path):
    write_sequence(tmp_path)
    scan = SemanticKITTIDataset(tmp_path, split="val")[0]
    (cam,) = scan.cameras
    xyz1 = np.concatenate([scan.points[:, :3].astype(np.float64), np.ones((200, 1))], axis=1)
    pix = (P2 @ np.vstack([TR, [0, 0, 0, 1]]) @ xyz1.T).T
    uv = pix[:, :2] / pix[:, 2:]
    rect_depth = (TR @ xyz1.T).T[:, 2]
    ok = (rect_depth > 1.0) & (uv[:, 0] > 1) & (uv[:, 0] < 1225) & (uv[:, 1] > 1) & (uv[:, 1] < 369)
    assert ok.sum() > 5
    np.testing.assert_array_equal(cam.pairing[:, 0], np.flatnonzero(ok))
    np.testing.assert_array_equal(cam.pairing[:, 1:], np.rint(uv[ok][:, ::-1]).astype(np.int64))
    assert cam.image.shape == (370, 1226, 3)


def test_no_camera_without_calib(tmp_path):
    write_sequence(tmp_path, calib=False)
    assert SemanticKITTIDataset(tmp_path, split="val")[0].cameras == []


def test_bad_inputs(tmp_path):
    folder = write_sequence(tmp_path)
    with pytest.raises(ValueError, match=r"unknown SemanticKITTI split 'training'; known splits: train, val"):
        SemanticKITTIDataset(tmp_path, split="training")
    with pytest.raises(ValueError, match="split 'train' has no scan under"):
        SemanticKITTIDataset(tmp_path, split="train")
    ds = SemanticKITTIDataset(tmp_path, split="val")
    np.zeros(199, dtype=np.uint32).tofile(folder / "labels" / "000000.label")
    with pytest.raises(DataFormatError, match=r"000000\.label: 199 labels but the point cloud has 200 points"):
        ds[0]
    (folder / "velodyne" / "000001.bin").write_bytes(b"\0" * 30)
    with pytest.raises(DataFormatError, match=r"000001\.bin: size 30 bytes is not a multiple of the record size 16"):
        ds[1]
    write_sequence(tmp_path, seq="00", frames=1)
    (tmp_path / "sequences" / "00" / "image_2" / "000000.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"camera image not found: .*00/image_2/000000\.png"):
        SemanticKITTIDataset(tmp_path, split="train")[0]
    bad = RAW.copy()
    bad[0] = 12
    folder = write_sequence(tmp_path / "other", seq="08", frames=1)
    bad[np.arange(200) % len(bad)].tofile(folder / "labels" / "000000.label")
    with pytest.raises(DataFormatError, match=r"unknown SemanticKITTI class ids \[12\]"):
        SemanticKITTIDataset(tmp_path / "other", split="val")[0]


def test_few_shot_split_file():
    ids = read_split_file("semantickitti_train_1pct.txt")
    assert ids[:2] == ["00/000000", "00/000100"] and len(ids) == 192
    assert not any(i.startswith("08/") for i in ids)
