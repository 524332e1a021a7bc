"""geomstruct.report on the run directories of a real (tiny) distill suite: files and table rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from geomstruct import report as geo_report


def test_report_from_suite_runs_matches_metrics(tiny_runs, tmp_path):
    out = tmp_path / "reports"
    assert geo_report.main(["--runs", str(tiny_runs), "--out", str(out)]) == 0
    for name in (
        "index.html",
        "pca.png",
        "uniformity_tolerance.png",
        "trajectories.png",
        "gap_vs_performance.png",
        "summary.md",
        "summary.tex",
        "summary.csv",
        "correlations.csv",
        "per_class_zero_shot.csv",
    ):
        assert (out / name).stat().st_size > 0, name  # fmt: skip
    summary = pd.read_csv(out / "summary.csv").set_index("label")
    runs = [json.loads(p.read_text()) for p in sorted(tiny_runs.glob("*/metrics.json"))]
    assert len(summary) == len(runs)
    for m in runs:
        label = m["loss"] + (" (" + ", ".join(f"{k}={v}" for k, v in sorted(m["params"].items())) + ")"
                             if m["params"] else "")  # fmt: skip
        row = summary.loc[label]
        for key in ("U", "T", "G", "dU", "dT", "S", "U_2d", "T_2d"):
            assert row[f"{key}_mean"] == pytest.approx(m["geometry"][key], rel=1e-5, abs=1e-9)
        for protocol in ("zero_shot", "linear_probe", "few_shot", "few_shot_ood"):
            assert row[f"{protocol}_mean"] == pytest.approx(100 * m[protocol]["miou"], rel=1e-5)
        assert m["class_names"][0] == "barrier" and len(m["class_names"]) == 16
    per_class = pd.read_csv(out / "per_class_zero_shot.csv").set_index("label")
    assert set(per_class.columns) <= set(runs[0]["class_names"])
    assert np.isfinite(per_class.to_numpy(float)).any()
