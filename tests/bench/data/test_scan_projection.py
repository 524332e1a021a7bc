"""The pairing rule and the Scan record, on hand-computed projections."""

import numpy as np
import pytest

from bench.data.classes import IGNORE_INDEX
from bench.data.scan import CameraCalibration, CameraView, Scan, project_points

K = np.array([[100.0, 0.0, 50.0], [0.0, 100.0, 40.0], [0.0, 0.0, 1.0]])


def calib(transform: np.ndarray | None = None) -> CameraCalibration:
    return CameraCalibration(K, np.eye(4) if transform is None else transform, width=100, height=80)


def test_projection_hand_computed():
    pts = np.array(
        [
            [0.0, 0.0, 10.0],  # centre: u = 50, v = 40
            [1.0, -0.5, 4.0],  # u = 50 + 100 * 1 / 4 = 75, v = 40 - 100 * 0.5 / 4 = 27.5
            [0.2, 0.1, 1.0],  # depth 1.0: not > 1 m, dropped
            [-4.9, 0.0, 1.0001],  # depth > 1 m but u = 50 - 489.95 < 1, dropped
            [-0.49, 0.0, 1.0],  # u = 1.0 exactly at the margin: dropped (strict)
            [-0.0489, 0.0, 1.0],  # u = 45.11 but depth exactly 1 m: dropped
            [-4.8, 0.0, 10.0],  # u = 2.0: kept
            [4.9, 0.0, 10.0],  # u = 99.0 = W - 1: dropped
            [0.0, 0.0, -5.0],  # behind the camera
        ]
    )
    proj = project_points(pts, calib())
    np.testing.assert_array_equal(proj.indices, [0, 1, 6])
    np.testing.assert_allclose(proj.uv, [[50.0, 40.0], [75.0, 27.5], [2.0, 40.0]])
    np.testing.assert_allclose(proj.depth, [10.0, 4.0, 10.0])
    # Rows then columns; v = 27.5 rounds to 28 (numpy rounds halves to even).
    np.testing.assert_array_equal(proj.pairing(), [[0, 40, 50], [1, 28, 75], [6, 40, 2]])


def test_projection_applies_the_rigid_transform():
    # Camera 2 m behind the lidar along its optical axis and rotated 90 deg about the vertical axis:
    # lidar x -> camera z (forward), lidar y -> camera -x.
    t = np.eye(4)
    t[:3, :3] = [[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]
    t[:3, 3] = [0.0, 0.0, 2.0]
    proj = project_points(np.array([[8.0, -1.0, 0.5, 7.0]]), calib(t))
    # camera point (1, -0.5, 10): u = 50 + 10 = 60, v = 40 - 5 = 35
    np.testing.assert_allclose(proj.uv, [[60.0, 35.0]])
    np.testing.assert_allclose(proj.depth, [10.0])


def test_scan_rejects_wrong_label_count_and_values():
    pts = np.zeros((3, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="2 labels for 3 points"):
        Scan("s", pts, np.zeros(2, dtype=np.int64), [], ("a", "b"))
    with pytest.raises(ValueError, match="label values outside"):
        Scan("s", pts, np.array([0, 5, IGNORE_INDEX]), [], ("a", "b"))
    with pytest.raises(ValueError, match=r"\(N, 4\) float32"):
        Scan("s", pts.astype(np.float64), None, [], ("a",))


def test_pairing_table_adds_camera_index():
    pts = np.zeros((2, 4), dtype=np.float32)
    cams = [
        CameraView("A", calib(), np.array([[0, 1, 2]])),
        CameraView("B", calib(), np.array([[1, 3, 4], [0, 5, 6]])),
    ]
    scan = Scan("s", pts, None, cams, ("a",))
    np.testing.assert_array_equal(scan.pairing_table(), [[0, 0, 1, 2], [1, 1, 3, 4], [0, 1, 5, 6]])
    assert scan.camera("B") is cams[1]
    with pytest.raises(KeyError, match="no camera 'C'"):
        scan.camera("C")
