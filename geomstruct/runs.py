"""Reading run directories written by any harness (docs/run-folder.md), for the reports.

A run directory holds ``config.json``, ``metrics.json`` (written last), ``trajectory.csv`` and array files; their
names, the schema version and the reading of the JSON files are :mod:`geomstruct.run_folder`'s. Only these files
are read, so reports work on results copied from any machine. Problems are collected as
messages, never fatal: a folder without ``metrics.json`` is an unfinished run, and a run with a file that cannot
be read or lacks what the report draws (invalid JSON or text, ``metrics.json`` without ``geometry``, a truncated
or corrupt ``features.npz`` / ``snapshots.npz``, a ``trajectory.csv`` without its columns) is skipped with a
message that names the file. A missing ``trajectory.csv`` or ``features.npz`` only leaves the run out of the
figure that needs it; missing structure metrics (runs older than them, :data:`STRUCTURE_COLUMNS`) only leave the
run's values empty in the tables that show them. A ``predictors.json`` (:data:`PREDICTORS_FILE`, written after the
run by ``python -m geomstruct.predictors``) supplies the structure values its ``metrics.json`` lacks
(:attr:`Run.posthoc`); ``metrics.json`` wins where both have one.

Suites and configurations: a run's suite is ``config.json``'s ``suite`` when it has one (the harness does not
write it today), else the name of the folder holding the run directory (``runs/<suite>/<run>``). Two runs are
the same configuration, i.e. seeds of one row of a table, when their kind, loss and parameters, teacher
identity, dataset (and toy set-up) agree and their ``config.json`` agree on every field but
:data:`NON_RESULT_FIELDS`.

Distinct runs: a row's n counts distinct runs. Two run folders of the same configuration and seed are the same
run (:func:`distinct_runs`): counted once, with a note naming both folders, when their ``metrics.json`` agree (a
copy, e.g. one suite folder under two roots); refused (:class:`DuplicateRunError`, naming both folders) when they
differ, since two different results cannot both be that seed. A ``metrics.json`` number that is NaN or infinite
(a diverged run or a broken metric) is noted, naming the folder and the metric; the report shows it as "–".
"""

from __future__ import annotations

import json
import math
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geomstruct.run_folder import (
    CONFIG_FILE,
    FEATURES_FILE,
    METRICS_FILE,
    PREDICTORS_FILE,
    PROTOCOLS,
    SNAPSHOT_FILE,
    TRAJECTORY_FILE,
    read_config,
    read_metrics,
    read_predictors,
    run_folders,
)
from geomstruct.structure import structure_columns

__all__ = [
    "CONFIG_FILE",
    "FEATURES_FILE",
    "GEOMETRY_COLUMNS",
    "LABEL_GEOMETRY",
    "METRICS_FILE",
    "NON_RESULT_FIELDS",
    "PREDICTORS_FILE",
    "PROTOCOLS",
    "SNAPSHOT_FILE",
    "STRUCTURE_COLUMNS",
    "TRAJECTORY_FILE",
    "DuplicateRunError",
    "Run",
    "distinct_runs",
    "label_configurations",
    "load_runs",
    "read_run",
    "row_folders",
    "structure_values",
]

GEOMETRY_COLUMNS = ("U", "T", "G", "dU", "dT", "S", "U_2d", "T_2d")
STRUCTURE_COLUMNS = structure_columns()
"""Structure metrics (the columns of :data:`geomstruct.structure.STRUCTURE_METRICS`) in ``metrics.json``
``geometry``, with the flag ``collapsed``.
Optional: runs written before they existed lack them and load as before; the report treats them as missing
there (:func:`structure_values`). A value that is null (undefined, e.g. CKA of a space without variance) or not a
number is missing too; a value that is not a number is noted in :attr:`Run.problems`."""

