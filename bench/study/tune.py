"""Select each loss configuration's optimisation recipe from a finished tuning suite (an equal tuning budget
for every loss, docs/method.md#tuning-grid).

The tuning suite (``bench/suites/tune.yaml``) runs one grid, fixed before any run, for every loss configuration:
the recipe fields it varies (optimiser x learning rate), one seed, scored on the **val** split by a criterion that
does not depend on the loss and is written down before the grid runs: the linear-probe mIoU
(:data:`CRITERION`). For every loss configuration (loss and parameters) the recipe with the highest score is
selected; ties go to the earlier recipe of the grid. The output file holds the selection, the score of every
grid point and the command that regenerates it; a suite reads it with ``recipes: FILE``
(:func:`bench.suites.apply_recipes`).

CLI::

    python -m bench.run --suite tune --out study/tune --jobs 2   # the grid (resumes)
    python -m bench.study.tune --suite tune --runs study/tune --out bench/suites/recipes.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.config import DistillConfig
from bench.distill import resolve_distill
from bench.kinds import name_runs
from bench.results import RunDir
from bench.suites import load_suite, recipe_key, varied_fields
from bench.workspace import Workspace
from geomstruct.run_folder import CONFIG_FILE, METRICS_FILE, finished_runs

CRITERION = "linear_probe"
"""The selection score: ``metrics.json`` ``linear_probe.miou`` of the run (on the tuning suite's eval split)."""


def recipe_fields(runs: list[dict[str, Any]]) -> tuple[str, ...]:
    """The fields a tuning grid varies besides the loss configuration and the seed (e.g. ``lr``, ``optimizer``)."""
    return tuple(k for k in varied_fields(runs) if k not in ("loss", "loss_params", "seed"))


def select(suite_name: str, runs_dir: Path, allow_missing: bool = False) -> dict[str, Any]:
    """The recipes file's content for the finished tuning suite ``suite_name`` whose run folders are in
    ``runs_dir`` (module docstring).

    Raises:
        ValueError: a run of the grid has not finished (its folder has no ``metrics.json``) unless
            ``allow_missing``, a run has no score, or a finished run's ``config.json`` is not the suite's
            configuration of that run (e.g. trained with ``--steps``: a budget is chosen in the suite file).
    """
    suite = load_suite(suite_name)
    workspace = Workspace()
    defaults = DistillConfig.field_defaults()
    fields = recipe_fields(suite.runs)
    if not fields:
        raise ValueError(f"suite {suite_name} varies no recipe field besides the loss; nothing to select")
    grid: list[dict[str, Any]] = []
    missing = []
    names = [name for name, _ in name_runs(suite.kind, suite.runs, suite.source, workspace)]  # bench.run's names
    finished = finished_runs(runs_dir, names)
    for run, name in zip(suite.runs, names, strict=True):
        entry = {
            "run": name,
            "configuration": recipe_key(run["loss"], run["loss_params"]),
            "recipe": {k: run.get(k) for k in fields},
            "seed": run["seed"],
            "score": None,
        }
        if name in finished:
            diff = RunDir(runs_dir / name).config_differences(resolve_distill(run, workspace), defaults)
            if diff:
                raise ValueError(
                    f"{runs_dir / name / CONFIG_FILE} is not suite {suite_name}'s configuration of that run (differs "
                    f"in: {', '.join(diff)}); a tuning budget or data change belongs in the suite file"
                )
            score = (finished[name].metrics.get(CRITERION) or {}).get("miou")
            if score is None:
                raise ValueError(
                    f"{runs_dir / name / METRICS_FILE}: no {CRITERION} mIoU (the tuning suite must run that protocol)"
                )
            entry["score"] = float(score)
        else:
            missing.append(name)
        grid.append(entry)
    if missing and not allow_missing:
        raise ValueError(
            f"{len(missing)} of {len(grid)} tuning runs have not finished in {runs_dir} "
            f"(e.g. {', '.join(missing[:3])}); run `python -m bench.run --suite {suite_name}` to finish them"
        )
    selected: dict[str, Any] = {}
    for entry in grid:  # grid order: the first best recipe wins ties
        if entry["score"] is None:
            continue
        best = selected.get(entry["configuration"])
        if best is None or entry["score"] > best["score"]:
            selected[entry["configuration"]] = {"recipe": entry["recipe"], "score": entry["score"], "run": entry["run"]}
    return {
        "criterion": f"{CRITERION} mIoU on the tuning suite's eval split, higher is better; ties: first in the grid",
        "suite": suite_name,
        "recipe_fields": list(fields),
        "command": f"python -m bench.study.tune --suite {suite_name} --runs {runs_dir.as_posix()}",
        "complete": not missing,
        "selected": selected,
        "grid": grid,
    }


def display_fields(result: dict[str, Any]) -> list[str]:
    """The recipe fields in the order a column title names them: named choices first (``optimizer``), numbers
    after (``lr``), so that a recipe reads ``sgd 0.16``."""

    def numeric(field: str) -> bool:
        return all(isinstance(e["recipe"][field], int | float) for e in result["grid"])

    return sorted(result["recipe_fields"], key=numeric)


def _recipe_label(recipe: dict[str, Any], fields: list[str]) -> str:
    return " ".join(str(recipe[f]) for f in fields)


def edge_selections(result: dict[str, Any]) -> list[str]:
    """The configurations whose selected recipe lies on the boundary of the grid: for a numeric field (e.g.
    ``lr``) the selected value is the smallest or the largest of at least three values tried with the other
    fields equal (e.g. the largest SGD learning rate). A wider grid might score higher there; the selection
    stands (the grid is fixed before any run), the note says so."""
    fields = result["recipe_fields"]
    notes = []
    for configuration, chosen in result["selected"].items():
        recipe = chosen["recipe"]
        for field in fields:
            if not isinstance(recipe[field], int | float) or isinstance(recipe[field], bool):
                continue
            values = sorted(
                {
                    e["recipe"][field]
                    for e in result["grid"]
                    if e["configuration"] == configuration
                    and all(e["recipe"][f] == recipe[f] for f in fields if f != field)
                }
            )
            if len(values) >= 3 and recipe[field] in (values[0], values[-1]):
                side = "smallest" if recipe[field] == values[0] else "largest"
                notes.append(f"{configuration}: {field} {recipe[field]} is the {side} value tried")
    return notes


def markdown_table(result: dict[str, Any]) -> str:
    """Configurations (rows, in grid order) x recipes (columns, in grid order): the val score in %, the selected
    recipe of each configuration in bold (``–``: not run yet), then the selections on the grid's edge."""
    fields = display_fields(result)
    configurations = list(dict.fromkeys(e["configuration"] for e in result["grid"]))
    recipes = list(dict.fromkeys(_recipe_label(e["recipe"], fields) for e in result["grid"]))
    scores = {(e["configuration"], _recipe_label(e["recipe"], fields)): e for e in result["grid"]}
    lines = [
        "| configuration | " + " | ".join(recipes) + " | selected |",
        "|---" * (len(recipes) + 2) + "|",
    ]
    for configuration in configurations:
        chosen = result["selected"].get(configuration)
        cells = []
        for recipe in recipes:
            entry = scores.get((configuration, recipe))
            if entry is None or entry["score"] is None:
                cells.append("–")
                continue
            score = f"{100 * entry['score']:.1f}"
            cells.append(f"**{score}**" if chosen is not None and chosen["run"] == entry["run"] else score)
        selected = _recipe_label(chosen["recipe"], fields) if chosen is not None else "–"
        lines.append(f"| {configuration} | " + " | ".join(cells) + f" | {selected} |")
    edges = edge_selections(result)
    if edges:
        lines += ["", "Selected on the edge of the grid (a wider grid might score higher; the selection stands):"]
        lines += [f"- {note}" for note in edges]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the recipes file (``python -m bench.study.tune --help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.study.tune",
        description="Select every loss configuration's recipe (the grid's fields besides the loss) from a finished "
        f"tuning suite by its {CRITERION} mIoU on the suite's eval split, and write the recipes file a suite "
        "reads with `recipes: FILE`, with every grid point's score and a Markdown table beside it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--suite", default="tune", help="the tuning suite (name or YAML path)")
    parser.add_argument("--runs", type=Path, default=None, help="its run folders (default runs/<suite>)")
    parser.add_argument("--out", type=Path, default=Path("bench/suites/recipes.json"), help="recipes file")
    parser.add_argument("--allow-missing", action="store_true", help="select from the runs finished so far")
    args = parser.parse_args(argv)
    runs_dir = args.runs or Path("runs") / load_suite(args.suite).name
    try:
        result = select(args.suite, runs_dir, args.allow_missing)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    table = markdown_table(result)
    args.out.with_suffix(".md").write_text(
        f"Tuning grid of suite {result['suite']} ({' '.join(display_fields(result))} per column): "
        f"{result['criterion']}. Score in %; the selected recipe of each configuration in bold. Regenerate: "
        f"`{result['command']} --out {args.out.as_posix()}`.\n\n{table}"
    )
    print(table)
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
