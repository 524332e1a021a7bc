"""``python -m geomstruct.report``: turn run directories into the figures and tables of the paper.

Reads only the files of the run directories (``metrics.json``, ``config.json``, ``trajectory.csv``, arrays),
so it works on results from any machine. Distillation runs give the figures and tables at the top of the output
folder, toy-experiment runs (``python -m bench.run --suite toy``) those under ``<out>/toy/``; ``index.html``
shows both. Exit code 0 when a report was written, 1 when no run could be read, 2 when the runs found cannot go
into one report (several suites, two different results for one configuration and seed) or the output folder
cannot be written.

One suite per report. A run's suite is the folder holding its run directory (``runs/<suite>/<run>``) unless its
``config.json`` names one. Runs of different suites are never pooled: when the runs found hold more than one
distillation suite (or more than one toy suite), nothing is written and the message lists the suites found and
their folders; choose with ``--runs`` (``--runs runs/full runs/toy`` for the committed reports/) and write another
suite's report elsewhere with ``--out`` (``--runs runs/smoke --out reports/smoke``). Within the suite, every
row of a table is one configuration: runs whose ``config.json`` differ only in the seed and in fields that do
not change results (``geomstruct.runs.NON_RESULT_FIELDS``: the paths of data, feature cache and CLIP weights,
``allow_torchscript``, ``checkpoint_every``) are its seeds, averaged; runs of the same loss that differ in
anything else get their own rows, labelled with the differing fields (e.g. ``contrastive (tau=0.07)
[steps=300]``). The run folders of every row are the ``runs`` column of ``summary.csv`` and
``toy/toy_table.csv`` and a table of ``index.html``.

The page a reader sees. ``index.html`` opens with the claims table (rule version 2, ``claims_v2.*``): every
verdict with its statements' intervals, the budget, each configuration's convergence status and the collapsed
configurations; right under it the caveats: collapsed configurations, the recipes of ``--recipes FILE`` (a
``bench.study.tune`` recipes file) selected on the edge of the tuning grid, and every ``--caveat TEXT`` (e.g. an unmet
target). Then the per-configuration summary as the breadth table, titled with its budget, and the other
sections. Budgets: when the suite trains its configurations at several step budgets with the same seeds (a grid
over ``steps``), the claims are judged at each budget on that budget's students (``claims_by_budget.*``, with the
budget from which each verdict stops changing), the claims table is the largest budget's, and each
configuration's convergence status comes from the trace by the doubling rule of ``bench/study/doubling.py``
(``geomstruct.budgets``), not from the in-run diagnostic.

Distinct runs. A row's n counts distinct runs: two run folders of the same configuration and seed (e.g. the
same suite folder under two roots, ``--runs A/base B/base``) are one run. When their ``metrics.json`` are
identical the second is a copy: it is counted once, with a warning naming both folders. When they differ they
are two results claiming one seed, and no rule can say which is right: nothing is written (exit 2) and the
error names both folders; give --runs only one of them. Correlations and claims count distinct runs too.

Broken runs. A run with a file that cannot be read (invalid or non-UTF-8 JSON or CSV, ``metrics.json`` without
``geometry``, a truncated ``features.npz``) is skipped with a warning that names the file, on stderr and in
``index.html``; the report is drawn from the other runs. A NaN (or infinite) number in a ``metrics.json`` (a
diverged run or a broken metric) is shown as "–" with a warning naming the run folder and the metric.

The output folder. The report owns its report files in the output folder: ``index.html``, the figures and
tables it writes, those under ``toy/`` (``geomstruct.report.REPORT_FILES``). It is built in a temporary folder
next to the output folder (``.<out>.partial-*``) and replaces the output folder only when complete, by renaming;
until then, and when it fails, the previous report is untouched. Report files the new report does not write (a
figure of runs no longer given; the distillation files when only toy runs are given, ``toy/``'s when no toy run
is) are gone afterwards, so no figure or table of other runs stays next to the new ones; every other file or
folder in the output folder (``README.md``, notes) is copied into the new one unchanged. Nothing outside the
output folder is touched but the temporary folders next to it: removed when done; a killed report may leave
one, which the next report into the same output folder removes (each report holds a lock on its temporary
folder while writing it, so only folders whose writer has died are removed, never one that another report is
writing). The output folder can be neither the working directory (or a folder above it) nor a folder holding
the run directories. An output folder that cannot be written (read-only, disk full) ends the report with a
one-line error naming it (exit 2); the previous report is untouched.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import fnmatch
import glob
import os
import shutil
import sys
import tempfile
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from geomstruct.budgets import (
    DOUBLING_RULE,
    budget_trace,
    claims_by_budget,
    claims_by_budget_frame,
    trace_flags,
    trace_identity,
)
from geomstruct.caveats import collapse_caveats, grid_edge_caveats
from geomstruct.claims_v2 import ClaimV2, claims_v2_frame, evaluate_claims_v2
from geomstruct.figures.distill import (
    plot_gap_vs_performance,
    plot_pca,
    plot_predictors,
    plot_trajectories,
    plot_ut_plane,
)
from geomstruct.figures.toy import write_toy_report
from geomstruct.html import ClaimsPage, Row, write_index
from geomstruct.run_folder import CONFIG_FILE
from geomstruct.runs import DuplicateRunError, Run, distinct_runs, label_configurations, load_runs
from geomstruct.summary import loss_rank, students_frame
from geomstruct.tables import (
    CLAIMS_V2_HEADER,
    add_structure_columns,
    load_references,
    predictor_table,
    write_claims_by_budget,
    write_claims_v2,
    write_references,
    write_tables,
)
from geomstruct.teachers import random_teacher_caveat, write_teacher_table

DEFAULT_RUNS = Path("runs")
DEFAULT_OUT = Path("reports")
REPORT_FILES = (
    "index.html",
    "pca.png",
    "uniformity_tolerance.png",
    "trajectories.png",
    "gap_vs_performance.png",
    "predictors.png",
    "summary.md",
    "summary.tex",
    "summary.csv",
    "correlations.md",
    "correlations.tex",
    "correlations.csv",
    "predictors.md",
    "predictors.tex",
    "predictors.csv",
    "claims.md",
    "claims.tex",
    "claims.csv",
    "claims_v2.md",
    "claims_v2.tex",
    "claims_v2.csv",
    "claims_by_budget.md",
    "claims_by_budget.tex",
    "claims_by_budget.csv",
    "references.md",
    "references.tex",
    "references.csv",
    "per_class_*.md",
    "per_class_*.tex",
    "per_class_*.csv",
    "toy/toy_initial_outputs.png",
    "toy/toy_evolution_*.png",
    "toy/toy_uniformity.png",
    "toy/toy_table.csv",
    "toy/toy_table.md",
)
"""Files of the output folder that the report owns (paths relative to it, ``fnmatch`` patterns)."""


class ReportError(Exception):
    """The runs found cannot make one report (nothing was written); the message says how to choose.
    ``problems``: the warnings about the runs found, as :func:`build_report` returns them."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


