"""The one record every dataset yields: a lidar scan with its camera views and point-to-pixel pairings.

Frames and conventions (shared by nuScenes, SemanticKITTI and the synthetic world):

- ``Scan.points`` are in the lidar frame, columns ``x, y, z, intensity`` (float32).
- A camera frame is OpenCV's: x right, y down, z forward (the depth). ``CameraCalibration.lidar_to_camera``
  maps homogeneous lidar-frame points to it; ``intrinsic`` is the 3x3 pinhole matrix ``K``.
- Pixel coordinates: ``u`` (column) and ``v`` (row), with the centre of pixel ``(row, col)`` at
  ``(u, v) = (col, row)`` -- the convention of ``K`` in nuScenes, KITTI and OpenCV.

Pairing rule (:func:`project_points`), identical to nuscenes-devkit's ``NuScenesExplorer.map_pointcloud_to_image``:
``p_cam = T p_lidar``, ``(u, v) = (K p_cam)[:2] / (K p_cam)[2]``; a point pairs with the camera when
``depth = p_cam.z > min_depth`` (devkit default 1 m) and ``margin < u < W - margin``,
``margin < v < H - margin`` (devkit: a 1-pixel margin, strict inequalities). The pixel is
``(row, col) = (round(v), round(u))`` (SLidR's rounding), always inside the image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.data.classes import IGNORE_INDEX


@dataclass(frozen=True)
class CameraCalibration:
    """The calibration used to pair points with one camera.

    Attributes:
        intrinsic: ``(3, 3)`` float64 pinhole matrix ``K``.
        lidar_to_camera: ``(4, 4)`` float64 rigid transform from the lidar frame to the camera frame (for
            nuScenes the composition of the devkit's four steps, ego motion included).
        width: image width in pixels.
        height: image height in pixels.
    """

    intrinsic: np.ndarray
    lidar_to_camera: np.ndarray
    width: int
    height: int

    def __post_init__(self) -> None:
        if np.shape(self.intrinsic) != (3, 3) or np.shape(self.lidar_to_camera) != (4, 4):
            raise ValueError(
                f"calibration needs a (3, 3) intrinsic and a (4, 4) transform, got "
                f"{np.shape(self.intrinsic)} and {np.shape(self.lidar_to_camera)}"
            )


@dataclass(frozen=True)
class Projection:
    """Points of a scan that project into one image (output of :func:`project_points`).

    Attributes:
        indices: ``(M,)`` int64 indices into the scan's points.
        uv: ``(M, 2)`` float64 pixel coordinates ``(u, v)`` before rounding.
        depth: ``(M,)`` float64 camera-frame z of each point.
    """

    indices: np.ndarray
    uv: np.ndarray
    depth: np.ndarray

    def pairing(self) -> np.ndarray:
        """``(M, 3)`` int64 rows ``(point index, row, col)`` with ``row = round(v)``, ``col = round(u)``."""
        rows = np.rint(self.uv[:, 1]).astype(np.int64)
        cols = np.rint(self.uv[:, 0]).astype(np.int64)
        return np.stack([self.indices.astype(np.int64), rows, cols], axis=1)


def project_points(
    xyz: np.ndarray, calibration: CameraCalibration, min_depth: float = 1.0, margin: float = 1.0
) -> Projection:
    """Project lidar-frame points into a camera with the devkit's rule (see the module docstring).

    Args:
        xyz: ``(N, 3)`` (or ``(N, >=3)``; extra columns are ignored) points in the lidar frame.
        calibration: the camera's calibration.
        min_depth: points with camera depth ``<= min_depth`` metres are dropped (devkit: ``min_dist=1.0``).
        margin: points with ``u <= margin``, ``u >= W - margin`` (same for ``v``/``H``) are dropped
            (devkit: 1 pixel).

    Returns:
        The indices of the kept points, their pixel coordinates before rounding, and their depth.
    """
    pts = np.asarray(xyz, dtype=np.float64)[:, :3]
    rot = calibration.lidar_to_camera[:3, :3]
    trans = calibration.lidar_to_camera[:3, 3]
    return project_camera_points(pts @ rot.T + trans, calibration, min_depth, margin)


def project_camera_points(
    cam: np.ndarray, calibration: CameraCalibration, min_depth: float = 1.0, margin: float = 1.0
) -> Projection:
    """The second half of :func:`project_points`, for points already in the camera frame ``(N, 3)``."""
    cam = np.asarray(cam, dtype=np.float64)
    front = np.flatnonzero(cam[:, 2] > min_depth)  # a camera sees a fraction of a surround scan: project only those
    ahead = cam[front]
    with np.errstate(divide="ignore", invalid="ignore"):
        pix = ahead @ calibration.intrinsic.T
        uv = pix[:, :2] / pix[:, 2:3]
    keep = (
        (uv[:, 0] > margin)
        & (uv[:, 0] < calibration.width - margin)
        & (uv[:, 1] > margin)
        & (uv[:, 1] < calibration.height - margin)
    )
    return Projection(indices=front[keep], uv=uv[keep], depth=ahead[keep, 2])


@dataclass
class CameraView:
    """One camera of a scan: its image (possibly read lazily), calibration and point pairing.

    Attributes:
        name: camera channel, e.g. ``"CAM_FRONT"``.
        calibration: the calibration the pairing was computed with.
        pairing: ``(M, 3)`` int64 rows ``(point index, row, col)``, see :func:`project_points`.
        image_path: file the image is read from on first access of :attr:`image` (real datasets).
        class_map: ``(H, W)`` uint8 rendered class of every pixel (synthetic world only;
            :data:`~bench.data.classes.IGNORE_INDEX` where the ray hits nothing).
        instance_map: ``(H, W)`` int32 rendered instance id of every pixel (synthetic world only; 0 = none).
        depth: ``(H, W)`` float32 rendered camera-frame depth in metres (synthetic world only; 0 = no hit).
    """

    name: str
    calibration: CameraCalibration
    pairing: np.ndarray
    image_path: Path | None = None
    class_map: np.ndarray | None = None
    instance_map: np.ndarray | None = None
    depth: np.ndarray | None = None
    _image: np.ndarray | None = field(default=None, repr=False)
    _reader: Callable[[Path], np.ndarray] | None = field(default=None, repr=False)

    @property
    def image(self) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB image, read from :attr:`image_path` the first time it is asked for."""
        if self._image is None:
            if self.image_path is None or self._reader is None:
                raise ValueError(f"camera {self.name} has neither an image nor an image file")
            self._image = self._reader(self.image_path)
        return self._image

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the image, from the calibration (no image read)."""
        return self.calibration.height, self.calibration.width


@dataclass
class Scan:
    """A lidar scan with labels and camera views.

    Attributes:
        scan_id: identifier unique within its dataset (nuScenes sample token, ``"08/000123"``, ...).
        points: ``(N, 4)`` float32 ``x, y, z, intensity`` in the lidar frame.
        labels: ``(N,)`` int64 class per point in the dataset's class space (``IGNORE_INDEX`` where not
            evaluated), or ``None`` when the scan has no labels.
        cameras: the camera views (empty when the dataset has no images).
        classes: names of the dataset's classes, index = label value.
    """

    scan_id: str
    points: np.ndarray
    labels: np.ndarray | None
    cameras: list[CameraView]
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.points.ndim != 2 or self.points.shape[1] != 4 or self.points.dtype != np.float32:
            raise ValueError(
                f"scan {self.scan_id}: points must be (N, 4) float32, got {self.points.shape} {self.points.dtype}"
            )
        if self.labels is not None:
            if self.labels.shape != (len(self.points),):
                raise ValueError(f"scan {self.scan_id}: {len(self.labels)} labels for {len(self.points)} points")
            bad = (self.labels != IGNORE_INDEX) & ((self.labels < 0) | (self.labels >= len(self.classes)))
            if bad.any():
                raise ValueError(
                    f"scan {self.scan_id}: label values outside 0..{len(self.classes) - 1} and IGNORE_INDEX"
                )

    def camera(self, name: str) -> CameraView:
        """The camera view called ``name``."""
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise KeyError(f"scan {self.scan_id} has no camera {name!r}; it has {[c.name for c in self.cameras]}")

    def pairing_table(self) -> np.ndarray:
        """All pairings of the scan as ``(M, 4)`` int64 rows ``(point index, camera index, row, col)``."""
        parts = [np.insert(cam.pairing, 1, i, axis=1) for i, cam in enumerate(self.cameras) if len(cam.pairing)]
        return np.concatenate(parts) if parts else np.zeros((0, 4), dtype=np.int64)
