"""Class tables: nuScenes-lidarseg 32 -> 16 classes and SemanticKITTI raw ids -> 19 classes.

Both label spaces are 0-based (``0 .. C-1``); points whose class is not evaluated carry :data:`IGNORE_INDEX`.

Sources:

- nuScenes: the official lidarseg challenge mapping, ``nuscenes.eval.lidarseg.utils.LidarsegClassMapper``
  (nuscenes-devkit 1.2.0), which numbers the 16 classes 1..16 with 0 = ignore; here they are shifted to 0..15
  and ignore becomes :data:`IGNORE_INDEX`. The mapping is keyed by the fine class *name*, so it does not depend
  on the index order of a dataroot's ``category.json``.
- SemanticKITTI: ``learning_map`` of ``semantic-kitti.yaml`` (semantic-kitti-api), 20 learning classes with
  0 = unlabeled; here shifted to 0..18 with unlabeled -> :data:`IGNORE_INDEX`.
"""

from __future__ import annotations

import numpy as np

IGNORE_INDEX: int = 255
"""Label of points (and pixels) that no loss or metric may use."""

NUSCENES_CLASSES: tuple[str, ...] = (
    "barrier",
    "bicycle",
    "bus",
    "car",
    "construction_vehicle",
    "motorcycle",
    "pedestrian",
    "traffic_cone",
    "trailer",
    "truck",
    "driveable_surface",
    "other_flat",
    "sidewalk",
    "terrain",
    "manmade",
    "vegetation",
)
"""The 16 nuScenes-lidarseg evaluation classes, in the official order."""

NUSCENES_FINE_TO_COARSE: dict[str, str | None] = {
    "noise": None,
    "animal": None,
    "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian",
    "human.pedestrian.personal_mobility": None,
    "human.pedestrian.police_officer": "pedestrian",
    "human.pedestrian.stroller": None,
    "human.pedestrian.wheelchair": None,
    "movable_object.barrier": "barrier",
    "movable_object.debris": None,
    "movable_object.pushable_pullable": None,
    "movable_object.trafficcone": "traffic_cone",
    "static_object.bicycle_rack": None,
    "vehicle.bicycle": "bicycle",
    "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus",
    "vehicle.car": "car",
    "vehicle.construction": "construction_vehicle",
    "vehicle.emergency.ambulance": None,
    "vehicle.emergency.police": None,
    "vehicle.motorcycle": "motorcycle",
    "vehicle.trailer": "trailer",
    "vehicle.truck": "truck",
    "flat.driveable_surface": "driveable_surface",
    "flat.other": "other_flat",
    "flat.sidewalk": "sidewalk",
    "flat.terrain": "terrain",
    "static.manmade": "manmade",
    "static.other": None,
    "static.vegetation": "vegetation",
    "vehicle.ego": None,
}
"""The 32 fine nuScenes-lidarseg classes (in their official index order 0..31) -> coarse name (None = ignore)."""

NUSCENES_FINE_CLASSES: tuple[str, ...] = tuple(NUSCENES_FINE_TO_COARSE)
"""Fine class names by their index in the official nuScenes-lidarseg ``category.json``."""

NUSCENES_POINT_COUNTS: dict[str, int] = {
    "barrier": 9_305_106,
    "bicycle": 141_351,
    "bus": 4_604_760,
    "car": 38_104_219,
    "construction_vehicle": 1_514_414,
    "motorcycle": 427_391,
    "pedestrian": 2_314_727,
    "traffic_cone": 736_239,
    "trailer": 4_907_511,
    "truck": 15_841_384,
    "driveable_surface": 316_958_899,
    "other_flat": 8_559_216,
    "sidewalk": 70_197_461,
    "terrain": 70_289_730,
    "manmade": 178_178_063,
    "vegetation": 122_581_273,
}
"""Lidar points per coarse class in nuScenes-lidarseg v1.0-trainval (sums of the fine counts printed by the
devkit's ``list_lidarseg_categories(sort_by='count')``); the reference for the synthetic world's statistics."""

SEMANTICKITTI_CLASSES: tuple[str, ...] = (
    "car",
    "bicycle",
    "motorcycle",
    "truck",
    "other-vehicle",
    "person",
    "bicyclist",
    "motorcyclist",
    "road",
    "parking",
    "sidewalk",
    "other-ground",
    "building",
    "fence",
    "vegetation",
    "trunk",
    "terrain",
    "pole",
    "traffic-sign",
)
"""The 19 SemanticKITTI evaluation classes, in the order of ``semantic-kitti.yaml``'s learning map."""

SEMANTICKITTI_RAW_TO_TRAIN: dict[int, int] = {
    0: IGNORE_INDEX,  # unlabeled
    1: IGNORE_INDEX,  # outlier
    10: 0,  # car
    11: 1,  # bicycle
    13: 4,  # bus -> other-vehicle
    15: 2,  # motorcycle
    16: 4,  # on-rails -> other-vehicle
    18: 3,  # truck
    20: 4,  # other-vehicle
    30: 5,  # person
    31: 6,  # bicyclist
    32: 7,  # motorcyclist
    40: 8,  # road
    44: 9,  # parking
    48: 10,  # sidewalk
    49: 11,  # other-ground
    50: 12,  # building
    51: 13,  # fence
    52: IGNORE_INDEX,  # other-structure
    60: 8,  # lane-marking -> road
    70: 14,  # vegetation
    71: 15,  # trunk
    72: 16,  # terrain
    80: 17,  # pole
    81: 18,  # traffic-sign
    99: IGNORE_INDEX,  # other-object
    252: 0,  # moving-car
    253: 6,  # moving-bicyclist
    254: 5,  # moving-person
    255: 7,  # moving-motorcyclist
    256: 4,  # moving-on-rails
    257: 4,  # moving-bus
    258: 3,  # moving-truck
    259: 4,  # moving-other-vehicle
}
"""SemanticKITTI raw semantic id (lower 16 bits of a ``.label`` entry) -> 0-based training class."""

_KITTI_LUT_UNKNOWN = -1


def nuscenes_fine_to_coarse_lut(fine_names: dict[int, str] | None = None) -> np.ndarray:
    """Lookup table ``lut[fine_index] -> coarse index`` (0..15 or :data:`IGNORE_INDEX`).

    Args:
        fine_names: fine index -> fine class name, e.g. the devkit's ``nusc.lidarseg_idx2name_mapping``;
            by default the official order :data:`NUSCENES_FINE_CLASSES`.

    Returns:
        ``(256,)`` int64 array; entries of indices that name no class are :data:`IGNORE_INDEX`.
    """
    if fine_names is None:
        fine_names = dict(enumerate(NUSCENES_FINE_CLASSES))
    lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
    for index, name in fine_names.items():
        if name not in NUSCENES_FINE_TO_COARSE:
            raise ValueError(f"unknown nuScenes-lidarseg class name {name!r} (index {index})")
        coarse = NUSCENES_FINE_TO_COARSE[name]
        lut[index] = IGNORE_INDEX if coarse is None else NUSCENES_CLASSES.index(coarse)
    return lut


def semantickitti_lut() -> np.ndarray:
    """Lookup table ``lut[raw_id] -> training class`` over raw ids 0..65535; unknown raw ids give -1."""
    lut = np.full(1 << 16, _KITTI_LUT_UNKNOWN, dtype=np.int64)
    for raw, train in SEMANTICKITTI_RAW_TO_TRAIN.items():
        lut[raw] = train
    return lut
