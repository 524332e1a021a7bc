"""The run store: one directory per run, written atomically (docs/run-folder.md).

The format of a run directory -- its files, schema version, reading and atomic writing -- is owned by
:mod:`geomstruct.run_folder`; this module is the harness's side of it: binding a folder to a configuration,
refusing a conflicting one, writing ``config.json`` / ``environment.json`` at the start and ``metrics.json`` at the
end, recording a failure, and the one-writer lock. Every file is written to a temporary name in the same folder and
renamed into place (:func:`geomstruct.run_folder.write_bytes`), so an interrupted process never leaves a
half-written file behind.

One writer per run folder: a process trains, evaluates or writes a run only while it holds the run's lock
(:class:`RunLock`, ``fcntl.flock`` on ``.<run name>.lock`` beside the folder), which the kernel releases when the
process dies; taking it removes the temporaries a killed writer left behind.

A folder is bound to a configuration (its ``config.json``) once it holds results: a folder with nothing but
``config.json``, ``environment.json`` and ``error.txt`` (a run that failed before writing anything) is rebound to
the next configuration run into it. Fields that only locate inputs identified elsewhere (:data:`LOCATION_FIELDS`)
are no part of a run's identity: moving data, caches or weights never breaks a resume; ``config.json`` keeps the
locations it was written with.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from geomstruct.run_folder import (
    CONFIG_FILE,
    ENVIRONMENT_FILE,
    ERROR_FILE,
    LOCK_SUFFIX,
    METRICS_FILE,
    TEMPORARY_PATTERN,
    TIMING_FILE,
    TRAJECTORY_FILE,
    UNBOUND_FILES,
    RunRecord,
    finished_runs,
    flat_config,
    is_finished,
    json_default,
    lock_path,
    read_config,
    read_metrics,
    read_record,
    write_bytes,
    write_config,
    write_json,
    write_metrics,
)

__all__ = [
    "CONFIG_FILE",
    "CONTENT_HASHED",
    "ENVIRONMENT_FILE",
    "ERROR_FILE",
    "LOCATION_FIELDS",
    "LOCK_SUFFIX",
    "METRICS_FILE",
    "TIMING_FILE",
    "TRAJECTORY_FILE",
    "UNBOUND_FILES",
    "RunBusyError",
    "RunConflictError",
    "RunDir",
    "RunLock",
    "RunRecord",
    "environment",
    "finished_runs",
    "git_commit",
    "read_config",
    "read_metrics",
    "without_locations",
    "write_json",
]

LOCATION_FIELDS = ("dataroot", "ood_dataroot", "feature_cache", "superpixel_cache")
"""Configuration fields that only locate inputs whose identity is recorded elsewhere, never part of a run's
identity (:func:`without_locations`): a dataset is named by ``dataset``, ``version`` and the split sizes, and the
feature and superpixel caches are keyed by the content they hold (dataset, teacher, settings), so the same data at
another path gives the same run."""
CONTENT_HASHED = {"clip_checkpoint": "clip_checkpoint_sha256", "student_checkpoint": "student_checkpoint_sha256"}
"""A path field -> the field holding its file's content hash: the path is no part of a run's identity when the
hash is set (the same weights at another path are the same teacher)."""

_PACKAGES = ("torch", "numpy", "scipy", "scikit-learn", "nuscenes-devkit", "open_clip_torch", "matplotlib")


class RunConflictError(RuntimeError):
    """An output folder already holds a run of the same name but a different configuration."""


def git_commit(repo: Path | None = None) -> str | None:
    """The current git commit of ``repo`` (default: this package's checkout), or None outside git."""
    where = repo or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(device: torch.device) -> dict[str, Any]:
    """Package versions, Python, platform, device and git commit, for ``environment.json``."""
    versions = {}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "git_commit": git_commit(),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


def without_locations(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` without the fields that only locate its inputs: :data:`LOCATION_FIELDS`, and each path of
    :data:`CONTENT_HASHED` whose content hash is set. What identifies a run (its folder's configuration, its
    checkpoint's hash)."""
    out = {k: v for k, v in config.items() if k not in LOCATION_FIELDS}
    for path_field, hash_field in CONTENT_HASHED.items():
        if out.get(hash_field) is not None:
            out.pop(path_field, None)
    return out


class RunDir:
    """One run's directory: its files, and whether it is finished or conflicts with a configuration."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def finished(self) -> bool:
        """True when ``metrics.json`` exists (it is written last)."""
        return is_finished(self.path)

    def read(self, defaults: Mapping[str, Any] | None = None) -> RunRecord:
        """The finished run (:func:`geomstruct.run_folder.read_record`): ``metrics.json`` and ``config.json``; a
        field the stored configuration lacks (written before the field existed) takes its value from
        ``defaults``, the value that run used.

        Raises:
            ValueError: naming the folder when the run has not finished, the file when it cannot be read or is
                of an unknown schema version.
        """
        return read_record(self.path, defaults)

    @property
    def holds_results(self) -> bool:
        """True when the folder holds a file besides :data:`UNBOUND_FILES` and the writer's temporaries (a
        checkpoint, a trajectory, arrays, metrics): only then is it bound to its ``config.json``."""
        if not self.path.is_dir():
            return False
        temporaries = set(self.path.glob(TEMPORARY_PATTERN))
        return any(p.name not in UNBOUND_FILES and p not in temporaries for p in self.path.iterdir())

    def lock(self) -> RunLock:
        """The folder's one-writer lock (not yet taken)."""
        return RunLock(self.path)

    def config_differences(self, config: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> list[str]:
        """The fields in which the folder's ``config.json`` differs from ``config``, sorted (none without a
        ``config.json``). A key missing from the stored configuration is no difference when ``config`` holds its
        value from ``defaults`` (a parameter added to the code after the run was written, at the value the run
        used). Location fields are no difference (:func:`without_locations`)."""
        stored = read_config(self.path)
        if stored is None:
            return []
        old = without_locations(stored)
        new = without_locations(json.loads(json.dumps(flat_config(config), sort_keys=True, default=json_default)))
        known = json.loads(json.dumps(dict(defaults or {}), sort_keys=True, default=json_default))
        for key in set(new) - set(old):
            if key in known and known[key] == new[key]:
                old[key] = new[key]
        return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))

    def check_config(self, config: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> None:
        """Raise :class:`RunConflictError` when the folder holds results of a different configuration
        (:meth:`config_differences`); a folder without results (:attr:`holds_results`) is no conflict: it is
        rebound by :meth:`start`."""
        diff = self.config_differences(config, defaults)
        if diff and self.holds_results:
            raise RunConflictError(
                f"{self.path / CONFIG_FILE} holds a run with a different configuration (differs in: "
                f"{', '.join(diff)}); choose another output folder or remove that run — nothing was overwritten"
            )

    def start(self, config: Mapping[str, Any], device: torch.device, defaults: Mapping[str, Any] | None = None) -> None:
        """Write ``config.json`` and ``environment.json`` (after :meth:`check_config` with ``defaults``). A
        ``config.json`` that passed that check in a folder with results is kept as written (the checkpoint of an
        interrupted run carries its hash, :func:`bench.train.accepted_hashes`, and its locations stay those it
        was written with); one of another configuration in a folder without results is replaced, with a message
        on stderr."""
        self.check_config(config, defaults)
        self.path.mkdir(parents=True, exist_ok=True)
        stored = self.path / CONFIG_FILE
        diff = self.config_differences(config, defaults)
        if diff:
            print(
                f"{stored}: rebound to this run's configuration (the folder held no results of the earlier one, "
                f"which differed in: {', '.join(diff)})",
                file=sys.stderr,
            )
        if diff or not stored.is_file():
            write_config(self.path, config)
        write_json(self.path / ENVIRONMENT_FILE, environment(device))

    def finish(self, metrics: Mapping[str, Any]) -> None:
        """Write ``metrics.json``, marking the run finished; the error file of an earlier failure is removed
        first, so a finished run never has one."""
        (self.path / ERROR_FILE).unlink(missing_ok=True)
        write_metrics(self.path, metrics)

    def fail(self, message: str) -> Path | None:
        """Record why the run failed (``error.txt``: the message and the traceback); returns the file, or None
        for a finished run (``metrics.json`` there: an error of a later attempt never sits beside its results).
        Call it only while holding the folder's lock."""
        if self.finished:
            return None
        write_bytes(self.path / ERROR_FILE, (message.rstrip() + "\n").encode())
        return self.path / ERROR_FILE


class RunLock:
    """The one-writer lock of a run folder: ``fcntl.flock`` on ``<out>/.<name>.lock`` beside the folder.

    Held for the whole time a process trains, evaluates or writes the run; the kernel releases it when the
    process dies (``kill -9`` included), so a stale lock file is never an obstacle: the next process takes it.
    The holder writes ``<pid> <host>`` into the file, read back by :meth:`holder` for the message of a process
    that finds the run taken. Taking the lock removes the run folder's stale temporaries (``.<name>.*.tmp``
    left by a killed writer: the holder is the only writer) and a stale ``error.txt`` beside ``metrics.json``.
    Releasing it deletes the lock file.
    """

    def __init__(self, run_path: Path) -> None:
        self.run_path = Path(run_path)
        self.path = lock_path(self.run_path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock without waiting; False when another process (or another :class:`RunLock` of this
        process) holds it."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            if self._is_current(fd):
                break
            os.close(fd)  # the file was deleted by the holder that released it meanwhile: take the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd = fd
        self._clean()
        return True

    def _is_current(self, fd: int) -> bool:
        """True when ``fd`` is the file now at :attr:`path`."""
        try:
            here = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)

    def _clean(self) -> None:
        """Remove what a killed writer left: temporaries of the atomic writer, an error file beside metrics."""
        if not self.run_path.is_dir():
            return
        for tmp in self.run_path.glob(TEMPORARY_PATTERN):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
        if (self.run_path / METRICS_FILE).is_file():
            (self.run_path / ERROR_FILE).unlink(missing_ok=True)

    def release(self) -> None:
        """Give the lock back (deleting its file first: a process waiting on the old file sees it is gone)."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)  # explicit: a forked child sharing the descriptor keeps no lock
        os.close(self._fd)
        self._fd = None

    def holder(self, wait: float = 1.0) -> str:
        """``pid N on HOST`` of the process holding the lock, read from the lock file (``another process`` when
        the holder has not written it within ``wait`` seconds)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                text = self.path.read_text().split()
            except OSError:
                text = []
            if len(text) == 2 and text[0].isdigit():
                return f"pid {text[0]} on {text[1]}"
            if time.monotonic() >= deadline:
                return "another process"
            time.sleep(0.05)

    def held_elsewhere(self) -> str | None:
        """:meth:`holder` when another process holds the lock now, else None (the lock is left free)."""
        if self.acquire():
            self.release()
            return None
        return self.holder()

    def __enter__(self) -> RunLock:
        if not self.acquire():
            raise RunBusyError(self.run_path, self.holder())
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class RunBusyError(RuntimeError):
    """Another process holds the run folder's lock (it is training, evaluating or writing that run)."""

    def __init__(self, run_path: Path, holder: str) -> None:
        self.run_path, self.holder = Path(run_path), holder
        super().__init__(f"run {self.run_path.name} is being written by {holder}")
