"""The paper's claims table: intervals by hand, and the verdict rule on fabricated students."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from geomstruct.claims import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    Statement,
    claims_frame,
    difference_interval,
    evaluate_claims,
    mean_interval,
)


def test_mean_interval_hand_computed():
    mean, lo, hi = mean_interval([1.0, 2.0, 3.0])
    half = stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)  # sample std 1
    assert (mean, lo, hi) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    assert math.isnan(mean_interval([5.0])[1])  # one seed: no interval


def test_welch_difference_interval_hand_computed():
    a, b = [1.0, 2.0, 3.0], [0.0, 0.0, 3.0]
    diff, lo, hi = difference_interval(a, b)
    va, vb = 1.0 / 3, 3.0 / 3  # variances 1 and 3 over n = 3
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert (diff, lo, hi) == pytest.approx((1.0, 1.0 - half, 1.0 + half))


@pytest.mark.parametrize(
    "low,high,sign,status",
    [(0.1, 0.5, +1, "supported"), (-0.5, -0.1, +1, "contradicted"), (-0.1, 0.5, +1, "undecided"),
     (-0.5, -0.1, -1, "supported"), (math.nan, math.nan, -1, "undecided")],
)  # fmt: skip
def test_statement_status(low, high, sign, status):
    assert Statement("x", 0.0, low, high, "3 seeds", sign).status == status


def _students(rel_zero_shot: float) -> pd.DataFrame:
    """Three seeds of contrastive (tau 0.07), similarity and relational with chosen geometry and scores."""
    rows = []
    rng = np.random.default_rng(0)
    spec = {  # loss: (dU, dT, S, zero-shot, few-shot, OOD few-shot)
        "contrastive": (0.5, -0.2, 0.54, 30.0, 30.0, 20.0),
        "similarity": (-1.0, 0.2, 1.02, 10.0, 20.0, 10.0),
        "relational": (0.05, 0.0, 0.05, rel_zero_shot, 35.0, 25.0),
    }
    for loss, (du, dt, s, zs, fs, ood) in spec.items():
        for seed in range(3):
            e = rng.normal(0, 0.01, 6)
            rows.append({"loss": loss, "label": loss, "tau": 0.07 if loss == "contrastive" else np.nan, "seed": seed,
                         "dU": du + e[0], "dT": dt + e[1], "S": s + e[2], "zero_shot": zs + e[3],
                         "few_shot": fs + e[4], "few_shot_ood": ood + e[5]})  # fmt: skip
    # a contrastive temperature that the claims must not read
    rows.append({"loss": "contrastive", "label": "contrastive τ=1", "tau": 1.0, "seed": 0, "dU": -5.0, "dT": 5.0,
                 "S": 9.0, "zero_shot": 1.0, "few_shot": 1.0, "few_shot_ood": 1.0})  # fmt: skip
    return pd.DataFrame(rows)


def test_verdicts_follow_the_rule():
    claims = {c.number: c for c in evaluate_claims(_students(rel_zero_shot=40.0), n_boot=200)}
    assert claims[1].verdict == HOLDS and claims[2].verdict == HOLDS and claims[3].verdict == HOLDS
    assert claims[5].verdict == HOLDS and claims[6].verdict == HOLDS
    # S and mIoU: the tau = 1 run (largest S, lowest scores) makes the correlations negative over 10 students
    assert claims[4].statements[0].estimate < 0
    # relational now clearly below contrastive in zero-shot: claim 5 does not hold
    worse = {c.number: c for c in evaluate_claims(_students(rel_zero_shot=20.0), n_boot=200)}
    assert worse[5].verdict == FAILS
    frame = claims_frame(list(claims.values()))
    assert list(frame["claim"]) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 6, 6]


def test_single_seed_is_inconclusive():
    one = _students(40.0)
    one = one[one["seed"] == 0]
    claims = evaluate_claims(one, n_boot=200)
    assert all(c.verdict == INCONCLUSIVE for c in claims if c.number != 4)
