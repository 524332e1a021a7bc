"""Image-to-lidar distillation losses (docs/method.md#losses).

Every loss is a pure function ``loss(k, q, **params) -> scalar tensor`` where

- ``k`` (N, D) holds the student's point features (gradient flows into it),
- ``q`` (N, D) holds the frozen teacher's pixel features at the paired pixels (never receives a gradient:
  it is detached inside every loss).

Rows of both are L2-normalised inside (point-pair losses), so every dot product is a cosine. Losses are chosen by
name from the registry :data:`LOSSES` / :func:`get_loss` (or as a plug-in ``"module:object"`` defined outside the
package, held to the same contract by :func:`loss_problem`); their parameters belong in the run configuration.

*Region losses* (:func:`loss_inputs` ``"superpixels"``: SLidR and ST-SLidR) compare superpoints with superpixels
instead of point-pixel pairs. Their contract extends the one above by one keyword, ``segments``:

- ``loss(k, q, segments=s, **params)``: ``k`` (N, D) point features of pairs, ``s`` (N,) int64 the region
  (superpixel) of each pair's pixel, ``q`` (S, D) one teacher feature per region (the mean of the superpixel's
  unit pixel features, :func:`bench.data.superpixels.region_features`), ``0 <= s_i < S``. The rows of ``k`` are
  L2-normalised, then average-pooled per region (:func:`pool_segments`); regions that no pair reaches are dropped
  with their row of ``q``;
- ``loss(k, q, **params)`` (``segments=None``): ``k`` and ``q`` (S, D) are already one row per region (``k``: means
  of unit point rows), row i of both for the same region. A region lies in one image, hence in one scan, so a
  caller may pool per scan and concatenate (the distributed trainer does): that equals pooling the whole batch.

As in SLidR's and ST-SLidR's code, the pooled rows are *not* re-normalised (``cosine=True`` does, as a variant).

Sources: InfoNCE of PPKT / SLidR (Sautier et al., CVPR 2022); the cosine loss of OpenScene / CLIP2Scene;
the relational loss of Mahmoud, Harakeh & Waslander, *Image-to-Lidar Relational Distillation for Autonomous
Driving Data*, ECCV 2024; the semantically tolerant loss of ST-SLidR (Mahmoud et al., CVPR 2023); the L2
regression of ScaLR (Puy et al., CVPR 2024). Where a paper is silent, the choices of docs/method.md#losses are
implemented and marked *(choice)*.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from models.registry import Registry

LossFn = Callable[..., Tensor]


def _prepare(k: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
    """Check shapes, L2-normalise rows, detach the teacher side."""
    if k.ndim != 2 or q.ndim != 2 or k.shape != q.shape:
        raise ValueError(f"expected k and q of the same shape (N, D); got {tuple(k.shape)} and {tuple(q.shape)}")
    if k.shape[0] < 2:
        raise ValueError(f"a distillation loss needs at least 2 pairs; got N = {k.shape[0]}")
    # one memory layout for both sides: the row norms then run through the same reduction, so a student equal to
    # its teacher normalises to bitwise the same rows
    q = q.detach().to(k.dtype).contiguous()
    return F.normalize(k.contiguous(), dim=1), F.normalize(q, dim=1)


def contrastive(k: Tensor, q: Tensor, tau: float = 0.07) -> Tensor:
    """InfoNCE of PPKT / SLidR, one direction (3D anchors, 2D candidates).

    ``L_con = mean_i CE(softmax_j(k_i . q_j / tau), target = i)``, i.e. the cross-entropy of the logits
    ``K Q^T / tau`` against the diagonal. ``tau`` (default 0.07) is the knob of the uniformity-tolerance
    trade-off (Wang & Liu, CVPR 2021).
    """
    if tau <= 0:
        raise ValueError(f"temperature tau must be positive; got {tau}")
    k, q = _prepare(k, q)
    logits = (k @ q.T) / tau
    target = torch.arange(k.shape[0], device=k.device)
    return F.cross_entropy(logits, target)


def similarity(k: Tensor, q: Tensor) -> Tensor:
    """Cosine loss of OpenScene / CLIP2Scene: ``L_sim = mean_i (1 - k_i . q_i)``."""
    k, q = _prepare(k, q)
    return (1.0 - (k * q).sum(dim=1)).mean()


class _RelationalFunction(torch.autograd.Function):
    """Fused relational loss on L2-normalised rows, with a hand-written backward.

    Forward, with ``P = Q Q^T`` (constant) and ``w_d = 1/N``, ``w_o = 1/(N(N-1))``::

        L_cross = w_d * sum_i |K Q^T - P|_ii + w_o * sum_{i != j} |K Q^T - P|_ij
        L_intra = w_o * sum_{i != j} |K K^T - P|_ij
        L       = c * L_cross + l * L_intra        (c in {0, 1}, l = lambda or 0)

    The differences are computed from ``E = K - Q`` without forming ``P``: ``K Q^T - P = E Q^T`` and
    ``K K^T - P = E K^T + Q E^T = E K^T + (E Q^T)^T``. Mathematically the same; numerically the product of a
    difference replaces the difference of two products, so a student equal to its teacher gives exactly 0 on
    every CPU (two GEMM kernels never have to round ``K Q^T`` and ``Q Q^T`` alike for the signs below to be 0),
    the entries carry no cancellation error, and one N x N product is saved.

    Backward (subgradient sign(0) = 0, as ``torch.abs``)::

        dL/dK = c * W_c Q + l * (W_i + W_i^T) K,
        W_c = sign(K Q^T - P) weighted by w_d on the diagonal and w_o off it,
        W_i = w_o * sign(K K^T - P) with a zero diagonal.

    Autograd through ``abs``/masks would keep several N x N temporaries alive; this keeps two sign matrices.
    """

    @staticmethod
    def forward(  # noqa: D102
        ctx, k: Tensor, q: Tensor, cross_weight: float, intra_weight: float, low: torch.dtype | None = None
    ) -> Tensor:
        n = k.shape[0]
        w_diag, w_off = 1.0 / n, 1.0 / (n * (n - 1))
        acc = k.dtype  # sums and the returned loss keep the input precision
        e = k - q  # in the input precision, before any cast: small entries keep their relative accuracy
        if low is not None:  # the N x N products in a lower precision (autocast), sums in ``acc``
            k, q, e = k.to(low), q.to(low), e.to(low)
        a = e @ q.T  # K Q^T - Q Q^T
        loss = torch.zeros((), dtype=acc, device=k.device)
        w_cross = w_intra = None
        if intra_weight:
            b = torch.addmm(a.T, e, k.T)  # K K^T - Q Q^T = E K^T + Q E^T
            b.diagonal().zero_()
            loss = loss + intra_weight * w_off * b.abs().sum(dtype=acc)
            signs = b.sign_()
            w_intra = (signs + signs.T).mul_(w_off * intra_weight)  # L sums |b_ij| over both (i, j) and (j, i)
            del b, signs
        if cross_weight:
            diag_abs = a.diagonal().abs().sum(dtype=acc)
            total_abs = a.abs().sum(dtype=acc)
            loss = loss + cross_weight * (w_diag * diag_abs + w_off * (total_abs - diag_abs))
            w_cross = a.sign_().mul_(w_off * cross_weight)
            w_cross.diagonal().mul_(w_diag / w_off)
        ctx.save_for_backward(q, k, w_cross, w_intra)
        ctx.acc = acc
        return loss

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # noqa: D102
        q, k, w_cross, w_intra = ctx.saved_tensors
        grad_k = None
        if ctx.needs_input_grad[0]:
            grad_k = torch.zeros_like(k)
            if w_cross is not None:
                grad_k.addmm_(w_cross, q)
            if w_intra is not None:
                grad_k.addmm_(w_intra, k)
            grad_k = grad_k.to(ctx.acc).mul_(grad_out)
        return grad_k, None, None, None, None


def autocast_dtype(x: Tensor) -> torch.dtype | None:
    """The lower precision of an active ``torch.autocast`` on ``x``'s device (None when it is off)."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return None


