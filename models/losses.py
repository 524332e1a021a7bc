"""Image-to-lidar distillation losses (METHOD.md section 3).

Every loss is a pure function ``loss(k, q, **params) -> scalar tensor`` where

- ``k`` (N, D) holds the student's point features (gradient flows into it),
- ``q`` (N, D) holds the frozen teacher's pixel features at the paired pixels (never receives a gradient:
  it is detached inside every loss).

Rows of both are L2-normalised inside, so every dot product is a cosine. Losses are chosen by name from
:data:`LOSSES` / :func:`get_loss`; their parameters belong in the run configuration.

Sources: InfoNCE of PPKT / SLidR (Sautier et al., CVPR 2022); the cosine loss of OpenScene / CLIP2Scene;
the relational loss of Mahmoud, Harakeh & Waslander, *Image-to-Lidar Relational Distillation for Autonomous
Driving Data*, ECCV 2024. Where that paper is silent, the choices of METHOD.md are implemented and marked
*(choice)*.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

LossFn = Callable[..., Tensor]


def _prepare(k: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
    """Check shapes, L2-normalise rows, detach the teacher side."""
    if k.ndim != 2 or q.ndim != 2 or k.shape != q.shape:
        raise ValueError(f"expected k and q of the same shape (N, D); got {tuple(k.shape)} and {tuple(q.shape)}")
    if k.shape[0] < 2:
        raise ValueError(f"a distillation loss needs at least 2 pairs; got N = {k.shape[0]}")
    q = q.detach().to(k.dtype)
    return F.normalize(k, dim=1), F.normalize(q, dim=1)


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

    Backward (subgradient sign(0) = 0, as ``torch.abs``)::

        dL/dK = c * W_c Q + 2 l * W_i K,
        W_c = sign(K Q^T - P) weighted by w_d on the diagonal and w_o off it,
        W_i = w_o * sign(K K^T - P) with a zero diagonal (symmetric, hence the factor 2).

    Autograd through ``abs``/masks would keep several N x N temporaries alive; this keeps two sign matrices.
    """

    @staticmethod
    def forward(ctx, k: Tensor, q: Tensor, cross_weight: float, intra_weight: float) -> Tensor:  # noqa: D102
        n = k.shape[0]
        w_diag, w_off = 1.0 / n, 1.0 / (n * (n - 1))
        p = q @ q.T
        loss = k.new_zeros(())
        w_cross = w_intra = None
        if cross_weight:
            a = torch.addmm(p, k, q.T, alpha=1.0, beta=-1.0)  # K Q^T - P
            diag_abs = a.diagonal().abs().sum()
            total_abs = a.abs().sum()
            loss = loss + cross_weight * (w_diag * diag_abs + w_off * (total_abs - diag_abs))
            w_cross = a.sign_().mul_(w_off * cross_weight)
            w_cross.diagonal().mul_(w_diag / w_off)
        if intra_weight:
            b = torch.addmm(p, k, k.T, alpha=1.0, beta=-1.0)  # K K^T - P
            b.diagonal().zero_()
            loss = loss + intra_weight * w_off * b.abs().sum()
            w_intra = b.sign_().mul_(2.0 * w_off * intra_weight)
        ctx.save_for_backward(q, k, w_cross, w_intra)
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
            grad_k.mul_(grad_out)
        return grad_k, None, None, None


def relational(k: Tensor, q: Tensor, lam: float = 1.0, cross: bool = True, intra: bool = True) -> Tensor:
    """Relational distillation loss (Mahmoud et al., ECCV 2024), METHOD.md section 3.

    With ``C = |K Q^T - Q Q^T|`` and ``R = |K K^T - Q Q^T|`` (element-wise, N x N):

    - cross-modal: ``L_cross = mean_i C_ii + mean_{i != j} C_ij`` (for unit rows ``(Q Q^T)_ii = 1``, so the
      diagonal term equals the similarity loss);
    - intra-modal *(choice, by symmetry with the cross term)*: ``L_intra = mean_{i != j} R_ij``;
    - total *(choice)*: ``L_rel = L_cross + lam * L_intra`` (``lam = 1``).

    ``cross=False`` or ``intra=False`` give the two ablations (``relational_intra`` / ``relational_cross``);
    when only the intra term is kept, ``lam`` still scales it. ``Q Q^T`` carries no gradient and both terms
    use the same N pairs.
    """
    if not (cross or intra):
        raise ValueError("relational loss needs at least one of cross=True or intra=True")
    if lam < 0:
        raise ValueError(f"lam must be non-negative; got {lam}")
    k, q = _prepare(k, q)
    return _RelationalFunction.apply(k, q, 1.0 if cross else 0.0, float(lam) if intra else 0.0)


def relational_cross(k: Tensor, q: Tensor) -> Tensor:
    """Ablation: the cross-modal term of :func:`relational` only."""
    return relational(k, q, cross=True, intra=False)


def relational_intra(k: Tensor, q: Tensor, lam: float = 1.0) -> Tensor:
    """Ablation: the intra-modal term of :func:`relational` only (scaled by ``lam``)."""
    return relational(k, q, lam=lam, cross=False, intra=True)


LOSSES: dict[str, LossFn] = {
    "contrastive": contrastive,
    "similarity": similarity,
    "relational": relational,
    "relational_cross": relational_cross,
    "relational_intra": relational_intra,
}


def get_loss(name: str) -> LossFn:
    """The loss registered under ``name``; a ``KeyError`` listing the valid names otherwise."""
    try:
        return LOSSES[name]
    except KeyError:
        raise KeyError(f"unknown loss {name!r}; valid losses: {', '.join(sorted(LOSSES))}") from None
