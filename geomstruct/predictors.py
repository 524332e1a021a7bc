"""Post-hoc structure predictors for finished runs: ``python -m geomstruct.predictors --runs DIR [DIR ...]``
(docs/usage.md#predictors-of-finished-runs).

Runs written before a structure metric existed (the registry's metrics marked ``posthoc``,
:attr:`geomstruct.structure.StructureMetric.posthoc`: calibrated CKA and mutual k-NN, LiDAR, alpha-ReQ) lack it in
their ``metrics.json``, which is never rewritten (a run folder is write-once). For every finished distillation run
under the given folders that keeps its ``features.npz`` (the geometry set the structure metrics of its
``metrics.json`` were measured on, stored in float16) and lacks one of them, this computes them from that file and
writes them to the run's ``predictors.json`` (:data:`geomstruct.run_folder.PREDICTORS_FILE`), which the report reads
where ``metrics.json`` has no value. A run that has a ``predictors.json`` already, or whose ``metrics.json`` has
every value, is left as it is.

What each value is computed from:

- ``CKA_cal``, ``CKA_chance``, ``lidar``, ``alpha_3d``, ``alpha_2d``, ``alpha_r2``: the features of
  ``features.npz`` (the float16 values it stores are the values ``metrics.json``'s structure metrics were measured
  on: the harness rounds both sides to float16 first), through the same registry functions as a new run's
  :func:`geomstruct.structure.structure`;
- ``mknn_cal``, ``mknn_chance``: ``metrics.json``'s ``mknn`` (and its ``mknn_k``) minus the exact chance level
  ``k / (N - 1)``, N the rows of ``features.npz``: measuring the mutual k-NN again would cost a k-NN search of the
  whole set per run for the same number.

Cost per run of the study's size (N = 48 531 to 80 000 points, D = 512): reading the file and the float64 moments
(an O(N D^2) pass, about 7 s at 80 000 x 512 on one core of this machine), then a few 512 x 512
eigendecompositions (under 1 s).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geomstruct.run_folder import (
    FEATURES_FILE,
    METRICS_FILE,
    PREDICTORS_FILE,
    read_metrics,
    run_folders,
    write_predictors,
)
from geomstruct.structure import DEFAULT_K, STRUCTURE_METRICS, StructureValues, StudentAndTeacher, _paired

__all__ = ["main", "posthoc_metrics", "posthoc_values", "predictors_of_run"]


def posthoc_metrics() -> tuple[str, ...]:
    """The names of the registry's metrics marked ``posthoc``, in registry order."""
    return tuple(name for name, metric in STRUCTURE_METRICS.items() if metric.posthoc)


def posthoc_values(
    k3d: Any, q2d: Any, k: int = DEFAULT_K, mknn: float | None = None, names: Sequence[str] | None = None
) -> StructureValues:
    """The values of the ``posthoc`` metrics (or of ``names``) on the paired features ``k3d``, ``q2d``: the same
    registry functions as :func:`geomstruct.structure.structure`; ``mknn``: the mutual k-NN already measured on
    these points with ``k`` neighbours (the calibrated one then costs nothing; None: measured again, over every
    point)."""
    x, y = _paired(k3d, q2d)
    data = StudentAndTeacher(x, y, k=k, mknn_queries=None, measured={} if mknn is None else {"mknn": mknn})
    values: StructureValues = {}
    for name in names if names is not None else posthoc_metrics():
        values.update(STRUCTURE_METRICS[name].compute(data))
    return values


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def predictors_of_run(folder: Path) -> tuple[StructureValues | None, str]:
    """``(values, what happened)`` for one run folder: the ``posthoc`` values its ``metrics.json`` lacks, written
    to its ``predictors.json``; ``(None, why not)`` when nothing was written."""
    folder = Path(folder)
    if not (folder / METRICS_FILE).is_file():
        return None, f"no {METRICS_FILE} (unfinished run)"
    if (folder / PREDICTORS_FILE).exists():
        return None, f"has a {PREDICTORS_FILE} already"
    metrics, _ = read_metrics(folder)
    if metrics.get("kind", "distill") == "toy":
        return None, "a toy run (no paired features)"
    geometry = metrics.get("geometry") or {}
    names = [n for n in posthoc_metrics() if any(c not in geometry for c in STRUCTURE_METRICS[n].columns)]
    if not names:
        return None, f"its {METRICS_FILE} has every predictor"
    features = folder / FEATURES_FILE
    if not features.is_file():
        return None, f"no {FEATURES_FILE} (not kept: nothing to compute from)"
    with np.load(features) as data:
        k3d, q2d = data["k3d"].astype(np.float32), data["q2d"].astype(np.float32)
    k = geometry.get("mknn_k", DEFAULT_K)
    mknn = geometry.get("mknn")
    start = time.perf_counter()
    values = posthoc_values(k3d, q2d, k=int(k), mknn=mknn if isinstance(mknn, int | float) else None, names=names)
    seconds = time.perf_counter() - start
    source = {
        "features": FEATURES_FILE,
        "features_sha256": _sha256(features),
        "points": int(len(k3d)),
        "mknn_from": METRICS_FILE if isinstance(mknn, int | float) else FEATURES_FILE,
        "metrics": list(names),
        "seconds": round(seconds, 2),
    }
    write_predictors(folder, values, source)
    return values, f"wrote {PREDICTORS_FILE} ({', '.join(names)}; {seconds:.1f} s)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m geomstruct.predictors",
        description=f"Compute the structure predictors a finished run's {METRICS_FILE} lacks (calibrated CKA and "
        f"mutual k-NN, LiDAR, alpha-ReQ) from its {FEATURES_FILE} into {PREDICTORS_FILE}, for every run folder "
        f"under --runs; {METRICS_FILE} is never rewritten, and a run with a {PREDICTORS_FILE} is left as it is.",
    )
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="run folders or folders of them")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 0, or 1 when a root is missing or a run could not be read."""
    args = _parser().parse_args(argv)
    missing = [root for root in args.runs if not root.is_dir()]
    for root in missing:
        print(f"{root}: no such folder", file=sys.stderr)
    failed = written = 0
    for folder in run_folders([root for root in args.runs if root.is_dir()]):
        try:
            values, what = predictors_of_run(folder)
        except (ValueError, OSError, KeyError) as exc:
            failed += 1
            print(f"{folder}: {exc}", file=sys.stderr)
            continue
        written += values is not None
        print(f"{folder}: {what}")
    print(f"{written} {PREDICTORS_FILE} written", file=sys.stderr)
    return 1 if failed or missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
