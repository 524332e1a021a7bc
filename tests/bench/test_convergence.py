"""The convergence diagnostic written into every distillation run's metrics.json."""

from __future__ import annotations

import math

import pytest

from bench.train import convergence


def _rows(values):
    return [{"step": s, "loss": x, "U": u, "T": t, "G": g} for s, x, u, t, g in values]


def test_hand_computed_changes_over_the_last_fifth():
    rows = _rows([(0, math.nan, 0.1, 0.9, 1.0), (40, 2.0, 1.0, 0.5, 0.50), (80, 1.0, 1.2, 0.5, 0.40),
                  (100, 0.99, 1.21, 0.49, 0.41)])  # fmt: skip
    out = convergence(rows)  # (1 - 0.2) * 100 = 80: compares step 80 with step 100
    assert (out["from_step"], out["to_step"]) == (80, 100)
    assert out["change_U"] == pytest.approx(0.01 / 1.2)
    assert out["change_T"] == pytest.approx(0.02)
    assert out["change_G"] == pytest.approx(0.025)
    assert out["change_loss"] == pytest.approx(0.01)
    assert out["converged"] is True
    # the same run judged over its last 60%: step 40 against step 100, U moved 21%
    wide = convergence(rows, fraction=0.6)
    assert wide["from_step"] == 40 and wide["change_U"] == pytest.approx(0.21) and wide["converged"] is False


def test_no_row_before_the_window_and_missing_tolerance():
    assert convergence(_rows([(0, math.nan, 1, 1, 1), (10, 1.0, 1, 1, 1)]))["converged"] is None
    rows = _rows([(0, math.nan, 1.0, None, 1.0), (8, 1.0, 1.0, None, 1.0), (10, 1.0, 1.0, None, 1.0)])
    out = convergence(rows)  # label-free runs: T is null, the others still judged
    assert out["change_T"] is None and out["converged"] is True
    assert convergence([])["converged"] is None