def is_report_file(relative: str) -> bool:
    """Whether ``relative`` (a ``/``-separated path inside the output folder) is one of :data:`REPORT_FILES`."""
    return any(
        fnmatch.fnmatchcase(relative, pattern) and relative.count("/") == pattern.count("/") for pattern in REPORT_FILES
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m geomstruct.report",
        description=__doc__.split("\n\n")[0].replace("``", ""),
        epilog="\n\n".join(__doc__.split("\n\n")[1:]).replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--runs",
        type=Path,
        nargs="+",
        default=[DEFAULT_RUNS],
        help="run directories, or folders searched recursively for them (default: runs/, where bench.run "
        "writes); they must hold one distill suite and at most one toy suite",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="folder the figures and tables go to, replaced as a whole when the report is complete; files "
        "that are not report files (README.md, ...) are kept (default: reports/)",
    )
    parser.add_argument(
        "--recipes",
        type=Path,
        default=None,
        help="a recipes file of bench.study.tune (e.g. bench/suites/recipes.json): its selections on the edge of the "
        "tuning grid are printed under the claims table as caveats",
    )
    parser.add_argument(
        "--caveat",
        action="append",
        default=[],
        metavar="TEXT",
        help="a caveat printed under the claims table, e.g. an unmet target ('supervised ceiling 41%% < 50%% "
        "target'); repeat for several",
    )
    return parser


def _suites_by_kind(runs: Sequence[Run]) -> dict[str, dict[str, list[Run]]]:
    """``{kind: {suite: runs}}`` with kind ``toy`` or ``distill``."""
    found: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        found["toy" if run.kind == "toy" else "distill"][run.suite].append(run)
    return found


