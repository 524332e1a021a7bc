"""Calibrate the synthetic teacher to CLIP's 2D geometry and write ``models/teachers/data/synthetic_teacher.json``.

The synthetic teacher (:mod:`models.teachers.synthetic`) is calibrated on the synthetic world, so its calibration
lives here, in the benchmark (``models`` does not import ``bench``).

Only two numbers are fitted, the shared-direction weight ``beta`` (``common``) and the noise scale ``sigma``
(``noise``), so that a class-balanced sample of paired pixel features
(:func:`paired_components`, calibration seed ``0``, ``n_per_class`` pairs per class)
measures the paper's CLIP values ``U = 1.54`` and ``T = 0.73`` with :mod:`geomstruct.metrics`. Nothing about
students or losses enters. Every other parameter is a documented choice
(:class:`~models.teachers.synthetic.SyntheticTeacherParams`).

Search: Newton's method on ``F(beta, sigma) = (U - U*, T - T*)`` with a forward-difference Jacobian (step
``1e-3``) from ``(0.7, 0.45)``, stopping when ``|U - U*| < 1e-3`` and ``|T - T*| < 5e-4``; the result is rounded
to 4 decimals. ``T`` is exact on the whole sample; inside the search ``U`` is evaluated exactly on a fixed random
subset of ``u_points`` sample points (a named approximation: an unbiased estimate of the pair mean, its error is
reported as the difference to the exact ``U`` of the whole sample, written to the file). The search is
deterministic, so re-running it reproduces the committed parameters (``--check``).

Usage::

    python -m bench.study.teacher_calibration            # fit and write models/teachers/data/synthetic_teacher.json
    python -m bench.study.teacher_calibration --check    # fit again and compare with the committed file
    python -m bench.study.teacher_calibration --report   # U, T for seeds 1 2 3 and zero-shot mIoU per class
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from bench.data.classes import IGNORE_INDEX, NUSCENES_CLASSES
from bench.data.synthetic import generate_scene
from geomstruct.metrics import tolerance, uniformity
from geomstruct.sampling import balanced_sample
from models.teachers.base import sample, stable_hash, zero_shot_classifier, zero_shot_predict
from models.teachers.synthetic import (
    SyntheticTeacher,
    SyntheticTeacherParams,
    default_params_path,
    load_params,
)

SCRIPT = "python -m bench.study.teacher_calibration"
"""The command that writes the parameter file (recorded as its ``calibration.script``)."""

CALIBRATION_SEED = 0
CHECK_SEEDS = (1, 2, 3)


@dataclass
class PairedComponents:
    """Semantic and noise components (``(M, D)`` float64 each) of paired pixels, with their point labels."""

    semantic: np.ndarray
    noise: np.ndarray
    labels: np.ndarray
    scene_seeds: list[int]


def balanced_scene_seeds(seed: int, n_scenes: int) -> list[int]:
    """Scene seeds of :func:`sample_balanced_features`: ``n_scenes`` distinct seeds in ``[0, 10^6)`` drawn with
    ``seed`` (outside the synthetic val/test splits, which start at ``10^6``)."""
    drawn = np.random.default_rng([seed, stable_hash("scenes")]).choice(10**6, n_scenes, replace=False)
    return sorted(int(s) for s in drawn)


def paired_components(
    teacher: SyntheticTeacher,
    n_per_class: int,
    seed: int,
    n_scenes: int = 64,
    variant: str = "nuscenes",
    progress: bool = False,
) -> PairedComponents:
    """Components of a class-balanced sample of paired pixels (the data of :func:`sample_balanced_features`).

    Scenes :func:`balanced_scene_seeds` are generated; every (point, camera) pairing with a labelled point is a
    candidate labelled by its *point's* class (so parallax errors count, as for real data); up to
    ``n_per_class`` candidates per class are drawn with ``geomstruct.sampling.balanced_sample(seed)``.
    """
    seeds = balanced_scene_seeds(seed, n_scenes)
    maps: list[tuple[str, str, np.ndarray, np.ndarray]] = []
    pairs: list[np.ndarray] = []  # rows: camera slot, row, col, label
    for scene_seed in tqdm(seeds, desc="synthetic scenes", disable=not progress):
        scan = generate_scene(scene_seed, variant)
        for view in scan.cameras:
            labels = scan.labels[view.pairing[:, 0]]
            ok = labels != IGNORE_INDEX
            slot = np.full(int(ok.sum()), len(maps))
            pairs.append(np.stack([slot, view.pairing[ok, 1], view.pairing[ok, 2], labels[ok]], axis=1))
            maps.append((scan.scan_id, view.name, view.class_map, view.instance_map))
    table = np.concatenate(pairs)
    chosen = balanced_sample(table[:, 3], n_per_class, seed, classes=range(len(NUSCENES_CLASSES))).indices
    table = table[chosen]
    semantic = np.zeros((len(table), teacher.dim))
    noise = np.zeros((len(table), teacher.dim))
    for slot in np.unique(table[:, 0]):
        rows = np.flatnonzero(table[:, 0] == slot)
        scan_id, name, class_map, instance_map = maps[slot]
        sem, noi = teacher.components(scan_id, name, class_map, instance_map)
        size = class_map.shape
        r, c = table[rows, 1], table[rows, 2]
        semantic[rows] = sample(torch.from_numpy(sem), r, c, size).numpy()
        noise[rows] = sample(torch.from_numpy(noi), r, c, size).numpy()
    return PairedComponents(semantic, noise, table[:, 3].astype(np.int64), seeds)


def sample_balanced_features(
    n_per_class: int,
    seed: int,
    n_scenes: int = 64,
    variant: str = "nuscenes",
    teacher: SyntheticTeacher | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """A class-balanced sample of the teacher's paired pixel features, to check its calibration.

    Args:
        n_per_class: pairs drawn per class (all of them for a class with fewer in the ``n_scenes`` scenes; the
            rarest synthetic classes have a few hundred per 64 scenes).
        seed: selects the scenes (:func:`balanced_scene_seeds`) and the draw.
        n_scenes: scenes generated.
        variant: synthetic world variant.
        teacher: default: the committed calibrated teacher.

    Returns:
        ``features`` ``(M, D)`` float32 with unit rows and ``labels`` ``(M,)`` int64 (point classes).
    """
    teacher = SyntheticTeacher.from_file() if teacher is None else teacher
    comp = paired_components(teacher, n_per_class, seed, n_scenes, variant, progress)
    feats = torch.from_numpy(teacher.combine(comp.semantic, comp.noise, axis=1))
    return F.normalize(feats, dim=1).numpy().astype(np.float32), comp.labels


def measure(
    teacher: SyntheticTeacher, comp: PairedComponents, u_index: np.ndarray | None = None
) -> tuple[float, float]:
    """``(U, T)`` of the sample's features under the teacher's parameters (``U`` on ``u_index`` rows if given)."""
    feats = teacher.combine(comp.semantic, comp.noise, axis=1)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    u_feats = feats if u_index is None else feats[u_index]
    return uniformity(u_feats.astype(np.float32)), tolerance(feats, comp.labels)


def fit(
    base: SyntheticTeacherParams,
    comp: PairedComponents,
    u_points: int = 12000,
    start: tuple[float, float] = (0.7, 0.45),
    max_iter: int = 20,
    log=print,
) -> tuple[SyntheticTeacherParams, float, float]:
    """Newton search for ``(common, noise)`` (module docstring); returns the rounded parameters and ``(U~, T)``."""
    target = np.array([base.targets["U"], base.targets["T"]])
    rng = np.random.default_rng(CALIBRATION_SEED)
    u_index = np.sort(rng.choice(len(comp.labels), min(u_points, len(comp.labels)), replace=False))
    teacher = SyntheticTeacher(base)

    def evaluate(x: np.ndarray) -> np.ndarray:
        teacher.params = replace(base, common=float(x[0]), noise=float(x[1]))
        return np.array(measure(teacher, comp, u_index)) - target

    x = np.array(start, dtype=np.float64)
    step = 1e-3
    for it in range(max_iter):
        fx = evaluate(x)
        log(f"iter {it}: common={x[0]:.5f} noise={x[1]:.5f}  U-U*={fx[0]:+.4f} T-T*={fx[1]:+.4f}")
        if abs(fx[0]) < 1e-3 and abs(fx[1]) < 5e-4:
            break
        jac = np.stack([(evaluate(x + step * e) - fx) / step for e in np.eye(2)], axis=1)
        x = x - np.linalg.solve(jac, fx)
        x = np.clip(x, [0.0, 1e-3], [0.99, 10.0])
    else:
        raise RuntimeError(f"calibration did not converge in {max_iter} iterations")
    fitted = replace(base, common=round(float(x[0]), 4), noise=round(float(x[1]), 4))
    teacher.params = fitted
    u_sub, t_all = measure(teacher, comp, u_index)
    return fitted, u_sub, t_all


def calibrate(n_per_class: int = 5000, n_scenes: int = 64, u_points: int = 12000, progress: bool = True, log=print):
    """Fit the committed choices' ``common`` and ``noise``; returns the parameters with their provenance."""
    base = SyntheticTeacherParams(common=0.7, noise=0.45)
    comp = paired_components(SyntheticTeacher(base), n_per_class, CALIBRATION_SEED, n_scenes, progress=progress)
    fitted, u_sub, t_all = fit(base, comp, u_points=u_points, log=log)
    u_exact, _ = measure(SyntheticTeacher(fitted), comp)
    counts = np.bincount(comp.labels, minlength=len(NUSCENES_CLASSES))
    provenance = {
        "script": SCRIPT,
        "seed": CALIBRATION_SEED,
        "n_per_class": n_per_class,
        "n_scenes": n_scenes,
        "variant": "nuscenes",
        "counts": dict(zip(NUSCENES_CLASSES, counts.tolist(), strict=True)),
        "u_points": u_points,
        "U_search_subset": round(u_sub, 4),
        "U": round(u_exact, 4),
        "T": round(t_all, 4),
    }
    return replace(fitted, calibration=provenance)


