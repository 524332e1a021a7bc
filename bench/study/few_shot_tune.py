"""Select the few-shot protocol on val: the same downstream settings serve every loss, chosen on val.

A grid file (``bench/suites/few_shot/grid.yaml``), fixed before any of its runs, lists ``options``: downstream
fields (``ft_*``, ``seg_*``) to set, and ``defaults``: fields every evaluation takes (the val splits). The
students are the selected runs of a recipes file (:mod:`bench.study.tune`: one trained, seed-0 student per loss
configuration, from the tuning folder). Each student is fine-tuned under every option, in distribution (its
dataset's 1% split, scored on ``eval_split``) and out of it (the OOD dataset's 1% split, scored on
``ood_eval_split``), exactly as the full suite's ``few_shot`` and ``few_shot_ood`` protocols do
(:func:`bench.evaluate.fine_tune`).

**Criterion** (:data:`CRITERION`, written down before the grid runs): for each option the mean over the
configurations of ``(few_shot + few_shot_ood) / 2`` mIoU; the highest wins, ties go to the option listed first.
The output file holds every score, the fine-tunings' loss traces (a *spike*: the largest training loss above
twice the first), the selection and the command; a Markdown table is written beside it. Every evaluation is
saved in the work folder as soon as it ends, so an interrupted selection resumes where it stopped.

CLI::

    python -m bench.study.few_shot_tune --grid bench/suites/few_shot/grid.yaml --runs runs/tune \\
        --recipes bench/suites/recipes.json --out study/results/few_shot/protocol.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

from bench.config import DistillConfig
from bench.data.registry import class_names
from bench.distill import fine_tuning
from bench.evaluate import fine_tune
from bench.files import read_json, write_json
from bench.train import build_distill_student, load_checkpoint
from bench.workspace import Workspace
from geomstruct.run_folder import CHECKPOINT_FILE, LEGACY_KEYS, METRICS_FILE, finished_runs, read_record

CRITERION = "mean over configurations of (few_shot + few_shot_ood) / 2 mIoU on val, higher is better; ties: first"
PROTOCOLS = ("few_shot", "few_shot_ood")
"""The protocols the selection scores (of :data:`geomstruct.run_folder.PROTOCOLS`)."""
SPIKE = 2.0
"""A fine-tuning *spikes* when its largest training loss exceeds ``SPIKE`` times its first."""
OPTION_PREFIXES = ("ft_", "seg_")
"""The fields an option may set: the downstream protocol's, never the distillation's."""


@dataclass(frozen=True)
class Grid:
    """The options (downstream fields to set) and the defaults (fields every evaluation takes) of a selection."""

    options: tuple[dict[str, Any], ...]
    defaults: dict[str, Any]


def load_grid(path: Path) -> Grid:
    """Read a grid file (module docstring).

    Raises:
        ValueError: naming the file: not a mapping, no options, an option setting a field that is not a
            downstream field, a default that is not a configuration field, or two equal options.
    """
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read the grid ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("options"), list) or not data["options"]:
        raise ValueError(f"{path}: a grid is a mapping with a non-empty list `options` (and optional `defaults`)")
    names = set(DistillConfig.field_defaults()) | set(LEGACY_KEYS) | {"seed"}
    defaults = data.get("defaults") or {}
    unknown = sorted(set(defaults) - names)
    if unknown:
        raise ValueError(f"{path}: defaults {unknown} are not configuration fields")
    options = []
    for option in data["options"]:
        if not isinstance(option, dict) or not option:
            raise ValueError(f"{path}: every option is a non-empty mapping of fields; got {option!r}")
        bad = sorted(k for k in option if k not in names or not k.startswith(OPTION_PREFIXES))
        if bad:
            raise ValueError(f"{path}: option {option} sets {bad}; an option sets downstream fields only (ft_*, seg_*)")
        options.append(dict(option))
    labels = [option_label(o) for o in options]
    if len(set(labels)) != len(labels):
        raise ValueError(f"{path}: two options are equal ({labels})")
    return Grid(tuple(options), dict(defaults))


def option_label(option: dict[str, Any]) -> str:
    """A folder-safe name of an option, e.g. ``ft_lr0.05-ft_warmup0.1``."""
    return "-".join(f"{k}{v}" for k, v in option.items())


def selected_students(recipes: Path, runs_dir: Path) -> list[tuple[str, Path]]:
    """``(configuration, run folder)`` of every selection in the recipes file, in its order.

    Raises:
        ValueError: the recipes file is missing, or a selected run has not finished in ``runs_dir``.
    """
    if not recipes.is_file():
        raise ValueError(f"recipes file {recipes} does not exist: run `python -m bench.study.tune` first")
    selected = read_json(recipes)["selected"]
    finished = finished_runs(runs_dir, [chosen["run"] for chosen in selected.values()])
    students = []
    for configuration, chosen in selected.items():
        folder = runs_dir / chosen["run"]
        if chosen["run"] not in finished or not (folder / CHECKPOINT_FILE).is_file():
            raise ValueError(
                f"{folder}: the selected run of {configuration} has not finished (no {METRICS_FILE} or "
                f"{CHECKPOINT_FILE})"
            )
        students.append((configuration, folder))
    return students


def student_config(folder: Path, grid: Grid, option: dict[str, Any]) -> DistillConfig:
    """The run's configuration (``config.json``) with the grid's defaults, then the option, set."""
    stored = dict(read_record(folder).config or {})
    stored.pop("kind", None)
    return DistillConfig.from_run({**stored, **grid.defaults, **option})


def evaluate(
    workspace: Workspace, folder: Path, cfg: DistillConfig, device: torch.device, workers: int = 0
) -> dict[str, Any]:
    """The few-shot and OOD few-shot results of the run's trained student under ``cfg``."""
    state = load_checkpoint(folder / CHECKPOINT_FILE)
    if state is None or int(state["step"]) != cfg.distillation.steps:
        raise ValueError(
            f"{folder / CHECKPOINT_FILE} is not the run's final checkpoint (step {cfg.distillation.steps})"
        )
    student = build_distill_student(cfg)
    student.load_state_dict(state["student"])
    few = workspace.scenes(cfg, "train_1pct", None, False)
    evaluation = workspace.scenes(cfg, cfg.data.eval_split, None, False).head(cfg.data.eval_scenes)
    few_ood = workspace.scenes(cfg, "train_1pct", None, False, ood=True)
    eval_ood = workspace.scenes(cfg, cfg.ood.eval_split, None, False, ood=True)
    return {
        "few_shot": fine_tune(
            student,
            few,
            evaluation,
            class_names(cfg.data.dataset),
            cfg.few_shot,
            device,
            False,
            workers,
            **fine_tuning(cfg),
        ),
        "few_shot_ood": fine_tune(
            student,
            few_ood,
            eval_ood,
            class_names(cfg.ood.dataset),
            cfg.few_shot,
            device,
            False,
            workers,
            **fine_tuning(cfg),
        ),
    }


