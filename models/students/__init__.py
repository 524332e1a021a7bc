"""3D students: MinkUNet on the project's sparse convolution, voxelisation, and the student factory."""

from .factory import STUDENTS, build_student
from .minkunet import (
    PRESETS,
    MinkUNet,
    MinkUNetConfig,
    PointStudent,
    build_minkunet,
    point_outputs,
    use_downstream_bn_momentum,
)
from .voxelize import Voxels, devoxelize, voxelize

__all__ = [
    "PRESETS",
    "MinkUNet",
    "MinkUNetConfig",
    "PointStudent",
    "STUDENTS",
    "Voxels",
    "build_minkunet",
    "build_student",
    "devoxelize",
    "point_outputs",
    "use_downstream_bn_momentum",
    "voxelize",
]
