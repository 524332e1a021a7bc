"""Sensor rigs of the synthetic world: a spinning multi-beam lidar and six pinhole cameras.

The ego frame is x forward, y left, z up with the ground at ``z = 0`` (nuScenes' ego frame sits on the ground
under the rear axle). The lidar frame has the ego frame's axes with its origin at the lidar, so points of a
scan lie around ``z = -mount height`` on the road, as in nuScenes.

Defaults (``NUSCENES_RIG``): the nuScenes LIDAR_TOP (Velodyne HDL-32E, 32 beams from -30.67 deg to
+10.67 deg, mounted at (0.94, 0, 1.84) m) and the six nuScenes cameras at their approximate ego-frame
positions and yaws, horizontal fields of view of 64.8 deg (front/side cameras, ``fx = 1266`` at 1600 px) and
89.4 deg (``CAM_BACK``, ``fx = 809``), rendered at 416 x 224 pixels (nuScenes' 1600 x 900 scaled by 0.26,
height cropped to a multiple of 16 for a ViT patch grid). ``OOD_RIG``: a 64-beam sensor (Velodyne HDL-64E
elevations, -24.9 deg to +2.0 deg) at 1.73 m (KITTI's mount) and cameras at 1.65 m with wider fields of view.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from bench.data.scan import CameraCalibration
from bench.data.synthetic.raycast import RayBundle


@dataclass(frozen=True)
class LidarSpec:
    """A spinning lidar.

    Attributes:
        beams: number of lasers (rows of the range image).
        elevation_deg: (lowest, highest) beam elevation in degrees, beams spaced uniformly.
        azimuth_steps: firings per revolution per beam.
        position: (x, y, z) of the sensor in the ego frame, metres.
        max_range: returns beyond this distance are dropped, metres.
        range_noise: standard deviation of the Gaussian range noise, metres.
        dropout: probability that a return is lost.
    """

    beams: int = 32
    elevation_deg: tuple[float, float] = (-30.67, 10.67)
    azimuth_steps: int = 1088
    position: tuple[float, float, float] = (0.94, 0.0, 1.84)
    max_range: float = 70.0
    range_noise: float = 0.02
    dropout: float = 0.03

    def directions(self) -> np.ndarray:
        """``(beams, azimuth_steps, 3)`` unit ray directions, highest beam first, azimuth from +x anticlockwise."""
        elev = np.deg2rad(np.linspace(self.elevation_deg[1], self.elevation_deg[0], self.beams))
        azim = 2.0 * np.pi * np.arange(self.azimuth_steps) / self.azimuth_steps
        ce, se = np.cos(elev)[:, None], np.sin(elev)[:, None]
        return np.stack(
            np.broadcast_arrays(ce * np.cos(azim)[None], ce * np.sin(azim)[None], se * np.ones_like(azim)[None]),
            axis=-1,
        )

    def bundle(self, tile: tuple[int, int] = (8, 32)) -> RayBundle:
        """The lidar's rays as a :class:`RayBundle` (origin in the ego frame)."""
        return RayBundle.from_grid(np.array(self.position), self.directions(), tile)


