"""Teachers by name: the one place that knows every teacher class (docs/implementation.md#students-and-teachers)."""

from __future__ import annotations

from typing import Any

import torch

from models.teachers.base import Teacher
from models.teachers.clip import CLIPTeacher
from models.teachers.synthetic import SyntheticTeacher

TEACHERS = ("synthetic", "clip")
"""Teacher names :func:`build_teacher` knows."""


def build_teacher(name: str, device: torch.device | str = "cpu", **options: Any) -> Teacher:
    """Build a teacher by name.

    Args:
        name: ``"synthetic"`` (options: ``params_file``) or ``"clip"`` (options of
            :class:`~models.teachers.clip.CLIPTeacher`: ``arch``, ``checkpoint``, ``image_size``,
            ``allow_torchscript``, ...).
        device: where the teacher computes.
    """
    device = torch.device(device)
    if name == "synthetic":
        return SyntheticTeacher.from_file(device=device, **options)
    if name == "clip":
        return CLIPTeacher(device=device, **options)
    raise ValueError(f"unknown teacher {name!r}; known teachers: {', '.join(TEACHERS)}")
