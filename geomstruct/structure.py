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

    @cached_property
    def moments(self) -> _Moments:
        """The float64 moments of both spaces (:class:`_Moments`), shared by CKA and the effective ranks."""
        return _Moments.of(self.x, self.y)


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


def _cka_values(data: StudentAndTeacher) -> StructureValues:
    """``CKA``: :func:`linear_cka` from the shared moments (None when undefined: no variance after centring)."""
    cka = _cka(data.moments)
    return {"CKA": None if math.isnan(cka) else cka}


def _mknn_values(data: StudentAndTeacher) -> StructureValues:
    """``mknn`` and its ``mknn_k``, ``mknn_queries``, ``mknn_se`` (:func:`structure`)."""
    n = data.x.shape[0]
    mknn, used, se = None, 0, None
    if n > data.k:
        rows = query_sample(n, data.mknn_queries, data.seed)
        overlap = knn_overlap(
            data.x, data.y, k=data.k, rows=rows, block_size=data.block_size, neighbours_2d=data.neighbours_2d
        )
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


STRUCTURE_METRICS: dict[str, StructureMetric] = {
    "cka": StructureMetric(_cka_values, ("CKA",), {"CKA": "CKA"}),
    "mknn": StructureMetric(_mknn_values, ("mknn",), {"mknn": "mkNN"}),
    "erank": StructureMetric(_erank_values, ("erank_3d", "erank_2d", "erank_ratio"), {"erank_ratio": "erank ratio"}),
}
"""The structure metrics of every run, by name, in the order of ``metrics.json`` and the report's columns. A new
metric is a function ``StudentAndTeacher -> {value name: number}`` (here or in a file of its own) and one line
here: :func:`structure` then writes it into every run's ``metrics.json`` and the report's tables read its
``columns`` (:data:`geomstruct.runs.STRUCTURE_COLUMNS`)."""


def structure_columns() -> tuple[str, ...]:
    """The report columns of every registered structure metric, in registry order."""
    return tuple(column for metric in STRUCTURE_METRICS.values() for column in metric.columns)


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
    - ``collapsed``: ``erank_3d < COLLAPSE_RANK`` (:data:`COLLAPSE_RANK`, a choice).

    CKA and both effective ranks come from the same float64 moments (two passes over the rows, O(N D^2)); the
    mutual k-NN costs ``2 m N D`` multiply-adds for ``m`` query points.
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
