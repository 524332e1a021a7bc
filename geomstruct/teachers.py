"""The teacher side of a report: the teacher x loss table of a suite whose runs vary the teacher, and the caveat
naming randomly initialised teachers.

A suite may list several teachers (``teacher: [{name: synthetic}, {name: dinov2, ...}]``, docs/usage.md#teachers).
The geometry of students distilled from different teachers is not comparable (each is measured against its own
teacher), so the report's other tables keep the runs of the most frequent teacher (``geomstruct.report``); the
teacher table (``teachers.md``, ``.tex``, ``.csv``) shows every run: one row per teacher and configuration, with
the mean over seeds of each protocol's mIoU and of the geometry ``U``, ``T`` and ``S`` measured against that
teacher. It is written only when the runs hold more than one teacher.

A teacher is *randomly initialised* when its configuration names a real-image teacher (any but ``synthetic``)
without a checkpoint (``checkpoint: null``): such runs exercise the code path, and no scientific conclusion can
be drawn from them; :func:`random_teacher_caveat` says so on the page.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from geomstruct.run_folder import LEGACY_TEACHER, TEACHER_OPTIONS_KEY, flat_config
from geomstruct.runs import Run, label_configurations
from geomstruct.summary import PROTOCOL_TITLES, PROTOCOLS
from geomstruct.tables import write_all

TEACHER_TABLE = "teachers"
"""The stem of the teacher x loss table's files."""
TABLE_GEOMETRY = ("U", "T", "S")
RANDOM_TEACHER_CAVEAT = (
    "randomly initialised teachers ({names}): their runs exercise the code path only; no scientific conclusion "
    "can be drawn from them"
)


def teacher_of(run: Run) -> str:
    """The run's teacher identity (``metrics.json`` ``teacher``; its configured name when absent)."""
    return str(run.metrics.get("teacher") or flat_config(run.config).get("teacher", "?"))


def is_random_teacher(config: dict[str, Any]) -> bool:
    """Whether a run's configuration (flat or in sections) names a real-image teacher without weights: any teacher
    but ``synthetic`` whose ``checkpoint`` option is null."""
    flat = flat_config(config)
    name = flat.get("teacher", "synthetic")
    if name == "synthetic":
        return False
    if name == LEGACY_TEACHER:
        return flat.get("clip_checkpoint") is None
    options = flat.get(TEACHER_OPTIONS_KEY) or {}
    return "checkpoint" in options and options["checkpoint"] is None


def random_teacher_caveat(runs: Sequence[Run]) -> list[str]:
    """The caveat naming the randomly initialised teachers of ``runs`` (:func:`is_random_teacher`), none when
    every teacher has weights."""
    names = sorted({teacher_of(r) for r in runs if r.kind == "distill" and is_random_teacher(r.config)})
    return [RANDOM_TEACHER_CAVEAT.format(names=", ".join(names))] if names else []


def teacher_table(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per (teacher, configuration) of ``runs`` with ``seeds``, the mean mIoU (percent) of every protocol
    some run evaluated and the mean geometry (:data:`TABLE_GEOMETRY`); empty when the runs hold one teacher."""
    rows = []
    by_teacher: dict[str, list[Run]] = {}
    for run in runs:
        by_teacher.setdefault(teacher_of(run), []).append(run)
    for members in by_teacher.values():
        label_configurations(members)  # a teacher's configurations apart (the report relabels its main teacher's)
    for run in runs:
        geometry = run.metrics.get("geometry") or {}
        row: dict[str, Any] = {"teacher": teacher_of(run), "configuration": run.label}
        for protocol in PROTOCOLS:
            score = (run.metrics.get(protocol) or {}).get("miou")
            row[protocol] = 100.0 * float(score) if score is not None else math.nan
        row |= {k: math.nan if geometry.get(k) is None else float(geometry[k]) for k in TABLE_GEOMETRY}
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty or frame["teacher"].nunique() < 2:
        return pd.DataFrame()
    keys = ["teacher", "configuration"]
    table = frame.groupby(keys, sort=True).mean(numeric_only=True)
    table.insert(0, "seeds", frame.groupby(keys, sort=True).size())
    return table.dropna(axis=1, how="all").reset_index()


def write_teacher_table(runs: Sequence[Run], out: Path) -> list[Path]:
    """``teachers.md``, ``.tex`` and ``.csv`` (:func:`teacher_table`; nothing when the runs hold one teacher)."""
    table = teacher_table(runs)
    if table.empty:
        return []
    out.mkdir(parents=True, exist_ok=True)
    protocols = [p for p in PROTOCOLS if p in table]
    geometry = [g for g in TABLE_GEOMETRY if g in table]
    header = ["teacher", "configuration", "seeds", *[PROTOCOL_TITLES[p] for p in protocols], *geometry]

    def cell(value: float, digits: int) -> str:
        return f"{value:.{digits}f}" if math.isfinite(value) else "–"

    body = [
        [str(r["teacher"]), str(r["configuration"]), str(int(r["seeds"]))]
        + [cell(r[p], 1) for p in protocols]
        + [cell(r[g], 3) for g in geometry]
        for _, r in table.iterrows()
    ]
    caption = (
        "Teacher × loss: mIoU (%) of every protocol evaluated and the geometry (U, T, S against each run's own "
        "teacher), mean over seeds, one row per teacher and configuration. Geometry is not comparable across "
        "teachers; the other tables keep the most frequent teacher's runs."
    )
    caveat = random_teacher_caveat(runs)
    if caveat:
        caption += f" Caveat: {caveat[0]}."
    return write_all(header, body, caption, table, out / TEACHER_TABLE)