def relational(k: Tensor, q: Tensor, lam: float = 1.0, cross: bool = True, intra: bool = True) -> Tensor:
    """Relational distillation loss (Mahmoud et al., ECCV 2024), docs/method.md#relational.

    With ``C = |K Q^T - Q Q^T|`` and ``R = |K K^T - Q Q^T|`` (element-wise, N x N):

    - cross-modal: ``L_cross = mean_i C_ii + mean_{i != j} C_ij`` (for unit rows ``(Q Q^T)_ii = 1``, so the
      diagonal term equals the similarity loss);
    - intra-modal *(choice, by symmetry with the cross term)*: ``L_intra = mean_{i != j} R_ij``;
    - total *(choice)*: ``L_rel = L_cross + lam * L_intra`` (``lam = 1``).

    ``cross=False`` or ``intra=False`` give the two ablations (``relational_intra`` / ``relational_cross``);
    when only the intra term is kept, ``lam`` still scales it. ``Q Q^T`` carries no gradient and both terms
    use the same N pairs. Under ``torch.autocast`` (the trainer's ``loss_dtype``) the N x N products and the
    backward's products run in the autocast dtype (bfloat16: AMX on recent Xeons) with sums and the loss in the
    input precision.
    """
    if not (cross or intra):
        raise ValueError("relational loss needs at least one of cross=True or intra=True")
    if lam < 0:
        raise ValueError(f"lam must be non-negative; got {lam}")
    k, q = _prepare(k, q)
    return _RelationalFunction.apply(k, q, 1.0 if cross else 0.0, float(lam) if intra else 0.0, autocast_dtype(k))


