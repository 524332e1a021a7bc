"""Structure of a student's space against the teacher's (docs/method.md#linear-cka,
docs/method.md#mutual-k-nn, docs/method.md#effective-rank-and-collapse).

Arrays in, numbers out: every function accepts torch tensors (any device) or numpy arrays, L2-normalises the rows
first (like :mod:`geomstruct.metrics`: all dot products are cosines) and returns Python numbers. Nothing here
holds an N x N matrix, so the 80 000 x 512 geometry set is measured exactly in bounded memory.

- Linear CKA (Kornblith, Norouzi, Lee & Hinton, "Similarity of Neural Network Representations Revisited",
  ICML 2019), between the 3D features ``X`` (N x D3) and the 2D features ``Y`` (N x D2) of the same
  points, columns centred::

      CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)

  computed from the D x D cross-covariance and Gram matrices, accumulated in float64 over row blocks: O(N D^2).
  1 for the same space up to an orthogonal transform and an isotropic scaling, 0 for unrelated spaces.
- Mutual k-nearest-neighbour alignment (Huh, Cheung, Wang & Isola, "The Platonic Representation Hypothesis",
  ICML 2024): ``N_3d(i)`` and ``N_2d(i)`` are the k nearest neighbours of point ``i``
  by cosine similarity in each space (``i`` itself excluded)::

      mknn = mean_i |N_3d(i) ∩ N_2d(i)| / k

  in [0, 1]; 1 when both spaces order every point's neighbours alike, about k / (N - 1) for unrelated spaces.
  Exact by blocked top-k: a block of rows against all N points, O(N^2 D) in all; or, as in every run's
  ``metrics.json`` (:data:`MKNN_QUERIES`), the mean over a seeded sample of query points, an unbiased estimate
  reported with its standard error.
- Effective rank (Roy & Vetterli, "The effective rank: a measure of effective dimensionality", EUSIPCO 2007)::

      erank = exp(-sum_k p_k log p_k),   p_k = sigma_k / sum_j sigma_j (+ eps)

  with ``sigma`` the singular values of the N x D matrix of (row-normalised) features, from the eigenvalues of
  ``X^T X`` in float64: O(N D^2). Between 1 (every point on one line) and D. RankMe (Garrido, Balestriero,
  Najman & LeCun, "RankMe: Assessing the Downstream Performance of Pretrained Self-Supervised Representations by
  Their Rank", ICML 2023) is the same quantity on the uncentred embedding matrix with ``p_k + eps``,
  eps = 1e-7: the default here.
- Permutation-calibrated CKA and mutual k-NN (docs/method.md#calibrated-cka-and-mutual-k-nn): the value minus
  its chance level, the mean over every row-shuffled pairing of the two spaces (one side's rows permuted), which a
  raw CKA of unrelated spaces exceeds 0 by, more so the wider their spectra (Kornblith et al. 2019 use shuffles
  as their baseline too). The expectation over all ``N!`` shuffles has a closed form, computed exactly::

      E_pi[CKA(X, Y_pi)] = tr(Xc^T Xc) tr(Yc^T Yc) / ((N - 1) ||Xc^T Xc||_F ||Yc^T Yc||_F)
      E_pi[mknn(X, Y_pi)] = k / (N - 1)

  (:func:`cka_chance`, :func:`mknn_chance`); :func:`calibrated_cka` and :func:`calibrated_mutual_knn` can also
  average ``permutations`` literal shuffles (a Monte Carlo estimate of the same mean, with its standard error).
- LiDAR (Thilak, Huang, Saremi, Dinh, Goh, Nakkiran, Susskind & Littwin, "LiDAR: Sensing Linear Probing
  Performance in Joint Embedding SSL Architectures", ICLR 2024): the effective rank of the LDA matrix of
  surrogate classes, each a sample seen in several views (:func:`lidar`; here *(choice)* a class is a paired
  point and its views are its 3D and 2D features, docs/method.md#lidar).
- alpha-ReQ (Agrawal, Mondal, Ghosh & Richards, "alpha-ReQ: Assessing Representation Quality in Self-Supervised
  Learning by measuring eigenspectrum decay", NeurIPS 2022): the exponent ``alpha`` of the power law
  ``lambda_r ~ r^-alpha`` of the eigenvalues of the features' covariance, fitted on log-log (:func:`alpha_req`).
- :func:`structure`: all of them for one student, with a collapse flag (:data:`COLLAPSE_RANK`): the metrics of the
  registry :data:`STRUCTURE_METRICS` (one function and one line to add a metric).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from geomstruct.metrics import ArrayLike, _as_tensor, _normalize

COLLAPSE_RANK = 4.0
"""*Choice*: a student is **collapsed** when the effective rank of its 3D space is below 4, i.e. its features span
fewer effective directions than a quarter of nuScenes' 16 classes (a space of one repeated vector has rank 1).

