"""nuScenes keyframes: lidar points, lidarseg labels (16 classes), six cameras, for any table version.

Tables. The devkit's tables (``<dataroot>/<version>/*.json``, several GB at v1.0-trainval) are read once per
process by ``nuscenes.nuscenes.NuScenes`` and reduced to a compact :class:`NuScenesIndex` of the keyframes
(numpy arrays: file names, calibrations and ego poses; about 1 kB per keyframe); the devkit object is then
released, so the resident memory of every split, of every ``DataLoader`` worker (forked with the index) and of
every ``torchrun`` rank does not hold the tables. With an ``index_cache`` folder the index is also written
there (keyed by the dataroot, the version and every table file's size and modification time) and later
processes, and the other ranks, read it back instead of the tables; it is then built in a child interpreter
(``python -c``, importing only this module), so that no harness process ever holds the tables.
:func:`dataroot_info` checks a dataroot without loading it.

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

Versions and splits (:func:`split_scene_names`). A split is given by its official name
(``nuscenes.utils.splits.create_splits_scenes()``: ``train``, ``val``, ``mini_train``, ``mini_val``, ...) or by
a role that the version resolves (:data:`ROLES`): ``train`` and ``val`` are ``mini_train`` / ``mini_val`` in
v1.0-mini; ``holdout`` is the **hyper-parameter selection split**, every :data:`HOLDOUT_EVERY`-th scene of the
train split starting with scene :data:`HOLDOUT_OFFSET` (70 of the 700 v1.0-trainval train scenes, disjoint from
the 1% subset), and ``train_fit`` the train split without it (a tuning grid distils on ``train_fit`` and scores
on ``holdout``; reported numbers distil on ``train`` and score on ``val``); ``train_1pct`` is SLidR's 1% subset,
every 100th train scene (v1.0-trainval: the scene names of ``splits/nuscenes_train_1pct.txt``; other versions:
the same rule on their train split); ``train_1pct@j`` is 1% subset ``j >= 1``, as many train scene names drawn with
seed ``j`` (:func:`bench.data.fewshot.subset_ids`; unlike ``train_1pct`` a draw may hold ``holdout`` scenes);
``all`` is every scene of the version. Keyframes are ordered by scene (split
order) then time.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pyquaternion import Quaternion

from bench.data.base import ScanDataset, unknown_split_error
from bench.data.classes import NUSCENES_CLASSES, nuscenes_fine_to_coarse_lut
from bench.data.fewshot import FEW_SHOT_EVERY, few_shot_ids, few_shot_subset, read_split_file, subset_ids
from bench.data.io import read_image, read_labels, read_points_bin
from bench.data.scan import CameraCalibration, CameraView, Projection, Scan, project_camera_points, project_points
from bench.files import write_npz

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
VERSIONS = ("v1.0-trainval", "v1.0-mini")
"""Table versions with lidarseg labels (v1.0-test has none)."""
ROLES: dict[str, dict[str, str]] = {
    "v1.0-trainval": {"train": "train", "val": "val"},
    "v1.0-mini": {"train": "mini_train", "val": "mini_val"},
}
"""Version -> role -> official split name."""
FEW_SHOT_FILES = {"v1.0-trainval": "nuscenes_train_1pct.txt"}
"""Versions whose 1% subset is read from a split file (``bench/data/splits``)."""
HOLDOUT_EVERY = 10
HOLDOUT_OFFSET = 5
"""The selection split ``holdout``: train scenes ``HOLDOUT_OFFSET, HOLDOUT_OFFSET + HOLDOUT_EVERY, ...``."""
LIDARSEG_TABLE = "lidarseg.json"


def _official(split: str, version: str) -> str:
    return ROLES.get(version, {}).get(split, split)


def split_scene_names(split: str, version: str = "v1.0-trainval") -> list[str]:
    """Scene names of a split (official name or role, see the module docstring), in their canonical order."""
    # lazy: the nuScenes devkit's package import loads cv2, matplotlib and sklearn (~2 s)
    from nuscenes.utils.splits import create_splits_scenes

    official = create_splits_scenes(verbose=False)
    if split in ("holdout", "train_fit"):
        train = split_scene_names("train", version)
        held = set(train[HOLDOUT_OFFSET::HOLDOUT_EVERY])
        return [n for n in train if (n in held) == (split == "holdout")]
    subset = few_shot_subset(split)
    if subset is not None:
        train = split_scene_names("train", version)
        shipped = version in FEW_SHOT_FILES
        first = read_split_file(FEW_SHOT_FILES[version]) if shipped else few_shot_ids(train, FEW_SHOT_EVERY)
        return subset_ids(first, train, subset)
    name = _official(split, version)
    if name in official:
        return list(official[name])
    known = [*official, "holdout", "train_fit", "train_1pct", "train_1pct@j", "all"]
    raise unknown_split_error("nuScenes", split, known)


@dataclass(frozen=True)
class DatarootInfo:
    """What a nuScenes dataroot holds, read without loading its tables."""

    dataroot: Path
    version: str
    has_lidarseg: bool


def dataroot_info(dataroot: str | Path, version: str = "v1.0-trainval") -> DatarootInfo:
    """Check that ``dataroot`` holds the table folder ``version``; the error names the folder and the fix.

    Raises:
        FileNotFoundError: no dataroot, or no ``<dataroot>/<version>`` folder (the message lists the versions
            found and the ``--version`` to pass).
    """
    root = Path(dataroot)
    if not root.is_dir():
        raise FileNotFoundError(f"nuScenes dataroot not found: {root}")
    if not (root / version).is_dir():
        found = sorted(p.name for p in root.glob("v1.0-*") if p.is_dir())
        fix = f"; pass --version {found[0]} (or set version: in the suite)" if found else ""
        raise FileNotFoundError(
            f"nuScenes dataroot {root} has no table folder {version!r} "
            f"(found: {', '.join(found) if found else 'none'}){fix}"
        )
    return DatarootInfo(root, version, (root / version / LIDARSEG_TABLE).is_file())


@dataclass(frozen=True)
class NuScenesIndex:
    """The keyframes of one table version, reduced to what loading a scan needs (numpy arrays, no devkit object).

    Arrays have one row per keyframe (scene order, then time); camera arrays a second axis over
    :data:`NUSCENES_CAMERAS`. Poses are ``(w, x, y, z, tx, ty, tz)``: rotation quaternion then translation.
    """

    tokens: np.ndarray  # (K,) sample tokens
    scenes: np.ndarray  # (K,) scene names
    lidar_file: np.ndarray  # (K,) bytes, relative to the dataroot
    label_file: np.ndarray  # (K,) bytes, b"" without lidarseg
    lidar_calib: np.ndarray  # (K, 7) lidar calibrated_sensor
    lidar_pose: np.ndarray  # (K, 7) ego pose at the lidar timestamp
    camera_file: np.ndarray  # (K, 6) bytes
    camera_size: np.ndarray  # (K, 6, 2) width, height (0 when the table has none)
    camera_intrinsic: np.ndarray  # (K, 6, 3, 3)
    camera_calib: np.ndarray  # (K, 6, 7)
    camera_pose: np.ndarray  # (K, 6, 7) ego pose at the camera timestamp
    fine_to_coarse: np.ndarray | None  # (256,) lidarseg lut, None without lidarseg

    @staticmethod
    def _pose(record: dict) -> list[float]:
        return [*record["rotation"], *record["translation"]]

    @classmethod
    def build(cls, dataroot: Path, version: str) -> NuScenesIndex:
        """Read the tables with the devkit (once) and keep the keyframes' records."""
        # lazy: the nuScenes devkit's package import loads cv2, matplotlib and sklearn (~2 s)
        from nuscenes.nuscenes import NuScenes

        nusc = NuScenes(version=version, dataroot=str(dataroot), verbose=False)
        has_labels = hasattr(nusc, "lidarseg") and len(nusc.lidarseg) > 0
        rows: dict[str, list] = {k: [] for k in cls.__dataclass_fields__ if k != "fine_to_coarse"}
        for scene in nusc.scene:
            token = scene["first_sample_token"]
            while token:
                sample = nusc.get("sample", token)
                lidar_sd = nusc.get("sample_data", sample["data"][LIDAR_CHANNEL])
                rows["tokens"].append(token)
                rows["scenes"].append(scene["name"])
                rows["lidar_file"].append(lidar_sd["filename"])
                label = nusc.get("lidarseg", lidar_sd["token"])["filename"] if has_labels else ""
                rows["label_file"].append(label)
                rows["lidar_calib"].append(
                    cls._pose(nusc.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"]))
                )
                rows["lidar_pose"].append(cls._pose(nusc.get("ego_pose", lidar_sd["ego_pose_token"])))
                files, sizes, intrinsics, calibs, poses = [], [], [], [], []
                for channel in NUSCENES_CAMERAS:
                    cam_sd = nusc.get("sample_data", sample["data"][channel])
                    cam_cs = nusc.get("calibrated_sensor", cam_sd["calibrated_sensor_token"])
                    files.append(cam_sd["filename"])
                    sizes.append([cam_sd.get("width") or 0, cam_sd.get("height") or 0])
                    intrinsics.append(cam_cs["camera_intrinsic"])
                    calibs.append(cls._pose(cam_cs))
                    poses.append(cls._pose(nusc.get("ego_pose", cam_sd["ego_pose_token"])))
                rows["camera_file"].append(files)
                rows["camera_size"].append(sizes)
                rows["camera_intrinsic"].append(intrinsics)
                rows["camera_calib"].append(calibs)
                rows["camera_pose"].append(poses)
                token = sample["next"]
        lut = nuscenes_fine_to_coarse_lut(nusc.lidarseg_idx2name_mapping) if has_labels else None
        del nusc
        text = {"tokens", "scenes"}
        files = {"lidar_file", "label_file", "camera_file"}
        arrays = {
            k: np.array(v, dtype=str if k in text else np.bytes_ if k in files else np.float64) for k, v in rows.items()
        }
        arrays["camera_size"] = arrays["camera_size"].astype(np.int64)
        return cls(**arrays, fine_to_coarse=lut)

    def save(self, path: Path) -> None:
        """Write the index as an uncompressed ``.npz`` (atomically: temporary file, then rename)."""
        arrays = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "fine_to_coarse"}
        lut = self.fine_to_coarse if self.fine_to_coarse is not None else np.zeros(0, dtype=np.int64)
        write_npz(path, compressed=False, fine_to_coarse=lut, **arrays)

    @classmethod
    def read(cls, path: Path) -> NuScenesIndex:
        """An index written by :meth:`save`."""
        with np.load(path) as data:
            arrays = {k: data[k] for k in cls.__dataclass_fields__}
        lut = arrays.pop("fine_to_coarse")
        return cls(**arrays, fine_to_coarse=lut if len(lut) else None)


