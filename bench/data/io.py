"""Readers for the binary files of the real datasets, with errors that name the file and the problem.

Formats:

- point clouds: little-endian float32 records of ``fields`` values per point (nuScenes ``.pcd.bin``: 5 =
  x y z intensity ring; SemanticKITTI ``velodyne/*.bin``: 4 = x y z remission);
- labels: one unsigned integer per point (nuScenes-lidarseg ``*_lidarseg.bin``: uint8 fine class index;
  SemanticKITTI ``*.label``: uint32, semantic class in the lower 16 bits, instance id in the upper 16);
- images: any file Pillow reads, returned as ``(H, W, 3)`` uint8 RGB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


class DataFormatError(ValueError):
    """A data file exists but its content does not have the expected format."""


def read_points_bin(path: str | Path, fields: int) -> np.ndarray:
    """Read a float32 point file of ``fields`` values per point.

    Returns:
        ``(N, fields)`` float32 array.

    Raises:
        FileNotFoundError: when the file does not exist.
        DataFormatError: when its size is not a multiple of the record size (``4 * fields`` bytes).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"point cloud file not found: {path}")
    record = 4 * fields
    size = path.stat().st_size
    if size % record:
        raise DataFormatError(
            f"{path}: size {size} bytes is not a multiple of the record size {record} bytes "
            f"({fields} float32 per point); the file is truncated or not a {fields}-field point cloud"
        )
    return np.fromfile(path, dtype="<f4").reshape(-1, fields)


def read_labels(path: str | Path, dtype: str, expected: int) -> np.ndarray:
    """Read a per-point label file and check that it has one entry per point.

    Args:
        path: the label file.
        dtype: numpy dtype of one entry (``"<u4"`` for SemanticKITTI, ``"u1"`` for nuScenes-lidarseg).
        expected: number of points of the matching point cloud.

    Raises:
        FileNotFoundError: when the file does not exist.
        DataFormatError: when its size is not a multiple of the entry size or the count differs from
            ``expected``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    itemsize = np.dtype(dtype).itemsize
    size = path.stat().st_size
    if size % itemsize:
        raise DataFormatError(f"{path}: size {size} bytes is not a multiple of the label entry size {itemsize} bytes")
    count = size // itemsize
    if count != expected:
        raise DataFormatError(f"{path}: {count} labels but the point cloud has {expected} points")
    return np.fromfile(path, dtype=dtype)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB.

    Raises:
        FileNotFoundError: when the camera image file does not exist.
        DataFormatError: when it is not a readable image (truncated, corrupted).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"camera image not found: {path}")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # truncated, corrupted, not an image
        raise DataFormatError(f"{path}: unreadable image ({exc})") from None
