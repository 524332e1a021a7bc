"""Students by name: the one place that knows every student network (docs/implementation.md#students-and-teachers).

:data:`STUDENTS` maps a name to a *builder* ``builder(out_dim=..., preset=..., voxel_size=..., system=...,
inputs=..., **options) -> nn.Module``; the module maps ``forward(points (N, 4), batch (N,))`` to ``(N, out_dim)``
point features, as :class:`~models.students.minkunet.PointStudent` does. A new student is one file with its
builder and one line here; a plug-in student ``"module:builder"`` (:mod:`models.registry`) needs neither (a
builder that has no use for a keyword takes ``**options``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from models.registry import Registry
from models.students.minkunet import PRESETS as MINKUNET_PRESETS
from models.students.minkunet import build_minkunet
from models.students.waffleiron import PRESETS as WAFFLEIRON_PRESETS
from models.students.waffleiron import build_waffleiron

StudentBuilder = Callable[..., nn.Module]

STANDARD_OPTIONS = ("out_dim", "preset", "voxel_size", "system", "inputs")
"""The keywords every builder receives from a run's configuration (the run's ``student_overrides`` are added)."""


def accepted_options(builder: Callable[..., Any]) -> tuple[str, ...] | None:
    """The keyword options ``builder`` takes, None when it takes any (``**options``)."""
    parameters = inspect.signature(builder).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(p.name for p in parameters if p.kind in keyword)


def student_problem(name: str, builder: object) -> str | None:
    """What keeps ``builder`` from building a student, None when nothing does: a callable taking the
    :data:`STANDARD_OPTIONS` as keywords."""
    if not callable(builder):
        return (
            f"a student is a builder function(out_dim, preset, voxel_size, system, inputs, **options); got {builder!r}"
        )
    try:
        accepted = accepted_options(builder)
    except (TypeError, ValueError):
        return "its signature cannot be read"
    missing = [k for k in STANDARD_OPTIONS if accepted is not None and k not in accepted]
    if missing:
        return f"a student builder takes the keywords {', '.join(STANDARD_OPTIONS)} (or **options); it lacks {missing}"
    return None


STUDENTS: Registry[StudentBuilder] = Registry("student", student_problem)
"""Student name -> builder, in declaration order: ``minkunet`` (:func:`~models.students.minkunet.build_minkunet`:
options ``preset``, ``backend``, ``in_channels`` and the fields of its configuration) and ``waffleiron``
(:func:`~models.students.waffleiron.build_waffleiron`). A student's ``presets`` metadata (preset name -> frozen
configuration dataclass) declares its presets and, by the dataclass's fields, the ``overrides`` a run may give
(checked by :class:`bench.config_sections.StudentConfig`); a student without it takes its builder's keywords."""
STUDENTS.register("minkunet", build_minkunet, presets=MINKUNET_PRESETS)
STUDENTS.register("waffleiron", build_waffleiron, presets=WAFFLEIRON_PRESETS)


def build_student(name: str = "minkunet", **options: Any) -> nn.Module:
    """Build a student by name (:data:`STUDENTS`) or plug-in ``"module:builder"`` with the builder's keyword
    ``options``; ``ValueError`` on an unknown name or a bad plug-in (:meth:`models.registry.Registry.get`).
    Seed the global generator (``torch.manual_seed``) before building for reproducible weights."""
    return STUDENTS.get(name)(**options)