class KeyframeIndexes:
    """The keyframe indexes a process has opened (:func:`keyframe_index`), kept so that each is built or read
    once: an explicit object, held by the process's :class:`bench.workspace.Workspace` and passed down (no module
    holds it). One version at a time: opening another releases the previous index."""

    def __init__(self) -> None:
        self.indexes: dict[tuple, NuScenesIndex] = {}

    def clear(self) -> None:
        """Forget every index (the next :func:`keyframe_index` reads or builds it again)."""
        self.indexes.clear()


def _build_and_save(dataroot: Path, version: str, path: Path) -> None:
    NuScenesIndex.build(dataroot, version).save(path)


_CHILD_BUILD = (
    "import sys; from pathlib import Path; from bench.data.nuscenes import _build_and_save; "
    "_build_and_save(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))"
)
"""The child's program: it imports this module only, never the caller's ``__main__``."""


def _build_in_child(dataroot: Path, version: str, path: Path) -> None:
    """Build and save the index in a child interpreter, so that this process never holds the devkit's tables
    (about 6.7 GB at v1.0-trainval; freed memory is not always returned to the system).

    The child is a fresh ``python -c`` that imports only this module (the package's folder is put first on its
    ``PYTHONPATH``): unlike a ``multiprocessing`` spawn it does not re-run the caller's main script, so a
    script without an ``if __name__ == "__main__":`` guard works too. When the child fails the index is built
    in this process, with a :class:`RuntimeWarning` that names the child's error and the memory cost (a
    deterministic error, such as a malformed table, is then raised here with its message).
    """
    package_root = str(Path(__file__).resolve().parents[2])
    python_path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD_BUILD, str(dataroot), version, str(path)],
        env={**os.environ, "PYTHONPATH": python_path},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    if done.returncode == 0 and path.is_file():
        return
    reason = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
    warnings.warn(
        f"{path}: the nuScenes keyframe index could not be built in a child process ({reason}); building it "
        f"in this process, which then holds the devkit's tables of {dataroot / version} (about 6.7 GB of "
        "resident memory at v1.0-trainval, not always returned to the system)",
        RuntimeWarning,
        stacklevel=3,
    )
    NuScenesIndex.build(dataroot, version).save(path)


