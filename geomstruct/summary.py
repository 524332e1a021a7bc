"""One row per distillation run: loss, parameters, seed, geometry and segmentation scores (for tables and plots).

Reads the ``metrics.json`` schema of distillation runs (docs/usage.md#run-directories): ``geometry`` {U, T, G, A,
dU, dT, S, U_2d, T_2d} and, per protocol (``zero_shot``, ``linear_probe``, ``few_shot``, ``few_shot_ood``),
``miou`` as a fraction. Scores are reported in percent here. A protocol a run did not evaluate is NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from geomstruct.runs import GEOMETRY_COLUMNS, PROTOCOLS, Run
from geomstruct.style import loss_rank

PROTOCOL_TITLES = {
    "zero_shot": "zero-shot",
    "linear_probe": "linear probe",
    "few_shot": "few-shot (1%)",
    "few_shot_ood": "OOD few-shot (1%)",
}


def recipe(config: dict) -> str:
    """The optimisation recipe of a distillation run's ``config.json``: ``"<optimizer> lr <lr>"`` (``"lr <lr>"``
    for a run written before the optimiser was configurable; ``""`` when the run has no learning rate, e.g. a toy
    run)."""
    if "lr" not in config:
        return ""
    return f"{config['optimizer']} lr {config['lr']:g}" if "optimizer" in config else f"lr {config['lr']:g}"


def students_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """A row per run with ``run, path, suite, loss, label, tau, seed, teacher, dataset, recipe`` (:func:`recipe`),
    the geometry columns
    and one mIoU column (percent) per protocol. ``label`` is the run's configuration (:attr:`Run.label`)."""
    rows = []
    for run in runs:
        m = run.metrics
        geo = m.get("geometry") or {}
        row = {
            "run": run.name,
            "path": run.path.as_posix(),
            "suite": run.suite,
            "loss": run.loss,
            "label": run.label,
            "tau": (m.get("params") or {}).get("tau", np.nan),
            "seed": run.seed,
            "teacher": m.get("teacher", ""),
            "dataset": m.get("dataset", ""),
            "recipe": recipe(run.config),
        }
        row.update({k: np.nan if geo.get(k) is None else float(geo[k]) for k in GEOMETRY_COLUMNS})
        for protocol in PROTOCOLS:
            score = (m.get(protocol) or {}).get("miou")
            row[protocol] = 100.0 * float(score) if score is not None else np.nan
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["_rank"] = frame["label"].map(loss_rank)
    return frame.sort_values(["_rank", "seed"]).drop(columns="_rank").reset_index(drop=True)