NON_RESULT_FIELDS = (
    "seed",
    "suite",
    "dataroot",
    "ood_dataroot",
    "feature_cache",
    "superpixel_cache",
    "clip_checkpoint",
    "allow_torchscript",
    "checkpoint_every",
)
"""``config.json`` fields that do not make two runs different configurations: ``seed`` (the seeds of a configuration
are its repeats, pooled as mean ± std), ``suite`` (suites are never pooled; see :attr:`Run.suite`), the paths of the
data (``dataroot``, ``ood_dataroot``: where the dataset lies on the machine that ran it; the dataset, version and
splits are fields of their own), of the teacher-feature and superpixel caches (``feature_cache``,
``superpixel_cache``) and of the CLIP weights (``clip_checkpoint``: the weights themselves are identified by
``clip_checkpoint_sha256`` and by the teacher identity, ``metrics.json`` ``teacher``, both part of the
configuration), ``allow_torchscript`` (whether a TorchScript archive may be read, not which weights), and
``checkpoint_every`` (how often a resumable checkpoint is written; a resumed run equals an uninterrupted one)."""

LABEL_GEOMETRY = ("T", "dT", "S", "T_2d")
"""Geometry that needs labels: null in the ``metrics.json`` of a label-free run (a nuScenes dataroot without
lidarseg, ``--protocols none``); such runs are reported with "–" there."""

_TRAJECTORY_COLUMNS = {"toy": ("iteration", "U", "T"), "distill": ("step", "U", "T", "G")}
_GEOMETRY_KEYS = {"toy": ("U", "T", "G"), "distill": GEOMETRY_COLUMNS}


@dataclass
class Run:
    """One finished run: its folder, configuration, metrics and (when present) its trajectory."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    trajectory: pd.DataFrame | None = None
    problems: list[str] = field(default_factory=list)
    suite: str = ""
    config_label: str | None = None
    posthoc: dict[str, Any] = field(default_factory=dict)
    """The ``geometry`` values of the run's ``predictors.json`` (empty when it has none)."""

    def __post_init__(self) -> None:
        if not self.suite:
            suite = self.config.get("suite")
            self.suite = suite if isinstance(suite, str) and suite else self.path.parent.name

    @property
    def name(self) -> str:
        """The run's folder name."""
        return self.path.name

    @property
    def kind(self) -> str:
        """``toy`` for the toy experiment, else ``distill``."""
        return str(self.metrics.get("kind", self.config.get("kind", "distill")))

    @property
    def loss(self) -> str:
        """The loss name."""
        return str(self.metrics.get("loss", self.config.get("loss", "?")))

    @property
    def seed(self) -> int:
        """The run's seed."""
        return int(self.metrics.get("seed", self.config.get("seed", 0)))

    @property
    def loss_label(self) -> str:
        """The loss with its parameters, e.g. ``contrastive (tau=0.07)``."""
        params = self.metrics.get("params") or {}
        if not params:
            return self.loss
        return f"{self.loss} ({', '.join(f'{k}={v}' for k, v in sorted(params.items()))})"

    @property
    def label(self) -> str:
        """The row label of the run's configuration: :attr:`loss_label`, followed by ``[field=value, ...]``
        when runs of the same loss label differ in other fields (set by :func:`label_configurations`)."""
        return self.config_label or self.loss_label

    def result_fields(self) -> dict[str, Any]:
        """What makes the run's configuration: ``config.json`` without :data:`NON_RESULT_FIELDS`, with the
        teacher identity, dataset and toy set-up of ``metrics.json``."""
        fields = {k: v for k, v in self.config.items() if k not in NON_RESULT_FIELDS}
        for key in ("teacher", "dataset", "setup"):
            if key in self.metrics:
                fields[key] = self.metrics[key]
        return fields

    def configuration_key(self) -> str:
        """A string equal for two runs exactly when they are seeds of the same configuration."""
        key = {"kind": self.kind, "loss_label": self.loss_label, "fields": self.result_fields()}
        return json.dumps(key, sort_keys=True, default=str)


