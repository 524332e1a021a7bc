"""``python -m bench.run --suite NAME``: run a suite of distillation experiments (DESIGN.md section 4).

Every run of the suite gets its own directory under the output folder (default ``runs/<suite>``) with
``config.json``, ``environment.json``, ``trajectory.csv``, its arrays and, written last, ``metrics.json``.
A finished run is skipped when the suite is run again; a folder holding a run of a different configuration is
an error (nothing is overwritten). A results table is printed at the end. ``python -m geomstruct.report``
turns the run directories into figures and tables.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from bench.results import TRAJECTORY_FILE, RunConflictError, RunDir, read_json, write_csv, write_npz
from bench.suites import Suite, available_suites, load_suite, run_name

DEFAULT_OUTPUT_ROOT = Path("runs")


def _parser() -> argparse.ArgumentParser:
    suites = ", ".join(available_suites())
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__.split("\n\n")[0].replace("``", ""),
        epilog=(
            "Suites: toy = the toy experiment of the paper's Figures 2-4 (an MLP onto the sphere under every "
            "loss, 1 and 3 clusters; about 2 minutes on 2 CPU cores). Examples: python -m bench.run --suite toy; "
            "python -m bench.run --suite my_suite.yaml --out runs/mine --steps 200."
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
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def _apply_overrides(suite: Suite, steps: int | None, only: str | None) -> list[tuple[str, dict[str, Any]]]:
    runs = []
    for run in suite.runs:
        run = dict(run)
        if steps is not None:
            if steps < 1:
                raise ValueError(f"--steps must be at least 1; got {steps}")
            run["iterations"] = steps
        name = run_name(run)
        if only is None or only in name:
            runs.append((name, run))
    if not runs:
        raise ValueError(f"no run of suite {suite.name!r} matches --only {only!r}")
    return runs


def _resolve_toy(run: dict[str, Any]) -> dict[str, Any]:
    """The full configuration of a toy run; raises ``ValueError`` (naming the valid choices) on bad values."""
    from bench.toy.experiment import ToyConfig

    fields = dict(run)
    if "snapshots" in fields:
        fields["snapshots"] = tuple(fields["snapshots"])
    try:
        return ToyConfig(**fields).resolved()
    except TypeError as exc:  # unknown or missing parameter names
        raise ValueError(f"bad toy run parameters: {exc}") from None
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None


def _execute_toy(resolved: dict[str, Any], run_dir: RunDir, device: torch.device, progress: bool) -> dict[str, Any]:
    from bench.toy.experiment import TRAJECTORY_COLUMNS, run_toy

    if run_dir.finished:
        run_dir.check_config(resolved)
        return read_json(run_dir.path / "metrics.json")
    run_dir.start(resolved, device)
    with tqdm(total=resolved["iterations"], desc=run_dir.path.name, leave=False, disable=not progress) as bar:
        metrics, trajectory, arrays = run_toy(resolved, device, on_step=lambda _: bar.update())
    write_csv(run_dir.path / TRAJECTORY_FILE, trajectory, TRAJECTORY_COLUMNS)
    write_npz(run_dir.path / "snapshots.npz", **arrays)
    run_dir.finish(metrics)
    return metrics


RESOLVERS = {"toy": _resolve_toy}
EXECUTORS = {"toy": _execute_toy}


def results_table(rows: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """A plain-text table of the geometry of every run (U, T, G and the structural gap to the source)."""
    header = f"{'run':<44} {'U':>7} {'T':>7} {'G':>7} {'dU':>7} {'dT':>7} {'S':>7} {'U_src':>7} {'T_src':>7}"
    lines = [header, "-" * len(header)]
    for name, m in rows:
        g = m["geometry"]
        lines.append(
            f"{name:<44} {g['U']:7.3f} {g['T']:7.3f} {g['G']:7.3f} {g['dU']:+7.3f} {g['dT']:+7.3f} {g['S']:7.3f} "
            f"{g['U_2d']:7.3f} {g['T_2d']:7.3f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 on success, 2 on bad input or a failed run)."""
    args = _parser().parse_args(argv)
    try:
        suite = load_suite(args.suite)
        runs = [(name, RESOLVERS[suite.kind](run)) for name, run in _apply_overrides(suite, args.steps, args.only)]
        device = torch.device(args.device)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out if args.out is not None else DEFAULT_OUTPUT_ROOT / suite.name
    execute = EXECUTORS[suite.kind]
    progress = not args.no_progress
    done: list[tuple[str, dict[str, Any]]] = []
    skipped = 0
    print(f"suite {suite.name} ({suite.description}): {len(runs)} runs -> {out}")
    for name, run in tqdm(runs, desc=f"suite {suite.name}", disable=not progress):
        run_dir = RunDir(out / name)
        was_finished = run_dir.finished
        try:
            metrics = execute(run, run_dir, device, progress)
        except (RunConflictError, ValueError) as exc:
            print(f"error in run {name}: {exc}", file=sys.stderr)
            return 2
        skipped += was_finished
        done.append((name, metrics))
    print(results_table(done))
    print(f"{len(done)} runs in {out} ({skipped} already finished, skipped); report: python -m geomstruct.report")
    return 0


if __name__ == "__main__":
    sys.exit(main())
