"""Frozen 2D teachers: the calibrated synthetic teacher, the CLIP dense teacher and the DINOv2 dense teacher (no
text), behind one interface."""

from models.teachers.base import (
    CameraInput,
    ScanInput,
    Teacher,
    class_phrases,
    prompt_templates,
    sample,
    upsample,
    zero_shot_classifier,
    zero_shot_predict,
)
from models.teachers.factory import TEACHERS, build_teacher

__all__ = [
    "CameraInput",
    "ScanInput",
    "TEACHERS",
    "Teacher",
    "build_teacher",
    "class_phrases",
    "prompt_templates",
    "sample",
    "upsample",
    "zero_shot_classifier",
    "zero_shot_predict",
]
