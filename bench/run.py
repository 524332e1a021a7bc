"""``python -m bench.run --suite NAME``: run a suite of distillation experiments (docs/usage.md#suites).

Every run of the suite gets its own directory under the output folder (default ``runs/<suite>``) with
``config.json``, ``environment.json``, ``trajectory.csv``, its arrays and, written last, ``metrics.json``.
A finished run is skipped when the suite is run again; a folder holding a run of a different configuration is
an error (nothing is overwritten). A results table is printed at the end. ``python -m geomstruct.report``
turns the run directories into figures and tables.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from bench import distributed
from bench.config import DistillConfig
from bench.data.registry import DATASETS
from bench.jobs import PARENT_ENV, die_with_parent, limit_malloc_arenas, run_jobs
from bench.kinds import EXECUTORS, name_runs
from bench.results import ERROR_FILE, RunDir, RunLock
from bench.suites import Suite, available_suites, load_suite
from bench.tables import results_table, seed_table
from bench.workspace import Workspace
from geomstruct.run_folder import flat_config
from models.teachers import TEACHERS

DEFAULT_OUTPUT_ROOT = Path("runs")


def _parser() -> argparse.ArgumentParser:
    suites = ", ".join(available_suites())
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__.split("\n\n")[0].replace("``", ""),
        epilog=(
            "Suites: toy = the toy experiment of the paper's Figures 2-4 (an MLP onto the sphere under every "
            "loss, 1 and 3 clusters; about 2 minutes on 2 CPU cores); smoke = every loss and every protocol on a "
            "tiny synthetic world (CI); full = the whole study on the synthetic world and teacher; tune = its equal "
            "tuning grid (optimiser x learning rate per loss, val linear probe; then python -m bench.study.tune); "
            "nuscenes = paper "
            "scale on nuScenes trainval for GPUs (needs --dataroot, --clip-checkpoint, --ood-dataroot). "
            "Examples: python -m bench.run --suite full --only contrastive; "
            "python -m bench.run --suite smoke --data nuscenes --dataroot /data/nuscenes --teacher clip "
            "--clip-checkpoint ViT-B-16.pt --device cuda; python -m bench.run --suite my_suite.yaml --out runs/mine "
            "--steps 200. Distributed: torchrun --nproc_per_node N -m bench.run --suite ... (DDP, NCCL on GPUs, "
            "gloo on CPUs; only rank 0 writes)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--suite", required=True, help=f"a shipped suite ({suites}) or the path of a suite YAML")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder for the run directories (default: runs/<suite name>)"
    )
    parser.add_argument("--device", default="cpu", help="torch device to train on, e.g. cpu, cuda, cuda:1")
    parser.add_argument(
        "--steps", type=int, default=None, help="override the number of training steps (iterations) of every run"
    )
    parser.add_argument("--only", default=None, help="run only the runs whose name contains this text")
    parser.add_argument("--run", default=None, help="run only the run of exactly this name")
    parser.add_argument("--claim-runs", action="store_true", help=argparse.SUPPRESS)  # a worker of --jobs
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs trained at the same time, each in its own process with cores/jobs torch threads (unless "
        "OMP_NUM_THREADS is set); on a CPU, 2 jobs of 1 thread finish a suite sooner than 1 job of 2 threads. "
        "Never changes a result beyond float rounding of the thread count",
    )
    data = parser.add_argument_group("data and teacher (distill suites only; default: the suite's values)")
    data.add_argument(
        "--data",
        default=None,
        help=f"dataset to distil on and evaluate: {', '.join(DATASETS)} (synthetic = embedded world) or a plug-in "
        "module:ReaderClass",
    )
    data.add_argument(
        "--dataroot", default=None, help="dataset root folder (nuscenes, semantickitti; synthetic: its scene cache)"
    )
    data.add_argument(
        "--ood-data",
        default=None,
        help=f"dataset of the OOD few-shot protocol: {', '.join(DATASETS)} (synthetic = ood world) or a plug-in",
    )
    data.add_argument("--ood-dataroot", default=None, help="root folder of the OOD dataset")
    data.add_argument(
        "--version",
        default=None,
        help="nuScenes table version: v1.0-trainval (splits train / val) or v1.0-mini (mini_train / mini_val)",
    )
    data.add_argument(
        "--protocols",
        default=None,
        help="comma-separated evaluation protocols (zero_shot, linear_probe, few_shot, few_shot_ood) or 'none' "
        "(distillation and geometry only, e.g. on a nuScenes dataroot without lidarseg labels)",
    )
    data.add_argument(
        "--teacher",
        default=None,
        help=f"2D teacher: {' or '.join(TEACHERS)} (synthetic: calibrated) or a plug-in module:object",
    )
    data.add_argument(
        "--clip-checkpoint", default=None, help="local CLIP weight file (.pt, .safetensors); nothing is downloaded"
    )
    data.add_argument(
        "--clip-arch",
        default=None,
        help="open_clip architecture of the checkpoint (e.g. ViT-B-16) or a model-config .json",
    )
    data.add_argument(
        "--allow-torchscript",
        action="store_const",
        const=True,
        default=None,
        help="read a TorchScript CLIP checkpoint (OpenAI's ViT-B-16.pt): loading one runs code stored in the "
        "file, so it is refused unless you trust the file and pass this",
    )
    data.add_argument(
        "--feature-cache", default=None, help="teacher feature cache folder (filled on first use, then read back)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="DataLoader worker processes reading scans ahead of the network and filling the feature cache "
        "(default: 0 on a CPU device, where workers compete with PyTorch's threads; 4 on CUDA); never changes "
        "a result",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


_DATA_OPTIONS = {
    "data": "dataset",
    "dataroot": "dataroot",
    "ood_data": "ood_dataset",
    "ood_dataroot": "ood_dataroot",
    "teacher": "teacher",
    "clip_checkpoint": "clip_checkpoint",
    "clip_arch": "clip_arch",
    "feature_cache": "feature_cache",
    "version": "version",
    "protocols": "protocols",
    "allow_torchscript": "allow_torchscript",
}
"""Command-line option -> distill run parameter."""


def _apply_overrides(suite: Suite, args: argparse.Namespace, workspace: Workspace) -> list[tuple[str, dict[str, Any]]]:
    """The selected runs of ``suite`` (``--only``, ``--run``) as ``(name, resolved configuration)``, after the
    command line's overrides. Every run of the suite is resolved, hence checked, and named
    (:func:`bench.kinds.name_runs`) before the selection, so that a bad value anywhere is refused before anything
    runs and a run's name does not depend on the selection."""
    steps, only = args.steps, args.only
    data = {key: getattr(args, opt) for opt, key in _DATA_OPTIONS.items() if getattr(args, opt) is not None}
    if "protocols" in data:
        text = data["protocols"].strip()
        data["protocols"] = [] if text == "none" else [p.strip() for p in text.split(",") if p.strip()]
    if data and suite.kind != "distill":
        raise ValueError(
            f"--{'/--'.join(sorted(data))} apply to distill suites only; suite {suite.name!r} is {suite.kind}"
        )
    runs = []
    changed = []
    for run in suite.runs:
        run = {**run, **data}
        if steps is not None:
            if steps < 1:
                raise ValueError(f"--steps must be at least 1; got {steps}")
            run["steps" if suite.kind == "distill" else "iterations"] = steps
        changed.append(run)
    exact = getattr(args, "run", None)
    for name, resolved in name_runs(suite.kind, changed, suite.source, workspace):
        if (only is None or only in name) and (exact is None or exact == name):
            runs.append((name, resolved))
    if not runs:
        wanted = f"--run {exact!r}" if exact is not None else f"--only {only!r}"
        raise ValueError(f"no run of suite {suite.name!r} matches {wanted}")
    return runs