def _check_one_suite_per_kind(runs: Sequence[Run], out: Path) -> dict[str, list[Run]]:
    """``{kind: runs}``; :class:`ReportError` listing the suites when a kind has runs of several suites."""
    found = _suites_by_kind(runs)
    if all(len(suites) == 1 for suites in found.values()):
        return {kind: next(iter(suites.values())) for kind, suites in found.items()}

    def folders(members: Sequence[Run]) -> list[str]:
        return sorted({r.path.parent.as_posix() for r in members})

    lines = [
        f"  {suite} ({kind}): {len(members)} runs in {', '.join(folders(members))}"
        for kind in sorted(found)
        for suite, members in sorted(found[kind].items())
    ]
    first = {kind: sorted(suites.items())[0] for kind, suites in found.items()}
    choose = " ".join(f for _, members in first.values() for f in folders(members))
    others = [(suite, members) for kind in sorted(found) for suite, members in sorted(found[kind].items())[1:]]
    other_suite, other_runs = others[0]
    raise ReportError(
        "the runs found belong to several suites:\n"
        + "\n".join(lines)
        + "\nruns of different suites are never pooled, and a report holds one distill suite and one toy suite "
        "(under toy/); nothing was written. Choose the suite with --runs, e.g.\n"
        f"  python -m geomstruct.report --runs {choose} --out {out.as_posix()}\n"
        f"  python -m geomstruct.report --runs {' '.join(folders(other_runs))} "
        f"--out {(out / other_suite).as_posix()}"
    )


def _distinct(selected: dict[str, list[Run]], problems: list[str]) -> dict[str, list[Run]]:
    """``selected`` with every run counted once (:func:`geomstruct.runs.distinct_runs`; the notes on copies are
    added to ``problems``); :class:`ReportError` when two folders claim one seed with different results."""
    distinct = {}
    for kind, runs in selected.items():
        try:
            distinct[kind], notes = distinct_runs(runs)
        except DuplicateRunError as exc:
            raise ReportError(str(exc), problems) from None
        problems.extend(notes)
    return distinct


def _main_teacher(runs: list[Run], problems: list[str]) -> list[Run]:
    teachers = Counter(str(r.metrics.get("teacher", "?")) for r in runs)
    if len(teachers) <= 1:
        return runs
    main_teacher = teachers.most_common(1)[0][0]
    problems.append(
        "runs with different teachers ("
        + ", ".join(f"{t}: {n} runs" for t, n in teachers.items())
        + f"): their geometry is not comparable; the report uses the {main_teacher} runs only"
    )
    return [r for r in runs if str(r.metrics.get("teacher", "?")) == main_teacher]


def write_distill_report(
    runs: list[Run],
    out: Path,
    problems: list[str],
    n_boot: int = 10_000,
    caveats: Sequence[str] = (),
    every_teacher: Sequence[Run] | None = None,
) -> tuple[list[Path], ClaimsPage]:
    """Figures and tables of distillation runs (of one suite) into ``out``; runs of a minority teacher are set
    aside, and every configuration is its own row (:func:`geomstruct.runs.label_configurations`). The notes of
    the predictor ranking (quantities left out because some runs lack them) are added to ``problems``. Returns
    the written files and the top of the page (:class:`geomstruct.html.ClaimsPage`: the claims, their caveats,
    i.e. the collapsed configurations, randomly initialised teachers and ``caveats``, and the breadth table's title).
    Runs of several teachers (a suite's teacher axis; ``every_teacher``: the runs before the main teacher's were
    kept, default ``runs``) also get the teacher x loss table of every run (:mod:`geomstruct.teachers`).

    Claims (rule version 2): with one budget, on every student, with each configuration's convergence status
    from the trace (unchecked: no 2B); when the suite trains configurations at several budgets
    (:func:`geomstruct.budgets.is_traced`), at each budget on its students only (``claims_by_budget.*``), and the
    claims table (``claims_v2.*``, the page) at the largest budget."""
    every_teacher = list(runs if every_teacher is None else every_teacher)
    by_teacher = write_teacher_table(every_teacher, out)  # every teacher's runs (a teacher axis)
    random_teachers = random_teacher_caveat(every_teacher)
    runs = _main_teacher(runs, problems)
    label_configurations(runs)
    out.mkdir(parents=True, exist_ok=True)
    students = add_structure_columns(students_frame(runs), runs)
    trace = budget_trace(runs)
    if trace.traced:  # the convergence mark flags what the doubling rule flags, not the in-run diagnostic
        students["unconverged"] = trace_flags(students, trace)
    predictors, notes = predictor_table(students, n_boot=n_boot)
    problems.extend(notes)
    written = write_tables(runs, students, out, n_boot=n_boot, predictors=(predictors, notes), traced=trace.traced)
    claims, words = _claims(runs, students, out, n_boot, written)
    written += write_claims_v2(claims_v2_frame(claims), out)
    written += by_teacher
    for path in (
        plot_pca(runs, out),
        plot_ut_plane(students, out),
        plot_trajectories(runs, out),
        plot_gap_vs_performance(students, out, n_boot=n_boot),
        plot_predictors(predictors, out),
    ):
        if path is not None:
            written.append(path)
    page = ClaimsPage(
        claims=claims_v2_frame(claims),
        budget=words["budget"],
        caveats=(*collapse_caveats(claims), *random_teachers, *caveats),
        by_budget="claims_by_budget.md" if (out / "claims_by_budget.md") in written else None,
        breadth_title=words["breadth"],
        note=f"{CLAIMS_V2_HEADER} {words['note']}",
    )
    return written, page


