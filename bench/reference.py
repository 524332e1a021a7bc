"""Reference rows of a study: what the student reaches with labels, without distillation, and what the teacher
itself reaches (issue 15; SLidR reports the same three kinds of row).

- **Supervised ceiling**: the run's student from random weights, trained with the labels of *every* train scan
  (the few-shot fine-tuning of :func:`bench.evaluate.fine_tune`, on the whole train split, for ``steps`` steps of
  ``batch_size`` scans at ``lr``), scored on the evaluation split. Distilled students are compared with it: a
  protocol that cannot approach it measures its own budget, not the losses.
- **Random floor**: the randomly initialised student under the linear probe (:func:`bench.evaluate.linear_probe`);
  SLidR reports 8.1% mIoU on nuScenes.
- **Teacher zero-shot**: the 2D teacher's own zero-shot segmentation of the evaluation points that project into
  an image (first pair of each point; points seen by no camera are not scored): ``argmax_c normalize(q) . e_c``.

CLI (one JSON file per row under ``--out``; a row whose file exists is skipped, so a sweep resumes). Written into
``references/`` beside a suite's run folders (``runs/<suite>/references/``), the rows appear in the suite's report
(``references.md``, :mod:`geomstruct.report`)::

    python -m bench.reference --suite full --rows ceiling floor teacher --out runs/full/references
    python -m bench.reference --suite full --rows ceiling --set voxel_size=0.1 --set seg_loss=ce+lovasz \\
        --steps 2000 --name ceiling-v0.1-lovasz     # one point of a student-size / budget curve
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench import distributed as dist
from bench.config import DistillConfig, with_overrides
from bench.data.classes import IGNORE_INDEX
from bench.evaluate import confusion_matrix, fine_tune, linear_probe, miou
from bench.results import write_json
from bench.scenes import ShardSampler, scene_loader
from bench.train import build_distill_student
from models.teachers.base import zero_shot_predict

ROWS = ("ceiling", "floor", "teacher")
CEILING_STEPS = 2000
"""Default steps of the supervised ceiling: the budget the ceiling curve of the full suite's student settled on
(README, The fair study); not a field of the distillation runs, whose identity it does not change."""
CEILING_BATCH_SIZE = 2
"""Default scans per step of the supervised ceiling."""


def supervised_ceiling(
    cfg: DistillConfig,
    steps: int,
    batch_size: int,
    lr: float,
    device: torch.device,
    progress: bool = False,
    workers: int = 0,
) -> dict[str, Any]:
    """mIoU of the student trained from random weights with every train label (module docstring)."""
    from bench.distill import _class_names, scene_data

    classes = _class_names(cfg.dataset)
    train = scene_data(cfg, cfg.train_split, None, progress)
    evaluation = scene_data(cfg, cfg.eval_split, None, progress).head(cfg.eval_scenes)
    student = build_distill_student(cfg)
    budget = dataclasses.replace(cfg, ft_steps=steps, ft_batch_size=batch_size, ft_lr=lr)
    result = fine_tune(student, train, evaluation, classes, budget, device, progress, workers)
    return {**result, "train_scans": len(train), "steps": steps, "batch_size": batch_size, "lr": lr}


def random_floor(cfg: DistillConfig, device: torch.device, progress: bool = False, workers: int = 0) -> dict[str, Any]:
    """Linear-probe mIoU of the randomly initialised student."""
    from bench.distill import _class_names, scene_data

    classes = _class_names(cfg.dataset)
    train = scene_data(cfg, cfg.train_split, None, progress)
    evaluation = scene_data(cfg, cfg.eval_split, None, progress).head(cfg.eval_scenes)
    return linear_probe(
        build_distill_student(cfg).to(device), train, evaluation, classes, cfg, device, progress, workers
    )


@torch.no_grad()
def teacher_zero_shot(
    cfg: DistillConfig, device: torch.device, progress: bool = False, workers: int = 0
) -> dict[str, Any]:
    """The teacher's own zero-shot mIoU on the paired evaluation points (module docstring)."""
    from bench.distill import _class_names, feature_root, make_teacher, scene_data
    from bench.features import text_embeddings

    classes = _class_names(cfg.dataset)
    teacher = make_teacher(cfg, device)
    evaluation = scene_data(cfg, cfg.eval_split, teacher, progress, workers=workers).head(cfg.eval_scenes)
    vocabulary = "semantickitti" if cfg.dataset == "semantickitti" else "nuscenes"
    text = text_embeddings(teacher, vocabulary, feature_root(cfg)).to(device)
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
    "Supervised-ceiling curve (python -m bench.reference --table DIR): every reference row computed into one folder, "
    "one line per student, downstream setting and budget; mIoU in %, with the classes whose IoU does not exceed "
    "a uniform random predictor's (bench.evaluate.miou; – where the row predates that measure)."
)


def write_curve(folder: Path) -> int:
    """Tabulate the reference rows of ``folder`` into ``folder/curve.{md,csv,tex}``; 2 when there is none."""
    from geomstruct.tables import load_references, write_references

    rows, problems = load_references([folder], pattern="*.json")
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    if not rows:
        print(f"error: no reference row of bench.reference in {folder}", file=sys.stderr)
        return 2
    for path in write_references(rows, folder, stem="curve", header_text=CURVE_HEADER):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Compute reference rows of a suite's configuration (``python -m bench.reference --help``)."""
    from bench.suites import load_suite

    parser = argparse.ArgumentParser(
        prog="python -m bench.reference",
        description="Reference rows of a distill suite's configuration: the supervised ceiling (the student trained "
        "with every train label), the random floor (random student, linear probe) and the teacher's own zero-shot. "
        "One JSON per row in --out; existing rows are skipped (a sweep resumes).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--suite", default="full", help="suite whose first run's configuration is used")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS), help="rows to compute")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a configuration field (YAML value), e.g. voxel_size=0.1")  # fmt: skip
    parser.add_argument("--steps", type=int, default=CEILING_STEPS, help="ceiling: training steps")
    parser.add_argument("--batch-size", type=int, default=CEILING_BATCH_SIZE, help="ceiling: scans per step")
    parser.add_argument("--lr", type=float, default=None, help="ceiling: learning rate (default: the run's ft_lr)")
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
        for row in args.rows:
            path = args.out / (f"{args.name}-{row}.json" if args.name else f"{row}.json")
            if path.is_file():
                print(f"{path}: exists, skipped", flush=True)
                continue
            if dist.is_main():
                print(f"{path}: computing the {row} row ...", flush=True)
            start = time.perf_counter()
            if row == "ceiling":
                lr = cfg.ft_lr if args.lr is None else args.lr
                result = supervised_ceiling(cfg, args.steps, args.batch_size, lr, device, progress, args.workers)
            elif row == "floor":
                result = random_floor(cfg, device, progress, args.workers)
            else:
                result = teacher_zero_shot(cfg, device, progress, args.workers)
            result["seconds"] = time.perf_counter() - start
            result.update(kind="reference", row=row, suite=suite.name, config=cfg.resolved())
            if dist.is_main():
                write_json(path, result)
                print(f"{path}: {row} mIoU {100 * result['miou']:.1f}% ({result['seconds']:.0f} s)", flush=True)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        dist.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
