"""nuScenes keyframes through nuscenes-devkit: lidar points, lidarseg labels (16 classes), six cameras.

Projection: the devkit's chain of ``NuScenesExplorer.map_pointcloud_to_image``, composed into one matrix

``T_cam<-lidar = inv(T_ego(t_cam)<-cam) @ inv(T_global<-ego(t_cam)) @ T_global<-ego(t_lidar) @ T_ego(t_lidar)<-lidar``

(lidar -> ego at the lidar timestamp -> global -> ego at the camera timestamp -> camera; every ``T`` from the
``calibrated_sensor`` and ``ego_pose`` records via ``nuscenes.utils.geometry_utils.transform_matrix``), then the
pairing rule of :func:`bench.data.scan.project_points` with the devkit's defaults: depth > 1 m and a 1-pixel
in-image margin. The devkit applies the chain as eight rotate/translate steps on a ``LidarPointCloud`` whose
float32 array is rounded after every step (global coordinates are ~1e3 m, so this moves pixels by up to
~0.03 px against exact float64 arithmetic). With ``devkit_rounding=True`` (default) points are moved through the
devkit's own ``LidarPointCloud`` steps, so pairings equal the devkit's; ``CameraCalibration.lidar_to_camera``
always holds the exact float64 composition above.

Splits: the official scene lists of ``nuscenes.utils.splits.create_splits_scenes()`` (``train``, ``val``,
``test``, ``mini_train``, ``mini_val``, ...), ``train_1pct`` (the scene names of
``splits/nuscenes_train_1pct.txt``; their sample tokens are resolved at run time from the dataroot) and
``all`` (every scene of the loaded version). Keyframes are ordered by scene (split order) then time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.data_classes import LidarPointCloud
from nuscenes.utils.geometry_utils import transform_matrix
from nuscenes.utils.splits import create_splits_scenes
from pyquaternion import Quaternion

from bench.data.base import ScanDataset, unknown_split_error
from bench.data.classes import NUSCENES_CLASSES, nuscenes_fine_to_coarse_lut
from bench.data.fewshot import read_split_file
from bench.data.io import read_image, read_labels, read_points_bin
from bench.data.scan import CameraCalibration, CameraView, Projection, Scan, project_camera_points, project_points

NUSCENES_CAMERAS: tuple[str, ...] = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_FRONT_LEFT",
)
LIDAR_CHANNEL = "LIDAR_TOP"
POINT_FIELDS = 5
"""Floats per point in a nuScenes ``.pcd.bin``: x, y, z, intensity, ring index."""
FEW_SHOT_SPLITS = {"train_1pct": "nuscenes_train_1pct.txt"}


def split_scene_names(split: str) -> list[str]:
    """Scene names of an official split (or of a few-shot split file), in their canonical order."""
    official = create_splits_scenes(verbose=False)
    if split in official:
        return list(official[split])
    if split in FEW_SHOT_SPLITS:
        return read_split_file(FEW_SHOT_SPLITS[split])
    raise unknown_split_error("nuScenes", split, [*official, *FEW_SHOT_SPLITS, "all"])


def _pose(record: dict) -> np.ndarray:
    return transform_matrix(record["translation"], Quaternion(record["rotation"]), inverse=False)


def lidar_to_camera(nusc: NuScenes, lidar_sd: dict, camera_sd: dict) -> np.ndarray:
    """``(4, 4)`` transform from the lidar frame to the camera frame through the devkit's four steps."""
    lidar_cs = nusc.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"])
    lidar_pose = nusc.get("ego_pose", lidar_sd["ego_pose_token"])
    cam_cs = nusc.get("calibrated_sensor", camera_sd["calibrated_sensor_token"])
    cam_pose = nusc.get("ego_pose", camera_sd["ego_pose_token"])
    return np.linalg.inv(_pose(cam_cs)) @ np.linalg.inv(_pose(cam_pose)) @ _pose(lidar_pose) @ _pose(lidar_cs)


def devkit_camera_points(nusc: NuScenes, points: np.ndarray, lidar_sd: dict, camera_sd: dict) -> np.ndarray:
    """Camera-frame ``(N, 3)`` coordinates of lidar points computed exactly as the devkit's
    ``map_pointcloud_to_image`` does: the four steps on a float32 ``LidarPointCloud``."""
    pc = LidarPointCloud(np.array(points[:, :4].T, dtype=np.float32))
    cs = nusc.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"])
    pc.rotate(Quaternion(cs["rotation"]).rotation_matrix)
    pc.translate(np.array(cs["translation"]))
    pose = nusc.get("ego_pose", lidar_sd["ego_pose_token"])
    pc.rotate(Quaternion(pose["rotation"]).rotation_matrix)
    pc.translate(np.array(pose["translation"]))
    pose = nusc.get("ego_pose", camera_sd["ego_pose_token"])
    pc.translate(-np.array(pose["translation"]))
    pc.rotate(Quaternion(pose["rotation"]).rotation_matrix.T)
    cs = nusc.get("calibrated_sensor", camera_sd["calibrated_sensor_token"])
    pc.translate(-np.array(cs["translation"]))
    pc.rotate(Quaternion(cs["rotation"]).rotation_matrix.T)
    return pc.points[:3].T


