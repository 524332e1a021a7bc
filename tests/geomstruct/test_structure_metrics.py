"""Structure metrics (geomstruct.structure) against brute-force references and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import ortho_group

from geomstruct import structure as st


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute_cka(x: np.ndarray, y: np.ndarray) -> float:
    """HSIC form with the explicit N x N linear kernels and centring matrix."""
    x, y = _unit(x), _unit(y)
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h

    def hsic(a, b):
        return np.trace(a @ b)

    return hsic(k, l_) / math.sqrt(hsic(k, k) * hsic(l_, l_))


def _brute_neighbours(x: np.ndarray, k: int) -> list[set[int]]:
    """Sets of the k most similar other points, ties to the lower index, by sorting every row in Python."""
    s = _unit(x) @ _unit(x).T
    n = len(x)
    return [set(sorted((j for j in range(n) if j != i), key=lambda j: (-s[i, j], j))[:k]) for i in range(n)]


def _brute_mknn(x: np.ndarray, y: np.ndarray, k: int, rows=None) -> float:
    a, b = _brute_neighbours(x, k), _brute_neighbours(y, k)
    rows = range(len(x)) if rows is None else rows
    return float(np.mean([len(a[i] & b[i]) / k for i in rows]))


def _brute_erank(x: np.ndarray, center: bool = False, eps: float = 1e-7) -> float:
    x = _unit(x)
    if center:
        x = x - x.mean(axis=0)
    s = np.linalg.svd(x, compute_uv=False)
    s = np.where(s > s.max() * 1e-7, s, 0.0)  # exact zeros for a rank-deficient matrix
    p = s / s.sum() + eps
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 300)
    x = rng.standard_normal((5, 24))[labels] + 0.9 * rng.standard_normal((300, 24))
    y = np.hstack([x, x[:, :8]]) @ rng.standard_normal((32, 40)) + 1.5 * rng.standard_normal((300, 40)) + 0.4
    return x, y  # different dimensions: 24 and 40


# --- linear CKA ---


def test_cka_matches_the_hsic_form_with_different_dims(pair):
    x, y = pair
    assert st.linear_cka(x, y) == pytest.approx(_brute_cka(x, y), abs=1e-10)
    assert st.linear_cka(y, x) == pytest.approx(_brute_cka(x, y), abs=1e-10)


def test_cka_of_a_space_with_itself_rotated_and_scaled_is_one(pair):
    x, _ = pair
    q = ortho_group.rvs(24, random_state=1)
    assert st.linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert st.linear_cka(x, 3.7 * x @ q) == pytest.approx(1.0, abs=1e-10)
    y = np.random.default_rng(2).standard_normal((300, 24))
    assert st.linear_cka(x, y) == pytest.approx(st.linear_cka(x @ q, 0.2 * y), abs=1e-10)  # invariant
    assert 0.0 <= st.linear_cka(x, y) < 0.2  # unrelated spaces


def test_cka_is_undefined_without_variance():
    x = np.tile([[1.0, 2.0, 0.0]], (10, 1)) * np.arange(1, 11)[:, None]  # one direction, any length
    y = np.random.default_rng(0).standard_normal((10, 3))
    assert math.isnan(st.linear_cka(x, y))


# --- mutual k-NN ---


@pytest.fixture(scope="module")
def brute_mknn(pair):
    x, y = pair
    return {k: _brute_mknn(x, y, k) for k in (1, 5, 10)}


@pytest.mark.parametrize("block_size", [1, 7, 64, None])
def test_mknn_matches_brute_force_sets(pair, brute_mknn, block_size):
    x, y = pair
    for k, want in brute_mknn.items():
        assert st.mutual_knn(x, y, k=k, block_size=block_size) == pytest.approx(want, abs=1e-12)


def test_mknn_of_identical_spaces_is_one_and_a_hand_case(pair):
    x, _ = pair
    assert st.mutual_knn(x, x, k=10) == 1.0
    assert st.mutual_knn(x, 5.0 * x @ ortho_group.rvs(24, random_state=3), k=10) == 1.0

    def on_circle(degrees):
        r = np.radians(degrees)
        return np.stack([np.cos(r), np.sin(r)], axis=1)

    x = on_circle([0, 10, 90, 100])  # nearest neighbours 0-1, 2-3
    assert st.mutual_knn(x, on_circle([0, 90, 10, 100]), k=1) == 0.0  # neighbours 0-2, 1-3: none shared
    # 0 -> 1, 1 -> 0, 2 (90°) -> 1 (10°, 80° away; 200° is 110° away), 3 (200°) -> 2: three of four shared
    assert st.mutual_knn(x, on_circle([0, 10, 90, 200]), k=1) == 0.75
    np.testing.assert_array_equal(st.knn_overlap(x, on_circle([0, 10, 90, 200]), k=1), [1, 1, 0, 1])


def test_mknn_ties_go_to_the_lower_index_whatever_the_block():
    rng = np.random.default_rng(4)
    x = np.eye(4)[rng.integers(0, 4, 200)]  # 200 points on 4 directions: similarities 0 or 1, ties everywhere
    y = np.eye(6)[rng.integers(0, 6, 200)]
    for k in (1, 3, 60):
        want = _brute_mknn(x, y, k)
        for block_size in (1, 13, 200):
            assert st.mutual_knn(x, y, k=k, block_size=block_size) == pytest.approx(want, abs=1e-12)
    # a duplicate of a point is its neighbour (self is excluded by index); the lowest-index tie is taken
    e = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    got = st._knn_indices(torch.from_numpy(e), torch.arange(4), 1, block_size=2)
    assert got.flatten().tolist() == [1, 0, 0, 0]


def test_mknn_query_sample_is_the_brute_mean_over_those_points(pair):
    x, y = pair
    rows = st.query_sample(len(x), 50, seed=3)
    assert len(rows) == 50 and len(set(rows.tolist())) == 50 and list(rows) == sorted(rows)
    assert st.mutual_knn(x, y, k=5, queries=50, seed=3) == pytest.approx(_brute_mknn(x, y, 5, rows), abs=1e-12)
    assert st.query_sample(len(x), 300) is None and st.query_sample(len(x), None) is None


def test_mknn_accepts_torch_and_numpy_alike(pair):
    x, y = pair
    want = st.mutual_knn(x.astype(np.float32), y.astype(np.float32), k=5)
    assert st.mutual_knn(torch.from_numpy(x).float(), torch.from_numpy(y).float(), k=5) == want


# --- effective rank ---


def test_erank_matches_the_full_svd(pair):
    x, y = pair
    for data in (x, y):
        for center in (False, True):
            for eps in (0.0, 1e-7):
                got = st.effective_rank(data, center=center, eps=eps)
                assert got == pytest.approx(_brute_erank(data, center, eps), rel=1e-9)


def test_erank_hand_cases():
    q = ortho_group.rvs(16, random_state=5)
    for k in (1, 3, 7):
        x = np.repeat(q[:k], 4, axis=0) * np.linspace(1.0, 3.0, 4 * k)[:, None]  # k directions, equal weight
        assert st.effective_rank(x, eps=0.0) == pytest.approx(k, rel=1e-12)
        assert st.effective_rank(x) == pytest.approx(k, rel=2e-4)  # RankMe's eps adds ~D eps log(1/eps)
    line = np.outer(np.r_[1.0, -2.0, 3.0, 0.5], np.arange(1.0, 9.0))  # rank 1 (both signs of one direction)
    assert st.effective_rank(line, eps=0.0) == pytest.approx(1.0, abs=1e-12)
    assert st.effective_rank(np.random.default_rng(0).standard_normal((4000, 8))) == pytest.approx(8.0, rel=0.01)


# --- structure() ---


def test_structure_collects_every_quantity_and_flags_collapse(pair, brute_mknn):
    x, y = pair
    got = st.structure(x, y, k=5)
    assert got["CKA"] == pytest.approx(st.linear_cka(x, y), abs=1e-12)
    assert got["mknn"] == pytest.approx(brute_mknn[5], abs=1e-12)
    assert got["mknn_k"] == 5 and got["mknn_queries"] == 300 and got["mknn_se"] == 0.0  # exact below the budget
    assert got["erank_3d"] == pytest.approx(st.effective_rank(x), rel=1e-12)
    assert got["erank_2d"] == pytest.approx(st.effective_rank(y), rel=1e-12)
    assert got["erank_ratio"] == pytest.approx(got["erank_3d"] / got["erank_2d"], rel=1e-12)
    assert got["collapsed"] is False

    sampled = st.structure(x, y, k=5, mknn_queries=40, seed=1)
    overlaps = st.knn_overlap(x, y, k=5, rows=st.query_sample(300, 40, seed=1))
    # the teacher's neighbours computed once and passed in: the same overlaps and the same structure
    known = st.knn_neighbours(y, k=5, rows=st.query_sample(300, 40, seed=1))
    reused = st.knn_overlap(x, y, k=5, rows=st.query_sample(300, 40, seed=1), neighbours_2d=known)
    np.testing.assert_array_equal(reused, overlaps)
    assert st.structure(x, y, k=5, mknn_queries=40, seed=1, neighbours_2d=known) == sampled
    with pytest.raises(ValueError, match="neighbours_2d must have shape"):
        st.knn_overlap(x, y, k=5, neighbours_2d=known)  # all 300 rows queried, 40 rows of neighbours given
    assert sampled["mknn"] == pytest.approx(overlaps.mean(), abs=1e-12) and sampled["mknn_queries"] == 40
    assert sampled["mknn_se"] == pytest.approx(math.sqrt((1 - 40 / 300) * overlaps.var(ddof=1) / 40), rel=1e-12)

    rng = np.random.default_rng(6)
    wide = rng.standard_normal((300, 64))  # erank about 60
    narrow = np.outer(rng.standard_normal(300), rng.standard_normal(64)) + 1e-3 * wide  # about one direction
    flag = st.structure(narrow, wide, k=5)
    assert flag["erank_3d"] < st.COLLAPSE_RANK and flag["collapsed"] is True
    assert st.structure(wide, narrow, k=5)["collapsed"] is False  # only the 3D side can collapse


def test_structure_reports_undefined_cka_as_none():
    x = np.tile(np.eye(64)[:1], (100, 1))  # every point the same direction
    y = np.random.default_rng(0).standard_normal((100, 64))
    got = st.structure(x, y, k=2)
    assert got["CKA"] is None and got["collapsed"] is True and got["erank_3d"] == pytest.approx(1.0, abs=2e-4)


def test_structure_of_too_few_points_for_k_has_no_mknn(pair):
    x, y = pair
    got = st.structure(x[:10], y[:10], k=10)
    assert got["mknn"] is None and got["mknn_se"] is None and got["mknn_queries"] == 0
    assert got["CKA"] == pytest.approx(st.linear_cka(x[:10], y[:10]), abs=1e-12)


# --- bad input ---


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x, y: st.linear_cka(x, y[:-1]), "same points"),
        (lambda x, y: st.mutual_knn(x, y[:-1]), "same points"),
        (lambda x, y: st.structure(x, y[:-1]), "same points"),
        (lambda x, y: st.mutual_knn(x[:5], y[:5], k=5), "k < N"),
        (lambda x, y: st.mutual_knn(x[:5], y[:5], k=0), "positive integer"),
        (lambda x, y: st.mutual_knn(x, y, block_size=0), "block_size"),
        (lambda x, y: st.mutual_knn(x, y, queries=1), "at least 2"),
        (lambda x, y: st.knn_overlap(x, y, rows=[0, 300]), "index"),
        (lambda x, y: st.effective_rank(x, eps=-1.0), "non-negative"),
        (lambda x, y: st.effective_rank(x[:1], center=True), "at least 2"),
        (lambda x, y: st.linear_cka(x[:1], y[:1]), "at least 2"),
        (lambda x, y: st.effective_rank(x[:3, :3] * 0 + [[1.0, 0.0, 0.0]], center=True), "no variance"),
        (lambda x, y: st.linear_cka(x[0], y[0]), "shape"),
    ],
)
def test_bad_input_is_refused_with_a_message(pair, call, message):
    x, y = pair
    with pytest.raises(ValueError, match=message):
        call(x, y)


def test_all_zero_rows_are_refused(pair):
    x, y = pair
    zero = x.copy()
    zero[7] = 0.0
    for call in (st.linear_cka, st.mutual_knn, st.structure):
        with pytest.raises(ValueError, match="all-zero row"):
            call(zero, y)
        with pytest.raises(ValueError, match="all-zero row"):
            call(x, zero)
    with pytest.raises(ValueError, match="all-zero row"):
        st.effective_rank(zero)
