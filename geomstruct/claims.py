"""The paper's claims (docs/method.md#the-papers-claims), one by one, each judged by a rule fixed before any
number was seen (docs/method.md#claims-rule-version-1).

Claims of Mahmoud et al. (ECCV 2024), on the configurations ``contrastive`` (τ = 0.07), ``similarity`` and
``relational`` of a suite:

1. contrastive raises U and lowers T relative to the 2D space (ΔU > 0 and ΔT < 0);
2. similarity lowers U and raises T (ΔU < 0 and ΔT > 0);
3. relational has the smallest structural gap S of the three;
4. the structural gap S correlates negatively with zero-shot and with few-shot mIoU;
5. relational beats contrastive in zero-shot mIoU;
6. relational beats similarity in few-shot mIoU, in and out of distribution.

Rule (fixed before looking at any result; the same for every claim):

- every claim is a set of one-sided statements, each an estimate with a two-sided 95% confidence interval:
  a loss's mean ΔU or ΔT over its seeds (Student-t interval, n - 1 degrees of freedom); a difference of two
  losses' seed means (Welch's t interval); a Spearman correlation over the students (percentile bootstrap,
  :mod:`geomstruct.correlation`);
- a statement is *supported* when its interval lies entirely on the claimed side of 0, *contradicted* when it lies
  entirely on the other side, *undecided* otherwise (an interval touching 0, a single seed, or fewer than 5
  students for a correlation: no interval);
- a claim **holds** when all its statements are supported, **does not hold** when at least one is contradicted,
  and is **inconclusive** otherwise.

Nothing here is tuned: the configurations, the intervals and the rule are the same whatever the numbers say.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from geomstruct.correlation import MIN_STUDENTS, spearman

CONFIDENCE = 0.95

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"


@dataclass(frozen=True)
class Statement:
    """One one-sided statement: ``estimate`` should be on side ``sign`` (+1: > 0, -1: < 0) of zero."""

    text: str
    estimate: float
    ci_low: float
    ci_high: float
    n: str
    sign: int

    @property
    def status(self) -> str:
        """``supported``, ``contradicted`` or ``undecided`` (module docstring)."""
        if not (math.isfinite(self.ci_low) and math.isfinite(self.ci_high)):
            return "undecided"
        if (self.sign > 0 and self.ci_low > 0) or (self.sign < 0 and self.ci_high < 0):
            return "supported"
        if (self.sign > 0 and self.ci_high < 0) or (self.sign < 0 and self.ci_low > 0):
            return "contradicted"
        return "undecided"


@dataclass(frozen=True)
class Claim:
    """A claim of the paper with its statements and its verdict."""

    number: int
    text: str
    statements: tuple[Statement, ...]

    @property
    def verdict(self) -> str:
        """``holds``, ``does not hold`` or ``inconclusive`` (module docstring)."""
        statuses = [s.status for s in self.statements]
        if statuses and all(s == "supported" for s in statuses):
            return HOLDS
        if "contradicted" in statuses:
            return FAILS
        return INCONCLUSIVE


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """``(mean, low, high)``: Student-t interval of the mean; NaN bounds for fewer than 2 values."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def difference_interval(
    a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """``(mean(a) - mean(b), low, high)``: Welch's t interval; NaN bounds unless both have 2 or more values."""
    x = np.asarray([v for v in a if math.isfinite(v)], dtype=np.float64)
    y = np.asarray([v for v in b if math.isfinite(v)], dtype=np.float64)
    if len(x) == 0 or len(y) == 0:
        return math.nan, math.nan, math.nan
    diff = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return diff, math.nan, math.nan
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(vx + vy)
    if se == 0:
        return diff, diff, diff
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df) * se)
    return diff, diff - half, diff + half