History, stated because the rule changed after a result was seen: the first rule, fixed before any run, compared
the student with the teacher (``erank_3d < 0.1 erank_2d``). On the first real runs it flagged a contrastive student
whose uniformity exceeds the teacher's (U 1.77 against 1.56; effective rank 11.7) as collapsed, because the
synthetic teacher's effective rank (288 of 512) counts the isotropic noise of its features, not their structure;
a diagnostic that calls a more uniform space collapsed measures the teacher's noise, so the rule was replaced by an
absolute one before any claim or table was read. The similarity student of the same suite (U 0.02, effective rank
2.4) is collapsed under both."""

DEFAULT_K = 10
"""Neighbours per point of the mutual k-NN alignment (k = 10, docs/method.md#mutual-k-nn)."""

KNN_BLOCK_BYTES = 256 * 2**20
"""Memory of one block of similarities in :func:`mutual_knn` (256 MiB): ``block_size = KNN_BLOCK_BYTES //
(N * bytes per value)`` rows, i.e. 838 rows of float32 at N = 80 000. Its top-k adds (block x (k + 1))
values and indices; rows with a tie at the k-th place are resolved 64 at a time (about 10 bytes per similarity of
those rows, 51 MB at N = 80 000)."""

GRAM_BLOCK_ROWS = 8192
"""Rows converted to float64 at a time when accumulating the D x D matrices of CKA and the effective rank."""

MKNN_QUERIES = 10_000
"""*Choice*: query points of the mutual k-NN in :func:`structure` (so in every run's ``metrics.json``). The exact
mean over all 80 000 points of a full geometry set costs two 80 000 x 80 000 x 512 similarity passes, too much
for every run of a suite; 10 000 query points drawn with a fixed seed, neighbours still searched among all points,
cost an eighth of that (``benchmarks/test_bench_structure.py`` times it) and estimate it without bias, with a
standard error (reported as ``mknn_se``) of at most 0.5 / sqrt(10 000) = 0.005 (0.0009 on the benchmark's
features, whose exact value was within 2 standard errors). Sets of up to 10 000 points are measured exactly."""

RANKME_EPS = 1e-7
"""The ``eps`` RankMe adds to every ``p_k`` (Garrido et al. 2023); ``eps=0`` gives Roy & Vetterli's definition."""


CALIBRATION_PERMUTATIONS: int | None = None
"""*Choice*: row-shuffled pairings averaged by :func:`calibrated_cka` and :func:`calibrated_mutual_knn` in every
run's ``metrics.json``: None, the exact mean over all ``N!`` shufflings (:func:`cka_chance`, :func:`mknn_chance`),
which a finite number of shuffles only estimates (with a standard error) at the cost of an O(N D^2) pass (CKA) or
a k-NN search (mutual k-NN) per shuffle."""

LIDAR_DELTA = 1e-6
"""``delta`` of LiDAR's within-class scatter ``Sigma_w + delta I`` (Thilak et al. 2024 leave it a small positive
constant that makes ``Sigma_w`` invertible; implementations use 1e-6 to 1e-3). *Choice*: 1e-6, as in ``reptrix``
(github.com/arnab39/reptrix, by alpha-ReQ's authors): on unit rows in D = 512 the mean eigenvalue of ``Sigma_w``
is about ``(1 - cos) / D`` ~ 1e-3, so 1e-6 only lifts directions where a point's two views never differ."""

LIDAR_EPS = 1e-7
"""``eps`` added to every ``p_k`` of LiDAR's entropy, as RankMe's (:data:`RANKME_EPS`; ``reptrix`` uses 1e-7)."""

ALPHA_FIT_RANKS = (6, 100)
"""*Choice*: the eigenvalue ranks ``r`` (1 = largest, both ends included) over which :func:`alpha_req` fits
``log lambda_r = -alpha log r + c``: ranks 6 to 100, weighted by ``1 / r``, as the reference implementation of
alpha-ReQ's authors (``reptrix.alpha.get_alpha``, ``fit_range = arange(5, 100)`` 0-based, after Stringer et al.,
Nature 2019): the first few eigenvalues carry the largest directions of the data, not the tail's decay, and the
last ones of a 512-dimensional space fall off a finite-sample cliff."""


def _paired(x3d: ArrayLike, x2d: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Both inputs as row-normalised 2-D tensors on ``x3d``'s device, checked to hold the same points."""
    k = _normalize(_as_tensor(x3d, "x3d"))
    q = _normalize(_as_tensor(x2d, "x2d")).to(k.device)
    if k.shape[0] != q.shape[0]:
        raise ValueError(f"x3d and x2d must hold the same points; got {k.shape[0]} and {q.shape[0]} rows")
    return k, q


@dataclass
class _Moments:
    """Float64 second moments of one or two spaces over the same N rows, columns centred: ``Xc^T Xc`` (and
    ``Yc^T Xc``, ``Yc^T Yc``), with the column means."""

    n: int
    mx: torch.Tensor
    xx: torch.Tensor
    my: torch.Tensor | None = None
    yx: torch.Tensor | None = None
    yy: torch.Tensor | None = None

    @classmethod
    def of(cls, x: torch.Tensor, y: torch.Tensor | None = None) -> _Moments:
        """Two passes over blocks of :data:`GRAM_BLOCK_ROWS` rows converted to float64: the column means, then the
        products of the centred blocks (centring before the product keeps the precision of a space whose spread
        is small next to its mean, e.g. a collapsing student)."""

        def mean(a: torch.Tensor) -> torch.Tensor:
            total = torch.zeros(a.shape[1], dtype=torch.float64, device=a.device)
            for i0 in range(0, a.shape[0], GRAM_BLOCK_ROWS):
                total += a[i0 : i0 + GRAM_BLOCK_ROWS].to(torch.float64).sum(dim=0)
            return total / a.shape[0]

        def zeros(rows: int, cols: int) -> torch.Tensor:
            return torch.zeros(rows, cols, dtype=torch.float64, device=x.device)

        m = cls(x.shape[0], mean(x), zeros(x.shape[1], x.shape[1]))
        if y is not None:
            m.my, m.yx, m.yy = mean(y), zeros(y.shape[1], x.shape[1]), zeros(y.shape[1], y.shape[1])
        for i0 in range(0, x.shape[0], GRAM_BLOCK_ROWS):
            xb = x[i0 : i0 + GRAM_BLOCK_ROWS].to(torch.float64) - m.mx
            m.xx += xb.T @ xb
            if y is not None:
                yb = y[i0 : i0 + GRAM_BLOCK_ROWS].to(torch.float64) - m.my
                m.yx += yb.T @ xb
                m.yy += yb.T @ yb
        return m

    def uncentred(self, gram: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """``X^T X = Xc^T Xc + N mean mean^T`` (a sum of positive semi-definite terms: no cancellation)."""
        return gram + self.n * torch.outer(mean, mean)

    def no_variance(self, gram: torch.Tensor) -> bool:
        """Whether the mean squared distance of the (unit) rows to their centroid, ``trace(Xc^T Xc) / N``, is at
        most ``D`` float64 epsilons: a spread at the rounding level of the computation, i.e. none."""
        return gram.trace().item() <= self.n * gram.shape[0] * np.finfo(np.float64).eps


def _cka(m: _Moments) -> float:
    if m.no_variance(m.xx) or m.no_variance(m.yy):
        return math.nan
    den = torch.linalg.matrix_norm(m.xx).item() * torch.linalg.matrix_norm(m.yy).item()
    return (m.yx * m.yx).sum().item() / den


def _erank(gram: torch.Tensor, eps: float) -> float:
    eig = np.linalg.eigvalsh(gram.cpu().numpy())  # numpy: torch's time varied widely on a busy machine
    top = eig.max(initial=0.0)
    eig = np.where(eig > top * len(eig) * np.finfo(np.float64).eps, eig, 0.0)  # rounding of X^T X: zero
    sigma = np.sqrt(eig)
    p = sigma / sigma.sum() + eps
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def _entropy_rank(eig: np.ndarray, eps: float) -> float:
    """``exp(-sum_k p_k log p_k)``, ``p_k = lambda_k / sum_j lambda_j + eps`` (``0 log 0 = 0``)."""
    p = eig / eig.sum() + eps
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def _cka_chance(m: _Moments) -> float:
    if m.no_variance(m.xx) or m.no_variance(m.yy):
        return math.nan
    den = torch.linalg.matrix_norm(m.xx).item() * torch.linalg.matrix_norm(m.yy).item()
    return m.xx.trace().item() * m.yy.trace().item() / ((m.n - 1) * den)


def linear_cka(x3d: ArrayLike, x2d: ArrayLike) -> float:
    """Linear CKA (Kornblith et al., ICML 2019) between the features of the same points in two spaces.

    Rows L2-normalised, then columns centred: ``CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)``, which equals
    ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with the linear kernels ``K = X X^T``, ``L = Y Y^T`` (the
    1/(N-1)^2 factors of HSIC cancel), without forming them: the D x D matrices are accumulated in float64 over
    row blocks and centred as ``A^T B - N mean(a) mean(b)^T``. The dimensions of ``x3d`` and ``x2d`` may
    differ. In [0, 1]; invariant to orthogonal transforms and isotropic scaling of either space. NaN when a
    space has no variance after centring (every row the same direction, up to rounding: mean squared distance
    to the centroid at most D float64 epsilons): CKA is then undefined.
    """
    k, q = _paired(x3d, x2d)
    if k.shape[0] < 2:
        raise ValueError(f"linear CKA needs at least 2 points; got {k.shape[0]}")
    return _cka(_Moments.of(k, q))


def _knn_block_size(n: int, element_size: int) -> int:
    return max(1, KNN_BLOCK_BYTES // (n * element_size))


def _knn_indices(x: torch.Tensor, rows: torch.Tensor, k: int, block_size: int) -> torch.Tensor:
    """``(len(rows), k)``: for each query row ``x[rows[j]]`` the indices of its k nearest other rows of ``x`` by
    dot product (rows normalised), ties broken by the lower index (see :func:`mutual_knn`); one
    ``block_size x N`` block of similarities at a time."""
    out = torch.empty(len(rows), k, dtype=torch.int64, device=x.device)
    for j0 in range(0, len(rows), block_size):
        query = rows[j0 : j0 + block_size]
        sims = x[query] @ x.T
        sims[torch.arange(len(query), device=x.device), query] = -math.inf  # self excluded, by index
        values, index = torch.topk(sims, k + 1, dim=1)  # k < N, so the (k+1)-th exists (at worst: self, -inf)
        kth = values[:, k - 1 : k]
        ambiguous = (values[:, k] == values[:, k - 1]).nonzero().flatten()  # a tie across the k-th place
        index = index[:, :k].clone()
        for a0 in range(0, len(ambiguous), 64):
            part = ambiguous[a0 : a0 + 64]
            s, v = sims[part], kth[part]
            above, tied = s > v, s == v
            need = k - above.sum(dim=1, keepdim=True)
            chosen = above | (tied & (tied.cumsum(dim=1) <= need))  # all above, then the lowest-index tied
            index[part] = chosen.nonzero()[:, 1].view(-1, k)
        out[j0 : j0 + len(query)] = index
        del sims
    return out


def knn_neighbours(
    x: ArrayLike, k: int = DEFAULT_K, rows: ArrayLike | None = None, block_size: int | None = None
) -> torch.Tensor:
    """``(len(rows), k)`` int64: the indices of the ``k`` nearest other rows of ``x`` (cosine) of every query row
    of ``rows`` (all rows by default), as :func:`mutual_knn` finds them (blocks, ties); for reusing one space's
    neighbours across many comparisons (:func:`knn_overlap`'s ``neighbours_2d``)."""
    xt = _normalize(_as_tensor(x))
    query = _query_rows(xt.shape[0], k, rows, block_size, xt.device)
    return _knn_indices(xt, query, k, block_size or _knn_block_size(xt.shape[0], xt.element_size()))


def _query_rows(n: int, k: int, rows: ArrayLike | None, block_size: int | None, device: torch.device) -> torch.Tensor:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer; got {k!r}")
    if k >= n:
        raise ValueError(f"mutual k-NN needs k < N (a point is not its own neighbour); got k = {k}, N = {n}")
    if block_size is not None and block_size < 1:
        raise ValueError(f"block_size must be positive; got {block_size}")
    if rows is None:
        return torch.arange(n, device=device)
    query = torch.as_tensor(np.asarray(rows), dtype=torch.int64, device=device).flatten()
    if len(query) and (int(query.min()) < 0 or int(query.max()) >= n):
        raise ValueError(f"rows must index the {n} points")
    return query


def knn_overlap(
    x3d: ArrayLike,
    x2d: ArrayLike,
    k: int = DEFAULT_K,
    rows: ArrayLike | None = None,
    block_size: int | None = None,
    neighbours_2d: torch.Tensor | None = None,
) -> np.ndarray:
    """``|N_3d(i) ∩ N_2d(i)| / k`` for every query point ``i`` of ``rows`` (all points by default), neighbours
    searched among all N points of each space; see :func:`mutual_knn` for the definition, blocks and ties.
    ``neighbours_2d``: :func:`knn_neighbours` of ``x2d`` for the same ``k`` and ``rows``, when already known."""
    x, y = _paired(x3d, x2d)
    n = x.shape[0]
    query = _query_rows(n, k, rows, block_size, x.device)
    a = _knn_indices(x, query, k, block_size or _knn_block_size(n, x.element_size()))
    if neighbours_2d is None:
        b = _knn_indices(y, query, k, block_size or _knn_block_size(n, y.element_size()))
    else:
        b = torch.as_tensor(neighbours_2d, device=x.device)
        if b.shape != (len(query), k):
            raise ValueError(f"neighbours_2d must have shape ({len(query)}, {k}); got {tuple(b.shape)}")
    shared = torch.empty(len(query), dtype=torch.int64, device=x.device)
    for j0 in range(0, len(query), 65536):  # (rows, k, k) comparisons: each set holds distinct indices
        aj, bj = a[j0 : j0 + 65536], b[j0 : j0 + 65536]
        shared[j0 : j0 + 65536] = (aj[:, :, None] == bj[:, None, :]).sum(dim=(1, 2))
    return shared.cpu().numpy() / k


def query_sample(n: int, queries: int | None, seed: int = 0) -> np.ndarray | None:
    """The sorted query points of a sampled mutual k-NN: ``queries`` of ``0..n-1`` drawn without replacement with
    numpy's ``default_rng(seed)``; None (every point) when ``queries`` is None or at least ``n``."""
    if queries is None or queries >= n:
        return None
    if queries < 2:
        raise ValueError(f"queries must be at least 2; got {queries}")
    return np.sort(np.random.default_rng(seed).choice(n, size=queries, replace=False))


def mutual_knn(
    x3d: ArrayLike,
    x2d: ArrayLike,
    k: int = DEFAULT_K,
    block_size: int | None = None,
    queries: int | None = None,
    seed: int = 0,
) -> float:
    """Mutual k-NN alignment (Huh et al., ICML 2024): ``mean_i |N_3d(i) ∩ N_2d(i)| / k``.

    ``N_s(i)``: the ``k`` rows of space ``s`` with the highest cosine similarity to row ``i``, ``i`` excluded
    (by index, so an exact duplicate of ``i`` is a neighbour). Exact, blocked: ``block_size`` query rows at a
    time against all N rows (default: :data:`KNN_BLOCK_BYTES` of similarities, 838 rows of float32 at
    N = 80 000), top-k per row, never an N x N matrix; similarities in the input's precision (float32, or
    float64 when given).

    Ties: when several rows share the k-th largest similarity (as computed), those of lowest index are taken, so
    the result is a deterministic function of the computed similarities, not of ``torch.topk``'s order. For
    continuous features ties have probability zero; they occur with exact duplicates (e.g. a collapsed student
    stored in float16).

    ``queries``: when given and smaller than N, the mean is taken over that many query points ``i`` drawn
    uniformly without replacement (:func:`query_sample`, ``seed``), their neighbours still searched among all N
    points: an unbiased estimate of the exact value (a named approximation; :func:`structure` reports its
    standard error). Cost ``2 * queries * N * D`` multiply-adds instead of ``2 N^2 D``.
    """
    n = len(x3d)
    return float(knn_overlap(x3d, x2d, k=k, rows=query_sample(n, queries, seed), block_size=block_size).mean())


def effective_rank(x: ArrayLike, center: bool = False, eps: float = RANKME_EPS) -> float:
    """Effective rank (Roy & Vetterli, EUSIPCO 2007) of the row-normalised N x D features ``x``.

    ``exp(-sum_k p_k log p_k)`` with ``p_k = sigma_k / sum_j sigma_j + eps`` (``0 log 0 = 0``), ``sigma`` the
    singular values of ``x`` (of ``x`` with centred columns when ``center``), from the eigenvalues of the D x D
    matrix ``X^T X`` (``Xc^T Xc`` when centred) accumulated in float64 over row blocks; eigenvalues
    below ``lambda_max * D * machine epsilon`` (rounding of the product) count as 0; centred features without
    variance (see :func:`linear_cka`) are refused. Uncentred and ``eps = 1e-7`` (the defaults) is RankMe
    (Garrido et al., ICML 2023); ``eps = 0`` is Roy & Vetterli's definition: k orthogonal directions of equal
    weight give k, one line gives 1.
    """
    if eps < 0:
        raise ValueError(f"eps must be non-negative; got {eps}")
    xt = _normalize(_as_tensor(x))
    if center and xt.shape[0] < 2:
        raise ValueError(f"a centred effective rank needs at least 2 points; got {xt.shape[0]}")
    if not center:  # X^T X directly: one pass, no cancellation to guard against
        gram = torch.zeros(xt.shape[1], xt.shape[1], dtype=torch.float64, device=xt.device)
        for i0 in range(0, xt.shape[0], GRAM_BLOCK_ROWS):
            block = xt[i0 : i0 + GRAM_BLOCK_ROWS].to(torch.float64)
            gram += block.T @ block
        return _erank(gram, eps)
    m = _Moments.of(xt)
    if m.no_variance(m.xx):
        raise ValueError("the centred features have no variance: every row is the same direction")
    return _erank(m.xx, eps)


@dataclass(frozen=True)
class Calibrated:
    """A similarity with its chance level: ``value = raw - chance``; ``chance`` is the mean of the similarity over
    row-shuffled pairings (exact when ``permutations`` is 0: the mean over all of them), ``chance_se`` the
    standard error of a Monte Carlo mean (0 when exact)."""

    value: float
    raw: float
    chance: float
    chance_se: float = 0.0
    permutations: int = 0


def _permutations(n: int, permutations: int, seed: int) -> list[np.ndarray]:
    if not isinstance(permutations, int) or isinstance(permutations, bool) or permutations < 0:
        raise ValueError(f"permutations must be a non-negative integer or None; got {permutations!r}")
    rng = np.random.default_rng(seed)
    return [rng.permutation(n) for _ in range(permutations)]


def _mean_se(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else math.nan


def cka_chance(x3d: ArrayLike, x2d: ArrayLike) -> float:
    """The chance level of :func:`linear_cka`: its mean over all ``N!`` pairings of the rows of ``x3d`` with the
    rows of ``x2d`` permuted, exactly::

        E_pi[CKA(X, P_pi Y)] = tr(Xc^T Xc) tr(Yc^T Yc) / ((N - 1) ||Xc^T Xc||_F ||Yc^T Yc||_F)

    Proof: with ``K = Xc Xc^T`` and ``L = Yc Yc^T`` (centred: rows and columns sum to 0) the numerator of CKA is
    ``tr(K P L P^T) = sum_ij K_ij L_pi(i)pi(j)``; over a uniform permutation ``E[L_pi(i)pi(i)] = tr L / N`` and,
    for ``i != j``, ``E[L_pi(i)pi(j)] = (1^T L 1 - tr L) / (N (N - 1)) = -tr L / (N (N - 1))``, while
    ``sum_(i != j) K_ij = -tr K``: the sum is ``tr K tr L (1 / N + 1 / (N (N - 1))) = tr K tr L / (N - 1)``; the
    denominator does not depend on the pairing. ``tr(C) / ||C||_F`` is the square root of the participation ratio
    of the spectrum, so the chance level is ``sqrt(PR_3d PR_2d) / (N - 1)``: it grows with the number of directions
    the spaces use and shrinks with the points. NaN when CKA is undefined (:func:`linear_cka`).
    """
    k, q = _paired(x3d, x2d)
    if k.shape[0] < 2:
        raise ValueError(f"linear CKA needs at least 2 points; got {k.shape[0]}")
    return _cka_chance(_Moments.of(k, q))


def _shuffled_cross(x: torch.Tensor, y: torch.Tensor, m: _Moments, perm: torch.Tensor) -> torch.Tensor:
    """``(P Yc)^T Xc`` in float64 over row blocks: the cross moment of one shuffled pairing."""
    out = torch.zeros(y.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
    for i0 in range(0, x.shape[0], GRAM_BLOCK_ROWS):
        xb = x[i0 : i0 + GRAM_BLOCK_ROWS].to(torch.float64) - m.mx
        yb = y[perm[i0 : i0 + GRAM_BLOCK_ROWS]].to(torch.float64) - m.my
        out += yb.T @ xb
    return out


def calibrated_cka(
    x3d: ArrayLike, x2d: ArrayLike, permutations: int | None = CALIBRATION_PERMUTATIONS, seed: int = 0
) -> Calibrated:
    """Linear CKA minus its chance level: ``CKA(X, Y) - mean_pi CKA(X, P_pi Y)``, the rows of ``x2d`` shuffled.

    ``permutations`` None (the default, :data:`CALIBRATION_PERMUTATIONS`): the exact mean over all ``N!``
    shufflings (:func:`cka_chance`), no randomness, no extra pass. An integer ``P``: the mean over ``P`` shuffles
    drawn with numpy's ``default_rng(seed)``, each an O(N D^2) float64 pass (only the cross moment changes: the
    denominator and the column means do not depend on the pairing), with its standard error ``chance_se``; it
    estimates the exact value (the tests check it). 0 for unrelated spaces (in expectation), below
    ``1 - chance`` for identical ones. NaN where CKA is undefined.
    """
    k, q = _paired(x3d, x2d)
    if k.shape[0] < 2:
        raise ValueError(f"linear CKA needs at least 2 points; got {k.shape[0]}")
    m = _Moments.of(k, q)
    raw = _cka(m)
    if permutations is None:
        chance = _cka_chance(m)
        return Calibrated(raw - chance, raw, chance)
    perms = _permutations(k.shape[0], permutations, seed)
    if not perms:
        raise ValueError("permutations must be at least 1 (or None: the exact mean)")
    if math.isnan(raw):
        return Calibrated(math.nan, raw, math.nan, math.nan, len(perms))
    den = torch.linalg.matrix_norm(m.xx).item() * torch.linalg.matrix_norm(m.yy).item()
    values = []
    for perm in perms:
        cross = _shuffled_cross(k, q, m, torch.as_tensor(perm, device=k.device))
        values.append((cross * cross).sum().item() / den)
    chance, se = _mean_se(values)
    return Calibrated(raw - chance, raw, chance, se, len(perms))


def mknn_chance(n: int, k: int = DEFAULT_K) -> float:
    """The chance level of :func:`mutual_knn` on ``n`` points: its mean over all pairings of the rows of one space
    with the rows of the other permuted, ``k / (n - 1)`` exactly, whatever the features.

    Proof: the neighbours of point ``i`` in the shuffled space ``P_pi Y`` are ``pi^-1(N_Y(pi(i)))``; given
    ``pi(i) = j``, ``pi^-1`` maps the other points of ``Y`` to the other points of ``X`` by a uniform bijection, so
    they are a uniform ``k``-subset of the ``n - 1`` others, which shares ``k * k / (n - 1)`` points with
    ``N_X(i)`` on average (ties aside: continuous features have none)."""
    if k >= n:
        raise ValueError(f"mutual k-NN needs k < N; got k = {k}, N = {n}")
    return k / (n - 1)


def _shared(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """``|a_j ∩ b_j|`` of every row pair of two (m, k) index arrays (each row distinct indices)."""
    shared = torch.empty(len(a), dtype=torch.int64, device=a.device)
    for j0 in range(0, len(a), 65536):
        aj, bj = a[j0 : j0 + 65536], b[j0 : j0 + 65536]
        shared[j0 : j0 + 65536] = (aj[:, :, None] == bj[:, None, :]).sum(dim=(1, 2))
    return shared.cpu().numpy()


def calibrated_mutual_knn(
    x3d: ArrayLike,
    x2d: ArrayLike,
    k: int = DEFAULT_K,
    permutations: int | None = CALIBRATION_PERMUTATIONS,
    seed: int = 0,
    queries: int | None = None,
    block_size: int | None = None,
) -> Calibrated:
    """Mutual k-NN minus its chance level: ``mknn(X, Y) - mean_pi mknn(X, P_pi Y)``, the rows of ``x2d`` shuffled.

    ``permutations`` None (the default): the exact mean over all shufflings, ``k / (N - 1)`` (:func:`mknn_chance`).
    An integer ``P``: the mean over ``P`` shuffles drawn with ``default_rng(seed)``: the neighbours of query point
    ``i`` in the shuffled space are ``pi^-1(N_Y(pi(i)))``, so each shuffle costs one k-NN search of ``x2d`` at the
    query rows (``2 m N D`` multiply-adds), never a copy of the features. ``queries``, ``block_size``: as
    :func:`mutual_knn` (the query sample drawn with ``seed``, the same for every shuffle).
    """
    x, y = _paired(x3d, x2d)
    n = x.shape[0]
    rows = query_sample(n, queries, seed)
    query = _query_rows(n, k, rows, block_size, x.device)
    a = _knn_indices(x, query, k, block_size or _knn_block_size(n, x.element_size()))
    b = _knn_indices(y, query, k, block_size or _knn_block_size(n, y.element_size()))
    raw = float(_shared(a, b).mean() / k)
    if permutations is None:
        chance = mknn_chance(n, k)
        return Calibrated(raw - chance, raw, chance)
    perms = _permutations(n, permutations, seed)
    if not perms:
        raise ValueError("permutations must be at least 1 (or None: the exact mean)")
    values = []
    for perm in perms:
        p = torch.as_tensor(perm, device=x.device)
        inverse = torch.empty_like(p)
        inverse[p] = torch.arange(n, device=x.device)
        shuffled = inverse[_knn_indices(y, p[query], k, block_size or _knn_block_size(n, y.element_size()))]
        values.append(float(_shared(a, shuffled).mean() / k))
    chance, se = _mean_se(values)
    return Calibrated(raw - chance, raw, chance, se, len(perms))


def _lidar(m: _Moments, delta: float, eps: float) -> float:
    """LiDAR from the moments of the two views (see :func:`lidar`)."""
    n = m.n
    cross = m.yx + n * torch.outer(m.my, m.mx)  # Y^T X, uncentred
    within = (m.uncentred(m.xx, m.mx) + m.uncentred(m.yy, m.my) - cross - cross.T) / (2 * n)  # sum d d^T / (2N)
    between = (m.xx + m.yy + m.yx + m.yx.T) / (4 * (n - 1))  # centred moments of the class means (x + y) / 2
    w = within.cpu().numpy()
    w = (w + w.T) / 2 + delta * np.eye(len(w))
    lam_w, vec_w = np.linalg.eigh(w)
    if lam_w.min() <= 0:
        return math.nan
    inv_sqrt = (vec_w / np.sqrt(lam_w)) @ vec_w.T
    b = between.cpu().numpy()
    lda = inv_sqrt @ ((b + b.T) / 2) @ inv_sqrt
    lam = np.clip(np.linalg.eigvalsh((lda + lda.T) / 2), 0.0, None)  # PSD: negatives are rounding
    if lam.sum() <= 0:
        return math.nan
    return _entropy_rank(lam, eps)


def lidar(x3d: ArrayLike, x2d: ArrayLike, delta: float = LIDAR_DELTA, eps: float = LIDAR_EPS) -> float:
    """LiDAR (Thilak et al., ICLR 2024) of the paired features: the effective rank of the LDA matrix of surrogate
    classes.

    The paper: ``n`` surrogate classes (samples ``x``), each seen in ``q`` views (augmentations) with embeddings
    ``e_1(x) .. e_q(x)``, class means ``mu_x``, grand mean ``mu``::

        Sigma_b = 1/(n - 1) sum_x (mu_x - mu)(mu_x - mu)^T
        Sigma_w = 1/(n (q - 1)) sum_x sum_i (e_i(x) - mu_x)(e_i(x) - mu_x)^T + delta I
        Sigma_LiDAR = Sigma_w^-1/2 Sigma_b Sigma_w^-1/2
        LiDAR = exp(-sum_k p_k log p_k),   p_k = lambda_k / ||lambda||_1 + eps

    with ``lambda`` the eigenvalues of ``Sigma_LiDAR``. *(choice)* Here a surrogate class is one paired point and
    its ``q = 2`` views are its (row-normalised) 3D feature ``x_i`` and 2D feature ``y_i``: the distillation is a
    joint-embedding architecture whose two branches see a point through the lidar and through the camera, as an
    SSL method's two branches see an image through two augmentations, and this pairing is the one grouping of a
    run's geometry set that needs no labels (``features.npz`` holds no superpixels; semantic classes would make
    it a supervised measure). Then ``mu_i = (x_i + y_i) / 2``,
    ``Sigma_w = 1/(2N) sum_i (x_i - y_i)(x_i - y_i)^T + delta I`` and ``Sigma_b`` is the covariance of the
    ``mu_i``; all N points are classes (the paper samples 1 000 to 5 000; every point costs the same O(N D^2)
    float64 moments as CKA, shared with it in :func:`structure`), then O(D^3) for the two eigendecompositions.
    High when the points spread over many directions in which a point's two views agree; between 1 and D.
    Invariant to a rotation applied to both spaces. ``delta`` (:data:`LIDAR_DELTA`) and ``eps``
    (:data:`LIDAR_EPS`): the paper's constants. Needs the same dimension in both spaces; NaN when the LDA matrix
    is 0 (no spread between classes).
    """
    if delta < 0 or eps < 0:
        raise ValueError(f"delta and eps must be non-negative; got {delta}, {eps}")
    k, q = _paired(x3d, x2d)
    if k.shape[1] != q.shape[1]:
        raise ValueError(f"LiDAR's views must share a space; got dimensions {k.shape[1]} and {q.shape[1]}")
    if k.shape[0] < 2:
        raise ValueError(f"LiDAR needs at least 2 points; got {k.shape[0]}")
    return _lidar(_Moments.of(k, q), delta, eps)


@dataclass(frozen=True)
class AlphaFit:
    """The power law ``lambda_r ~ r^-alpha`` fitted by :func:`alpha_req`: ``alpha``, ``r2`` (of the fitted line
    to ``log lambda`` over the fitted ranks) and the ranks used (``first`` to ``last``, both included)."""

    alpha: float
    r2: float
    first: int
    last: int


def _alpha(gram: torch.Tensor, ranks: tuple[int, int], weighted: bool) -> AlphaFit:
    eig = np.sort(np.linalg.eigvalsh(gram.cpu().numpy()))[::-1]
    floor = eig[0] * len(eig) * np.finfo(np.float64).eps if len(eig) else 0.0
    first, last = ranks[0], min(ranks[1], int((eig > floor).sum()))  # ranks below the rounding floor: no decay
    if last - first + 1 < 3:
        return AlphaFit(math.nan, math.nan, first, last)
    r = np.arange(first, last + 1, dtype=np.float64)
    y = np.log(eig[first - 1 : last])
    a = np.stack([-np.log(r), np.ones_like(r)], axis=1)
    w = 1.0 / r if weighted else np.ones_like(r)
    coef = np.linalg.solve(a.T @ (a * w[:, None]), (a * w[:, None]).T @ y)
    residual = y - a @ coef
    total = ((y - y.mean()) ** 2).sum()
    r2 = float(1.0 - (residual**2).sum() / total) if total > 0 else math.nan
    return AlphaFit(float(coef[0]), r2, first, last)


def alpha_req(x: ArrayLike, ranks: tuple[int, int] = ALPHA_FIT_RANKS, weighted: bool = True) -> AlphaFit:
    """alpha-ReQ (Agrawal et al., NeurIPS 2022): the decay exponent ``alpha`` of the eigenspectrum of the features'
    covariance, ``lambda_r ~ r^-alpha`` (``lambda_1 >= lambda_2 >= ...``).

    Rows L2-normalised, columns centred, eigenvalues of ``Xc^T Xc`` (float64, over row blocks: O(N D^2), then
    O(D^3)); ``alpha`` and ``c`` minimise ``sum_r w_r (log lambda_r + alpha log r - c)^2`` over the ranks
    ``ranks`` (:data:`ALPHA_FIT_RANKS`, 6 to 100, both included) with ``w_r = 1 / r`` (``weighted``, as the
    authors' code) or 1. Ranks whose eigenvalue is at the rounding level of the product (below
    ``lambda_1 D`` machine epsilons) are left out: a space of rank 40 is fitted over ranks 6 to 40; fewer than 3
    ranks left: NaN (a collapsed space has no tail to fit). Small alpha: a flat spectrum (many directions
    used, alpha -> 0 for white noise); large: a fast decay. Invariant to rotations and to the scale of the
    features (the scale moves ``c`` only).
    """
    first, last = ranks
    if not (isinstance(first, int) and isinstance(last, int) and 1 <= first < last):
        raise ValueError(f"ranks must be integers 1 <= first < last; got {ranks!r}")
    xt = _normalize(_as_tensor(x))
    if xt.shape[0] < 2:
        raise ValueError(f"alpha-ReQ needs at least 2 points; got {xt.shape[0]}")
    m = _Moments.of(xt)
    if m.no_variance(m.xx):
        return AlphaFit(math.nan, math.nan, first, last)
    return _alpha(m.xx, (first, last), weighted)


@dataclass
class StudentAndTeacher:
    """What a structure metric reads: the row-normalised 3D features ``x`` and 2D features ``y`` of the same N
    points, the settings of :func:`structure`, and what several metrics share, computed once on first use
    (:attr:`moments`)."""

    x: torch.Tensor
    y: torch.Tensor
    k: int = DEFAULT_K
    mknn_queries: int | None = MKNN_QUERIES
    seed: int = 0
    block_size: int | None = None
    neighbours_2d: torch.Tensor | None = None
    measured: dict[str, float | int | None] = field(default_factory=dict)
    """Values already measured on these points with these settings (e.g. ``mknn`` read from a finished run's
    ``metrics.json`` by :mod:`geomstruct.predictors`), used instead of measuring them again."""

    @cached_property
    def moments(self) -> _Moments:
        """The float64 moments of both spaces (:class:`_Moments`), shared by CKA, the effective ranks, LiDAR and
        alpha-ReQ."""
        return _Moments.of(self.x, self.y)

    @cached_property
    def overlap(self) -> np.ndarray | None:
        """The per-query overlaps of the mutual k-NN (:func:`knn_overlap` over ``mknn_queries`` query points drawn
        with ``seed``); None when there are not more than ``k`` points."""
        n = self.x.shape[0]
        if n <= self.k:
            return None
        rows = query_sample(n, self.mknn_queries, self.seed)
        return knn_overlap(
            self.x, self.y, k=self.k, rows=rows, block_size=self.block_size, neighbours_2d=self.neighbours_2d
        )

    @property
    def mknn(self) -> float | None:
        """The mutual k-NN alignment: :attr:`measured` ``mknn`` when given, else the mean of :attr:`overlap`."""
        if "mknn" in self.measured:
            value = self.measured["mknn"]
            return None if value is None else float(value)
        return None if self.overlap is None else float(self.overlap.mean())


StructureValues = dict[str, float | int | bool | None]


@dataclass(frozen=True)
class StructureMetric:
    """A registered structure metric: ``compute`` maps a :class:`StudentAndTeacher` to named values (written to
    every run's ``metrics.json`` ``geometry`` block); ``columns`` are the values the report's tables read (the
    others are detail: a standard error, a setting); ``titles``: the columns shown in the summary's Markdown and
    LaTeX, with their headers."""

    compute: Callable[[StudentAndTeacher], StructureValues]
    columns: tuple[str, ...] = ()
    titles: dict[str, str] = field(default_factory=dict)
    posthoc: bool = False
    """True for metrics added after studies were run: :mod:`geomstruct.predictors` computes them for a finished run
    from its ``features.npz`` into its ``predictors.json``, and the report shows their columns only when some run
    has them (so a report of runs that have neither is unchanged)."""


def _cka_values(data: StudentAndTeacher) -> StructureValues:
    """``CKA``: :func:`linear_cka` from the shared moments (None when undefined: no variance after centring)."""
    cka = _cka(data.moments)
    return {"CKA": None if math.isnan(cka) else cka}


def _mknn_values(data: StudentAndTeacher) -> StructureValues:
    """``mknn`` and its ``mknn_k``, ``mknn_queries``, ``mknn_se`` (:func:`structure`)."""
    n = data.x.shape[0]
    mknn, used, se = None, 0, None
    overlap = data.overlap
    if overlap is not None:
        used = len(overlap)
        mknn = float(overlap.mean())
        se = 0.0 if used == n else math.sqrt((1.0 - used / n) * overlap.var(ddof=1) / used)
    return {"mknn": mknn, "mknn_k": data.k, "mknn_queries": used, "mknn_se": se}


def _erank_values(data: StudentAndTeacher) -> StructureValues:
    """``erank_3d``, ``erank_2d`` (uncentred, RankMe's eps) from the shared moments, their ratio and
    ``collapsed`` (:data:`COLLAPSE_RANK`)."""
    m = data.moments
    e3, e2 = _erank(m.uncentred(m.xx, m.mx), RANKME_EPS), _erank(m.uncentred(m.yy, m.my), RANKME_EPS)
    return {"erank_3d": e3, "erank_2d": e2, "erank_ratio": e3 / e2, "collapsed": bool(e3 < COLLAPSE_RANK)}


def _cka_cal_values(data: StudentAndTeacher) -> StructureValues:
    """``CKA_cal = CKA - CKA_chance`` and ``CKA_chance`` (:func:`cka_chance`, exact) from the shared moments
    (None when CKA is undefined)."""
    cka, chance = _cka(data.moments), _cka_chance(data.moments)
    if math.isnan(cka) or math.isnan(chance):
        return {"CKA_cal": None, "CKA_chance": None}
    return {"CKA_cal": cka - chance, "CKA_chance": chance}


def _mknn_cal_values(data: StudentAndTeacher) -> StructureValues:
    """``mknn_cal = mknn - mknn_chance`` and ``mknn_chance = k / (N - 1)`` (:func:`mknn_chance`, exact: the same
    for a sampled mean, each query's expectation being the same)."""
    n, mknn = data.x.shape[0], data.mknn
    if mknn is None or n <= data.k:
        return {"mknn_cal": None, "mknn_chance": None}
    chance = mknn_chance(n, data.k)
    return {"mknn_cal": mknn - chance, "mknn_chance": chance}


def _lidar_values(data: StudentAndTeacher) -> StructureValues:
    """``lidar``: :func:`lidar` with its default constants from the shared moments (None when the spaces differ in
    dimension or the value is undefined)."""
    if data.x.shape[1] != data.y.shape[1]:
        return {"lidar": None}
    value = _lidar(data.moments, LIDAR_DELTA, LIDAR_EPS)
    return {"lidar": None if math.isnan(value) else value}


def _alpha_values(data: StudentAndTeacher) -> StructureValues:
    """``alpha_3d``, ``alpha_2d``: :func:`alpha_req` of each space from the shared moments, and ``alpha_r2``, the
    R^2 of the 3D fit (None where undefined)."""
    m = data.moments

    def fit(gram: torch.Tensor) -> AlphaFit:
        if m.no_variance(gram):
            return AlphaFit(math.nan, math.nan, *ALPHA_FIT_RANKS)
        return _alpha(gram, ALPHA_FIT_RANKS, True)

    a3, a2 = fit(m.xx), fit(m.yy)

    def num(v: float) -> float | None:
        return None if math.isnan(v) else v

    return {"alpha_3d": num(a3.alpha), "alpha_2d": num(a2.alpha), "alpha_r2": num(a3.r2)}


STRUCTURE_METRICS: dict[str, StructureMetric] = {
    "cka": StructureMetric(_cka_values, ("CKA",), {"CKA": "CKA"}),
    "mknn": StructureMetric(_mknn_values, ("mknn",), {"mknn": "mkNN"}),
    "erank": StructureMetric(_erank_values, ("erank_3d", "erank_2d", "erank_ratio"), {"erank_ratio": "erank ratio"}),
    "cka_cal": StructureMetric(_cka_cal_values, ("CKA_cal",), posthoc=True),
    "mknn_cal": StructureMetric(_mknn_cal_values, ("mknn_cal",), posthoc=True),
    "lidar": StructureMetric(_lidar_values, ("lidar",), posthoc=True),
    "alpha": StructureMetric(_alpha_values, ("alpha_3d",), posthoc=True),
}
"""The structure metrics of every run, by name, in the order of ``metrics.json`` and the report's columns. A new
metric is a function ``StudentAndTeacher -> {value name: number}`` (here or in a file of its own) and one line
here: :func:`structure` then writes it into every run's ``metrics.json`` and the report's tables read its
``columns`` (:data:`geomstruct.runs.STRUCTURE_COLUMNS`)."""


def structure_columns() -> tuple[str, ...]:
    """The report columns of every registered structure metric, in registry order."""
    return tuple(column for metric in STRUCTURE_METRICS.values() for column in metric.columns)


def posthoc_columns() -> tuple[str, ...]:
    """The report columns of the metrics marked ``posthoc`` (:attr:`StructureMetric.posthoc`), in registry order."""
    return tuple(column for metric in STRUCTURE_METRICS.values() if metric.posthoc for column in metric.columns)


def structure_titles() -> dict[str, str]:
    """The structure columns shown in the summary's Markdown and LaTeX, with their headers, in registry order."""
    return {column: title for metric in STRUCTURE_METRICS.values() for column, title in metric.titles.items()}


def structure(
    x3d: ArrayLike,
    x2d: ArrayLike,
    k: int = DEFAULT_K,
    mknn_queries: int | None = MKNN_QUERIES,
    seed: int = 0,
    block_size: int | None = None,
    neighbours_2d: torch.Tensor | None = None,
) -> StructureValues:
    """Every structure quantity of one student against the teacher on the same points: the values of every
    metric of :data:`STRUCTURE_METRICS`, in its order.

    ``neighbours_2d``: the teacher's :func:`knn_neighbours` for ``k`` and the query rows
    ``query_sample(N, mknn_queries, seed)``, when already known (every student on the same set shares them).

    - ``CKA``: :func:`linear_cka` (None when undefined: a space without variance after centring);
    - ``mknn``: :func:`mutual_knn` with ``k`` neighbours, over ``mknn_queries`` query points drawn with ``seed``
      (:data:`MKNN_QUERIES` by default; all points when None or when there are fewer), neighbours among all
      points; ``mknn_k``, ``mknn_queries`` (the query points used) and ``mknn_se``, the standard error of the
      sampled mean, ``sqrt((1 - m / N) s^2 / m)`` with ``s^2`` the sample variance of the per-point overlaps
      (0 when every point is a query: the value is then exact); ``mknn`` and ``mknn_se`` are None, and
      ``mknn_queries`` 0, when there are not more than ``k`` points;
    - ``erank_3d``, ``erank_2d``: :func:`effective_rank` (uncentred, RankMe's eps) of each space;
      ``erank_ratio = erank_3d / erank_2d``;
    - ``collapsed``: ``erank_3d < COLLAPSE_RANK`` (:data:`COLLAPSE_RANK`, a choice);
    - ``CKA_cal``, ``CKA_chance``: :func:`calibrated_cka` (exact chance level); ``mknn_cal``, ``mknn_chance``:
      :func:`calibrated_mutual_knn` of the same sampled mean (chance ``k / (N - 1)``);
    - ``lidar``: :func:`lidar` (a point's 3D and 2D features as the views of its class; None when the dimensions
      differ);
    - ``alpha_3d``, ``alpha_2d``: :func:`alpha_req` of each space, ``alpha_r2`` the R^2 of the 3D fit.

    CKA, its chance level, the effective ranks, LiDAR and alpha come from the same float64 moments (two passes
    over the rows, O(N D^2), then a few O(D^3) eigendecompositions); the mutual k-NN costs ``2 m N D``
    multiply-adds for ``m`` query points (its chance level nothing).
    """
    x, y = _paired(x3d, x2d)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"structure needs at least 2 points; got {n}")
    data = StudentAndTeacher(x, y, k, mknn_queries, seed, block_size, neighbours_2d)
    values: StructureValues = {}
    for metric in STRUCTURE_METRICS.values():
        values.update(metric.compute(data))
    return values
