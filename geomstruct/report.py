"""``python -m geomstruct.report``: turn run directories into the figures and tables of the paper.

Reads only the files of the run directories (``metrics.json``, ``config.json``, ``trajectory.csv``, arrays),
so it works on results from any machine. Toy-experiment runs (``python -m bench.run --suite toy``) give the
figures and table under ``<out>/toy/``. Problems with individual runs are reported and skipped; whatever can be
drawn is still drawn. Exit code 0 when something was written, 1 when no run could be read.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from geomstruct.figures.toy import write_toy_report
from geomstruct.runs import load_runs

DEFAULT_RUNS = Path("runs")
DEFAULT_OUT = Path("reports")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m geomstruct.report",
        description=__doc__.split("\n\n")[0].replace("``", ""),
    )
    parser.add_argument(
        "--runs",
        type=Path,
        nargs="+",
        default=[DEFAULT_RUNS],
        help="run directories, or folders searched recursively for them (default: runs/, where bench.run writes)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="folder the figures and tables go to (default: reports/)"
    )
    return parser


def build_report(runs_roots: Sequence[Path], out: Path) -> tuple[list[Path], list[str]]:
    """Write every report that the runs under ``runs_roots`` allow; returns ``(written files, problems)``."""
    runs, problems = load_runs(runs_roots)
    written: list[Path] = []
    toy = [r for r in runs if r.kind == "toy"]
    if toy:
        written += write_toy_report(toy, out / "toy")
    other = [r for r in runs if r.kind != "toy"]
    if other:
        problems.append(f"{len(other)} distillation runs found; their figures are not part of this report yet")
    if not runs:
        problems.append(
            "no finished run found under " + ", ".join(map(str, runs_roots)) + " (run python -m bench.run first)"
        )
    return written, problems


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 when files were written, 1 otherwise."""
    args = _parser().parse_args(argv)
    written, problems = build_report(args.runs, args.out)
    for message in problems:
        print(f"warning: {message}", file=sys.stderr)
    for path in written:
        print(f"wrote {path}")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
