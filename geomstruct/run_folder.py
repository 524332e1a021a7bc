"""The run folder: its files, its schema version, its protocols, reading and writing (docs/run-folder.md).

The one owner of the format. The harness (:mod:`bench.results`, :mod:`bench.distill`, :mod:`bench.train`, the toy
runner) writes run folders through it; the report (:mod:`geomstruct.runs`) and the study tools
(:mod:`bench.study`) read them through it. No other module spells a file name of the folder (a test checks it).
It sits at the bottom of the project: it imports nothing of ``bench``, ``models`` or ``geomstruct``, so that the
harness above and the report beside it both use it.

A run folder ``<out>/<run name>/`` holds:

- ``config.json`` (:data:`CONFIG_FILE`): the resolved configuration, written when the folder is bound to it; the
  identity of the run (its hash is carried by the checkpoint), so it holds nothing else;
- ``environment.json`` (:data:`ENVIRONMENT_FILE`): package versions, device, git commit of the attempt;
- ``checkpoint.pt`` (:data:`CHECKPOINT_FILE`): the resumable state while training (distillation runs);
- ``trajectory.csv`` (:data:`TRAJECTORY_FILE`): the in-run probe every ``probe_every`` steps (toy: iterations);
- ``features.npz`` (:data:`FEATURES_FILE`, distillation) or ``snapshots.npz`` (:data:`SNAPSHOT_FILE`, toy): the
  arrays the figures draw;
- ``timing.json`` (:data:`TIMING_FILE`): wall-clock seconds of each phase of the attempt that finished the run;
- ``metrics.json`` (:data:`METRICS_FILE`), written last: its presence marks the run finished; it carries the
  folder's schema version (:data:`SCHEMA_FIELD`);
- ``error.txt`` (:data:`ERROR_FILE`): why the last attempt failed (never beside ``metrics.json``).

Beside the folder, ``<out>/.<run name>.lock`` (:func:`lock_path`) is its one-writer lock.

Schema version (:data:`SCHEMA_VERSION`): an integer in ``metrics.json`` under :data:`SCHEMA_FIELD`, stamped by
:func:`write_metrics`. A ``metrics.json`` without it was written before the field existed and is read as version
1, the format those folders have; a version above :data:`SCHEMA_VERSION` (a folder written by newer code) is
refused with a ``ValueError`` naming the file. Readers get the metrics without the field (:attr:`RunRecord.metrics`
is the same dict for a folder written before or after it), and the version as :attr:`RunRecord.schema_version`.
``config.json`` carries no version: it is hashed as the run's identity, and a new field there would change the
identity of every run.

Writing: every file is written by :func:`write_bytes`, the one atomic writer of the project (the data caches use
it too, through :mod:`bench.files`): a temporary ``.<name>.<random>.tmp`` in the same folder
(:data:`TEMPORARY_PATTERN`), flushed to disk (``fsync``), given the mode ``open()`` would give it, then renamed into
place. A file that exists is therefore complete; an ``OSError`` is re-raised naming the file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# --- the files -----------------------------------------------------------------------------------------------------

CONFIG_FILE = "config.json"
"""The resolved configuration (the run's identity)."""
ENVIRONMENT_FILE = "environment.json"
"""Package versions, Python, platform, device and git commit of the attempt."""
METRICS_FILE = "metrics.json"
"""The results, written last: its presence marks the run finished (docs/run-folder.md#metricsjson)."""
TRAJECTORY_FILE = "trajectory.csv"
"""The in-run probe: one row per probe step (distillation: ``step``, U, T, G, ...; toy: ``iteration``, U, T)."""
FEATURES_FILE = "features.npz"
"""The balanced point set of a distillation run: ``k3d``, ``q2d`` (float16) and ``labels``."""
SNAPSHOT_FILE = "snapshots.npz"
"""The toy run's targets, labels and predictions at the snapshot iterations."""
CHECKPOINT_FILE = "checkpoint.pt"
"""The resumable training state of a distillation run (model, optimiser, schedule, trajectory, config hash)."""
TIMING_FILE = "timing.json"
"""Wall-clock seconds of each phase of the attempt that finished the run: for budgeting suites, not a result."""
ERROR_FILE = "error.txt"
"""Why the last attempt failed (message and traceback); removed when the run finishes."""
LOCK_SUFFIX = ".lock"
"""The lock of run folder ``<out>/<name>`` is the file ``<out>/.<name>.lock`` (:func:`lock_path`)."""
UNBOUND_FILES = frozenset({CONFIG_FILE, ENVIRONMENT_FILE, ERROR_FILE})
"""Files of a run folder that hold no result: a folder with only these may be rebound to another configuration."""
TEMPORARY_PATTERN = ".*.tmp"
"""Names of the atomic writer's temporaries (``.<target name>.<random>.tmp``)."""

# --- the schema ----------------------------------------------------------------------------------------------------

SCHEMA_VERSION = 1
"""The run-folder format this code writes and the newest it reads. Version 1: the format of every folder written
before the field existed (read as version 1 when ``metrics.json`` has no :data:`SCHEMA_FIELD`). Raise it when a
change means older code would misread a new folder, and say in docs/run-folder.md how older folders are read."""
SCHEMA_FIELD = "schema_version"
"""The key of the schema version in ``metrics.json``."""

PROTOCOLS = ("zero_shot", "linear_probe", "few_shot", "few_shot_ood")
"""The evaluation protocols of a distillation run, in table order: each a ``metrics.json`` object with ``miou``
and ``per_class`` when the run evaluated it (docs/method.md#protocols)."""
LABEL_PROTOCOLS = ("zero_shot", "linear_probe", "few_shot")
"""The protocols that need the labels of the distillation dataset (``few_shot_ood`` reads the OOD dataset's)."""


def lock_path(run_path: Path) -> Path:
    """The one-writer lock file of the run folder ``run_path``: ``<out>/.<name>.lock``, beside the folder."""
    run_path = Path(run_path)
    return run_path.parent / f".{run_path.name}{LOCK_SUFFIX}"


# --- writing -------------------------------------------------------------------------------------------------------


def file_mode() -> int:
    """``0o666`` minus the process umask: the mode ``open()`` gives a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file beside ``path`` (created with its folder when
    missing), flushed to disk (``fsync``), then renamed into place; no temporary is left behind on failure, and an
    ``OSError`` is re-raised naming ``path``, keeping its errno (and so its ``OSError`` subclass)."""
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            os.chmod(tmp, file_mode())  # mkstemp's 0600 -> what open() would give under the user's umask
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _naming(exc, path) from exc
        raise


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` as an error of the same errno (so the same ``OSError`` subclass) whose message names ``path``."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno is None:
        return OSError(f"cannot write {path}: {reason}")
    return OSError(exc.errno, f"cannot write {path}: {reason}")


def json_default(obj: Any) -> Any:
    """JSON form of the numpy scalars and arrays and the paths a configuration or result holds."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON with sorted keys, atomically."""
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n").encode())


def write_config(folder: Path, config: Mapping[str, Any]) -> None:
    """Write the run's ``config.json`` (the configuration as given: no schema field, see the module docstring)."""
    write_json(Path(folder) / CONFIG_FILE, config)


def write_metrics(folder: Path, metrics: Mapping[str, Any]) -> None:
    """Write the run's ``metrics.json`` with the schema version of this code (:data:`SCHEMA_FIELD`), marking the
    run finished.

    Raises:
        ValueError: ``metrics`` already holds :data:`SCHEMA_FIELD` (the version is this module's to write).
    """
    if SCHEMA_FIELD in metrics:
        raise ValueError(f"metrics of {folder} hold {SCHEMA_FIELD!r}: the run-folder module stamps the version")
    write_json(Path(folder) / METRICS_FILE, {**metrics, SCHEMA_FIELD: SCHEMA_VERSION})


# --- reading -------------------------------------------------------------------------------------------------------


def read_object(path: Path) -> dict[str, Any]:
    """The JSON object in the file ``path``.

    Raises:
        ValueError: naming ``path``: unreadable, not UTF-8 text, not valid JSON, or not a JSON object.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise ValueError(f"{path}: unreadable ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def schema_version(metrics: Mapping[str, Any], path: Path) -> int:
    """The schema version of the ``metrics.json`` at ``path`` with content ``metrics`` (1 when it has none).

    Raises:
        ValueError: naming ``path``: the version is not a positive integer, or is newer than :data:`SCHEMA_VERSION`.
    """
    version = metrics.get(SCHEMA_FIELD, 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{path}: {SCHEMA_FIELD} {version!r} is not a positive integer")
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"{path}: written in run-folder schema version {version}, newer than this code reads "
            f"({SCHEMA_VERSION}); read it with the code that wrote it (docs/run-folder.md#schema-version)"
        )
    return version


def is_finished(folder: Path) -> bool:
    """True when the run folder holds ``metrics.json`` (written last)."""
    return (Path(folder) / METRICS_FILE).is_file()


def read_metrics(folder: Path) -> tuple[dict[str, Any], int]:
    """``(metrics, schema version)`` of the run folder's ``metrics.json``: the metrics without the schema field.

    Raises:
        ValueError: naming the file: unreadable, not a JSON object, or of an unknown schema version.
    """
    path = Path(folder) / METRICS_FILE
    data = read_object(path)
    version = schema_version(data, path)
    data.pop(SCHEMA_FIELD, None)
    return data, version


def read_config(folder: Path) -> dict[str, Any] | None:
    """The run folder's ``config.json``, or None when it has none.

    Raises:
        ValueError: naming the file when it cannot be read or is not a JSON object.
    """
    path = Path(folder) / CONFIG_FILE
    return read_object(path) if path.is_file() else None


@dataclass(frozen=True)
class RunRecord:
    """A finished run as its files hold it: its folder, ``metrics.json`` (without the schema field), ``config.json``
    (None when the folder has none) and the folder's schema version."""

    path: Path
    metrics: dict[str, Any]
    config: dict[str, Any] | None
    schema_version: int = SCHEMA_VERSION

    @property
    def name(self) -> str:
        """The run's folder name."""
        return self.path.name


def read_record(folder: Path, defaults: Mapping[str, Any] | None = None) -> RunRecord:
    """The finished run in ``folder``; a field the stored configuration lacks (written before the field existed)
    takes its value from ``defaults``, the value that run used.

    Raises:
        ValueError: naming the folder: the run has not finished (no ``metrics.json``), or ``unreadable run``
            followed by the message naming the file that cannot be read or is of an unknown schema version.
    """
    folder = Path(folder)
    if not is_finished(folder):
        raise ValueError(f"{folder}: not a finished run (no {METRICS_FILE})")
    try:
        metrics, version = read_metrics(folder)
        stored = read_config(folder)
    except ValueError as exc:
        raise ValueError(f"{folder}: unreadable run ({exc})") from None
    config = None if stored is None else {**dict(defaults or {}), **stored}
    return RunRecord(folder, metrics, config, version)


def finished_runs(
    folder: Path, names: Sequence[str] | None = None, defaults: Mapping[str, Any] | None = None
) -> dict[str, RunRecord]:
    """The finished runs directly under ``folder`` (:func:`read_record` with ``defaults``) by folder name: all of them
    in name order, or those of ``names`` in that order (an unfinished or absent one is left out). How the study
    tools (:mod:`bench.study`) read a suite's folder.

    Raises:
        ValueError: a finished run that cannot be read (:func:`read_record`).
    """
    if names is None:
        paths = [p.parent for p in sorted(Path(folder).glob(f"*/{METRICS_FILE}"))]
    else:
        paths = [Path(folder) / name for name in names]
    return {path.name: read_record(path, defaults) for path in paths if is_finished(path)}


def run_folders(roots: Iterable[Path]) -> list[Path]:
    """Every folder under ``roots`` (searched recursively, a root itself included) holding ``config.json`` or
    ``metrics.json``, each once: a folder reached through two roots (``runs`` and ``runs/toy``, a relative and an
    absolute spelling, a symbolic link) is the same folder, listed under the first spelling met. Sorted."""
    found: dict[Path, Path] = {}
    for root in map(Path, roots):
        for marker in (CONFIG_FILE, METRICS_FILE):
            folders = [root] if (root / marker).is_file() else []
            for folder in [*folders, *(p.parent for p in root.rglob(marker))]:
                found.setdefault(folder.resolve(), folder)
    return sorted(set(found.values()))