def keyframe_index(
    dataroot: str | Path,
    version: str,
    index_cache: str | Path | None = None,
    indexes: KeyframeIndexes | None = None,
) -> NuScenesIndex:
    """The :class:`NuScenesIndex` of a dataroot and version, read from / written to ``index_cache`` when given,
    and kept in ``indexes`` (built or read at most once per :class:`KeyframeIndexes`, rebuilt only when a table
    file changes: the key holds every table's size and modification time; None: kept nowhere)."""
    indexes = KeyframeIndexes() if indexes is None else indexes
    kept = indexes.indexes
    dataroot_info(dataroot, version)
    tables = Path(dataroot) / version
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(tables.glob("*.json")))
    key = (str(Path(dataroot).resolve()), version, stamp)
    if key not in kept:
        kept.clear()  # one version per process at a time: the previous index is released
        path = None
        if index_cache is not None:
            digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
            path = Path(index_cache) / f"nuscenes-{version}-{digest}.npz"
        if path is not None and not path.is_file():
            _build_in_child(Path(dataroot), version, path)
        if path is not None and path.is_file():
            kept[key] = NuScenesIndex.read(path)
        else:
            kept[key] = NuScenesIndex.build(Path(dataroot), version)
    return kept[key]


def _matrix(pose: np.ndarray) -> np.ndarray:
    # lazy: the nuScenes devkit's package import loads cv2, matplotlib and sklearn (~2 s)
    from nuscenes.utils.geometry_utils import transform_matrix

    return transform_matrix(pose[4:], Quaternion(pose[:4]), inverse=False)