def zero_shot_miou(
    teacher: SyntheticTeacher, n_scenes: int = 16, first_seed: int = 1_000_000, variant: str = "nuscenes"
) -> tuple[dict[str, float], float]:
    """Zero-shot IoU per class of the teacher's own paired pixel features (docs/method.md#zero-shot).

    Every (point, camera) pairing of the labelled points of scenes ``first_seed .. first_seed + n_scenes - 1``
    (default: the synthetic val split) is classified by ``argmax_c f . e_c`` with the prompt-ensemble text
    embeddings; IoU per class from the confusion matrix; mIoU = mean over classes present in the ground truth or
    the predictions (NaN-mean).
    """
    n = len(NUSCENES_CLASSES)
    classifier = zero_shot_classifier(teacher, "nuscenes")
    confusion = np.zeros((n, n), dtype=np.int64)
    for scene_seed in range(first_seed, first_seed + n_scenes):
        scan = generate_scene(scene_seed, variant)
        for k in range(len(scan.cameras)):
            index, feats = teacher.paired_features(scan, k)
            labels = scan.labels[index]
            ok = labels != IGNORE_INDEX
            pred = zero_shot_predict(feats[torch.from_numpy(ok)], classifier).cpu().numpy()
            confusion += np.bincount(labels[ok] * n + pred, minlength=n * n).reshape(n, n)
    tp = np.diag(confusion).astype(np.float64)
    denom = confusion.sum(0) + confusion.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(denom > 0, tp / denom, np.nan)
    return dict(zip(NUSCENES_CLASSES, iou.tolist(), strict=True)), float(np.nanmean(iou))