def _steps_words(steps: Sequence[int]) -> str:
    """``800``, ``800 and 1600``, ``800, 1600 and 3200``."""
    words = [str(s) for s in steps]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _claims(
    runs: Sequence[Run], students: pd.DataFrame, out: Path, n_boot: int, written: list[Path]
) -> tuple[list[ClaimV2], dict[str, str]]:
    """The claims of the claims table (:func:`write_distill_report`), the claims-by-budget files (added to
    ``written``) when the suite is traced, and the words of the page: ``budget``, ``note``, ``breadth``."""
    trace = budget_trace(runs)
    steps = list(trace.budgets)
    rule = f"Convergence: {DOUBLING_RULE}."
    labels = students["label"].nunique() if len(students) else 0
    if trace.traced:
        by_budget = claims_by_budget(students, runs, trace, n_boot)
        written += write_claims_by_budget(claims_by_budget_frame(by_budget), out)
        largest = steps[-1]
        configurations = len({trace_identity(run) for run in runs})
        return by_budget[largest], {
            "budget": f"{largest} steps",
            "note": f"Judged at {largest} steps, the largest budget of the suite ({_steps_words(steps)} steps, the "
            f"same seeds); the verdicts at every budget follow in the claims-by-budget table. {rule}",
            "breadth": f"Breadth: {configurations} configurations at {_steps_words(steps)} steps ({labels} rows)",
        }
    convergence = {label: status for statuses in trace.statuses.values() for label, status in statuses.items()}
    unknown = None in trace.statuses
    single = steps[0] if len(steps) == 1 and not unknown else None
    claims = evaluate_claims_v2(students, convergence=convergence, budget=single, n_boot=n_boot)
    if single is not None:
        budget, note = f"{single} steps", f"Every student trained {single} steps, the suite's only budget. {rule}"
    elif steps:
        budget = f"{_steps_words(steps)} steps (by configuration)"
        note = f"The configurations were trained at different budgets ({budget}), none at two. {rule}"
    else:
        budget, note = "not recorded", f"The runs' {CONFIG_FILE} record no steps. {rule}"
    at = f" at {budget}" if steps else ""
    return claims, {"budget": budget, "note": note, "breadth": f"Breadth: {labels} configurations{at}"}


def _rows(table: str, runs: Sequence[Run], key) -> list[Row]:
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        groups[key(run)].append(run)
    return [
        Row(table, label, tuple(r.path.as_posix() for r in sorted(members, key=lambda r: (r.seed, str(r.path)))))
        for label, members in groups.items()
    ]


