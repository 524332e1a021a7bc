"""The run store: one directory per run, written atomically (DESIGN.md section 4).

A run directory holds ``config.json`` (the resolved configuration), ``environment.json`` (package versions,
device, git commit), ``metrics.json`` (written last: its presence marks the run as finished),
``trajectory.csv``, any arrays (``.npz``) and ``timing.json`` (wall-clock seconds of each phase of the attempt
that finished the run: for budgeting suites, not a result). Every file is written to a temporary name in the same
folder and renamed into place, so an interrupted process never leaves a half-written file behind.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

CONFIG_FILE = "config.json"
ENVIRONMENT_FILE = "environment.json"
METRICS_FILE = "metrics.json"
TRAJECTORY_FILE = "trajectory.csv"
TIMING_FILE = "timing.json"
ERROR_FILE = "error.txt"

_PACKAGES = ("torch", "numpy", "scipy", "scikit-learn", "nuscenes-devkit", "open_clip_torch", "matplotlib")


class RunConflictError(RuntimeError):
    """An output folder already holds a run of the same name but a different configuration."""


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())  # mkstemp's 0600 -> what open() would give under the user's umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_mode() -> int:
    """``0o666`` minus the process umask: the mode ``open()`` gives a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    _atomic_write_bytes(Path(path), data)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    _atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Write ``rows`` (dicts) with the given column order as CSV, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    _atomic_write_bytes(Path(path), buf.getvalue().encode())


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write arrays to a compressed ``.npz``, atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    _atomic_write_bytes(Path(path), buf.getvalue())


def read_json(path: Path) -> Any:
    """Read a JSON file; a clear error naming the file when it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


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


class RunDir:
    """One run's directory: its files, and whether it is finished or conflicts with a configuration."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def finished(self) -> bool:
        """True when ``metrics.json`` exists (it is written last)."""
        return (self.path / METRICS_FILE).is_file()

    def config_differences(self, config: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> list[str]:
        """The fields in which the folder's ``config.json`` differs from ``config``, sorted (none without a
        ``config.json``). A key missing from the stored configuration is no difference when ``config`` holds its
        value from ``defaults`` (a parameter added to the code after the run was written, at the value the run
        used)."""
        existing = self.path / CONFIG_FILE
        if not existing.is_file():
            return []
        old = read_json(existing)
        new = json.loads(json.dumps(config, sort_keys=True, default=_json_default))
        known = json.loads(json.dumps(dict(defaults or {}), sort_keys=True, default=_json_default))
        for key in set(new) - set(old):
            if key in known and known[key] == new[key]:
                old[key] = new[key]
        return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))

    def check_config(self, config: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> None:
        """Raise :class:`RunConflictError` when the folder holds a run of a different configuration
        (:meth:`config_differences`)."""
        diff = self.config_differences(config, defaults)
        if diff:
            raise RunConflictError(
                f"{self.path / CONFIG_FILE} holds a run with a different configuration (differs in: "
                f"{', '.join(diff)}); choose another output folder or remove that run — nothing was overwritten"
            )

    def start(self, config: Mapping[str, Any], device: torch.device, defaults: Mapping[str, Any] | None = None) -> None:
        """Write ``config.json`` and ``environment.json`` (after :meth:`check_config` with ``defaults``). A
        ``config.json`` already there passed that check and is kept as written: the checkpoint of an interrupted
        run carries its hash (:func:`bench.train.accepted_hashes`)."""
        self.check_config(config, defaults)
        self.path.mkdir(parents=True, exist_ok=True)
        if not (self.path / CONFIG_FILE).is_file():
            write_json(self.path / CONFIG_FILE, config)
        write_json(self.path / ENVIRONMENT_FILE, environment(device))

    def finish(self, metrics: Mapping[str, Any]) -> None:
        """Write ``metrics.json``, marking the run finished (and remove the error file of an earlier failure)."""
        write_json(self.path / METRICS_FILE, metrics)
        (self.path / ERROR_FILE).unlink(missing_ok=True)

    def fail(self, message: str) -> Path:
        """Record why the run failed (``error.txt``: the message and the traceback); returns the file."""
        write_bytes(self.path / ERROR_FILE, (message.rstrip() + "\n").encode())
        return self.path / ERROR_FILE
