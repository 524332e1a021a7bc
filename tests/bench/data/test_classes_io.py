"""Class tables and the binary readers' errors."""

import numpy as np
import pytest

from bench.data.classes import (
    IGNORE_INDEX,
    NUSCENES_CLASSES,
    NUSCENES_FINE_CLASSES,
    SEMANTICKITTI_CLASSES,
    nuscenes_fine_to_coarse_lut,
    semantickitti_lut,
)
from bench.data.io import DataFormatError, read_image, read_labels, read_points_bin


def test_nuscenes_lut_matches_the_official_challenge_mapping():
    lut = nuscenes_fine_to_coarse_lut()
    assert len(NUSCENES_FINE_CLASSES) == 32 and len(NUSCENES_CLASSES) == 16
    fine = {name: i for i, name in enumerate(NUSCENES_FINE_CLASSES)}
    assert lut[fine["vehicle.car"]] == NUSCENES_CLASSES.index("car")
    assert lut[fine["vehicle.bus.bendy"]] == lut[fine["vehicle.bus.rigid"]] == NUSCENES_CLASSES.index("bus")
    assert lut[fine["human.pedestrian.police_officer"]] == NUSCENES_CLASSES.index("pedestrian")
    for ignored in ("noise", "animal", "human.pedestrian.stroller", "movable_object.debris", "vehicle.ego",
                    "static.other", "vehicle.emergency.police", "static_object.bicycle_rack"):  # fmt: skip
        assert lut[fine[ignored]] == IGNORE_INDEX
    # Every coarse class is reached, and 12 fine classes are ignored.
    assert set(lut[:32].tolist()) - {IGNORE_INDEX} == set(range(16))
    assert int((lut[:32] == IGNORE_INDEX).sum()) == 12


def test_semantickitti_lut():
    lut = semantickitti_lut()
    assert len(SEMANTICKITTI_CLASSES) == 19
    car, road = SEMANTICKITTI_CLASSES.index("car"), SEMANTICKITTI_CLASSES.index("road")
    assert lut[10] == lut[252] == car
    assert lut[40] == lut[60] == road  # lane markings are road
    assert lut[81] == SEMANTICKITTI_CLASSES.index("traffic-sign")
    assert lut[0] == lut[1] == lut[52] == lut[99] == IGNORE_INDEX
    assert lut[12] == -1  # not a SemanticKITTI id


def test_points_bin_size_not_multiple_of_record(tmp_path):
    path = tmp_path / "000000.bin"
    np.arange(10, dtype=np.float32).tofile(path)  # 40 bytes, records of 16
    with pytest.raises(DataFormatError, match=r"000000\.bin: size 40 bytes is not a multiple of the record size 16"):
        read_points_bin(path, 4)
    np.testing.assert_array_equal(read_points_bin(path, 5), np.arange(10, dtype=np.float32).reshape(2, 5))


def test_label_count_differs_from_points(tmp_path):
    path = tmp_path / "000000.label"
    np.zeros(7, dtype=np.uint32).tofile(path)
    with pytest.raises(DataFormatError, match=r"000000\.label: 7 labels but the point cloud has 8 points"):
        read_labels(path, "<u4", expected=8)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"camera image not found: .*nope\.png"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(FileNotFoundError, match=r"point cloud file not found: .*x\.bin"):
        read_points_bin(tmp_path / "x.bin", 4)
