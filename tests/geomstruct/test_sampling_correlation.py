"""Class-balanced sampling and the correlation statistics of docs/method.md#point-set and
docs/method.md#correlations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from geomstruct.correlation import MIN_STUDENTS, pearson, spearman
from geomstruct.sampling import balanced_sample


def test_balanced_sample_counts_and_membership():
    labels = np.array([0] * 50 + [1] * 3 + [2] * 20 + [255] * 10)
    sample = balanced_sample(labels, n_per_class=10, seed=3, ignore_index=255)
    assert sample.counts == {0: 10, 1: 3, 2: 10}  # all of class 1: fewer than 10 exist
    assert sample.n == 23 and len(np.unique(sample.indices)) == 23
    for c, n in sample.counts.items():
        assert (labels[sample.indices] == c).sum() == n
    assert not (labels[sample.indices] == 255).any()


def test_balanced_sample_is_seeded_and_uniform():
    labels = np.repeat(np.arange(3), 1000)
    a = balanced_sample(labels, 100, seed=7)
    b = balanced_sample(labels, 100, seed=7)
    c = balanced_sample(labels, 100, seed=8)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, c.indices)
    # every point of a class is equally likely: inclusion frequency over many seeds ~ 100 / 1000
    hits = np.zeros(3000)
    for seed in range(200):
        hits[balanced_sample(labels, 100, seed=seed).indices] += 1
    assert hits.mean() == pytest.approx(20.0)
    assert hits.std() < 6.0  # binomial(200, 0.1) has std 4.2


def test_balanced_sample_listed_classes_and_errors():
    labels = np.array([1, 1, 2])
    assert balanced_sample(labels, 5, classes=[1, 2, 9]).counts == {1: 2, 2: 1, 9: 0}
    with pytest.raises(ValueError, match="at least 1"):
        balanced_sample(labels, 0)
    with pytest.raises(ValueError, match="one-dimensional"):
        balanced_sample(labels[None], 1)


def test_correlations_match_scipy_and_perfect_cases():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(12)
    y = 0.6 * x + rng.standard_normal(12)
    p = pearson(x, y, n_boot=2000)
    s = spearman(x, y, n_boot=2000)
    assert p.r == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert s.r == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    assert p.ci_low < p.r < p.ci_high and s.ci_low <= s.r <= s.ci_high
    assert p.n == 12 and p.reliable
    exact = pearson(x, 3 * x + 1, n_boot=500)
    assert exact.r == pytest.approx(1.0) and exact.ci_low == pytest.approx(1.0)
    mono = spearman(x, np.exp(x), n_boot=500)
    assert mono.r == pytest.approx(1.0)


def test_bootstrap_interval_against_a_loop_reference():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(9)
    y = x + rng.standard_normal(9)
    result = pearson(x, y, n_boot=400, seed=5)
    # same resampling scheme, written as a plain loop with scipy
    idx = np.random.default_rng(5).integers(0, 9, size=(400, 9))
    boot = [stats.pearsonr(x[i], y[i])[0] for i in idx if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0]
    low, high = np.quantile(boot, [0.025, 0.975])
    assert result.ci_low == pytest.approx(low, abs=1e-12)
    assert result.ci_high == pytest.approx(high, abs=1e-12)


def test_small_and_degenerate_samples_are_flagged():
    few = pearson([1.0, 2.0, 3.0, 5.0], [2.0, 1.0, 4.0, 3.0], n_boot=100)
    assert few.n == 4 and not few.reliable and "not a finding" in str(few)
    assert MIN_STUDENTS == 5
    const = spearman([1.0, 1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert np.isnan(const.r)
    dropped = pearson([1.0, 2.0, np.nan, 4.0, 5.0, 6.0], [1.0, 2.5, 3.0, 4.0, 6.0, 6.5], n_boot=100)
    assert dropped.n == 5
