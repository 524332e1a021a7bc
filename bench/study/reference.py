"""Reference rows of a study: what the student reaches with labels, without distillation, and what the teacher
itself reaches (SLidR reports the same three kinds of row; docs/method.md#reference-rows).

- **Supervised ceiling**: the run's student from random weights, trained with the labels of *every* train scan
  (the few-shot fine-tuning of :func:`bench.evaluate.fine_tune`, on the whole train split, for ``steps`` steps of
  ``batch_size`` scans at ``lr``), scored on the evaluation split. Distilled students are compared with it: a
  protocol that cannot approach it measures its own budget, not the losses.
- **Random floor**: the randomly initialised student under the linear probe (:func:`bench.evaluate.linear_probe`);
  SLidR reports 8.1% mIoU on nuScenes.
- **Teacher zero-shot**: the 2D teacher's own zero-shot segmentation of the evaluation points that project into
  an image (first pair of each point; points seen by no camera are not scored): ``argmax_c normalize(q) . e_c``.
- **Random-init few-shot** (``few_shot_random``): the randomly initialised student (``build_distill_student`` with
  the run's seed, no distillation) under the distilled students' few-shot protocol
  (:func:`bench.distill.few_shot_scores`): fine-tuned on each of the configuration's ``few_shot_subsets`` 1%
  subsets and scored on the evaluation split, the mean over subsets with its 95% Student-t interval; with
  ``--seeds`` once per random initialisation (seed ``s`` draws the weights and seeds the fine-tuning, as the run
  seed does for a distilled student), the mean over seeds with the interval over seeds, each seed's result in
  ``per_seed``. The OOD few-shot result (when the configuration's protocols hold ``few_shot_ood``) is under ``ood``.

CLI (one JSON file per row under ``--out``; a row whose file exists is skipped, so a sweep resumes). Written into
``references/`` beside a suite's run folders (``runs/<suite>/references/``), the rows appear in the suite's report
(``references.md``, :mod:`geomstruct.report`)::

    python -m bench.study.reference --suite full --rows ceiling floor teacher --out runs/full/references
    python -m bench.study.reference --suite full --rows ceiling --set voxel_size=0.1 --set seg_loss=ce+lovasz \\
        --steps 2000 --name ceiling-v0.1-lovasz     # one point of a student-size / budget curve
    python -m bench.study.reference --suite full --rows few_shot_random --set few_shot_subsets=5 \\
        --seeds 0 1 2 3 4 --out runs/full/references   # random init under the few-shot protocol, 5 seeds
    python -m bench.study.reference --table runs/reference/curve   # the supervised-ceiling curve of a folder
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bench import distributed as dist
from bench.config import DistillConfig, with_overrides
from bench.data.classes import IGNORE_INDEX
from bench.data.loader import ShardSampler, scene_loader
from bench.data.registry import class_names
from bench.distill import combine_scores, few_shot_scores, fine_tuning, probing_of
from bench.evaluate import confusion_matrix, fine_tune, linear_probe, miou
from bench.files import write_json
from bench.suites import load_suite
from bench.train import build_distill_student
from bench.workspace import Workspace, zero_shot_text
from geomstruct.tables import load_references, write_references
from models.teachers.base import zero_shot_predict

ROWS = ("ceiling", "floor", "teacher", "few_shot_random")
CEILING_STEPS = 2000
"""Default steps of the supervised ceiling: the budget the ceiling curve of the full suite's student settled on
(study/README.md, the supervised-ceiling curve); not a field of the distillation runs, whose identity it does not
change."""
CEILING_BATCH_SIZE = 2
"""Default scans per step of the supervised ceiling."""


def supervised_ceiling(
    workspace: Workspace,
    cfg: DistillConfig,
    steps: int,
    batch_size: int,
    lr: float,
    device: torch.device,
    progress: bool = False,
    workers: int = 0,
) -> dict[str, Any]:
    """mIoU of the student trained from random weights with every train label (module docstring)."""
    classes = class_names(cfg.data.dataset)
    train = workspace.scenes(cfg, cfg.data.train_split, None, progress)
    evaluation = workspace.scenes(cfg, cfg.data.eval_split, None, progress).head(cfg.data.eval_scenes)
    student = build_distill_student(cfg)
    budget = dataclasses.replace(cfg.few_shot, steps=steps, batch_size=batch_size, lr=lr)
    result = fine_tune(student, train, evaluation, classes, budget, device, progress, workers, **fine_tuning(cfg))
    return {**result, "train_scans": len(train), "steps": steps, "batch_size": batch_size, "lr": lr}


def random_floor(
    workspace: Workspace, cfg: DistillConfig, device: torch.device, progress: bool = False, workers: int = 0
) -> dict[str, Any]:
    """Linear-probe mIoU of the randomly initialised student."""
    classes = class_names(cfg.data.dataset)
    train = workspace.scenes(cfg, cfg.data.train_split, None, progress)
    evaluation = workspace.scenes(cfg, cfg.data.eval_split, None, progress).head(cfg.data.eval_scenes)
    return linear_probe(
        build_distill_student(cfg).to(device),
        train,
        evaluation,
        classes,
        cfg.linear_probe,
        device,
        progress,
        workers,
        **probing_of(cfg),
    )


def _over_seeds(results: list[dict[str, Any]], seeds: Sequence[int], subsets: int) -> dict[str, Any]:
    """One seed: its few-shot result. Several: :func:`bench.distill.combine_scores` over the seeds' results (the
    interval over seeds), each seed's result in ``per_seed``. ``interval_over`` says what ``miou_ci`` spans."""
    if len(results) == 1:
        return {**results[0], "interval_over": "subsets" if subsets > 1 else None}
    per_seed = [{"seed": seed, **result} for seed, result in zip(seeds, results, strict=True)]
    combined = combine_scores(results)
    return {**combined, "train_scans": results[0]["train_scans"], "per_seed": per_seed, "interval_over": "seeds"}