def _format_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def label_configurations(runs: Sequence[Run]) -> None:
    """Give every run its :attr:`Run.label`: runs of one loss label (and toy set-up) that are different
    configurations get the fields they differ in appended, so that no table or figure pools them."""
    groups: dict[tuple[str, str, str], list[Run]] = defaultdict(list)
    for run in runs:
        setup = str(run.metrics.get("setup", "")) if run.kind == "toy" else ""
        groups[(run.kind, setup, run.loss_label)].append(run)
    for members in groups.values():
        if len({r.configuration_key() for r in members}) <= 1:
            for run in members:
                run.config_label = None
            continue
        fields = [r.result_fields() for r in members]
        names = [
            k
            for k in sorted({k for f in fields for k in f})
            if len({_format_value(f[k]) if k in f else None for f in fields}) > 1
        ]
        for run, values in zip(members, fields, strict=True):
            shown = ", ".join(f"{k}={_format_value(values[k]) if k in values else '(absent)'}" for k in names)
            run.config_label = f"{run.loss_label} [{shown}]"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_metrics(path: Path, metrics: dict[str, Any], kind: str) -> None:
    """Raise ``ValueError`` naming ``path`` when ``metrics.json`` lacks what the report reads."""
    geometry = metrics.get("geometry")
    if not isinstance(geometry, dict):
        raise ValueError(f"{path}: no 'geometry' object")
    nullable = LABEL_GEOMETRY if kind == "distill" else ()  # null in label-free runs (no labels: no tolerance)
    bad = [
        k
        for k in _GEOMETRY_KEYS.get(kind, GEOMETRY_COLUMNS)
        if not _is_number(geometry.get(k)) and not (k in nullable and k in geometry and geometry[k] is None)
    ]
    if bad:
        raise ValueError(f"{path}: 'geometry' lacks numbers for {', '.join(bad)}")
    if "seed" in metrics and (not isinstance(metrics["seed"], int) or isinstance(metrics["seed"], bool)):
        raise ValueError(f"{path}: 'seed' is not an integer")
    if not isinstance(metrics.get("params") or {}, dict):
        raise ValueError(f"{path}: 'params' is not an object")
    if kind == "toy":
        source = metrics.get("source")
        if not isinstance(source, dict) or not all(_is_number(source.get(k)) for k in ("U", "T")):
            raise ValueError(f"{path}: no 'source' object with U and T")
        return
    for protocol in PROTOCOLS:
        scores = metrics.get(protocol)
        if scores is None:
            continue
        if not isinstance(scores, dict):
            raise ValueError(f"{path}: '{protocol}' is not an object")
        if scores.get("miou") is not None and not _is_number(scores["miou"]):
            raise ValueError(f"{path}: '{protocol}' miou is not a number")
        per_class = scores.get("per_class") or {}
        if not isinstance(per_class, dict) or not all(v is None or _is_number(v) for v in per_class.values()):
            raise ValueError(f"{path}: '{protocol}' per_class is not an object of numbers")


def _geometry(run: Run) -> dict[str, Any]:
    """The run's ``metrics.json`` ``geometry`` with the values of its ``predictors.json`` it lacks."""
    return {**run.posthoc, **(run.metrics.get("geometry") or {})}


def structure_values(run: Run) -> dict[str, float | bool | None]:
    """The run's :data:`STRUCTURE_COLUMNS` and ``collapsed`` as floats (NaN when null or not a number) and a bool
    (None when not a bool); keys the run's ``geometry`` lacks (a run older than the structure metrics) are left
    out, so that absence and an undefined value can be told apart. A key ``metrics.json`` lacks is read from the
    run's ``predictors.json`` (:attr:`Run.posthoc`) when that has it."""
    geometry = _geometry(run)
    values: dict[str, float | bool | None] = {
        key: float(geometry[key]) if _is_number(geometry[key]) else float("nan")
        for key in STRUCTURE_COLUMNS
        if key in geometry
    }
    if "collapsed" in geometry:
        values["collapsed"] = geometry["collapsed"] if isinstance(geometry["collapsed"], bool) else None
    return values


def _check_structure(path: Path, geometry: dict[str, Any]) -> list[str]:
    """Notes on structure metrics that are present but neither null nor a number (they count as missing)."""
    bad = [k for k in STRUCTURE_COLUMNS if geometry.get(k) is not None and not _is_number(geometry[k])]
    if geometry.get("collapsed") is not None and not isinstance(geometry["collapsed"], bool):
        bad.append("collapsed")
    if not bad:
        return []
    return [f"{path}: 'geometry' {', '.join(bad)} not a number (a bool for collapsed); treated as missing"]


