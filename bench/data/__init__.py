"""Datasets: one :class:`~bench.data.scan.Scan` record for nuScenes, SemanticKITTI and the synthetic world."""

from bench.data.classes import IGNORE_INDEX, NUSCENES_CLASSES, SEMANTICKITTI_CLASSES
from bench.data.scan import CameraCalibration, CameraView, Projection, Scan, project_points

__all__ = [
    "IGNORE_INDEX",
    "NUSCENES_CLASSES",
    "SEMANTICKITTI_CLASSES",
    "CameraCalibration",
    "CameraView",
    "Projection",
    "Scan",
    "project_points",
]
