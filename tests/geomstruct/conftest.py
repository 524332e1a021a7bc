"""Shared by the geomstruct tests: a finished run folder written by hand in the documented schema
(docs/run-folder.md), for the report, claims and budget tests that fabricate their students."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def write_run_folder(
    folder: Path, metrics: dict, config: dict, trajectory: dict | None = None, features: dict | None = None
) -> Path:
    """Write ``metrics.json`` and ``config.json`` into a new ``folder``, and ``trajectory.csv`` (columns of
    ``trajectory``) and ``features.npz`` (arrays of ``features``) when given; return ``folder``."""
    folder.mkdir(parents=True)
    if features is not None:
        np.savez(folder / "features.npz", **features)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "config.json").write_text(json.dumps(config))
    if trajectory is not None:
        pd.DataFrame(trajectory).to_csv(folder / "trajectory.csv", index=False)
    return folder