def _non_finite(value: Any, where: str = "") -> list[str]:
    """``key.path = NaN`` (or ``Infinity``) for every number in ``value`` (nested objects and lists) that is not
    finite."""
    if isinstance(value, dict):
        return [found for k, v in value.items() for found in _non_finite(v, f"{where}.{k}" if where else str(k))]
    if isinstance(value, list):
        return [found for i, v in enumerate(value) for found in _non_finite(v, f"{where}[{i}]")]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{where} = {json.dumps(value)}"]
    return []


def _check_finite(folder: Path, metrics: dict[str, Any]) -> list[str]:
    """A note naming the run folder and every metric of its ``metrics.json`` that is NaN or infinite (a
    diverged run or a broken metric; the report shows it as "–", so the user must be told)."""
    bad = _non_finite(metrics)
    if not bad:
        return []
    return [
        f"{folder}: {METRICS_FILE} has a non-finite value for {', '.join(bad)} (a diverged run or a broken "
        "metric); shown as – in the report"
    ]


def _npz_shapes(path: Path, keys: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """The shapes of ``keys`` in an ``.npz`` after checking every member's CRC; ``ValueError`` naming ``path``
    when the file is truncated, corrupt or lacks one of ``keys``."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = [k for k in keys if f"{k}.npy" not in names]
            corrupt = None if missing else archive.testzip()
            shapes = {}
            if not missing and corrupt is None:
                for key in keys:
                    with archive.open(f"{key}.npy") as member:
                        version = np.lib.format.read_magic(member)
                        header = (
                            np.lib.format.read_array_header_1_0
                            if version == (1, 0)
                            else np.lib.format.read_array_header_2_0
                        )
                        shapes[key] = tuple(header(member)[0])
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise ValueError(f"{path}: truncated or corrupt ({exc})") from None
    if missing:
        raise ValueError(f"{path}: no array {', '.join(missing)}")
    if corrupt is not None:
        raise ValueError(f"{path}: truncated or corrupt (bad CRC of {corrupt})")
    return shapes


def _check_features(path: Path) -> None:
    shapes = _npz_shapes(path, ("k3d", "q2d", "labels"))
    n = shapes["labels"][0] if len(shapes["labels"]) == 1 else -1
    if n < 1 or len(shapes["k3d"]) != 2 or len(shapes["q2d"]) != 2 or shapes["k3d"][0] != n or shapes["q2d"][0] != n:
        raise ValueError(f"{path}: expected k3d (n, D), q2d (n, D), labels (n,) with n > 0; got {shapes}")


def _check_snapshots(path: Path) -> None:
    _npz_shapes(path, ("targets", "labels", "snapshot_iterations", "pred_0"))
    with np.load(path) as data:
        iterations = data["snapshot_iterations"]
        missing = [f"pred_{int(i)}" for i in np.ravel(iterations) if f"pred_{int(i)}" not in data.files]
    if missing:
        raise ValueError(f"{path}: no array {', '.join(missing)}")


def _read_trajectory(path: Path, kind: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable ({exc})") from None
    needed = _TRAJECTORY_COLUMNS.get(kind, _TRAJECTORY_COLUMNS["distill"])
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: no column {', '.join(missing)}")
    not_numeric = [c for c in needed if not pd.api.types.is_numeric_dtype(frame[c])]
    if not_numeric:
        raise ValueError(f"{path}: column {', '.join(not_numeric)} is not numeric")
    return frame


def read_run(folder: Path) -> Run:
    """The run in ``folder``, every file the reports read checked; ``ValueError`` naming the first file that
    cannot be used (a ``metrics.json`` of a newer schema version among them, :mod:`geomstruct.run_folder`). A
    missing ``trajectory.csv`` is noted in :attr:`Run.problems`, not an error."""
    metrics, _ = read_metrics(folder)  # the schema version checked, its field left out
    config = read_config(folder) or {}
    run = Run(path=folder, config=config, metrics=metrics)
    _check_metrics(folder / METRICS_FILE, metrics, run.kind)
    run.posthoc = read_predictors(folder)  # a ValueError naming the file when it is unreadable
    run.problems += _check_structure(folder / METRICS_FILE, metrics.get("geometry") or {})
    if run.posthoc:
        run.problems += _check_structure(folder / PREDICTORS_FILE, run.posthoc)
        bad = _non_finite(run.posthoc)
        if bad:
            run.problems.append(f"{folder}: {PREDICTORS_FILE} has a non-finite value for {', '.join(bad)}; shown as –")
    run.problems += _check_finite(folder, metrics)
    traj = folder / TRAJECTORY_FILE
    if traj.is_file():
        run.trajectory = _read_trajectory(traj, run.kind)
    else:
        run.problems.append(f"{folder}: no {TRAJECTORY_FILE}")
    if run.kind != "toy" and (folder / FEATURES_FILE).is_file():
        _check_features(folder / FEATURES_FILE)
    if run.kind == "toy" and (folder / SNAPSHOT_FILE).is_file():
        _check_snapshots(folder / SNAPSHOT_FILE)
    return run


def load_runs(roots: Iterable[Path]) -> tuple[list[Run], list[str]]:
    """Every run directory under ``roots`` (searched recursively).

    Returns ``(runs, problems)``: the runs whose files could be read, and a message for every folder that could
    not be used (no ``metrics.json``: unfinished; a file that cannot be read: skipped, the message names it),
    every missing root and every run without a trajectory.
    """
    problems: list[str] = []
    existing = []
    for root in map(Path, roots):
        if root.is_dir():
            existing.append(root)
        else:
            problems.append(f"{root}: no such folder")
    runs: list[Run] = []
    for folder in run_folders(existing):
        if not (folder / METRICS_FILE).is_file():
            problems.append(f"{folder}: no {METRICS_FILE} (unfinished or failed run); skipped")
            continue
        try:
            run = read_run(folder)
        except ValueError as exc:
            problems.append(f"{exc}; run {folder} skipped")
            continue
        problems.extend(run.problems)
        runs.append(run)
    return runs, problems


def row_folders(runs: Sequence[Run]) -> str:
    """The run folders of one table row, ``; ``-separated, in seed order."""
    return "; ".join(r.path.as_posix() for r in sorted(runs, key=lambda r: (r.seed, r.path.as_posix())))


class DuplicateRunError(ValueError):
    """Two run folders hold the same configuration and seed with different ``metrics.json``: two results
    claiming one seed, which no report can count (the message names both folders)."""


def _metrics_text(run: Run) -> str:
    return json.dumps(run.metrics, sort_keys=True)


def distinct_runs(runs: Sequence[Run]) -> tuple[list[Run], list[str]]:
    """The runs with every run counted once, and a note per copy left out.

    Two runs are the same run when they have the same configuration (:meth:`Run.configuration_key`) and the same
    seed. When their ``metrics.json`` agree (a copied folder: one suite under two roots), the run is kept once,
    from the folder that sorts first, with a note naming both folders. When they differ they are not the same
    run, yet claim the same seed: :class:`DuplicateRunError` naming both folders (the seed cannot be counted
    twice, and which copy is right is the user's choice). Order of the kept runs is preserved.
    """
    groups: dict[tuple[str, int], list[Run]] = defaultdict(list)
    for run in runs:
        groups[(run.configuration_key(), run.seed)].append(run)
    dropped: set[int] = set()
    notes: list[str] = []
    conflicts: list[str] = []
    for members in groups.values():
        first, *copies = sorted(members, key=lambda r: r.path.as_posix())
        for copy in copies:
            if _metrics_text(copy) != _metrics_text(first):
                conflicts.append(
                    f"  {first.path.as_posix()} and {copy.path.as_posix()}: {first.label} seed {first.seed}, "
                    f"different {METRICS_FILE}"
                )
                continue
            dropped.add(id(copy))
            notes.append(
                f"{first.path.as_posix()} and {copy.path.as_posix()} are the same run ({first.label}, seed "
                f"{first.seed}, identical {METRICS_FILE}); counted once, from {first.path.as_posix()}"
            )
    if conflicts:
        raise DuplicateRunError(
            "runs of the same configuration and seed with different results:\n"
            + "\n".join(conflicts)
            + "\na seed is counted once; nothing was written. Give --runs only one of each pair (or move one away)"
        )
    return [run for run in runs if id(run) not in dropped], notes
