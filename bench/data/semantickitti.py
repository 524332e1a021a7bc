"""SemanticKITTI: ``sequences/SS/velodyne/NNNNNN.bin`` (float32 x y z remission) and
``sequences/SS/labels/NNNNNN.label`` (uint32: semantic id in the lower 16 bits, instance id in the upper 16),
mapped to the 19 evaluation classes (:data:`~bench.data.classes.SEMANTICKITTI_RAW_TO_TRAIN`).

Splits (semantic-kitti.yaml): ``train`` = sequences 00-07, 09, 10; ``val`` = 08; ``test`` = 11-21 (no labels);
``train_1pct`` = the scan ids of ``splits/semantickitti_train_1pct.txt``; ``train_1pct@j`` = 1% subset ``j``, as
many scans of the train sequences drawn with seed ``j`` (:func:`bench.data.fewshot.subset_ids`, from the benchmark's
frame counts, :func:`bench.data.fewshot.semantickitti_train_ids`).

Camera pairing, when ``calib.txt`` and ``image_2/`` exist in a sequence: the left colour camera. KITTI's
``calib.txt`` holds ``P2`` (3x4, rectified camera 0 -> image 2) and ``Tr`` (3x4, velodyne -> camera 0); a pixel
is ``P2 @ Tr @ x``. Written as ``K [R | t]``: ``K = P2[:, :3]`` and
``lidar_to_camera = [I | K^-1 P2[:, 3]] @ Tr``, then the same pairing rule as every dataset
(:func:`bench.data.scan.project_points`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from bench.data.base import ScanDataset, unknown_split_error
from bench.data.classes import IGNORE_INDEX, SEMANTICKITTI_CLASSES, semantickitti_lut
from bench.data.fewshot import few_shot_subset, read_split_file, semantickitti_train_ids, subset_ids
from bench.data.io import DataFormatError, read_image, read_labels, read_points_bin
from bench.data.scan import CameraCalibration, CameraView, Scan, project_points

SPLIT_SEQUENCES: dict[str, tuple[str, ...]] = {
    "train": ("00", "01", "02", "03", "04", "05", "06", "07", "09", "10"),
    "val": ("08",),
    "test": tuple(f"{i:02d}" for i in range(11, 22)),
}
FEW_SHOT_SPLITS = {"train_1pct": "semantickitti_train_1pct.txt"}
POINT_FIELDS = 4
CAMERA_NAME = "CAM_LEFT_COLOR"


def read_calib(path: str | Path) -> dict[str, np.ndarray]:
    """Parse a KITTI ``calib.txt`` (lines ``KEY: 12 floats``) into 3x4 matrices.

    Raises:
        DataFormatError: when a line does not hold 12 numbers.
    """
    path = Path(path)
    out = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        key, _, values = line.partition(":")
        try:
            nums = np.array([float(v) for v in values.split()])
        except ValueError as err:
            raise DataFormatError(f"{path}, line {number}: {err}") from err
        if nums.size != 12:
            raise DataFormatError(f"{path}, line {number}: {key.strip()} has {nums.size} numbers, expected 12")
        out[key.strip()] = nums.reshape(3, 4)
    return out


def camera_calibration(calib: dict[str, np.ndarray], width: int, height: int) -> CameraCalibration:
    """The left colour camera's calibration from the ``P2`` and ``Tr`` matrices of ``calib.txt``."""
    p2, tr = calib["P2"], calib["Tr"]
    k = p2[:, :3]
    rect_to_cam2 = np.eye(4)
    rect_to_cam2[:3, 3] = np.linalg.solve(k, p2[:, 3])
    velo_to_rect = np.vstack([tr, [0.0, 0.0, 0.0, 1.0]])
    return CameraCalibration(k.copy(), rect_to_cam2 @ velo_to_rect, width, height)


class SemanticKITTIDataset(ScanDataset):
    """Scans of a SemanticKITTI split.

    Args:
        root: folder holding ``sequences/``.
        split: ``train``, ``val``, ``test``, ``train_1pct`` or ``train_1pct@j`` (1% subset ``j``).
        cameras: pair with ``image_2`` when the sequence has ``calib.txt`` and ``image_2/``.
        min_depth, margin: pairing thresholds, as for nuScenes.
    """

    name = "semantickitti"
    classes = SEMANTICKITTI_CLASSES
    vocabulary = "semantickitti"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        cameras: bool = True,
        min_depth: float = 1.0,
        margin: float = 1.0,
    ) -> None:
        self.root = Path(root)
        if not (self.root / "sequences").is_dir():
            raise FileNotFoundError(f"SemanticKITTI root {self.root} has no sequences/ folder")
        self.use_cameras = cameras
        self.min_depth = min_depth
        self.margin = margin
        self._lut = semantickitti_lut()
        self._calib: dict[str, dict[str, np.ndarray]] = {}
        subset = few_shot_subset(split)
        if split in SPLIT_SEQUENCES:
            ids = []
            for seq in SPLIT_SEQUENCES[split]:
                folder = self.root / "sequences" / seq / "velodyne"
                ids += [f"{seq}/{p.stem}" for p in sorted(folder.glob("*.bin"))]
            if not ids:
                raise ValueError(
                    f"SemanticKITTI split {split!r} has no scan under {self.root / 'sequences'} "
                    f"(sequences {', '.join(SPLIT_SEQUENCES[split])})"
                )
        elif subset is not None:
            ids = subset_ids(read_split_file(FEW_SHOT_SPLITS["train_1pct"]), semantickitti_train_ids(), subset)
        else:
            raise unknown_split_error("SemanticKITTI", split, [*SPLIT_SEQUENCES, *FEW_SHOT_SPLITS, "train_1pct@j"])
        super().__init__(split, ids)

    def _sequence_calib(self, seq: str) -> dict[str, np.ndarray] | None:
        if seq not in self._calib:
            path = self.root / "sequences" / seq / "calib.txt"
            self._calib[seq] = read_calib(path) if path.is_file() else {}
        return self._calib[seq] or None

    def load(self, scan_id: str) -> Scan:
        """Load scan ``"SS/NNNNNN"``; labels are ``None`` when the sequence has no ``labels/`` folder."""
        seq, frame = scan_id.split("/")
        folder = self.root / "sequences" / seq
        points = read_points_bin(folder / "velodyne" / f"{frame}.bin", POINT_FIELDS)
        labels = None
        if (folder / "labels").is_dir():
            label_path = folder / "labels" / f"{frame}.label"
            raw = read_labels(label_path, "<u4", expected=len(points)) & 0xFFFF
            labels = self._lut[raw]
            unknown = labels < 0
            if unknown.any():
                raise DataFormatError(
                    f"{label_path}: unknown SemanticKITTI class ids {sorted(set(raw[unknown].tolist()))[:10]}"
                )
            labels = np.where(labels == IGNORE_INDEX, IGNORE_INDEX, labels)
        views = []
        calib = self._sequence_calib(seq) if self.use_cameras else None
        if calib is not None and (folder / "image_2").is_dir():
            image_path = folder / "image_2" / f"{frame}.png"
            if not image_path.is_file():
                raise FileNotFoundError(f"camera image not found: {image_path} (scan {scan_id})")
            with Image.open(image_path) as img:
                width, height = img.size
            cal = camera_calibration(calib, width, height)
            proj = project_points(points, cal, min_depth=self.min_depth, margin=self.margin)
            views.append(CameraView(CAMERA_NAME, cal, proj.pairing(), image_path=image_path, _reader=read_image))
        return Scan(scan_id=scan_id, points=points, labels=labels, cameras=views, classes=SEMANTICKITTI_CLASSES)
