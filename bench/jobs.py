"""Processes of ``python -m bench.run``: the ``--jobs`` pool of worker processes and the malloc tuning of a run.

``--jobs N`` trains a suite's unfinished runs with ``N`` worker processes (:func:`run_jobs`), each a
``python -m bench.run ... --claim-runs`` that takes runs one at a time by their folder's lock and dies with its
parent (:func:`die_with_parent`). Every ``bench.run`` process caps glibc's malloc arenas
(:func:`limit_malloc_arenas`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from bench.results import RunDir

PARENT_ENV = "BENCH_RUN_PARENT_PID"
"""Environment variable naming the ``--jobs`` parent of a worker (:func:`die_with_parent`)."""
ORPHAN_EXIT = 2
"""Exit code of a worker whose parent died (``bench.run``'s error code)."""


def job_argv(argv: Sequence[str]) -> list[str]:
    """The command line of one worker: the parent's options without ``--jobs``, taking runs one at a time."""
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
            continue
        if token == "--jobs":
            skip = True
            continue
        if token.startswith("--jobs=") or token == "--no-progress":
            continue
        out.append(token)
    return [*out, "--claim-runs", "--no-progress"]


def die_with_parent(parent: int, code: int = ORPHAN_EXIT) -> None:
    """End this process when its parent ``parent`` dies (a ``--jobs`` worker: ``kill -9`` of the parent leaves
    no orphan training). Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``; elsewhere a daemon thread polls the parent
    pid every second. Exits (with ``code``) at once when the parent is already gone."""
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) == 0  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(code)
    if not armed:

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(code)

        threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def run_jobs(argv: Sequence[str], out: Path, names: list[str], jobs: int, progress: bool) -> None:
    """Train the unfinished runs ``names`` with ``jobs`` worker processes (``python -m bench.run ...
    --claim-runs``), each given ``cores // jobs`` torch threads unless ``OMP_NUM_THREADS`` is set. A worker goes
    through the suite in order and trains every unfinished run whose lock it can take
    (:class:`bench.results.RunLock`), so the runs are shared dynamically and a worker's per-process caches (the
    teacher side of the geometry) serve several runs; a run locked by another worker or by another ``bench.run``
    is skipped. The lock dies with its holder, so a killed earlier invocation leaves nothing to clean up; the
    workers die with this process (:func:`die_with_parent`)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, cores // jobs))
    env.setdefault("MKL_NUM_THREADS", env["OMP_NUM_THREADS"])
    env[PARENT_ENV] = str(os.getpid())
    command = [sys.executable, "-m", "bench.run", *job_argv(argv)]
    workers = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL) for _ in range(min(jobs, len(names)))]
    start, reported = time.monotonic(), set()
    with tqdm(total=len(names), desc=f"{jobs} jobs", disable=not progress) as bar:
        while True:
            running = any(w.poll() is None for w in workers)  # before looking: a run finished meanwhile is seen
            finished = [name for name in names if name not in reported and RunDir(out / name).finished]
            for name in finished:
                reported.add(name)
                bar.update()
                if not progress:  # a log line per run where there is no bar
                    minutes = (time.monotonic() - start) / 60
                    print(f"[{len(reported)}/{len(names)}] {name} finished ({minutes:.1f} min since start)", flush=True)
            if not running:
                break
            time.sleep(0.5)


MALLOC_ARENAS = 2
"""glibc malloc arenas of a ``bench.run`` process (:func:`limit_malloc_arenas`)."""


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (``mallopt(M_ARENA_MAX, arenas)``, as ``MALLOC_ARENA_MAX`` would); True if set.

    glibc gives every thread that allocates under contention its own arena, up to 8 per core, and PyTorch's
    OpenMP threads allocate in every step: with 2 threads the resident memory of a run then grew with the number
    of scans it read, and did not with 2 arenas or 1 thread (measured on nuScenes-format dataroots of 40 and 160
    keyframes; docs/data.md#bounded-pools): freed blocks stay scattered over the arenas. Without glibc (macOS,
    musl) this does nothing.
    """
    name = ctypes.util.find_library("c")
    if name is None or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(-8, arenas))  # M_ARENA_MAX = -8 in glibc's malloc.h
    except (OSError, AttributeError):
        return False