def run_grid(
    grid: Grid,
    students: list[tuple[str, Path]],
    work: Path,
    device: torch.device,
    workers: int = 0,
    progress: bool = True,
) -> None:
    """Evaluate every (option, student) whose result is not yet in ``work/<option>/<run>.json``."""
    pending = [
        (option, configuration, folder)
        for option in grid.options
        for configuration, folder in students
        if not (work / option_label(option) / f"{folder.name}.json").is_file()
    ]
    workspace = Workspace()
    for option, configuration, folder in tqdm(pending, desc="few-shot protocols", disable=not progress):
        cfg = student_config(folder, grid, option)
        start = time.perf_counter()
        result = evaluate(workspace, folder, cfg, device, workers)
        result.update(
            configuration=configuration,
            run=folder.name,
            option=option,
            seconds=round(time.perf_counter() - start, 1),
        )
        write_json(work / option_label(option) / f"{folder.name}.json", result)


def select(grid: Grid, students: list[tuple[str, Path]], work: Path, command: str) -> dict[str, Any]:
    """The selection's content (module docstring) from the evaluations in ``work``.

    Raises:
        ValueError: an evaluation is missing (run the grid first) or has no mIoU.
    """
    rows = []
    for option in grid.options:
        entries = []
        for configuration, folder in students:
            path = work / option_label(option) / f"{folder.name}.json"
            if not path.is_file():
                raise ValueError(f"{path} is missing: run the grid first (without --select-only)")
            result = read_json(path)
            scores = {p: result[p]["miou"] for p in PROTOCOLS}
            if any(s is None for s in scores.values()):
                raise ValueError(f"{path}: a protocol has no mIoU")
            spikes = [p for p in PROTOCOLS if _spiked(result[p])]
            entries.append({"configuration": configuration, "run": folder.name, **scores, "spikes": spikes})
        means = {p: sum(e[p] for e in entries) / len(entries) for p in PROTOCOLS}
        rows.append(
            {
                "option": option,
                "score": sum(means.values()) / len(PROTOCOLS),
                "mean": means,
                "worst": {p: min(e[p] for e in entries) for p in PROTOCOLS},
                "spikes": sum(len(e["spikes"]) for e in entries),
                "students": entries,
            }
        )
    best = max(range(len(rows)), key=lambda i: (rows[i]["score"], -i))
    return {
        "criterion": CRITERION,
        "spike": f"largest training loss is above {SPIKE:g} times its first",
        "defaults": grid.defaults,
        "command": command,
        "selected": rows[best]["option"],
        "options": rows,
    }