class NuScenesDataset(ScanDataset):
    """Keyframes of a nuScenes split.

    Args:
        dataroot: folder holding ``samples/`` and the table folder ``<version>/``.
        split: split name (see the module docstring).
        version: table version, e.g. ``"v1.0-trainval"`` or ``"v1.0-mini"``.
        cameras: camera channels to pair with.
        min_depth, margin: pairing thresholds (devkit defaults 1 m and 1 px).
        devkit_rounding: move points through the devkit's float32 steps (see the module docstring).
        nusc: an already loaded ``NuScenes`` object for this dataroot and version (skips loading).
    """

    name = "nuscenes"
    classes = NUSCENES_CLASSES

    def __init__(
        self,
        dataroot: str | Path,
        split: str = "train",
        version: str = "v1.0-trainval",
        cameras: Sequence[str] = NUSCENES_CAMERAS,
        min_depth: float = 1.0,
        margin: float = 1.0,
        devkit_rounding: bool = True,
        nusc: NuScenes | None = None,
    ) -> None:
        self.dataroot = Path(dataroot)
        if not self.dataroot.is_dir():
            raise FileNotFoundError(f"nuScenes dataroot not found: {self.dataroot}")
        if not (self.dataroot / version).is_dir():
            found = sorted(p.name for p in self.dataroot.glob("v1.0-*") if p.is_dir())
            raise FileNotFoundError(
                f"nuScenes dataroot {self.dataroot} has no table folder {version!r} "
                f"(found: {', '.join(found) if found else 'none'})"
            )
        names = None if split == "all" else split_scene_names(split)
        self.version = version
        self.cameras = tuple(cameras)
        self.min_depth = min_depth
        self.margin = margin
        self.devkit_rounding = devkit_rounding
        self.nusc = nusc if nusc is not None else NuScenes(version=version, dataroot=str(self.dataroot), verbose=False)
        scenes = {s["name"]: s for s in self.nusc.scene}
        wanted = list(scenes) if names is None else [n for n in names if n in scenes]
        if not wanted:
            raise ValueError(
                f"nuScenes split {split!r} has no scene in {self.dataroot / version} "
                f"(the version holds {len(scenes)} scenes: {sorted(scenes)[:5]}...)"
            )
        tokens = []
        for scene_name in wanted:
            token = scenes[scene_name]["first_sample_token"]
            while token:
                tokens.append(token)
                token = self.nusc.get("sample", token)["next"]
        self.has_labels = hasattr(self.nusc, "lidarseg") and len(self.nusc.lidarseg) > 0
        self._lut = nuscenes_fine_to_coarse_lut(self.nusc.lidarseg_idx2name_mapping) if self.has_labels else None
        super().__init__(split, tokens)

    def calibration(self, lidar_sd: dict, camera_sd: dict) -> CameraCalibration:
        """The calibration pairing the lidar sweep ``lidar_sd`` with the camera image ``camera_sd``."""
        cam_cs = self.nusc.get("calibrated_sensor", camera_sd["calibrated_sensor_token"])
        width, height = camera_sd["width"], camera_sd["height"]
        if not width or not height:
            width, height = read_image(self.dataroot / camera_sd["filename"]).shape[1::-1]
        return CameraCalibration(
            intrinsic=np.array(cam_cs["camera_intrinsic"], dtype=np.float64),
            lidar_to_camera=lidar_to_camera(self.nusc, lidar_sd, camera_sd),
            width=int(width),
            height=int(height),
        )

    def project(
        self, points: np.ndarray, lidar_sd: dict, camera_sd: dict, calibration: CameraCalibration
    ) -> Projection:
        """Points of the sweep ``lidar_sd`` that pair with the image ``camera_sd``."""
        if self.devkit_rounding:
            cam = devkit_camera_points(self.nusc, points, lidar_sd, camera_sd)
            return project_camera_points(cam, calibration, self.min_depth, self.margin)
        return project_points(points, calibration, self.min_depth, self.margin)

    def load(self, scan_id: str) -> Scan:
        """Load the keyframe with sample token ``scan_id``; images are read on first access."""
        sample = self.nusc.get("sample", scan_id)
        lidar_token = sample["data"][LIDAR_CHANNEL]
        lidar_sd = self.nusc.get("sample_data", lidar_token)
        points = np.ascontiguousarray(read_points_bin(self.dataroot / lidar_sd["filename"], POINT_FIELDS)[:, :4])
        labels = None
        if self.has_labels and self._lut is not None:
            label_file = self.dataroot / self.nusc.get("lidarseg", lidar_token)["filename"]
            labels = self._lut[read_labels(label_file, "u1", expected=len(points))]
        views = []
        for channel in self.cameras:
            cam_sd = self.nusc.get("sample_data", sample["data"][channel])
            image_path = self.dataroot / cam_sd["filename"]
            if not image_path.is_file():
                raise FileNotFoundError(f"camera image not found: {image_path} ({channel} of sample {scan_id})")
            calib = self.calibration(lidar_sd, cam_sd)
            proj = self.project(points, lidar_sd, cam_sd, calib)
            views.append(
                CameraView(
                    name=channel, calibration=calib, pairing=proj.pairing(), image_path=image_path, _reader=read_image
                )
            )
        return Scan(scan_id=scan_id, points=points, labels=labels, cameras=views, classes=NUSCENES_CLASSES)