def relational_cross(k: Tensor, q: Tensor) -> Tensor:
    """Ablation: the cross-modal term of :func:`relational` only."""
    return relational(k, q, cross=True, intra=False)


def relational_intra(k: Tensor, q: Tensor, lam: float = 1.0) -> Tensor:
    """Ablation: the intra-modal term of :func:`relational` only (scaled by ``lam``)."""
    return relational(k, q, lam=lam, cross=False, intra=True)


def regression(k: Tensor, q: Tensor) -> Tensor:
    """L2 feature regression of ScaLR (Puy et al., CVPR 2024): ``L_l2 = mean_i ||k_i - q_i||_2`` on L2-normalised
    rows (the Euclidean distance, not its square; ``= mean_i sqrt(2 - 2 k_i . q_i)``).

    Its gradient ``(k_i - q_i) / ||k_i - q_i||`` is undefined where a student row equals its teacher row exactly;
    autograd's norm gives 0 there.
    """
    k, q = _prepare(k, q)
    return (k - q).norm(dim=1).mean()


def pool_segments(x: Tensor, segments: Tensor) -> tuple[Tensor, Tensor]:
    """Mean of the rows of ``x`` (N, D) per segment id: ``(pooled (S', D), ids (S',))`` over the S' ids that
    occur in ``segments`` (N,), in increasing id order. Differentiable in ``x``."""
    if segments.ndim != 1 or segments.shape[0] != x.shape[0]:
        raise ValueError(f"segments must have shape ({x.shape[0]},) to match the rows; got {tuple(segments.shape)}")
    ids, inverse = torch.unique(segments, return_inverse=True)
    sums = x.new_zeros(len(ids), x.shape[1]).index_add(0, inverse, x)
    counts = torch.bincount(inverse, minlength=len(ids)).to(x.dtype)
    return sums / counts[:, None], ids


def pool_selected_rows(x: Tensor, rows: Tensor, segments: Tensor) -> tuple[Tensor, Tensor]:
    """``pool_segments(x[rows], segments)`` without materialising ``x[rows]`` (M, D): the means are one sparse
    ``(S', len(x))`` matrix, weight ``1 / count`` at ``(segment, row)`` for every selected row, times ``x``, so the
    forward and the backward pass read each selected row once instead of copying, pooling and scattering an M x D
    block (faster in both passes). Differentiable in ``x``;
    ``rows`` may repeat."""
    if rows.ndim != 1 or segments.shape != rows.shape:
        shapes = f"{tuple(rows.shape)} and {tuple(segments.shape)}"
        raise ValueError(f"rows and segments must be (M,) of the same length; got {shapes}")
    ids, inverse = torch.unique(segments, return_inverse=True)
    counts = torch.bincount(inverse, minlength=len(ids)).to(x.dtype)
    weights = torch.sparse_coo_tensor(
        torch.stack([inverse, rows.to(inverse.device)]),
        (1.0 / counts)[inverse],
        size=(len(ids), x.shape[0]),
        check_invariants=False,  # indices in range by construction
    )
    return torch.sparse.mm(weights, x), ids