def lidar_to_camera(lidar_calib: np.ndarray, lidar_pose: np.ndarray, cam_calib: np.ndarray, cam_pose: np.ndarray):
    """``(4, 4)`` transform from the lidar frame to the camera frame through the devkit's four steps."""
    return (
        np.linalg.inv(_matrix(cam_calib))
        @ np.linalg.inv(_matrix(cam_pose))
        @ _matrix(lidar_pose)
        @ _matrix(lidar_calib)
    )


def devkit_camera_points(
    points: np.ndarray, lidar_calib: np.ndarray, lidar_pose: np.ndarray, cam_calib: np.ndarray, cam_pose: np.ndarray
) -> np.ndarray:
    """Camera-frame ``(N, 3)`` coordinates of lidar points computed exactly as the devkit's
    ``map_pointcloud_to_image`` does: the four steps on a float32 ``LidarPointCloud``."""
    # lazy: the nuScenes devkit's package import loads cv2, matplotlib and sklearn (~2 s)
    from nuscenes.utils.data_classes import LidarPointCloud

    pc = LidarPointCloud(np.array(points[:, :4].T, dtype=np.float32))
    pc.rotate(Quaternion(lidar_calib[:4]).rotation_matrix)
    pc.translate(np.array(lidar_calib[4:]))
    pc.rotate(Quaternion(lidar_pose[:4]).rotation_matrix)
    pc.translate(np.array(lidar_pose[4:]))
    pc.translate(-np.array(cam_pose[4:]))
    pc.rotate(Quaternion(cam_pose[:4]).rotation_matrix.T)
    pc.translate(-np.array(cam_calib[4:]))
    pc.rotate(Quaternion(cam_calib[:4]).rotation_matrix.T)
    return pc.points[:3].T


