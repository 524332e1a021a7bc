"""Files written atomically, and the cross-process lock: the writers of the run store and of the data caches.

Every file of the harness -- a run folder's ``config.json`` and ``metrics.json`` (:mod:`bench.results`), a cached
teacher feature map or superpixel map (:mod:`bench.data.features`, :mod:`bench.data.superpixels`), a generated
synthetic scene, a nuScenes keyframe index -- is written by :func:`write_bytes`, the project's one atomic writer:
into a temporary file of the same folder (``.<name>.<random>.tmp``, :data:`TEMPORARY_PATTERN`), flushed to disk,
given the mode ``open()`` would give it, then renamed into place. A file that exists is therefore complete; a
killed writer leaves at most a temporary, which :func:`remove_stale_temporaries` (the caches) or the run lock
(:class:`bench.results.RunLock`) removes. An ``OSError`` (a full disk, a read-only folder) is re-raised naming the
file. :func:`write_bytes`, :func:`write_json` and :func:`json_default` live with the run-folder format in
:mod:`geomstruct.run_folder` (the bottom of the project, so that ``geomstruct`` can use them too) and are
re-exported here beside the CSV and array writers.

:func:`locked` is the cross-process mutex of a read-modify-write (a cache manifest updated by several processes).

A shared low-level module: it imports nothing of the project but :mod:`geomstruct.run_folder` (which imports
nothing of the project), so the data wing (``bench.data``) and the run core both use it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geomstruct.run_folder import TEMPORARY_PATTERN, file_mode, json_default, write_bytes, write_json

if os.name == "nt":  # pragma: no cover - Windows
    import msvcrt
else:
    import fcntl

__all__ = [
    "STALE_TEMPORARY_SECONDS",
    "TEMPORARY_PATTERN",
    "file_mode",
    "json_default",
    "locked",
    "read_json",
    "remove_stale_temporaries",
    "write_bytes",
    "write_csv",
    "write_json",
    "write_npy",
    "write_npz",
]

STALE_TEMPORARY_SECONDS = 3600.0
"""A temporary of :func:`write_bytes` untouched for this long was left by a killed writer
(:func:`remove_stale_temporaries`); younger ones may belong to a process writing right now (``bench.run --jobs``,
another user's run)."""


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Write ``rows`` (dicts) with the given column order as CSV, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    write_bytes(path, buf.getvalue().encode())


def write_npy(path: Path, array: np.ndarray) -> None:
    """Write one array as ``.npy`` (``np.save``), atomically."""
    buf = io.BytesIO()
    np.save(buf, array)
    write_bytes(path, buf.getvalue())


def write_npz(path: Path, compressed: bool = True, **arrays: np.ndarray) -> None:
    """Write arrays to an ``.npz`` (compressed unless ``compressed=False``), atomically."""
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    write_bytes(path, buf.getvalue())


def read_json(path: Path) -> Any:
    """Read a JSON file; a clear error naming the file when it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def remove_stale_temporaries(folder: Path, older_than: float = STALE_TEMPORARY_SECONDS) -> int:
    """Remove the temporaries of :func:`write_bytes` in ``folder`` last modified more than ``older_than`` seconds
    ago (left by a process killed mid-write); returns how many were removed."""
    now, removed = time.time(), 0
    for stale in Path(folder).glob(TEMPORARY_PATTERN):
        try:
            if now - stale.stat().st_mtime > older_than:
                stale.unlink()
                removed += 1
        except FileNotFoundError:  # its writer finished (renamed it) meanwhile
            pass
    return removed


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing) for the ``with`` block: a cross-process
    mutex for a read-modify-write (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows; the operating system
    releases it if the holder dies, so a killed process never leaves a lock behind)."""
    with open(path, "a+b") as handle:
        if os.name == "nt":  # pragma: no cover - Windows
            while True:
                try:
                    msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:  # LK_LOCK gives up after 10 s: keep waiting
                    continue
            try:
                yield
            finally:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