def _regions(k: Tensor, q: Tensor, segments: Tensor | None, cosine: bool) -> tuple[Tensor, Tensor]:
    """One row per region for both sides (the region-loss contract of the module docstring): the superpoints
    (means of the unit point rows) and the superpixels' teacher rows, re-normalised only when ``cosine``."""
    if segments is None:
        if k.ndim != 2 or q.ndim != 2 or k.shape != q.shape:
            raise ValueError(f"expected k and q of the same shape (S, D); got {tuple(k.shape)} and {tuple(q.shape)}")
        pooled, rows = k, q.detach()
    else:
        if k.ndim != 2 or q.ndim != 2 or k.shape[1] != q.shape[1]:
            shapes = f"{tuple(k.shape)} and {tuple(q.shape)}"
            raise ValueError(f"expected k (N, D) and q (S, D) with the same D; got {shapes}")
        segments = torch.as_tensor(segments, device=k.device)
        if segments.dtype.is_floating_point or segments.dtype == torch.bool:
            raise ValueError(f"segments must hold integer region ids; got dtype {segments.dtype}")
        if len(segments) and (int(segments.min()) < 0 or int(segments.max()) >= q.shape[0]):
            raise ValueError(f"segments must lie in [0, {q.shape[0]}) (one row of q per region)")
        pooled, ids = pool_segments(F.normalize(k, dim=1), segments)
        rows = q.detach()[ids]
    if pooled.shape[0] < 2:
        raise ValueError(f"a region loss needs at least 2 regions; got S = {pooled.shape[0]}")
    rows = rows.to(pooled.dtype)
    if cosine:
        return F.normalize(pooled, dim=1), F.normalize(rows, dim=1)
    return pooled, rows


def slidr(k: Tensor, q: Tensor, segments: Tensor | None = None, tau: float = 0.07, cosine: bool = False) -> Tensor:
    """SLidR's superpixel-driven InfoNCE (Sautier et al., CVPR 2022, eq. 2; code ``valeoai/SLidR`` @ 14729d0,
    ``loss_superpixels_average`` + ``NCELoss``): superpoint features ``kbar_s`` (the mean of the student's unit
    point features over the points whose pixel falls in superpixel s) against superpixel features ``qbar_s`` (the
    mean of the teacher's unit pixel features over the superpixel, :func:`bench.data.superpixels.region_features`),
    over the S regions of a batch that hold at least one point::

        L_sp = mean_s CE(softmax_t(kbar_s . qbar_t / tau), target = s)

    As in SLidR's code, the means are *not* re-normalised: a dot product of means of unit vectors has norm
    ``|kbar| |qbar| <= 1``, so the effective temperature is ``tau / (|kbar| |qbar|)`` (about 0.18 at ``tau = 0.07``
    for random unit vectors) and the loss also rewards point features that agree inside a superpixel.
    ``cosine=True`` re-normalises both means first (logits are cosines over ``tau``, as :func:`contrastive`):
    a variant, off by default. ``segments`` and the shapes follow the region contract (module docstring).
    """
    if tau <= 0:
        raise ValueError(f"temperature tau must be positive; got {tau}")
    k, q = _regions(k, q, segments, cosine)
    logits = (k @ q.T) / tau
    return F.cross_entropy(logits, torch.arange(k.shape[0], device=k.device))