class NuScenesDataset(ScanDataset):
    """Keyframes of a nuScenes split.

    Args:
        dataroot: folder holding ``samples/`` and the table folder ``<version>/``.
        split: split name or role (see the module docstring).
        version: table version, e.g. ``"v1.0-trainval"`` or ``"v1.0-mini"``.
        cameras: camera channels to pair with.
        min_depth, margin: pairing thresholds (devkit defaults 1 m and 1 px).
        devkit_rounding: move points through the devkit's float32 steps (see the module docstring).
        index_cache: folder of the keyframe index files (None: build the index from the tables).
    """

    name = "nuscenes"
    classes = NUSCENES_CLASSES
    vocabulary = "nuscenes"

    def __init__(
        self,
        dataroot: str | Path,
        split: str = "train",
        version: str = "v1.0-trainval",
        cameras: Sequence[str] = NUSCENES_CAMERAS,
        min_depth: float = 1.0,
        margin: float = 1.0,
        devkit_rounding: bool = True,
        index_cache: str | Path | None = None,
        indexes: KeyframeIndexes | None = None,
    ) -> None:
        info = dataroot_info(dataroot, version)
        self.dataroot = info.dataroot
        names = None if split == "all" else split_scene_names(split, version)
        unknown = sorted(set(cameras) - set(NUSCENES_CAMERAS))
        if unknown:
            raise ValueError(f"unknown nuScenes cameras {unknown}; valid: {', '.join(NUSCENES_CAMERAS)}")
        self.version = version
        self.cameras = tuple(cameras)
        self._camera_slots = [NUSCENES_CAMERAS.index(c) for c in self.cameras]
        self.min_depth = min_depth
        self.margin = margin
        self.devkit_rounding = devkit_rounding
        self.index = keyframe_index(self.dataroot, version, index_cache, indexes)
        in_version = list(dict.fromkeys(self.index.scenes.tolist()))
        wanted = set(in_version if names is None else names)
        rows = np.flatnonzero(np.isin(self.index.scenes, list(wanted)))
        if names is not None:  # the split's scene order, then time
            rank = {n: i for i, n in enumerate(names)}
            rows = rows[np.argsort([rank[s] for s in self.index.scenes[rows]], kind="stable")]
        if not len(rows):
            raise ValueError(
                f"nuScenes split {split!r} has no scene in {self.dataroot / version} "
                f"(the version holds {len(in_version)} scenes: {sorted(in_version)[:5]}...)"
            )
        self.has_labels = info.has_lidarseg and self.index.fine_to_coarse is not None
        self._row = {str(t): int(r) for t, r in zip(self.index.tokens[rows], rows, strict=True)}
        super().__init__(split, self.index.tokens[rows].tolist())

    def calibration(self, row: int, slot: int) -> CameraCalibration:
        """The calibration pairing the keyframe's lidar sweep with its camera ``NUSCENES_CAMERAS[slot]``."""
        ix = self.index
        width, height = ix.camera_size[row, slot]
        if not width or not height:
            width, height = read_image(self.dataroot / ix.camera_file[row, slot].decode()).shape[1::-1]
        return CameraCalibration(
            intrinsic=np.array(ix.camera_intrinsic[row, slot], dtype=np.float64),
            lidar_to_camera=lidar_to_camera(
                ix.lidar_calib[row], ix.lidar_pose[row], ix.camera_calib[row, slot], ix.camera_pose[row, slot]
            ),
            width=int(width),
            height=int(height),
        )

    def project(self, points: np.ndarray, row: int, slot: int, calibration: CameraCalibration) -> Projection:
        """Points of keyframe ``row`` that pair with its camera ``slot``."""
        if self.devkit_rounding:
            ix = self.index
            cam = devkit_camera_points(
                points, ix.lidar_calib[row], ix.lidar_pose[row], ix.camera_calib[row, slot], ix.camera_pose[row, slot]
            )
            return project_camera_points(cam, calibration, self.min_depth, self.margin)
        return project_points(points, calibration, self.min_depth, self.margin)

    def load(self, scan_id: str) -> Scan:
        """Load the keyframe with sample token ``scan_id``; images are read on first access."""
        if scan_id not in self._row:
            raise KeyError(f"sample {scan_id!r} is not in nuScenes split {self.split} of {self.dataroot}")
        row, ix = self._row[scan_id], self.index
        points = np.ascontiguousarray(read_points_bin(self.dataroot / ix.lidar_file[row].decode(), POINT_FIELDS)[:, :4])
        labels = None
        if self.has_labels and ix.fine_to_coarse is not None:
            label_file = self.dataroot / ix.label_file[row].decode()
            labels = ix.fine_to_coarse[read_labels(label_file, "u1", expected=len(points))]
        views = []
        for channel, slot in zip(self.cameras, self._camera_slots, strict=True):
            image_path = self.dataroot / ix.camera_file[row, slot].decode()
            if not image_path.is_file():
                raise FileNotFoundError(f"camera image not found: {image_path} ({channel} of sample {scan_id})")
            calib = self.calibration(row, slot)
            proj = self.project(points, row, slot, calib)
            views.append(
                CameraView(
                    name=channel, calibration=calib, pairing=proj.pairing(), image_path=image_path, _reader=read_image
                )
            )
        return Scan(scan_id=scan_id, points=points, labels=labels, cameras=views, classes=NUSCENES_CLASSES)