def report(n_per_class: int, n_scenes: int, seeds: tuple[int, ...], zs_scenes: int) -> dict[str, object]:
    """U and T of :func:`sample_balanced_features` for ``seeds``, and the zero-shot IoU per class."""
    teacher = SyntheticTeacher(load_params())
    out: dict[str, object] = {"identity": teacher.identity, "geometry": {}}
    for seed in seeds:
        feats, labels = sample_balanced_features(n_per_class, seed, n_scenes, teacher=teacher, progress=True)
        u, t = uniformity(feats), tolerance(feats, labels)
        out["geometry"][seed] = {"U": round(u, 4), "T": round(t, 4), "n": len(labels)}
        print(f"seed {seed}: U = {u:.4f}  T = {t:.4f}  ({len(labels)} features)", flush=True)
    per_class, miou = zero_shot_miou(teacher, zs_scenes)
    out["zero_shot_iou"] = {k: round(v, 4) for k, v in per_class.items()}
    out["zero_shot_miou"] = round(miou, 4)
    for name, value in per_class.items():
        print(f"  {name:22s} IoU {100 * value:5.1f}")
    print(f"zero-shot mIoU over {zs_scenes} val scenes: {100 * miou:.1f} (chance ~ {100 / len(per_class):.1f})")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=default_params_path(), help="parameter file to write")
    parser.add_argument("--check", action="store_true", help="fit again and compare with the committed file")
    parser.add_argument("--report", action="store_true", help="measure U, T for other seeds and zero-shot mIoU")
    parser.add_argument("--n-per-class", type=int, default=5000)
    parser.add_argument("--n-scenes", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(CHECK_SEEDS))
    parser.add_argument("--zero-shot-scenes", type=int, default=16)
    args = parser.parse_args(argv)
    if args.report:
        print(json.dumps(report(args.n_per_class, args.n_scenes, tuple(args.seeds), args.zero_shot_scenes), indent=2))
        return 0
    params = calibrate(args.n_per_class, args.n_scenes)
    print(
        f"common = {params.common}, noise = {params.noise}; exact U = {params.calibration['U']}, "
        f"T = {params.calibration['T']}"
    )
    if args.check:
        committed = load_params()
        same = committed.physics_key() == params.physics_key()
        print("committed parameters reproduced" if same else f"MISMATCH: committed {asdict(committed)}")
        return 0 if same else 1
    args.out.write_text(params.to_json())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