def _row_quantile(x: Tensor, fraction: float) -> Tensor:
    """Per-row quantile of an (S, S) matrix with linear interpolation (``torch.quantile``'s default), without its
    16 M-element limit: the two order statistics around ``fraction (S - 1)`` from one ``topk`` of the nearer end
    (fast for the small fractions ST-SLidR uses)."""
    n = x.shape[1]
    pos = fraction * (n - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    if hi < n - lo:  # the smallest hi + 1 values, ascending
        values = torch.topk(x, hi + 1, dim=1, largest=False, sorted=True).values
        low, high = values[:, lo], values[:, hi]
    else:  # the largest n - lo values, descending: index n - 1 - i holds order statistic i
        values = torch.topk(x, n - lo, dim=1, largest=True, sorted=True).values
        low, high = values[:, n - 1 - lo], values[:, n - 1 - hi]
    return low + (pos - lo) * (high - low)


def negative_weights(
    sim: Tensor, min_quantile: float = 0.01, max_quantile: float = 1.0, clip_similarity: bool = False
) -> Tensor:
    """ST-SLidR's weight of every logit (Mahmoud et al., CVPR 2023, sec. 3.2; code ``TRAILab/ST-SLidR`` @ 4d698c6):
    ``w_st = 1 - sim_st`` with ``sim`` the cosine of the regions' 2D features, so a negative that the 2D space finds
    similar (a likely same-class region) counts less. The class-balanced loss of the published configuration
    (``loss_superpixel_stslidr_classbalance``) uses ``sim`` as it is (``w`` in [0, 2]); the code's ``NCELoss`` (the
    loss without class balance) first clips ``sim`` to [0, 1] (``w`` in [0, 1]): ``clip_similarity=True``. When
    ``min_quantile > 0`` or ``max_quantile < 1``, per anchor row the weights below the row's ``min_quantile``
    quantile or above its ``max_quantile`` quantile become 0 and every other non-zero weight 1 (the published
    setting: the 1% most similar negatives are tolerated); clipping then changes nothing but the rare row in
    which more than ``1 - min_quantile`` of the cosines are negative. The diagonal (positives) is always 1.
    """
    if not 0.0 <= min_quantile <= max_quantile <= 1.0:
        raise ValueError(f"need 0 <= min_quantile <= max_quantile <= 1; got {min_quantile}, {max_quantile}")
    weight = 1.0 - (sim.clamp(0.0, 1.0) if clip_similarity else sim)
    if min_quantile > 0.0 or max_quantile < 1.0:
        keep = weight != 0
        if min_quantile > 0.0:  # quantile 0 is the row minimum: nothing lies below it
            keep &= weight >= _row_quantile(weight, min_quantile)[:, None]
        if max_quantile < 1.0:  # quantile 1 is the row maximum: nothing lies above it
            keep &= weight <= _row_quantile(weight, max_quantile)[:, None]
        weight = keep.to(sim.dtype)
    weight.fill_diagonal_(1.0)
    return weight


def anchor_weights(sim: Tensor, noise_threshold: float = 0.5) -> Tensor:
    """ST-SLidR's class-agnostic balancing (CVPR 2023, sec. 3.3; code ``get_anchor_weights`` /
    ``get_votes``): an anchor's density in the 2D space, ``v_s = sum_t sim_st [sim_st >= noise_threshold]``
    (itself included), min-max normalised, gives ``a_s = 1 - (v_s - min v) / (max v - min v)``: regions of
    over-represented (dense) kinds weigh less. Clipping ``sim`` to [0, 1] first changes no vote when
    ``noise_threshold >= 0`` (cosines are at most 1). *(choice)* all-equal votes give equal weights (the code
    divides by zero there).
    """
    votes = torch.where(sim >= noise_threshold, sim, torch.zeros_like(sim)).sum(dim=1)
    votes = votes - votes.min()
    top = votes.max()
    if float(top) == 0.0:
        return torch.ones_like(votes)
    return 1.0 - votes / top


def st_slidr(
    k: Tensor,
    q: Tensor,
    segments: Tensor | None = None,
    tau: float = 0.07,
    min_quantile: float = 0.01,
    max_quantile: float = 1.0,
    noise_threshold: float = 0.5,
    class_balance: bool = True,
    clip_similarity: bool = False,
    cosine: bool = False,
) -> Tensor:
    """ST-SLidR: semantically tolerant, class-balanced superpixel InfoNCE (Mahmoud, Hu, Harakeh, Waslander et
    al., CVPR 2023; code ``TRAILab/ST-SLidR`` @ 4d698c6, ``loss_superpixel_stslidr_classbalance``, config
    ``stslidr_classbalance_*.yaml``: ``tau = 0.07``, ``min_quantile = 0.01``, ``noise_threshold = 0.5``).

    On the region rows ``kbar``, ``qbar`` of :func:`slidr` (same contract; not re-normalised unless ``cosine``),
    with ``sim_st = cos(qbar_s, qbar_t)`` the cosines of the regions' teacher features,
    ``W = negative_weights(sim, clip_similarity=...)`` and ``a = anchor_weights(sim)``::

        l_s = CE(softmax_t(W_st * kbar_s . qbar_t / tau), target = s)
        L   = sum_s a_s l_s / sum_s a_s          (class_balance; else mean_s l_s)

    As in the public code, ``W`` scales the *logits*: a tolerated negative keeps the logit 0 in the softmax (it is
    not removed); ``W`` and the votes of ``a`` use the same ``sim``: unclipped by default, as the class-balanced
    code path does; ``clip_similarity=True`` clips it to [0, 1] as the code's ``NCELoss`` does (the votes are the
    same either way, :func:`anchor_weights`). *(choice)* the 2D similarity is computed from the same teacher
    features that are distilled -- in ST-SLidR they are the same pretrained image network's features (before its
    projection head); the weights are constants (no gradient); the code's removal of superpixels whose teacher
    feature is exactly zero is not reproduced (a teacher here never outputs an all-zero pixel).
    """
    if tau <= 0:
        raise ValueError(f"temperature tau must be positive; got {tau}")
    k, q = _regions(k, q, segments, cosine)
    with torch.no_grad():
        unit = F.normalize(q, dim=1)
        sim = unit @ unit.T
        if clip_similarity:
            sim = sim.clamp(0.0, 1.0)
        weight = negative_weights(sim, min_quantile, max_quantile)
    logits = (k @ q.T) / tau * weight
    per_anchor = F.cross_entropy(logits, torch.arange(k.shape[0], device=k.device), reduction="none")
    if not class_balance:
        return per_anchor.mean()
    with torch.no_grad():
        balance = anchor_weights(sim, noise_threshold)
    return (per_anchor * balance).sum() / balance.sum()


def loss_problem(name: str, fn: object) -> str | None:
    """What keeps ``fn`` from being a loss (the contract of the module docstring), None when nothing does: a
    callable ``loss(k, q, **params)`` whose parameters after ``k`` and ``q`` all have defaults; a plug-in's
    optional ``inputs`` attribute is ``"pairs"`` or ``"superpixels"`` (a region loss, which then takes
    ``segments``) and its optional ``parameter_ranges`` is a dict like :data:`PARAMETER_RANGES`."""
    if not callable(fn):
        return f"a loss must be a function loss(k, q, **params) -> Tensor; got {type(fn).__name__}"
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return "its signature cannot be read (a loss is a function loss(k, q, **params) -> Tensor)"
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if len(parameters) < 2 or any(p.kind not in positional for p in parameters[:2]):
        return "a loss takes the student's and the teacher's features first: loss(k, q, **params) -> Tensor"
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    bare = [p.name for p in parameters[2:] if p.default is inspect.Parameter.empty and p.kind not in variadic]
    if bare:
        return f"its parameters after k and q need defaults (the configuration may leave them out); {bare} have none"
    inputs = getattr(fn, "inputs", "pairs")
    if inputs not in LOSS_INPUT_KINDS:
        return f"its inputs attribute must be one of {', '.join(LOSS_INPUT_KINDS)}; got {inputs!r}"
    if inputs == "superpixels" and "segments" not in [p.name for p in parameters]:
        return "a region loss (inputs = 'superpixels') takes segments=None (the region contract)"
    if not isinstance(getattr(fn, "parameter_ranges", {}), dict):
        return "its parameter_ranges attribute must be a dict like models.losses.PARAMETER_RANGES"
    return None


LOSS_INPUT_KINDS = ("pairs", "superpixels")
"""What a loss compares: ``"pairs"`` (N sampled point-pixel pairs) or ``"superpixels"`` (superpoint-superpixel
regions; the region contract of the module docstring)."""

LOSSES: Registry[LossFn] = Registry("loss", loss_problem, plural="losses")
"""The losses by name, in the order the study presents them; metadata ``inputs`` (one of
:data:`LOSS_INPUT_KINDS`, ``"pairs"`` unless given). A new loss is a function (here or in a file of its own) and one
line below; a plug-in needs neither (:mod:`models.registry`)."""
LOSSES.register("contrastive", contrastive)
LOSSES.register("similarity", similarity)
LOSSES.register("relational", relational)
LOSSES.register("relational_cross", relational_cross)
LOSSES.register("relational_intra", relational_intra)
LOSSES.register("regression", regression)
LOSSES.register("slidr", slidr, inputs="superpixels")
LOSSES.register("st_slidr", st_slidr, inputs="superpixels")


def get_loss(name: str) -> LossFn:
    """The loss registered under ``name``, or the plug-in ``"module:object"`` it names, checked by
    :func:`loss_problem`; an :class:`~models.registry.UnknownComponent` (a ``ValueError`` and a ``KeyError``)
    naming the valid losses or what is wrong with the plug-in otherwise."""
    return LOSSES.get(name)


def loss_inputs(name: str) -> str:
    """What the loss ``name`` compares (:data:`LOSS_INPUT_KINDS`): its ``inputs`` metadata (a plug-in's
    attribute), ``"pairs"`` by default."""
    return str(LOSSES.meta(name, "inputs", "pairs"))


PARAMETER_RANGES: dict[str, tuple[float, float, bool, str]] = {
    "tau": (0.0, math.inf, True, "positive (> 0)"),
    "lam": (0.0, math.inf, False, "at least 0"),
    "min_quantile": (0.0, 1.0, False, "in [0, 1]"),
    "max_quantile": (0.0, 1.0, False, "in [0, 1]"),
    "noise_threshold": (-1.0, 1.0, False, "in [-1, 1] (a cosine)"),
}
"""Valid values of the losses' numeric parameters, by parameter name: ``(low, high, low_open, description)``, a
finite number from ``low`` (excluded when ``low_open``: a temperature divides the logits) to ``high``. Every
float parameter of :data:`LOSSES` has an entry."""


def parameter_errors(name: str, params: dict[str, object]) -> list[str]:
    """What is wrong with the values of the loss ``name``'s parameters ``params`` before it is called (the losses
    themselves raise only when called): each number within :data:`PARAMETER_RANGES`, ``min_quantile <=
    max_quantile`` and, for ``relational``, ``cross`` or ``intra``; the parameters left out take the defaults of
    the loss's signature; a loss's own ``parameter_ranges`` (a plug-in's attribute) add to or replace the shared
    ranges. Names and types are the caller's to check; ``[]`` when the values are valid."""
    ranges = {**PARAMETER_RANGES, **LOSSES.meta(name, "parameter_ranges", {})}
    signature = inspect.signature(get_loss(name)).parameters.values()
    defaults = {p.name: p.default for p in signature if p.default is not inspect.Parameter.empty}
    values = {**defaults, **params}
    errors = []
    for key, value in params.items():
        if key not in ranges or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        low, high, low_open, text = ranges[key]
        if not (math.isfinite(value) and (low < value if low_open else low <= value) and value <= high):
            errors.append(f"loss {name} parameter {key} must be {text}; got {value!r}")
    low, high = values.get("min_quantile"), values.get("max_quantile")
    if isinstance(low, (int, float)) and isinstance(high, (int, float)) and low > high:
        errors.append(f"loss {name} needs min_quantile <= max_quantile; got {low!r} > {high!r}")
    if name == "relational" and not (values.get("cross") or values.get("intra")):
        errors.append("loss relational needs at least one of cross=True or intra=True")
    return errors
