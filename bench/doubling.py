"""The convergence check of a step budget (issue 15, item 4): does doubling the steps change a student?

A student trained for ``S`` steps is *converged at budget S* when the same configuration trained for ``2 S``
steps (everything else equal: loss, recipe, seed, data, schedule shape) differs by at most

- ``MAX_MIOU_CHANGE`` = 1 point of linear-probe mIoU on the runs' eval split (the val split when checked on the
  tuning suite), and
- ``MAX_GEOMETRY_CHANGE`` = 0.05 in U and in T (``metrics.json`` ``geometry``).

The rule was fixed by the issue before any number was seen. The runs are paired by their ``config.json``: a run
of the doubled folder is compared with the run of the base folder whose configuration is identical except
``steps`` (and ``checkpoint_every``), with twice its steps.

CLI::

    python -m bench.doubling runs/tune runs/doubling --out bench/suites/doubling   # .json and .md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.suites import recipe_key

MAX_MIOU_CHANGE = 0.01
"""Largest linear-probe mIoU change (a fraction: 1 point) of a converged student when its steps double."""
MAX_GEOMETRY_CHANGE = 0.05
"""Largest change of U and of T of a converged student when its steps double."""
IGNORED_FIELDS = ("steps", "checkpoint_every")
"""Configuration fields that may differ between a run and its doubled twin (besides the steps themselves)."""


def _finished_runs(folder: Path) -> list[tuple[Path, dict[str, Any], dict[str, Any]]]:
    """``(run folder, config, metrics)`` of every finished run directly under ``folder``."""
    runs = []
    for metrics_path in sorted(folder.glob("*/metrics.json")):
        config_path = metrics_path.parent / "config.json"
        try:
            config, metrics = json.loads(config_path.read_text()), json.loads(metrics_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{metrics_path.parent}: unreadable run ({exc})") from None
        runs.append((metrics_path.parent, config, metrics))
    return runs


def _identity(config: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in IGNORED_FIELDS}, sort_keys=True)


def _values(metrics: dict[str, Any]) -> dict[str, float | None]:
    geometry = metrics.get("geometry") or {}
    probe = metrics.get("linear_probe") or {}
    return {"miou": probe.get("miou"), "U": geometry.get("U"), "T": geometry.get("T")}


def compare(base: Path, doubled: Path) -> dict[str, Any]:
    """The doubling table of the runs of ``doubled`` against their twins in ``base`` (module docstring).

    Raises:
        ValueError: a doubled run has no twin with half its steps in ``base``, or lacks the linear probe.
    """
    twins = {_identity(config): (path, config, metrics) for path, config, metrics in _finished_runs(base)}
    rows = []
    for path, config, metrics in _finished_runs(doubled):
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
    """Write the doubling table (``python -m bench.doubling --help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.doubling",
        description="Convergence of a step budget: compare every run of DOUBLED with its twin in BASE (the same "
        "configuration with half the steps) and write OUT.json and OUT.md. A student is converged when doubling "
        f"changes its linear-probe mIoU by at most {100 * MAX_MIOU_CHANGE:g} point and U and T by at most "
        f"{MAX_GEOMETRY_CHANGE:g}.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("base", type=Path, help="run folders at S steps (e.g. runs/tune)")
    parser.add_argument("doubled", type=Path, help="run folders at 2 S steps (e.g. runs/doubling)")
    parser.add_argument("--out", type=Path, default=Path("bench/suites/doubling"), help="output path stem")
    args = parser.parse_args(argv)
    try:
        result = compare(args.base, args.doubled)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result["command"] = f"python -m bench.doubling {args.base.as_posix()} {args.doubled.as_posix()}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    table = markdown_table(result)
    args.out.with_suffix(".md").write_text(f"Doubling check ({result['command']}): {result['rule']}.\n\n{table}")
    print(table)
    print(f"all converged: {result['all_converged']}; wrote {args.out.with_suffix('.json')} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
