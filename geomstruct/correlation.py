"""Correlation between structural-gap quantities and segmentation scores (docs/method.md#correlations).

Pearson r and Spearman rho across the trained students of a suite, each with a percentile bootstrap 95%
confidence interval (pairs resampled with replacement) and the number of students n. A correlation over fewer
than :data:`MIN_STUDENTS` students is flagged as not reliable and must be reported as such, never as a
finding.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

MIN_STUDENTS = 5


@dataclass(frozen=True)
class Correlation:
    """A correlation coefficient with its bootstrap confidence interval."""

    method: str
    r: float
    ci_low: float
    ci_high: float
    n: int
    p_value: float
    n_boot: int
    confidence: float

    @property
    def reliable(self) -> bool:
        """False when fewer than :data:`MIN_STUDENTS` pairs were correlated."""
        return self.n >= MIN_STUDENTS

    def as_dict(self) -> dict[str, float | int | str | bool]:
        """Plain dictionary (for JSON and tables), including ``reliable``."""
        return {**asdict(self), "reliable": self.reliable}

    def __str__(self) -> str:
        name = {"pearson": "r", "spearman": "rho"}.get(self.method, self.method)
        text = f"{name} = {self.r:+.2f} [{self.ci_low:+.2f}, {self.ci_high:+.2f}], n = {self.n}"
        return text if self.reliable else text + " (n < 5: not a finding)"


def _rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of every row pair of (B, n) arrays; NaN where a row is constant."""
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    den = np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (xc * yc).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)


def _clean(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of the same length; got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _correlate(method: str, x: np.ndarray, y: np.ndarray, n_boot: int, confidence: float, seed: int) -> Correlation:
    x, y = _clean(x, y)
    n = x.size
    nan = Correlation(method, math.nan, math.nan, math.nan, n, math.nan, n_boot, confidence)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return nan
    if method == "pearson":
        r, p = stats.pearsonr(x, y)
    else:
        r, p = stats.spearmanr(x, y)
    # Hand-written rather than scipy.stats.bootstrap: all resamples as one (n_boot, n) index array with one rank pass
    # (fast), and these draws are what every committed interval was computed with (scipy's draws differ).
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    bx, by = x[idx], y[idx]
    if method == "spearman":
        bx = stats.rankdata(bx, axis=1)
        by = stats.rankdata(by, axis=1)
    boot = _rowwise_pearson(bx, by)
    boot = boot[np.isfinite(boot)]
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha]) if boot.size else (math.nan, math.nan)
    return Correlation(method, float(r), float(low), float(high), n, float(p), n_boot, confidence)


def pearson(x, y, n_boot: int = 10_000, confidence: float = 0.95, seed: int = 0) -> Correlation:
    """Pearson r of ``x`` and ``y`` (non-finite pairs dropped) with a percentile bootstrap CI.

    Bootstrap resamples in which either variable is constant are left out of the interval.
    """
    return _correlate("pearson", x, y, n_boot, confidence, seed)


def spearman(x, y, n_boot: int = 10_000, confidence: float = 0.95, seed: int = 0) -> Correlation:
    """Spearman rho (Pearson r of average ranks) with a percentile bootstrap CI, as :func:`pearson`."""
    return _correlate("spearman", x, y, n_boot, confidence, seed)