EXIT_OK, EXIT_ERROR, EXIT_BUSY = 0, 2, 3
"""Exit codes of ``python -m bench.run``: every run finished; bad input or a failed run; no run failed, but some
were left to the other process writing them (:class:`bench.results.RunLock`; rerun once it is done)."""


def _busy_message(name: str, holder: str) -> str:
    return f"run {name} is being written by {holder}; left alone (rerun once it is done)"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code: 0 when every run finished, 2 on bad input or a failed run, 3
    when no run failed but some were left to another process writing them (:data:`EXIT_BUSY`). The process's
    set-up (teachers, data, caches) is one :class:`bench.workspace.Workspace`, passed to every run; a ``--jobs``
    worker is a process of its own with its own."""
    limit_malloc_arenas()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    workspace = Workspace()
    try:
        suite = load_suite(args.suite)
        runs = _apply_overrides(suite, args, workspace)  # every run resolved (checked) and named before anything runs
        device = torch.device(args.device)
        out = args.out if args.out is not None else DEFAULT_OUTPUT_ROOT / suite.name
        for name, run in runs:  # refuse before anything runs, so that nothing is overwritten
            RunDir(out / name).check_config(run, DistillConfig.field_defaults() if suite.kind == "distill" else None)
    except (ValueError, RuntimeError, OSError) as exc:  # bad input, a conflicting folder, an unwritable disk
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print(f"error: --jobs must be at least 1; got {args.jobs}", file=sys.stderr)
        return 2
    if args.jobs > 1:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            print("error: --jobs runs separate processes; under torchrun use the ranks instead", file=sys.stderr)
            return EXIT_ERROR
        return _run_jobs_suite(argv, suite, runs, out, device, args.jobs, not args.no_progress, workspace)
    if args.claim_runs and PARENT_ENV in os.environ:
        die_with_parent(int(os.environ[PARENT_ENV]), EXIT_ERROR)
    device = distributed.init(device)
    world = distributed.world_size()
    sizes = {name: flat_config(run).get("batch_size", 1) for name, run in runs}  # a toy run has no ranks
    too_small = [name for name, _ in runs if suite.kind == "distill" and sizes[name] < world]
    if too_small:  # refused on every rank; torchrun's failure summary then shows the message (record_error)
        message = (
            f"{world} ranks but runs {', '.join(too_small)} have batch_size "
            f"{min(sizes[name] for name in too_small)}: every rank needs at least one scan per step; "
            "use at most batch_size processes (torchrun --nproc_per_node) or a larger batch_size"
        )
        if distributed.is_main():
            print(f"error: {message}", file=sys.stderr)
        distributed.record_error(message)
        distributed.barrier()  # no rank exits (and has torchrun stop the others) before rank 0 has printed
        distributed.shutdown()
        return 2
    try:
        workers = args.workers if args.workers is not None else (4 if device.type == "cuda" else 0)
        if workers < 0:
            print(f"error: --workers must be at least 0; got {workers}", file=sys.stderr)
            return 2
        progress = not args.no_progress and distributed.is_main()
        return _run_suite(suite, runs, out, device, workspace, progress, workers, claim_runs=args.claim_runs)
    finally:
        distributed.shutdown()


def _run_jobs_suite(
    argv: Sequence[str],
    suite: Suite,
    runs: list[tuple[str, dict[str, Any]]],
    out: Path,
    device: torch.device,
    jobs: int,
    progress: bool,
    workspace: Workspace,
) -> int:
    """``--jobs``: the unfinished runs trained by worker processes (:func:`bench.jobs.run_jobs`), then the table
    of the finished ones; the exit code names runs that failed and runs left to another process."""
    todo = [name for name, _ in runs if not RunDir(out / name).finished]
    run_jobs(argv, out, todo, jobs, progress)
    unfinished = [name for name in todo if not RunDir(out / name).finished]
    busy = {name: holder for name in unfinished if (holder := RunDir(out / name).lock().held_elsewhere())}
    failed = [name for name in unfinished if name not in busy]
    runs = [(name, run) for name, run in runs if name not in unfinished]
    code = EXIT_OK
    if runs:  # every run finished: reads them for the table, counting as skipped those finished before
        before = len(runs) - len(todo) + len(unfinished)
        code = _run_suite(suite, runs, out, device, workspace, False, 0, finished_before=before)
    for name, holder in busy.items():
        print(_busy_message(name, holder), file=sys.stderr)
    if failed:
        print(f"{len(failed)} runs failed (details in their {ERROR_FILE}; rerun the same command to retry them):")
        for name in failed:
            print(f"  {name}: {out / name / ERROR_FILE}")
        return EXIT_ERROR
    return code if code != EXIT_OK else (EXIT_BUSY if busy else EXIT_OK)


def _take(run_dir: RunDir) -> tuple[RunLock | None, str | None]:
    """The run folder's lock taken by rank 0, and the decision shared with every rank: ``(lock, None)`` when
    taken (the lock on rank 0, None on the others), ``(None, holder)`` when another process holds it; an
    ``OSError`` on every rank when the lock file cannot be written."""
    lock, decision = None, ("taken", "")
    if distributed.is_main():
        lock = run_dir.lock()
        try:
            if not lock.acquire():
                lock, decision = None, ("busy", lock.holder())
        except OSError as exc:
            lock, decision = None, ("error", f"cannot take the lock {lock.path}: {exc}")
    kind, detail = distributed.broadcast_object(decision)
    if kind == "error":
        raise OSError(detail)
    return lock, (detail if kind == "busy" else None)


def _run_suite(
    suite: Suite,
    runs: list[tuple[str, dict[str, Any]]],
    out: Path,
    device: torch.device,
    workspace: Workspace,
    progress: bool,
    workers: int = 0,
    claim_runs: bool = False,
    finished_before: int | None = None,
) -> int:
    """Run (or read, when finished) every run of ``runs`` and print their table; ``finished_before``: how many
    were finished before this command started (the ``--jobs`` path, whose workers trained the others), else
    counted here.

    An unfinished run is trained only while this process holds its folder's lock
    (:class:`bench.results.RunLock`); a run locked by another process is left alone, with a message naming that
    process (silently for a worker of ``--jobs``, ``claim_runs``, which also skips finished runs). A failure is
    recorded in the run's ``error.txt`` under the lock. Returns :data:`EXIT_ERROR` when a run failed, else
    :data:`EXIT_BUSY` when a run was left to another process, else :data:`EXIT_OK`."""
    say = print if distributed.is_main() else (lambda *a, **k: None)
    execute = EXECUTORS[suite.kind]
    done: list[tuple[str, dict[str, Any]]] = []
    skipped = 0
    say(f"suite {suite.name} ({suite.description}): {len(runs)} runs -> {out}")
    failures: list[tuple[str, str, Path | None]] = []
    busy: list[str] = []
    for name, run in tqdm(runs, desc=f"suite {suite.name}", disable=not progress):
        run_dir = RunDir(out / name)
        was_finished = run_dir.finished
        if claim_runs and was_finished:
            continue  # a worker of --jobs: nothing to train
        lock = None
        try:
            lock, holder = (None, None) if was_finished else _take(run_dir)  # a finished run is only read
            if holder is not None:
                if not claim_runs:  # a worker leaves the run to the other worker silently
                    say(_busy_message(name, holder), file=sys.stderr)
                    busy.append(name)
                continue
            metrics = execute(run, run_dir, device, progress, workers, workspace)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # recorded in the run's folder; the other runs go on
            message = f"{type(exc).__name__}: {exc}"
            where = None
            if distributed.is_main():
                print(f"error in run {name}: {message}", file=sys.stderr)
                try:
                    where = run_dir.fail(f"{message}\n\n{traceback.format_exc()}") if lock is not None else None
                except OSError:
                    where = None
            failures.append((name, message, where))
            continue
        finally:
            if lock is not None:
                lock.release()
        skipped += was_finished
        done.append((name, metrics))
    if distributed.is_main() and done:
        print(results_table(done))
        seeds = seed_table(done)
        if seeds:
            print(seeds)
    if finished_before is not None:
        skipped = finished_before
    say(f"{len(done)} runs in {out} ({skipped} already finished, skipped); report: python -m geomstruct.report")
    if failures:
        say(f"{len(failures)} of {len(runs)} runs failed (rerun the same command to retry them):")
        for name, message, where in failures:
            say(f"  {name}: {message.splitlines()[0]}" + (f" (details: {where})" if where else ""))
        return EXIT_ERROR
    if busy:
        say(f"{len(busy)} of {len(runs)} runs left to the processes writing them: rerun once they are done")
        return EXIT_BUSY
    return EXIT_OK


if __name__ == "__main__":
    code = main()
    if code:  # under torchrun: its failure summary names the error printed above instead of "<N/A>"
        distributed.record_error(f"bench.run exited with code {code}; see its messages above", replace=False)
    sys.exit(code)