@dataclass(frozen=True)
class CameraSpec:
    """A pinhole camera looking horizontally.

    Attributes:
        name: channel name.
        yaw_deg: heading in the ego frame (0 = forward, 90 = left).
        position: (x, y, z) in the ego frame, metres.
        hfov_deg: horizontal field of view; ``fx = fy = (W / 2) / tan(hfov / 2)``, principal point
            ``(W / 2, H / 2)``.
        width, height: image size in pixels.
    """

    name: str
    yaw_deg: float
    position: tuple[float, float, float]
    hfov_deg: float = 64.8
    width: int = 416
    height: int = 224

    def intrinsic(self) -> np.ndarray:
        """The ``(3, 3)`` matrix ``K``."""
        f = 0.5 * self.width / np.tan(np.deg2rad(self.hfov_deg) / 2.0)
        return np.array([[f, 0.0, self.width / 2.0], [0.0, f, self.height / 2.0], [0.0, 0.0, 1.0]])

    def camera_to_ego(self) -> np.ndarray:
        """``(4, 4)`` transform from the camera frame (x right, y down, z forward) to the ego frame."""
        yaw = np.deg2rad(self.yaw_deg)
        forward = np.array([np.cos(yaw), np.sin(yaw), 0.0])
        right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
        down = np.array([0.0, 0.0, -1.0])
        out = np.eye(4)
        out[:3, :3] = np.stack([right, down, forward], axis=1)
        out[:3, 3] = self.position
        return out

    def directions(self) -> np.ndarray:
        """``(H, W, 3)`` unit directions (ego frame) of the rays through the pixel centres."""
        k = self.intrinsic()
        cols, rows = np.meshgrid(np.arange(self.width), np.arange(self.height))
        cam = np.stack([(cols - k[0, 2]) / k[0, 0], (rows - k[1, 2]) / k[1, 1], np.ones(cols.shape)], axis=-1)
        cam /= np.linalg.norm(cam, axis=-1, keepdims=True)
        return cam @ self.camera_to_ego()[:3, :3].T

    def bundle(self, tile: tuple[int, int] = (16, 16)) -> RayBundle:
        """The camera's pixel rays as a :class:`RayBundle` (origin in the ego frame)."""
        return RayBundle.from_grid(np.array(self.position), self.directions(), tile)


def _lidar_to_ego(lidar: LidarSpec) -> np.ndarray:
    out = np.eye(4)
    out[:3, 3] = lidar.position
    return out


@dataclass(frozen=True)
class Rig:
    """A lidar and its cameras."""

    lidar: LidarSpec
    cameras: tuple[CameraSpec, ...] = field(default_factory=tuple)

    def calibration(self, camera: CameraSpec) -> CameraCalibration:
        """The calibration pairing lidar-frame points with ``camera``."""
        lidar_to_camera = np.linalg.inv(camera.camera_to_ego()) @ _lidar_to_ego(self.lidar)
        return CameraCalibration(camera.intrinsic(), lidar_to_camera, camera.width, camera.height)

    def with_resolution(self, width: int, height: int) -> Rig:
        """The same rig with every camera rendered at ``width`` x ``height`` (fields of view kept)."""
        return replace(self, cameras=tuple(replace(c, width=width, height=height) for c in self.cameras))


NUSCENES_RIG = Rig(
    lidar=LidarSpec(),
    cameras=(
        CameraSpec("CAM_FRONT", 0.0, (1.70, 0.00, 1.51)),
        CameraSpec("CAM_FRONT_RIGHT", -55.0, (1.52, -0.49, 1.51)),
        CameraSpec("CAM_BACK_RIGHT", -110.0, (1.03, -0.48, 1.56)),
        CameraSpec("CAM_BACK", 180.0, (0.03, 0.00, 1.54), hfov_deg=89.4),
        CameraSpec("CAM_BACK_LEFT", 110.0, (1.04, 0.48, 1.56)),
        CameraSpec("CAM_FRONT_LEFT", 55.0, (1.52, 0.49, 1.51)),
    ),
)
"""nuScenes-like rig (see the module docstring)."""

OOD_RIG = Rig(
    lidar=LidarSpec(beams=64, elevation_deg=(-24.9, 2.0), azimuth_steps=1600, position=(0.0, 0.0, 1.73)),
    cameras=(
        CameraSpec("CAM_FRONT", 0.0, (0.27, 0.00, 1.65), hfov_deg=81.0),
        CameraSpec("CAM_FRONT_RIGHT", -60.0, (0.20, -0.45, 1.65), hfov_deg=75.0),
        CameraSpec("CAM_BACK_RIGHT", -120.0, (-0.20, -0.45, 1.65), hfov_deg=75.0),
        CameraSpec("CAM_BACK", 180.0, (-0.60, 0.00, 1.65), hfov_deg=95.0),
        CameraSpec("CAM_BACK_LEFT", 120.0, (-0.20, 0.45, 1.65), hfov_deg=75.0),
        CameraSpec("CAM_FRONT_LEFT", 60.0, (0.20, 0.45, 1.65), hfov_deg=75.0),
    ),
)
"""Out-of-distribution rig: 64 beams, lower mount, different camera placement and fields of view."""
