"""``python -m bench.lens``: a published 3D backbone under the benchmark's lens (docs/usage.md#published-checkpoints).

Loads a pretrained backbone in its original layout (``--layout``, :data:`models.students.checkpoints.LAYOUTS`:
``slidr`` = SLidR's MinkUNet with MinkowskiEngine keys, ``scalr`` = ScaLR's WaffleIron), maps it onto the project's
student and evaluates it as a distillation run that skips the distillation: the geometry against the suite's
teacher, zero-shot (when the teacher has text and the suite asks for it), the linear probe and the few-shot
protocols, into an ordinary run folder (``config.json`` with ``student.checkpoint``, ``student.checkpoint_layout``
and the file's ``student.checkpoint_sha256``; ``metrics.json`` with ``loss: "<layout> (published)"`` and a
``pretrained`` object) that ``python -m geomstruct.report`` reads as one row.

The rest of the configuration is a run of a suite (``--suite``; ``--run`` picks one by name, default its first)
with ``--set FIELD=VALUE`` overrides (flat keys or ``section.field``); the student's family and preset default to
the layout's (``minkunet`` / ``slidr``; ``waffleiron`` / ``wi-48-768``), and so do the layout's other
``defaults`` (ScaLR's: its five inputs and 0.1 m Cartesian voxels). Everything is checked before anything runs: the
configuration, the file, and the checkpoint's keys and shapes against the student (a mismatch lists the offending
keys and names the file).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bench.config import DistillConfig, with_overrides
from bench.distill import execute_distill
from bench.kinds import name_runs
from bench.results import RunDir
from bench.suites import load_suite
from bench.train import build_distill_student
from bench.workspace import Workspace
from geomstruct.run_folder import PROTOCOLS, flat_config, update_flat
from models.students.checkpoints import LAYOUTS, get_layout

DEFAULT_OUTPUT_ROOT = Path("runs") / "lens"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.lens",
        description=__doc__.split("\n\n")[0].replace("``", ""),
        epilog=(
            "Example: python -m bench.lens --checkpoint minkunet_slidr_1gpu.pt --layout slidr --suite nuscenes "
            "--set teacher.name=clip --set protocols=[linear_probe] --device cuda"
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="the published weight file")
    parser.add_argument("--layout", required=True, help=f"its layout: {', '.join(LAYOUTS)}")
    parser.add_argument("--suite", default="smoke", help="a shipped suite or a suite YAML: the rest of the run")
    parser.add_argument("--run", default=None, help="the suite's run (by name) to take the configuration of")
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="override a field (YAML value)"
    )
    parser.add_argument("--name", default=None, help="the run folder's name (default: <layout>-published-seed<N>)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUTPUT_ROOT, help="output folder of the run folder")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (never changes a result)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def lens_run(
    checkpoint: Path,
    layout: str,
    suite: str,
    run: str | None = None,
    overrides: Sequence[str] = (),
    workspace: Workspace | None = None,
) -> dict[str, Any]:
    """The resolved configuration (flat form) of the published backbone ``checkpoint`` in ``layout`` evaluated
    with the configuration of a run of ``suite`` (``run``: its name; None: the first), the student's family and
    preset set to the layout's unless ``overrides`` set them, then ``overrides``. Checks the configuration, the
    file and the checkpoint's keys and shapes against the student (:func:`bench.train.build_distill_student`).

    Raises:
        ValueError: a bad value, a distill-less suite, an unknown run, or the checkpoint does not fit (a
            :class:`~models.students.checkpoints.CheckpointMismatch` listing the keys).
    """
    spec = get_layout(layout)
    loaded = load_suite(suite)
    if loaded.kind != "distill":
        raise ValueError(
            f"suite {loaded.name!r} is {loaded.kind}; a published backbone is evaluated by a distill suite"
        )
    published = {"student_checkpoint": str(checkpoint), "student_checkpoint_layout": layout}
    runs = []
    for entry in loaded.runs:  # every run: --set may give what the suite leaves to the command line (dataroot)
        layout_fields = {"student": spec.student, "preset": spec.preset, **dict(spec.defaults)}
        entry = with_overrides(update_flat(dict(entry), layout_fields), overrides)
        runs.append(update_flat(entry, published))
    named = name_runs(loaded.kind, runs, loaded.source, workspace)
    chosen = [resolved for name, resolved in named if run is None or name == run]
    if not chosen:
        raise ValueError(f"no run {run!r} in suite {loaded.name!r}; runs: {', '.join(n for n, _ in named)}")
    resolved = chosen[0]
    build_distill_student(DistillConfig.from_run(resolved))  # the keys and shapes, before anything runs
    return resolved


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 when the run finished (or was finished), 2 on bad input or a failed run."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    workspace = Workspace()
    try:
        resolved = lens_run(args.checkpoint, args.layout, args.suite, args.run, args.set, workspace)
        name = args.name or f"{args.layout}-published-seed{flat_config(resolved)['seed']}"
        run_dir = RunDir(args.out / name)
        run_dir.check_config(resolved, DistillConfig.field_defaults())
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    lock = run_dir.lock()
    if not lock.acquire():
        print(f"error: run {run_dir.path} is being written by {lock.holder()}", file=sys.stderr)
        return 2
    try:
        metrics = execute_distill(
            resolved, run_dir, torch.device(args.device), not args.no_progress, args.workers, workspace
        )
    except Exception as exc:  # recorded in the run folder, as bench.run does
        run_dir.fail(f"{type(exc).__name__}: {exc}")
        print(f"error in {run_dir.path}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    finally:
        lock.release()
    shown = {p: (metrics.get(p) or {}).get("miou") for p in PROTOCOLS}
    print(f"{metrics['loss']} -> {run_dir.path}: " + ", ".join(f"{k} {v}" for k, v in shown.items() if v is not None))
    print("report: python -m geomstruct.report --runs", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