def _write(
    selected: dict[str, list[Run]],
    folder: Path,
    problems: list[str],
    n_boot: int,
    references: Sequence[dict] = (),
    caveats: Sequence[str] = (),
) -> list[Path]:
    """Every part of the report into ``folder`` (with the reference rows of the distill suite and the caveats of
    its claims table); returns the written files."""
    written: list[Path] = []
    page: ClaimsPage | None = None
    used: list[Run] = []
    rows: list[Row] = []
    toy = selected.get("toy", [])
    if toy:
        label_configurations(toy)
        written += write_toy_report(toy, folder / "toy")
        ordered = sorted(toy, key=lambda r: (str(r.metrics.get("setup", "?")), loss_rank(r.label)))
        rows += _rows("toy/toy_table", ordered, lambda r: f"{r.metrics.get('setup', '?')}: {r.label}")
        used += toy
    distill = _main_teacher(selected.get("distill", []), problems)
    if distill:
        distill_written, page = write_distill_report(
            distill, folder, problems, n_boot=n_boot, caveats=caveats, every_teacher=selected.get("distill", [])
        )
        written += distill_written
        homes = {run.path.parent.resolve() for run in distill}  # reference rows sit beside the run folders
        mine = [r for r in references if Path(r["path"]).parent.parent.resolve() in homes]
        for other in sorted(r["path"] for r in references if r not in mine):
            problems.append(f"{other}: a reference row of another suite's folder; left out of this report")
        written += write_references(mine, folder)
        rows += _rows("summary", sorted(distill, key=lambda r: loss_rank(r.label)), lambda r: r.label)
        used += distill
    if written:
        written.append(write_index(folder, used, problems, rows, claims=page))
    return written


def _dir_mode(out: Path) -> int:
    if out.is_dir():
        return out.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


def _carry_over(old: Path, new: Path) -> None:
    """Copy every entry of ``old`` that is not a report file (and not written anew) into ``new``."""
    if not old.is_dir():
        return

    def ignore(folder: str, names: list[str]) -> set[str]:
        relative = Path(folder).relative_to(old)
        skipped = set()
        for name in names:
            target = new / relative / name
            both_dirs = target.is_dir() and not target.is_symlink() and (Path(folder) / name).is_dir()
            if is_report_file((relative / name).as_posix()) or (os.path.lexists(target) and not both_dirs):
                skipped.add(name)
        return skipped

    shutil.copytree(old, new, symlinks=True, ignore=ignore, dirs_exist_ok=True)


def _check_output_folder(target: Path, runs_roots: Sequence[Path]) -> None:
    """:class:`ReportError` when ``target`` (absolute) cannot be replaced as a whole: not a folder, the working
    directory or a folder above it, or a folder holding the run directories."""
    if os.path.lexists(target) and not target.is_dir():
        raise ReportError(f"--out {target} exists and is not a folder; choose another --out")
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise ReportError(
            f"--out {target} holds the working directory; the report replaces its folder: choose one below"
        )
    for root in map(Path, runs_roots):
        root = Path(os.path.abspath(root))
        if target == root or target in root.parents:
            raise ReportError(f"--out {target} holds the run directories of --runs {root}; choose another --out")


def _check_writable(target: Path, out: Path) -> None:
    """:class:`ReportError` when the output folder (or, when it does not exist yet, its nearest existing parent)
    is not writable by this process: the report would replace a folder its owner made read-only."""
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ReportError(f"cannot write the report into --out {out.as_posix()}: {existing} is not writable")


def _partial_prefix(target: Path) -> str:
    return f".{target.name}.partial-"


def _same_folder(fd: int, folder: Path) -> bool:
    """Whether the open descriptor ``fd`` is still the folder at path ``folder`` (not removed or replaced)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(folder, follow_symlinks=False))
    except FileNotFoundError:
        return False


def _make_staging(target: Path) -> tuple[Path, int]:
    """A new temporary folder next to ``target`` (``.<name>.partial-*``) and an open descriptor of it holding its
    exclusive ``flock`` until closed or until the process dies: the lock tells a later report
    (:func:`_remove_stale_partials`) that the folder's writer is alive. On a file system without ``flock`` the
    folder stays unlocked, and no report can lock it to remove it."""
    while True:
        staging = Path(tempfile.mkdtemp(prefix=_partial_prefix(target), dir=target.parent))
        try:
            fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            continue  # removed by another report before it was locked: make another
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits only while another report is removing it
        except OSError:
            return staging, fd  # no flock here
        if _same_folder(fd, staging):
            return staging, fd
        os.close(fd)


def _remove_stale_partials(target: Path) -> list[Path]:
    """Remove the temporary folders next to ``target`` left by killed reports: those whose lock nobody holds
    (their writer is dead); a folder another report is writing stays. Returns the removed folders."""
    removed = []
    for folder in sorted(target.parent.glob(f"{glob.escape(_partial_prefix(target))}*")):
        if folder.is_symlink() or not folder.is_dir():
            continue
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its writer is alive (or this file system has no flock: cannot tell, so kept)
            os.close(fd)
            continue
        try:
            if _same_folder(fd, folder):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        finally:
            os.close(fd)
    return removed


OUTPUT_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
"""``OSError`` numbers of an output folder that cannot be written (read-only, no space, quota)."""


def _output_error(exc: OSError, out: Path, target: Path, staging: Path | None) -> str | None:
    """The one-line message naming the output folder when ``exc`` is a failure to write it (a number of
    :data:`OUTPUT_ERRNOS`, with no file named or one in the output folder, its temporary folder, its parent or a
    folder above it); None for any other error, which is not the output's."""
    if exc.errno not in OUTPUT_ERRNOS:
        return None
    where = ""
    if exc.filename is not None:
        path = Path(os.path.abspath(os.fsdecode(exc.filename)))
        places = [target, target.parent, *([staging] if staging is not None else [])]
        if not (path in target.parents or any(path == place or place in path.parents for place in places)):
            return None
        where = f" ({path})"
    return (
        f"cannot write the report into --out {out.as_posix()}: {exc.strerror or exc}{where}; the previous report "
        "is untouched"
    )


