"""The convergence check of a step budget (docs/method.md#doubling-rule): does doubling the steps change a student?

A student trained for ``S`` steps is *converged at budget S* when the same configuration trained for ``2 S``
steps (everything else equal: loss, recipe, seed, data, schedule shape) differs by at most

- ``MAX_MIOU_CHANGE`` = 1 point of linear-probe mIoU on the runs' eval split (the val split when checked on the
  tuning suite), and
- ``MAX_GEOMETRY_CHANGE`` = 0.05 in U and in T (``metrics.json`` ``geometry``).

The rule was fixed before any number was seen. The runs are paired by their ``config.json``: a run
of the doubled folder is compared with the run of the base folder whose configuration is identical except
``steps`` and the fields the check does not read (:data:`IGNORED_FIELDS`, ``ft_*``, ``ood_*``), with twice its
steps.

A *chain* of folders (S, 2 S, 4 S, ...) checks every doubling in turn; the smallest budget at which a
configuration is converged, and the smallest at which every configuration is, are reported (None: not within
the chain).

CLI::

    python -m bench.study.doubling runs/tune runs/doubling --out study/results/doubling   # .json and .md
    python -m bench.study.doubling runs/tune runs/doubling runs/doubling1600 runs/doubling3200 \
        --out study/results/doubling
    python -m bench.study.doubling study/tune study/doubling1600 --recipes bench/suites/recipes.json   # selected

``--recipes``: the doubled folders may also hold runs of recipes an earlier selection chose; only the runs of the
file's selected recipes are checked, and each of its configurations must have one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.config import DistillConfig
from bench.suites import recipe_key
from geomstruct.run_folder import CONFIG_FILE, RunRecord, finished_runs

MAX_MIOU_CHANGE = 0.01
"""Largest linear-probe mIoU change (a fraction: 1 point) of a converged student when its steps double."""
MAX_GEOMETRY_CHANGE = 0.05
"""Largest change of U and of T of a converged student when its steps double."""
IGNORED_FIELDS = ("steps", "checkpoint_every", "probe_every", "protocols", "few_shot_every", "few_shot_subsets")
"""Configuration fields that may differ between a run and its doubled twin (besides the steps themselves): the
checkpoint and probe cadence, and the evaluation protocols the check does not read (with every field of the
few-shot protocols, ``ft_*`` and ``ood_*``)."""
IGNORED_PREFIXES = ("ft_", "ood_")


def _finished_runs(folder: Path) -> list[RunRecord]:
    """Every finished run directly under ``folder``, in name order (:func:`geomstruct.run_folder.finished_runs`); a
    field the run's ``config.json`` lacks (written before the field existed) takes its default, the value that run
    used.

    Raises:
        ValueError: a finished run without a readable ``config.json``.
    """
    runs = list(finished_runs(folder, defaults=DistillConfig.field_defaults()).values())
    for run in runs:
        if run.config is None:
            raise ValueError(f"{run.path}: unreadable run (no {CONFIG_FILE})")
    return runs


def _identity(config: dict[str, Any]) -> str:
    kept = {k: v for k, v in config.items() if k not in IGNORED_FIELDS and not k.startswith(IGNORED_PREFIXES)}
    return json.dumps(kept, sort_keys=True)


def _values(metrics: dict[str, Any]) -> dict[str, float | None]:
    geometry = metrics.get("geometry") or {}
    probe = metrics.get("linear_probe") or {}
    return {"miou": probe.get("miou"), "U": geometry.get("U"), "T": geometry.get("T")}


def read_selection(recipes: Path) -> dict[str, dict[str, Any]]:
    """``configuration -> recipe`` of a recipes file written by :mod:`bench.study.tune` (its ``selected`` entries).

    Raises:
        ValueError: the file is missing or holds no selection.
    """
    try:
        selected = json.loads(Path(recipes).read_text())["selected"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{recipes}: not a recipes file of bench.study.tune ({exc!r})") from None
    return {configuration: dict(entry["recipe"]) for configuration, entry in selected.items()}


def _selected(config: dict[str, Any], selection: dict[str, dict[str, Any]]) -> bool:
    recipe = selection.get(recipe_key(config["loss"], config.get("loss_params") or {}))
    return recipe is not None and all(config.get(field) == value for field, value in recipe.items())


def compare(base: Path, doubled: Path, selection: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The doubling table of the runs of ``doubled`` against their twins in ``base`` (module docstring).

    ``selection`` (:func:`read_selection`): only the doubled runs of each configuration's selected recipe are
    checked (a folder may also hold runs of an earlier selection), and every selected configuration must have one.

    Raises:
        ValueError: a doubled run has no twin with half its steps in ``base``, or lacks the linear probe; a
            configuration of ``selection`` has no doubled run.
    """
    twins = {_identity(run.config): (run.path, run.config, run.metrics) for run in _finished_runs(base)}
    runs = [(run.path, run.config, run.metrics) for run in _finished_runs(doubled)]
    if selection is not None:
        runs = [run for run in runs if _selected(run[1], selection)]
        have = {recipe_key(config["loss"], config.get("loss_params") or {}) for _, config, _ in runs}
        missing = sorted(set(selection) - have)
        if missing:
            raise ValueError(
                f"{doubled}: no finished run of the selected recipe of {', '.join(missing)} "
                "(run the doubling suite, which reads the same recipes file)"
            )
    rows = []
    for path, config, metrics in runs:
        twin = twins.get(_identity(config))
        if twin is None or 2 * twin[1]["steps"] != config["steps"]:
            raise ValueError(
                f"{path}: no run in {base} with the same configuration and half its {config['steps']} steps"
            )
        before, after = _values(twin[2]), _values(metrics)
        if before["miou"] is None or after["miou"] is None:
            raise ValueError(f"{path} or {twin[0]}: no linear_probe mIoU (the doubling check needs that protocol)")
        change = {key: None if before[key] is None or after[key] is None else after[key] - before[key]
                  for key in before}  # fmt: skip
        converged = abs(change["miou"]) <= MAX_MIOU_CHANGE and all(
            change[key] is None or abs(change[key]) <= MAX_GEOMETRY_CHANGE for key in ("U", "T")
        )
        rows.append(
            {
                "configuration": recipe_key(config["loss"], config.get("loss_params") or {}),
                "seed": config["seed"],
                "recipe": {"optimizer": config.get("optimizer"), "lr": config.get("lr")},
                "steps": twin[1]["steps"],
                "base_run": twin[0].as_posix(),
                "doubled_run": path.as_posix(),
                "base": before,
                "doubled": after,
                "change": change,
                "converged": bool(converged),
            }
        )
    if not rows:
        raise ValueError(f"no finished run in {doubled}")
    return {
        "rule": f"converged when doubling the steps changes the linear-probe mIoU by at most "
        f"{100 * MAX_MIOU_CHANGE:g} point and U and T by at most {MAX_GEOMETRY_CHANGE:g}",
        "rows": rows,
        "all_converged": all(row["converged"] for row in rows),
    }