def _select(students: pd.DataFrame, loss: str) -> pd.DataFrame:
    """The runs of the claim's configuration of ``loss`` (contrastive: τ = 0.07; the others: every run of the
    loss's configuration with the most seeds)."""
    rows = students[students["loss"] == loss]
    if loss == "contrastive":
        rows = rows[np.isclose(rows["tau"].astype(float), 0.07)]
    if rows.empty:
        return rows
    main = rows.groupby("label")["seed"].count().idxmax()
    return rows[rows["label"] == main]


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def _one(students: pd.DataFrame, loss: str, column: str, sign: int, what: str) -> Statement:
    values = _select(students, loss)[column].to_numpy(float) if column in students else np.array([])
    mean, lo, hi = mean_interval(values)
    side = ">" if sign > 0 else "<"
    return Statement(f"{what} {side} 0", mean, lo, hi, _seeds(int(np.isfinite(values).sum())), sign)


def _diff(students: pd.DataFrame, first: str, second: str, column: str, sign: int, what: str) -> Statement:
    a = _select(students, first)[column].to_numpy(float) if column in students else np.array([])
    b = _select(students, second)[column].to_numpy(float) if column in students else np.array([])
    diff, lo, hi = difference_interval(a, b)
    side = ">" if sign > 0 else "<"
    n = f"{int(np.isfinite(a).sum())} + {_seeds(int(np.isfinite(b).sum()))}"
    return Statement(f"{what} {side} 0", diff, lo, hi, n, sign)


def _correlation(students: pd.DataFrame, protocol: str, title: str, n_boot: int, seed: int) -> Statement:
    if protocol not in students or "S" not in students:
        return Statement(f"Spearman ρ(S, {title}) < 0", math.nan, math.nan, math.nan, "0 students", -1)
    result = spearman(students["S"].to_numpy(float), students[protocol].to_numpy(float), n_boot=n_boot, seed=seed)
    lo, hi = (result.ci_low, result.ci_high) if result.n >= MIN_STUDENTS else (math.nan, math.nan)
    return Statement(f"Spearman ρ(S, {title}) < 0", result.r, lo, hi, f"{result.n} students", -1)


def evaluate_claims(students: pd.DataFrame, n_boot: int = 10_000, seed: int = 0) -> list[Claim]:
    """The six claims on a suite's students (a :func:`geomstruct.summary.students_frame`, mIoU in percent)."""
    rel, con, sim = "relational", "contrastive", "similarity"
    claims = [
        Claim(1, "contrastive raises U and lowers T relative to the 2D space", (
            _one(students, con, "dU", +1, "ΔU(contrastive)"),
            _one(students, con, "dT", -1, "ΔT(contrastive)"),
        )),
        Claim(2, "similarity lowers U and raises T relative to the 2D space", (
            _one(students, sim, "dU", -1, "ΔU(similarity)"),
            _one(students, sim, "dT", +1, "ΔT(similarity)"),
        )),
        Claim(3, "relational has the smallest structural gap S", (
            _diff(students, rel, con, "S", -1, "S(relational) − S(contrastive)"),
            _diff(students, rel, sim, "S", -1, "S(relational) − S(similarity)"),
        )),
        Claim(4, "the structural gap S correlates negatively with zero-shot and few-shot mIoU", (
            _correlation(students, "zero_shot", "zero-shot", n_boot, seed),
            _correlation(students, "few_shot", "few-shot", n_boot, seed),
        )),
        Claim(5, "relational beats contrastive in zero-shot mIoU", (
            _diff(students, rel, con, "zero_shot", +1, "zero-shot(relational) − zero-shot(contrastive)"),
        )),
        Claim(6, "relational beats similarity in few-shot mIoU, in and out of distribution", (
            _diff(students, rel, sim, "few_shot", +1, "few-shot(relational) − few-shot(similarity)"),
            _diff(students, rel, sim, "few_shot_ood", +1, "OOD few-shot(relational) − OOD few-shot(similarity)"),
        )),
    ]  # fmt: skip
    return claims


def claims_frame(claims: Sequence[Claim]) -> pd.DataFrame:
    """One row per statement: claim number, claim, statement, estimate, CI, n, status, and the claim's verdict."""
    rows = [
        {
            "claim": c.number,
            "text": c.text,
            "statement": s.text,
            "estimate": s.estimate,
            "ci_low": s.ci_low,
            "ci_high": s.ci_high,
            "n": s.n,
            "status": s.status,
            "verdict": c.verdict,
        }
        for c in claims
        for s in c.statements
    ]
    return pd.DataFrame(rows)