def _replace(staging: Path, out: Path) -> None:
    """Put ``staging`` in the place of ``out`` by renaming (the old folder is removed afterwards)."""
    if not os.path.lexists(out):
        os.rename(staging, out)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:12]}"
    os.rename(out, old)
    try:
        os.rename(staging, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def build_report(
    runs_roots: Sequence[Path],
    out: Path,
    n_boot: int = 10_000,
    recipes: Path | None = None,
    caveats: Sequence[str] = (),
) -> tuple[list[Path], list[str]]:
    """Write the report of the runs under ``runs_roots`` into ``out``; returns ``(written files, problems)``.
    ``recipes``: a recipes file of ``bench.study.tune`` whose selections on the edge of the tuning grid are caveats of
    the claims table, printed under it with the free-text ``caveats`` (e.g. an unmet target).

    Raises :class:`ReportError` (nothing written) when the runs hold several suites of one kind, two different
    results for one configuration and seed, when ``recipes`` is not a recipes file, or when the output folder
    cannot be written. The report is written into a temporary folder next to ``out`` that replaces ``out`` only
    when complete; when no run can be read, or when writing fails, ``out`` is left as it was.
    """
    try:
        notes = [*(grid_edge_caveats(recipes) if recipes is not None else []), *caveats]
    except ValueError as exc:
        raise ReportError(str(exc)) from None
    runs, problems = load_runs(runs_roots)
    references, reference_problems = load_references(runs_roots)
    problems += reference_problems
    if not runs:
        problems.append(
            "no finished run found under " + ", ".join(map(str, runs_roots)) + " (run python -m bench.run first)"
        )
        return [], problems
    out = Path(out)
    target = Path(os.path.abspath(out))
    if target.is_symlink():
        target = target.resolve()  # the folder it points to is replaced; the link stays
    try:
        _check_output_folder(target, runs_roots)
        selected = _check_one_suite_per_kind(runs, out)
    except ReportError as exc:
        raise ReportError(str(exc), problems) from None
    selected = _distinct(selected, problems)
    staging: Path | None = None
    try:
        _check_writable(target, out)
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(target)
        staging, lock = _make_staging(target)
        try:
            staging.chmod(_dir_mode(target))
            written = _write(selected, staging, problems, n_boot, references, notes)
            if written:
                _carry_over(target, staging)
                _replace(staging, target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
            os.close(lock)
    except ReportError as exc:
        raise ReportError(str(exc), problems) from None
    except OSError as exc:
        message = _output_error(exc, out, target, staging)
        if message is None:
            raise
        raise ReportError(message, problems) from None
    return [out / path.relative_to(staging) for path in written], problems


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 when the report was written, 1 when no run could be read, 2 when refused (the runs cannot
    make one report, or the output folder cannot be written)."""
    args = _parser().parse_args(argv)
    try:
        written, problems = build_report(args.runs, args.out, recipes=args.recipes, caveats=args.caveat)
    except ReportError as exc:
        for message in exc.problems:
            print(f"warning: {message}", file=sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for message in problems:
        print(f"warning: {message}", file=sys.stderr)
    for path in written:
        print(f"wrote {path}")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
