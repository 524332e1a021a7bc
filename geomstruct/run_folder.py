"""The run folder: its files, its schema version, its protocols, reading and writing (docs/run-folder.md).

The one owner of the format. The harness (:mod:`bench.results`, :mod:`bench.distill`, :mod:`bench.train`, the toy
runner) writes run folders through it; the report (:mod:`geomstruct.runs`) and the study tools
(:mod:`bench.study`) read them through it. No other module spells a file name of the folder (a test checks it).
It sits at the bottom of the project: it imports nothing of ``bench``, ``models`` or ``geomstruct``, so that the
harness above and the report beside it both use it.

A run folder ``<out>/<run name>/`` holds:

- ``config.json`` (:data:`CONFIG_FILE`): the resolved configuration (in sections, format 2), written when the
  folder is bound to it; the identity of the run (its flat form's hash is carried by the checkpoint);
- ``environment.json`` (:data:`ENVIRONMENT_FILE`): package versions, device, git commit of the attempt;
- ``checkpoint.pt`` (:data:`CHECKPOINT_FILE`): the resumable state while training (distillation runs);
- ``trajectory.csv`` (:data:`TRAJECTORY_FILE`): the in-run probe every ``probe_every`` steps (toy: iterations);
- ``features.npz`` (:data:`FEATURES_FILE`, distillation) or ``snapshots.npz`` (:data:`SNAPSHOT_FILE`, toy): the
  arrays the figures draw;
- ``timing.json`` (:data:`TIMING_FILE`): wall-clock seconds of each phase of the attempt that finished the run;
- ``metrics.json`` (:data:`METRICS_FILE`), written last: its presence marks the run finished; it carries the
  folder's schema version (:data:`SCHEMA_FIELD`);
- ``error.txt`` (:data:`ERROR_FILE`): why the last attempt failed (never beside ``metrics.json``);
- ``predictors.json`` (:data:`PREDICTORS_FILE`), optional, written after the run by ``python -m
  geomstruct.predictors``: structure predictors added after the run was made, computed from its ``features.npz``
  (``metrics.json`` is never rewritten).

Beside the folder, ``<out>/.<run name>.lock`` (:func:`lock_path`) is its one-writer lock.

Schema version (:data:`SCHEMA_VERSION`): an integer in ``metrics.json`` under :data:`SCHEMA_FIELD`, stamped by
:func:`write_metrics`. A ``metrics.json`` without it was written before the field existed and is read as version
1, the format those folders have; a version above :data:`SCHEMA_VERSION` (a folder written by newer code) is
refused with a ``ValueError`` naming the file. Readers get the metrics without the field (:attr:`RunRecord.metrics`
is the same dict for a folder written before or after it), and the version as :attr:`RunRecord.schema_version`.
``config.json`` carries its own format marker instead (:data:`CONFIG_FORMAT_FIELD`): format 2 holds the
configuration in sections (``data``, ``teacher``, ...), format 1 (no marker, every folder written before sections)
holds it flat. :func:`read_config` returns the flat form of either (:func:`flat_config`, through the one table
:data:`LEGACY_KEYS` of flat key <-> ``section.field``): the run's identity (hashed into its checkpoint, with the
marker left out), the keys of its name and of the report's labels, the same for a run written in either format
(docs/run-folder.md#configjson).

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
PREDICTORS_FILE = "predictors.json"
"""Post-hoc structure predictors of a finished run (:func:`write_predictors`): ``{"geometry": {name: value},
"source": ...}``, the values of the metrics its ``metrics.json`` lacks, computed from its ``features.npz``; the
report reads a value here only where ``metrics.json`` has none (docs/run-folder.md#predictorsjson)."""
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

# --- the configuration's sections ----------------------------------------------------------------------------------

CONFIG_FORMAT_FIELD = "config_format"
"""The key of the configuration format in a sectioned ``config.json`` (a flat one, from before sections, has none)."""
CONFIG_FORMAT = 2
"""The format of the ``config.json`` this code writes: 2, the configuration in sections (``data``, ``teacher``, ...,
docs/run-folder.md#configjson); 1 (no :data:`CONFIG_FORMAT_FIELD`): flat, one key per field (``clip_arch``,
``lp_steps``), the format of every run folder written before sections (the committed ``study/`` folders)."""
CONFIG_TOP_LEVEL = ("kind", "seed", "protocols")
"""The keys of a sectioned distillation configuration outside any section (the same in the flat form)."""

LEGACY_KEYS: dict[str, tuple[str, str]] = {
    # data: the dataset distilled on and evaluated, its splits and the run's caches
    "dataset": ("data", "dataset"),
    "dataroot": ("data", "dataroot"),
    "version": ("data", "version"),
    "variant": ("data", "variant"),
    "train_split": ("data", "train_split"),
    "eval_split": ("data", "eval_split"),
    "train_scenes": ("data", "train_scenes"),
    "val_scenes": ("data", "val_scenes"),
    "test_scenes": ("data", "test_scenes"),
    "eval_scenes": ("data", "eval_scenes"),
    "crop_radius": ("data", "crop_radius"),
    "augmentation": ("data", "augmentation"),
    "slic": ("data", "slic"),
    "feature_cache": ("data", "feature_cache"),
    "superpixel_cache": ("data", "superpixel_cache"),
    # ood: the dataset of the OOD few-shot protocol
    "ood_dataset": ("ood", "dataset"),
    "ood_dataroot": ("ood", "dataroot"),
    "ood_train_scenes": ("ood", "train_scenes"),
    "ood_val_scenes": ("ood", "val_scenes"),
    "ood_test_scenes": ("ood", "test_scenes"),
    "ood_eval_split": ("ood", "eval_split"),
    # teacher: a name and that teacher's options (the CLIP teacher's: LEGACY_TEACHER_OPTIONS)
    "teacher": ("teacher", "name"),
    # student: a name and its options
    "student": ("student", "name"),
    "preset": ("student", "preset"),
    "out_dim": ("student", "out_dim"),
    "voxel_size": ("student", "voxel_size"),
    "voxel_system": ("student", "voxel_system"),
    "student_inputs": ("student", "inputs"),
    "student_overrides": ("student", "overrides"),
    "student_checkpoint": ("student", "checkpoint"),
    "student_checkpoint_layout": ("student", "checkpoint_layout"),
    "student_checkpoint_sha256": ("student", "checkpoint_sha256"),
    # distillation: the loss and its optimisation
    "loss": ("distillation", "loss"),
    "loss_params": ("distillation", "loss_params"),
    "steps": ("distillation", "steps"),
    "batch_size": ("distillation", "batch_size"),
    "n_pairs": ("distillation", "n_pairs"),
    "optimizer": ("distillation", "optimizer"),
    "lr": ("distillation", "lr"),
    "momentum": ("distillation", "momentum"),
    "weight_decay": ("distillation", "weight_decay"),
    "sync_bn": ("distillation", "sync_bn"),
    "loss_dtype": ("distillation", "loss_dtype"),
    "region_pixel_norm": ("distillation", "region_pixel_norm"),
    "checkpoint_every": ("distillation", "checkpoint_every"),
    # probe: the in-run probe of the trajectory
    "probe_every": ("probe", "every"),
    "probe_scenes": ("probe", "scenes"),
    "probe_split": ("probe", "split"),
    "probe_per_class": ("probe", "per_class"),
    # geometry: the balanced point set measured at the end
    "features_per_class": ("geometry", "features_per_class"),
    "geometry_seed": ("geometry", "seed"),
    "uniformity_t": ("geometry", "uniformity_t"),
    # segmentation: the loss of both downstream protocols (linear probe, few-shot fine-tuning)
    "seg_loss": ("segmentation", "loss"),
    "seg_class_weight": ("segmentation", "class_weight"),
    # linear_probe
    "lp_steps": ("linear_probe", "steps"),
    "lp_lr": ("linear_probe", "lr"),
    "lp_batch_points": ("linear_probe", "batch_points"),
    "lp_points_per_scan": ("linear_probe", "points_per_scan"),
    "lp_max_points": ("linear_probe", "max_points"),
    # few_shot: the 1% splits and the fine-tuning (in-domain and OOD)
    "few_shot_every": ("few_shot", "every"),
    "few_shot_subsets": ("few_shot", "subsets"),
    "ft_steps": ("few_shot", "steps"),
    "ft_lr": ("few_shot", "lr"),
    "ft_batch_size": ("few_shot", "batch_size"),
    "ft_optimizer": ("few_shot", "optimizer"),
    "ft_warmup": ("few_shot", "warmup"),
    "ft_clip_norm": ("few_shot", "clip_norm"),
}
"""THE mapping between the flat configuration keys (every field name of the configuration before sections: what
suites, ``--set`` and the command line's flags may still write, what run names and the report's labels are made
of, what a flat ``config.json`` holds) and the sectioned fields ``section.field``; declared once, here, so that
the report (which imports nothing of ``bench``) and the harness read both forms alike. The teacher's options are
:data:`LEGACY_TEACHER_OPTIONS` and :data:`TEACHER_OPTIONS_KEY`."""

LEGACY_TEACHER = "clip"
"""The teacher whose options had flat keys of their own before sections (:data:`LEGACY_TEACHER_OPTIONS`)."""
LEGACY_TEACHER_OPTIONS: dict[str, tuple[str, Any]] = {
    "clip_arch": ("arch", "ViT-B-16"),
    "clip_checkpoint": ("checkpoint", None),
    "clip_checkpoint_sha256": ("checkpoint_sha256", None),
    "allow_torchscript": ("allow_torchscript", False),
}
"""Flat key -> (option of the ``clip`` teacher, the value a flat configuration of any other teacher held): a flat
configuration always carried these four keys, so the flat form of a sectioned one does too."""
TEACHER_OPTIONS_KEY = "teacher_options"
"""The flat key of the teacher options without a flat key of their own (a plug-in teacher's), absent when none."""
SECTIONS = tuple(dict.fromkeys(section for section, _ in LEGACY_KEYS.values()))
"""The sections of a distillation configuration, in ``config.json`` order."""
_FLAT_NAMES = {pair: flat for flat, pair in LEGACY_KEYS.items()}


def flat_key(section: str, name: str) -> str:
    """The flat key of the field ``section.name`` (a field without one is ``"section.name"``; a teacher option
    without one is ``teacher_options``)."""
    if section == "teacher" and name != "name":
        legacy = {option: flat for flat, (option, _) in LEGACY_TEACHER_OPTIONS.items()}
        return legacy.get(name, TEACHER_OPTIONS_KEY)
    return _FLAT_NAMES.get((section, name), f"{section}.{name}")


def is_sectioned(config: Mapping[str, Any]) -> bool:
    """Whether ``config`` is a sectioned configuration (format 2: :data:`CONFIG_FORMAT_FIELD`, or a section
    written as a mapping) rather than a flat one."""
    return CONFIG_FORMAT_FIELD in config or any(isinstance(config.get(s), Mapping) for s in SECTIONS)


def flatten_teacher(teacher: Mapping[str, Any], complete: bool) -> dict[str, Any]:
    """The flat keys of a ``teacher`` section ``{name: ..., <option>: ...}``: ``teacher``, the CLIP teacher's
    options under their flat keys (:data:`LEGACY_TEACHER_OPTIONS`) and the others under
    :data:`TEACHER_OPTIONS_KEY`; with ``complete``, the four CLIP keys a flat configuration always held, at the
    value it held for another teacher, where the section lacks them."""
    out: dict[str, Any] = {"teacher": teacher["name"]} if "name" in teacher else {}
    options = {k: v for k, v in teacher.items() if k != "name"}
    clip = teacher.get("name") == LEGACY_TEACHER
    for flat, (option, other) in LEGACY_TEACHER_OPTIONS.items():
        if clip and option in options:
            out[flat] = options.pop(option)
        elif complete:
            out[flat] = other
    if options:
        out[TEACHER_OPTIONS_KEY] = options
    return out


def flat_config(config: Mapping[str, Any], complete: bool = True) -> dict[str, Any]:
    """The flat form of a configuration (:data:`LEGACY_KEYS`): a sectioned one (``config.json`` format 2, or a
    suite run written in sections, mapping sections and dotted keys ``section.field`` alike) flattened, a flat one
    as it is. The flat form of a resolved configuration is the run's identity (its hash is carried by the
    checkpoint) and what run names and the report's labels show: the same for a run written before sections and
    one written after. ``complete``: a teacher section without the CLIP teacher's options gets the values a flat
    configuration held for them (:func:`flatten_teacher`; off for a suite run, which sets only what it lists).

    A field given twice (by its flat key and in its section) takes the later value.

    Raises:
        ValueError: a section that is not a mapping.
    """
    out: dict[str, Any] = {}

    def put(key: str, value: Any) -> None:  # a key given twice (flat and in its section): the later wins
        out.pop(key, None)
        out[key] = value

    for key, value in config.items():
        if key == CONFIG_FORMAT_FIELD:
            continue
        section, dot, name = key.partition(".")
        if dot and section in SECTIONS:  # a dotted key: teacher.arch, distillation.steps
            value = {name: value}
            key = section
        if key == "teacher" and isinstance(value, Mapping):
            for k, v in flatten_teacher(value, complete=False).items():
                put(k, v)
        elif key in SECTIONS and key != "teacher" and (dot or isinstance(value, Mapping)):
            if not isinstance(value, Mapping):
                raise ValueError(f"configuration section {key} must be a mapping of its fields; got {value!r}")
            for name, v in value.items():
                put(flat_key(key, name), v)
        elif key in SECTIONS and key not in LEGACY_KEYS:
            raise ValueError(f"configuration section {key} must be a mapping of its fields; got {value!r}")
        else:
            put(key, value)
    if out.get("teacher") == LEGACY_TEACHER and isinstance(out.get(TEACHER_OPTIONS_KEY), Mapping):
        options = dict(out.pop(TEACHER_OPTIONS_KEY))  # teacher.arch given apart from the teacher's name
        for flat, (option, _) in LEGACY_TEACHER_OPTIONS.items():
            if option in options:
                put(flat, options.pop(option))
        if options:
            out[TEACHER_OPTIONS_KEY] = options
    if complete and "teacher" in out:
        for flat, (_, other) in LEGACY_TEACHER_OPTIONS.items():
            out.setdefault(flat, other)
    return out


def update_flat(base: Mapping[str, Any], entries: Mapping[str, Any]) -> dict[str, Any]:
    """The flat configuration ``base`` with ``entries`` (flat keys, sections or dotted keys) applied over it, in
    order: an entry's fields replace those of ``base`` (a section given as a mapping sets the fields it lists; a
    teacher given as a mapping ``{name: ..., <option>: ...}`` replaces the whole teacher, options included)."""
    out = dict(base)
    for key, value in entries.items():
        if key == "teacher" and isinstance(value, Mapping):
            for flat in (*LEGACY_TEACHER_OPTIONS, TEACHER_OPTIONS_KEY):
                out.pop(flat, None)
        flat = flat_config({key: value}, complete=False)
        if TEACHER_OPTIONS_KEY in flat and isinstance(out.get(TEACHER_OPTIONS_KEY), Mapping):
            flat[TEACHER_OPTIONS_KEY] = {**out[TEACHER_OPTIONS_KEY], **flat[TEACHER_OPTIONS_KEY]}
        out.update(flat)
    if out.get("teacher") == LEGACY_TEACHER and TEACHER_OPTIONS_KEY in out:
        out = flat_config(out, complete=False)  # teacher.arch given apart from the teacher's name
    return out


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


def read_predictors(folder: Path) -> dict[str, Any]:
    """The ``geometry`` values of the run folder's ``predictors.json`` (:data:`PREDICTORS_FILE`); ``{}`` when it has
    none.

    Raises:
        ValueError: naming the file: unreadable, not a JSON object, or without a ``geometry`` object.
    """
    path = Path(folder) / PREDICTORS_FILE
    if not path.is_file():
        return {}
    data = read_object(path)
    geometry = data.get("geometry")
    if not isinstance(geometry, dict):
        raise ValueError(f"{path}: no 'geometry' object")
    return geometry


def write_predictors(folder: Path, geometry: Mapping[str, Any], source: Mapping[str, Any]) -> Path:
    """Write the run folder's ``predictors.json`` once: ``{"geometry": geometry, "source": source}`` (``source``:
    what the values were computed from). Refused (``FileExistsError``) when the folder has one or is not a
    finished run: like ``metrics.json``, the file is written once."""
    folder = Path(folder)
    path = folder / PREDICTORS_FILE
    if not is_finished(folder):
        raise FileExistsError(f"{folder}: not a finished run (no {METRICS_FILE}); no {PREDICTORS_FILE} written")
    if path.exists():
        raise FileExistsError(f"{path}: exists; a run's {PREDICTORS_FILE} is written once")
    write_json(path, {"geometry": dict(geometry), "source": dict(source)})
    return path


def read_config(folder: Path) -> dict[str, Any] | None:
    """The run folder's ``config.json`` in its flat form (:func:`flat_config`: a sectioned file, format 2, is
    flattened; a flat one, written before sections, is returned as it is), or None when it has none.

    Raises:
        ValueError: naming the file when it cannot be read, is not a JSON object or has a malformed section.
    """
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        return None
    stored = read_object(path)
    try:
        return flat_config(stored)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


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