def _spiked(result: dict[str, Any]) -> bool:
    trace = result.get("train_loss")
    return trace is not None and trace["max"] > SPIKE * trace["first"]


def markdown_table(result: dict[str, Any]) -> str:
    """Options (rows) with their criterion, means, worst students and spikes; then configurations x options."""
    labels = [option_label(r["option"]) for r in result["options"]]
    chosen = option_label(result["selected"])
    lines = [
        "| option | criterion | few-shot mean | OOD few-shot mean | few-shot worst | OOD worst | spikes |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, row in zip(labels, result["options"], strict=True):
        name = f"**{label}**" if label == chosen else label
        lines.append(
            f"| {name} | {100 * row['score']:.1f} | {100 * row['mean']['few_shot']:.1f} | "
            f"{100 * row['mean']['few_shot_ood']:.1f} | {100 * row['worst']['few_shot']:.1f} | "
            f"{100 * row['worst']['few_shot_ood']:.1f} | {row['spikes']} |"
        )
    lines += ["", "Few-shot / OOD few-shot mIoU (%) of every student; * marks a fine-tuning whose loss spiked:", ""]
    lines += ["| configuration | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for i, student in enumerate(result["options"][0]["students"]):
        cells = []
        for row in result["options"]:
            e = row["students"][i]
            cells.append(" / ".join(f"{100 * e[p]:.1f}{'*' if p in e['spikes'] else ''}" for p in PROTOCOLS))
        lines.append(f"| {student['configuration']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the selection and write its file (``python -m bench.study.few_shot_tune --help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.study.few_shot_tune",
        description="Choose the few-shot protocol (fine-tuning settings) on val: fine-tune the selected student of "
        "every loss configuration under every option of a grid file, in and out of distribution, and select the "
        f"option by the {CRITERION}. Evaluations are saved as they end (the selection resumes).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--grid", type=Path, default=Path("bench/suites/few_shot/grid.yaml"), help="grid file")
    parser.add_argument("--runs", type=Path, default=Path("runs/tune"), help="the tuning suite's run folders")
    parser.add_argument("--recipes", type=Path, default=Path("bench/suites/recipes.json"), help="recipes file")
    parser.add_argument("--work", type=Path, default=Path("runs/few_shot_tune"), help="evaluations folder")
    parser.add_argument("--out", type=Path, default=Path("study/results/few_shot/protocol.json"), help="output")
    parser.add_argument("--select-only", action="store_true", help="evaluate nothing: select from --work")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (never change a result)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    command = (
        f"python -m bench.study.few_shot_tune --grid {args.grid.as_posix()} --runs {args.runs.as_posix()} "
        f"--recipes {args.recipes.as_posix()}"
    )
    try:
        grid = load_grid(args.grid)
        students = selected_students(args.recipes, args.runs)
        if not args.select_only:
            run_grid(grid, students, args.work, torch.device(args.device), args.workers, not args.no_progress)
        result = select(grid, students, args.work, command)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    table = markdown_table(result)
    args.out.with_suffix(".md").write_text(
        f"Few-shot protocol selection on val: {CRITERION}. mIoU in %; the selected option in bold; spikes: "
        f"fine-tunings whose {result['spike']}. Evaluation data: {json.dumps(result['defaults'])}. Regenerate: "
        f"`{command} --out {args.out.as_posix()}`.\n\n{table}"
    )
    print(table)
    print(f"selected {option_label(result['selected'])}; wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
