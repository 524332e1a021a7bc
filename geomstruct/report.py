"""``python -m geomstruct.report``: turn run directories into the figures and tables of the paper.

Reads only the files of the run directories (``metrics.json``, ``config.json``, ``trajectory.csv``, arrays),
so it works on results from any machine. Toy-experiment runs (``python -m bench.run --suite toy``) give the
figures and table under ``<out>/toy/``. Problems with individual runs are reported and skipped; whatever can be
drawn is still drawn. Exit code 0 when something was written, 1 when no run could be read.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from geomstruct.figures.distill import plot_gap_vs_performance, plot_pca, plot_trajectories, plot_ut_plane
from geomstruct.figures.toy import write_toy_report
from geomstruct.html import write_index
from geomstruct.runs import Run, load_runs
from geomstruct.summary import students_frame
from geomstruct.tables import write_tables

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
    distill = [r for r in runs if r.kind != "toy"]
    if distill:
        written += write_distill_report(distill, out, problems)
    if not runs:
        problems.append(
            "no finished run found under " + ", ".join(map(str, runs_roots)) + " (run python -m bench.run first)"
        )
    if written:
        written.append(write_index(out, runs, problems))
    return written, problems


def write_distill_report(runs: list[Run], out: Path, problems: list[str], n_boot: int = 10_000) -> list[Path]:
    """Figures and tables of distillation runs into ``out``; runs of a minority teacher are set aside."""
    teachers = Counter(str(r.metrics.get("teacher", "?")) for r in runs)
    if len(teachers) > 1:
        main_teacher = teachers.most_common(1)[0][0]
        problems.append(
            "runs with different teachers ("
            + ", ".join(f"{t}: {n} runs" for t, n in teachers.items())
            + f"): their geometry is not comparable; the report uses the {main_teacher} runs only"
        )
        runs = [r for r in runs if str(r.metrics.get("teacher", "?")) == main_teacher]
    out.mkdir(parents=True, exist_ok=True)
    students = students_frame(runs)
    written = write_tables(runs, students, out, n_boot=n_boot)
    for path in (
        plot_pca(runs, out),
        plot_ut_plane(students, out),
        plot_trajectories(runs, out),
        plot_gap_vs_performance(students, out, n_boot=n_boot),
    ):
        if path is not None:
            written.append(path)
    return written


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