def chain(folders: list[Path], selection: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Every doubling of a chain of run folders (each with twice the steps of the previous one): the
    :func:`compare` result of each consecutive pair (with ``selection``), and per configuration (with its recipe
    and seed) the smallest budget ``S`` whose doubling is converged, with ``budget`` the smallest ``S`` at which
    every configuration of the chain's first doubling is converged (None where the chain does not reach one)."""
    if len(folders) < 2:
        raise ValueError("a doubling check needs at least two run folders (S steps, then 2 S)")
    doublings = [compare(a, b, selection) for a, b in zip(folders, folders[1:], strict=False)]
    converged_at: dict[str, int | None] = {}
    verdicts: dict[str, dict[int, bool]] = {}
    for result in doublings:
        for row in result["rows"]:
            verdicts.setdefault(_row_key(row), {})[row["steps"]] = row["converged"]
    for key, by_steps in verdicts.items():
        converged_at[key] = min((steps for steps, ok in by_steps.items() if ok), default=None)
    first = {_row_key(row) for row in doublings[0]["rows"]}
    budgets = sorted({row["steps"] for result in doublings for row in result["rows"]})
    budget = next((s for s in budgets if all(verdicts[key].get(s) for key in first)), None)
    return {
        "rule": doublings[0]["rule"],
        "doublings": doublings,
        "converged_at": converged_at,
        "budget": budget,
    }


def _row_key(row: dict[str, Any]) -> str:
    recipe = row["recipe"]
    return f"{row['configuration']} {recipe['optimizer']} {recipe['lr']:g} seed {row['seed']}"


def summary_table(result: dict[str, Any]) -> str:
    """Configurations (rows) x budgets S (columns): whether doubling S is converged, and the first such S."""
    budgets = sorted({row["steps"] for d in result["doublings"] for row in d["rows"]})
    verdicts = {(_row_key(row), row["steps"]): row["converged"] for d in result["doublings"] for row in d["rows"]}
    lines = [
        "| configuration | " + " | ".join(f"{s} → {2 * s}" for s in budgets) + " | converged from |",
        "|---" * (len(budgets) + 2) + "|",
    ]
    for key, first in result["converged_at"].items():
        cells = ["–" if (key, s) not in verdicts else ("yes" if verdicts[(key, s)] else "**no**") for s in budgets]
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {first if first is not None else 'not reached'} |")
    return "\n".join(lines) + "\n"


def markdown_table(result: dict[str, Any]) -> str:
    """One line per configuration: LP mIoU (%), U and T at S and 2S steps, their changes, the verdict."""

    def num(x: float | None, fmt: str, scale: float = 1.0) -> str:
        return "–" if x is None else format(scale * x, fmt)

    lines = [
        "| configuration | recipe | S | LP mIoU S → 2S (%) | ΔLP (pt) | U S → 2S | ΔU | T S → 2S | ΔT | converged |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        b, d, c = row["base"], row["doubled"], row["change"]
        recipe = f"{row['recipe']['optimizer']} {row['recipe']['lr']:g}"
        lines.append(
            f"| {row['configuration']} | {recipe} | {row['steps']} "
            f"| {num(b['miou'], '.1f', 100)} → {num(d['miou'], '.1f', 100)} | {num(c['miou'], '+.1f', 100)} "
            f"| {num(b['U'], '.3f')} → {num(d['U'], '.3f')} | {num(c['U'], '+.3f')} "
            f"| {num(b['T'], '.3f')} → {num(d['T'], '.3f')} | {num(c['T'], '+.3f')} "
            f"| {'yes' if row['converged'] else '**no**'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the doubling tables (``python -m bench.study.doubling --help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.study.doubling",
        description="Convergence of a step budget: compare every run of each folder with its twin in the folder "
        "before it (the same configuration with half the steps) and write OUT.json and OUT.md. A student is "
        f"converged when doubling changes its linear-probe mIoU by at most {100 * MAX_MIOU_CHANGE:g} point and U "
        f"and T by at most {MAX_GEOMETRY_CHANGE:g}. With more than two folders (S, 2 S, 4 S, ...) every doubling is "
        "checked and the smallest converged budget reported.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("folders", type=Path, nargs="+", help="run folders at S, 2 S, ... steps (e.g. runs/tune)")
    parser.add_argument("--out", type=Path, default=Path("study/results/doubling"), help="output path stem")
    parser.add_argument("--recipes", type=Path, default=None,
                        help="check only the runs of the recipes this file selected (bench.study.tune's output, e.g. "
                             "bench/suites/recipes.json); default: every run of the folders")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        selection = read_selection(args.recipes) if args.recipes is not None else None
        result = chain(args.folders, selection)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result["command"] = "python -m bench.study.doubling " + " ".join(f.as_posix() for f in args.folders)
    if args.recipes is not None:
        result["command"] += f" --recipes {args.recipes.as_posix()}"
    result["command"] += f" --out {args.out.as_posix()}"  # rerunning it rewrites these files, not the default ones
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    tables = "\n".join(markdown_table(d) for d in result["doublings"])
    budget = result["budget"]
    verdict = (
        f"every configuration converged from {budget} steps"
        if budget
        else "no budget of the chain converges every configuration"
    )
    text = f"Doubling check ({result['command']}): {result['rule']}; {verdict}.\n\n{summary_table(result)}\n{tables}"
    args.out.with_suffix(".md").write_text(text)
    print(text)
    print(f"wrote {args.out.with_suffix('.json')} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