def random_few_shot(
    workspace: Workspace,
    cfg: DistillConfig,
    device: torch.device,
    progress: bool = False,
    workers: int = 0,
    seeds: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Few-shot (and OOD few-shot) mIoU of the randomly initialised student under the distilled students' protocol,
    on every 1% subset of ``cfg``, for each seed of ``seeds`` (default: the run's seed; module docstring)."""
    seeds = [cfg.seed] if not seeds else [int(s) for s in seeds]
    evaluation = workspace.scenes(cfg, cfg.data.eval_split, None, progress).head(cfg.data.eval_scenes)
    with_ood = "few_shot_ood" in cfg.protocols
    eval_ood = workspace.scenes(cfg, cfg.ood.eval_split, None, progress, ood=True) if with_ood else None
    inside, outside = [], []
    for seed in seeds:
        seeded = dataclasses.replace(cfg, seed=seed)
        student = build_distill_student(seeded)
        classes = class_names(cfg.data.dataset)
        inside.append(few_shot_scores(workspace, student, seeded, evaluation, classes, device, progress, workers))
        if eval_ood is not None:
            classes = class_names(cfg.ood.dataset)
            outside.append(
                few_shot_scores(workspace, student, seeded, eval_ood, classes, device, progress, workers, ood=True)
            )
    budget = {"steps": cfg.few_shot.steps, "batch_size": cfg.few_shot.batch_size, "lr": cfg.few_shot.lr}
    result = {**_over_seeds(inside, seeds, cfg.few_shot.subsets), **budget}
    result |= {"n_subsets": cfg.few_shot.subsets, "seeds": seeds}
    if outside:
        ood = _over_seeds(outside, seeds, cfg.few_shot.subsets)
        result["ood"] = {**ood, "dataset": cfg.ood.dataset, "split": cfg.ood.eval_split}
    return result


@torch.no_grad()
def teacher_zero_shot(
    workspace: Workspace, cfg: DistillConfig, device: torch.device, progress: bool = False, workers: int = 0
) -> dict[str, Any]:
    """The teacher's own zero-shot mIoU on the paired evaluation points (module docstring)."""
    classes = class_names(cfg.data.dataset)
    teacher = workspace.teacher(cfg, device)
    evaluation = workspace.scenes(cfg, cfg.data.eval_split, teacher, progress, workers=workers).head(
        cfg.data.eval_scenes
    )
    text = zero_shot_text(cfg, teacher).to(device)
    conf = torch.zeros(len(classes), len(classes), dtype=torch.int64)
    for batch in scene_loader(evaluation, ShardSampler(len(evaluation)), workers, device):
        for scene in batch.scenes:
            rows = scene.first_pairs()
            if not len(rows):
                continue
            pred = zero_shot_predict(scene.pair_features(rows, device), text)
            labels = scene.labels[scene.pairs[rows, 0]]
            conf += torch.from_numpy(confusion_matrix(pred, labels, len(classes), IGNORE_INDEX))
    return miou(dist.all_reduce_sum(conf).numpy(), classes)


CURVE_HEADER = (
    "Supervised-ceiling curve (python -m bench.study.reference --table DIR): every reference row computed into one "
    "folder, one line per student, downstream setting and budget; mIoU in %, with the classes whose IoU does not "
    "exceed a uniform random predictor's (bench.evaluate.miou; – where the row predates that measure)."
)


def write_curve(folder: Path) -> int:
    """Tabulate the reference rows of ``folder`` into ``folder/curve.{md,csv,tex}``; 2 when there is none."""
    rows, problems = load_references([folder], pattern="*.json")
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    if not rows:
        print(f"error: no reference row of bench.study.reference in {folder}", file=sys.stderr)
        return 2
    for path in write_references(rows, folder, stem="curve", header_text=CURVE_HEADER):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Compute reference rows of a suite's configuration (``python -m bench.study.reference --help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.study.reference",
        description="Reference rows of a distill suite's configuration: the supervised ceiling (the student trained "
        "with every train label), the random floor (random student, linear probe), the teacher's own zero-shot and the "
        "random student under the few-shot protocol (few_shot_random). One JSON per row in --out; existing rows are "
        "skipped (a sweep resumes).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--suite", default="full", help="suite whose first run's configuration is used")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS), help="rows to compute")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a configuration field (YAML value), e.g. voxel_size=0.1")  # fmt: skip
    parser.add_argument("--steps", type=int, default=CEILING_STEPS, help="ceiling: training steps")
    parser.add_argument("--batch-size", type=int, default=CEILING_BATCH_SIZE, help="ceiling: scans per step")
    parser.add_argument("--lr", type=float, default=None, help="ceiling: learning rate (default: the run's ft_lr)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                        help="few_shot_random: random initialisations (mean and 95%% interval over them; default: "
                        "the run's seed)")  # fmt: skip
    parser.add_argument("--name", default=None, help="file-name prefix of the rows (default: the row name)")
    parser.add_argument("--out", type=Path, default=Path("runs/reference"), help="output folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--table", type=Path, default=None, metavar="DIR",
                        help="compute nothing: tabulate every row in DIR (a student-size / budget curve) into "
                        "DIR/curve.md, .csv and .tex")  # fmt: skip
    args = parser.parse_args(argv)
    if args.table is not None:
        return write_curve(args.table)
    device = dist.init(torch.device(args.device))
    try:
        suite = load_suite(args.suite)
        try:
            run = with_overrides(suite.runs[0], args.set)
        except ValueError as exc:
            parser.error(f"--set: {exc}")
        cfg = DistillConfig.from_run({k: v for k, v in run.items() if k not in ("kind", "suite")})
        args.out.mkdir(parents=True, exist_ok=True)
        progress = not args.no_progress
        workspace = Workspace()
        for row in args.rows:
            path = args.out / (f"{args.name}-{row}.json" if args.name else f"{row}.json")
            if path.is_file():
                print(f"{path}: exists, skipped", flush=True)
                continue
            if dist.is_main():
                print(f"{path}: computing the {row} row ...", flush=True)
            start = time.perf_counter()
            if row == "ceiling":
                lr = cfg.few_shot.lr if args.lr is None else args.lr
                result = supervised_ceiling(
                    workspace, cfg, args.steps, args.batch_size, lr, device, progress, args.workers
                )
            elif row == "floor":
                result = random_floor(workspace, cfg, device, progress, args.workers)
            elif row == "few_shot_random":
                result = random_few_shot(workspace, cfg, device, progress, args.workers, args.seeds)
            else:
                result = teacher_zero_shot(workspace, cfg, device, progress, args.workers)
            result["seconds"] = time.perf_counter() - start
            result.update(kind="reference", row=row, suite=suite.name, config=cfg.flat())
            if dist.is_main():
                write_json(path, result)
                score = "undefined" if result["miou"] is None else f"{100 * result['miou']:.1f}%"
                print(f"{path}: {row} mIoU {score} ({result['seconds']:.0f} s)", flush=True)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        dist.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
