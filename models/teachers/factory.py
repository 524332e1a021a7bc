"""Teachers by name: the one place that knows every teacher class (docs/implementation.md#students-and-teachers).

:data:`TEACHERS` maps a name to a *builder* ``builder(device=..., **options) -> Teacher`` (a
:class:`~models.teachers.base.Teacher` subclass is one); a new teacher is one file with its class and one line
here. A plug-in teacher ``"module:object"`` (:mod:`models.registry`) names such a builder outside the package.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from models.registry import Registry
from models.teachers.base import Teacher
from models.teachers.clip import CLIPOptions, CLIPTeacher
from models.teachers.dinov2 import DINOv2Options, DINOv2Teacher
from models.teachers.synthetic import SyntheticOptions, SyntheticTeacher

TeacherBuilder = Callable[..., Teacher]


def teacher_problem(name: str, builder: object) -> str | None:
    """What keeps ``builder`` from building a teacher, None when nothing does: a class must subclass
    :class:`~models.teachers.base.Teacher` (hence implement its abstract methods); any other builder must be
    callable as ``builder(device=..., **options)`` (it takes ``device``)."""
    if isinstance(builder, type):
        if not issubclass(builder, Teacher):
            return f"a teacher class must subclass models.teachers.Teacher; {builder.__name__} does not"
        if inspect.isabstract(builder):
            missing = ", ".join(sorted(builder.__abstractmethods__))
            return f"teacher class {builder.__name__} leaves abstract methods of Teacher unimplemented: {missing}"
        return None
    if not callable(builder):
        return f"a teacher is a Teacher subclass or a function builder(device, **options) -> Teacher; got {builder!r}"
    try:
        parameters = inspect.signature(builder).parameters.values()
    except (TypeError, ValueError):
        return "its signature cannot be read"
    if not any(p.name == "device" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return "a teacher builder takes the keyword device (builder(device, **options) -> Teacher)"
    return None


TEACHERS: Registry[TeacherBuilder] = Registry("teacher", teacher_problem)
"""Teacher name -> builder, in declaration order, each with ``options``: the dataclass of the options a run's
configuration may set (``teacher: {name: ..., <option>: ...}``, :class:`bench.config_sections.TeacherConfig`):
``synthetic`` (:class:`~models.teachers.synthetic.SyntheticOptions`: none), ``clip``
(:class:`~models.teachers.clip.CLIPOptions`: ``arch``, ``checkpoint``, ``checkpoint_sha256``,
``allow_torchscript``) and ``dinov2`` (:class:`~models.teachers.dinov2.DINOv2Options`: ``arch``, ``checkpoint``,
``checkpoint_sha256``, ``image_size``, ``final_norm``, ``l2_normalize``, ``seed`` and the shape overrides). Its
``build_options()`` (when it has one, else every field) are the builder's keywords; a ``dim()`` gives the feature
dimension without building the teacher. A plug-in declares its options as the attribute ``options`` of its
object; one without takes the keywords its builder accepts. A teacher class without a text tower sets
``has_text = False`` (its runs are refused the zero-shot protocol)."""
TEACHERS.register("synthetic", SyntheticTeacher.from_file, options=SyntheticOptions)
TEACHERS.register("clip", CLIPTeacher, options=CLIPOptions)
TEACHERS.register("dinov2", DINOv2Teacher, options=DINOv2Options)


def build_teacher(name: str, device: torch.device | str = "cpu", **options: Any) -> Teacher:
    """Build a teacher by name (:data:`TEACHERS`) or plug-in ``"module:object"``.

    Args:
        name: a registered teacher or a plug-in.
        device: where the teacher computes.
        options: the builder's keyword options.

    Raises:
        ValueError: an unknown name or a bad plug-in (:meth:`models.registry.Registry.get`), or a builder that
            returns something other than a :class:`~models.teachers.base.Teacher`.
    """
    teacher = TEACHERS.get(name)(device=torch.device(device), **options)
    if not isinstance(teacher, Teacher):
        raise ValueError(f"teacher {name!r} built {type(teacher).__name__}, not a models.teachers.Teacher")
    return teacher
