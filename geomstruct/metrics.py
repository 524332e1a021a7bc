"""Geometry of a feature space (docs/method.md#geometry-metrics).

Every function accepts a torch tensor (any device) or a numpy array, L2-normalises the rows first (all dot
products are cosines) and returns Python floats. Nothing here ever holds an N x N matrix: pair sums are
computed exactly, one Gram block at a time, and accumulated in float64, so 80 000 x 512 inputs cost a few
hundred MB at most.

- Uniformity (Wang & Isola, ICML 2020), negated so that higher = more uniform::

      U = -log mean_{i != j} exp(-t ||x_i - x_j||^2),   t = 2

  All-identical vectors give 0; random unit vectors in high dimension approach 2t = 4.
- Tolerance (Wang & Liu, CVPR 2021)::  T = mean_{i != j, y_i = y_j} x_i . x_j
- Modality gap (Liang et al., NeurIPS 2022)::  G = || mean_i k_i - mean_i q_i ||_2
- Alignment (Wang & Isola)::  A = mean_i || k_i - q_i ||^2
- Structural gap *(choice, docs/method.md#structural-gap)*:: dU = U_3D - U_2D,  dT = T_3D - T_2D,  S = sqrt(dU^2 + dT^2)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor

DEFAULT_BLOCK_SIZE = 4096


def _as_tensor(x: ArrayLike, name: str = "x") -> torch.Tensor:
    """A 2-D floating tensor sharing memory with ``x`` where possible (float64 kept, else float32)."""
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a numpy array or a torch tensor; got {type(x).__name__}")
    if t.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D); got {tuple(t.shape)}")
    if t.dtype != torch.float64:
        t = t.to(torch.float32)
    return t.detach()


def _normalize(x: torch.Tensor) -> torch.Tensor:
    norms = x.norm(dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError("features contain an all-zero row, which has no direction; cannot L2-normalise")
    if not bool(torch.isfinite(norms).all()):
        raise ValueError("features contain NaN or infinite values")
    return x / norms


def _as_labels(labels: ArrayLike, n: int) -> np.ndarray:
    lab = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if lab.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match the features; got {lab.shape}")
    return lab


def uniformity(x: ArrayLike, t: float = 2.0, block_size: int = DEFAULT_BLOCK_SIZE) -> float:
    """Negated uniformity ``U = -log mean_{i != j} exp(-t ||x_i - x_j||^2)`` (Wang & Isola, ICML 2020).

    Exact, without materialising the N x N matrix: for unit rows ``||x_i - x_j||^2 = 2 - 2 x_i . x_j``, so
    the pair sum is ``exp(-2t) * sum_{i != j} exp(2t x_i . x_j)``. Gram blocks ``X_I X_J^T`` are computed
    for ``I <= J`` only (off-diagonal blocks counted twice, the diagonal of diagonal blocks removed) in the
    input's precision; each block's rows are summed in that precision and the row sums accumulated in float64.
    The exponent ``2t (x_i . x_j - 1) <= 0`` never overflows.
    """
    xt = _normalize(_as_tensor(x))
    n = xt.shape[0]
    if n < 2:
        raise ValueError(f"uniformity needs at least 2 points; got {n}")
    total = torch.zeros((), dtype=torch.float64, device=xt.device)
    scale = 2.0 * t
    for i0 in range(0, n, block_size):
        xi = xt[i0 : i0 + block_size]
        for j0 in range(i0, n, block_size):
            g = xi @ xt[j0 : j0 + block_size].T
            g.sub_(1.0).mul_(scale).exp_()  # exp(2t (g - 1)) = exp(-t ||x_i - x_j||^2)
            if j0 == i0:
                g.diagonal().zero_()
                total += g.sum(dim=1).to(torch.float64).sum()
            else:
                total += 2.0 * g.sum(dim=1).to(torch.float64).sum()
    mean = total.item() / (n * (n - 1))
    return -math.log(mean)


def tolerance(x: ArrayLike, labels: ArrayLike) -> float:
    """Tolerance ``T = mean_{i != j, y_i = y_j} x_i . x_j`` (Wang & Liu, CVPR 2021).

    Exact in O(N D): for unit rows, the same-class pair sum of class ``c`` is
    ``||sum_{i in c} x_i||^2 - n_c``, so ``T = sum_c (||s_c||^2 - n_c) / sum_c n_c (n_c - 1)``, computed in
    float64. Classes with a single point contribute no pair; at least one pair must exist.
    """
    xt = _normalize(_as_tensor(x).to(torch.float64))
    lab = _as_labels(labels, xt.shape[0])
    classes, inverse = np.unique(lab, return_inverse=True)
    index = torch.as_tensor(inverse, device=xt.device)
    sums = torch.zeros(len(classes), xt.shape[1], dtype=torch.float64, device=xt.device)
    sums.index_add_(0, index, xt)
    counts = torch.bincount(index, minlength=len(classes)).to(torch.float64)
    pairs = (counts * (counts - 1)).sum().item()
    if pairs == 0:
        raise ValueError("tolerance needs at least one class with two or more points")
    same = ((sums * sums).sum(dim=1) - counts).sum().item()
    return same / pairs


def modality_gap(x3d: ArrayLike, x2d: ArrayLike) -> float:
    """Modality gap ``G = ||mean_i k_i - mean_i q_i||_2`` (Liang et al., NeurIPS 2022), rows normalised."""
    k, q = _paired(x3d, x2d)
    return (k.mean(dim=0) - q.mean(dim=0)).norm().item()


def alignment(x3d: ArrayLike, x2d: ArrayLike) -> float:
    """Alignment ``A = mean_i ||k_i - q_i||^2`` (Wang & Isola, ICML 2020), rows normalised."""
    k, q = _paired(x3d, x2d)
    return ((k - q) ** 2).sum(dim=1).mean().item()


def _paired(x3d: ArrayLike, x2d: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    k = _normalize(_as_tensor(x3d, "x3d").to(torch.float64))
    q = _normalize(_as_tensor(x2d, "x2d").to(torch.float64)).to(k.device)
    if k.shape[0] != q.shape[0]:
        raise ValueError(f"x3d and x2d must hold the same points; got {k.shape[0]} and {q.shape[0]} rows")
    if k.shape[0] == 0:
        raise ValueError("x3d and x2d hold no point: the modality gap and the alignment need at least one")
    return k, q


@dataclass(frozen=True)
class StructuralGap:
    """Uniformity and tolerance of the 3D and 2D spaces and their gap (docs/method.md#structural-gap, *choice*)."""

    U_3d: float
    T_3d: float
    U_2d: float
    T_2d: float

    @property
    def dU(self) -> float:
        """``dU = U_3D - U_2D`` (signed)."""
        return self.U_3d - self.U_2d

    @property
    def dT(self) -> float:
        """``dT = T_3D - T_2D`` (signed)."""
        return self.T_3d - self.T_2d

    @property
    def S(self) -> float:
        """``S = sqrt(dU^2 + dT^2)``."""
        return math.hypot(self.dU, self.dT)

    def as_dict(self) -> dict[str, float]:
        """All fields and the three gap quantities."""
        return {**asdict(self), "dU": self.dU, "dT": self.dT, "S": self.S}


def structural_gap(
    x3d: ArrayLike,
    x2d: ArrayLike,
    labels: ArrayLike,
    t: float = 2.0,
    block_size: int = DEFAULT_BLOCK_SIZE,
    reference: tuple[float, float] | None = None,
) -> StructuralGap:
    """Structural gap between 3D features ``x3d`` and 2D features ``x2d`` of the same labelled points.

    ``reference``: ``(U_2d, T_2d)`` already computed for these ``x2d``, ``labels`` and ``t`` (every student
    evaluated on the same point set shares them), used instead of recomputing them.
    """
    if len(x3d) != len(x2d):
        raise ValueError(f"x3d and x2d must hold the same points; got {len(x3d)} and {len(x2d)} rows")
    if reference is None:
        reference = (uniformity(x2d, t=t, block_size=block_size), tolerance(x2d, labels))
    u2, t2 = reference
    return StructuralGap(
        U_3d=uniformity(x3d, t=t, block_size=block_size),
        T_3d=tolerance(x3d, labels),
        U_2d=u2,
        T_2d=t2,
    )


def geometry(
    x3d: ArrayLike,
    x2d: ArrayLike,
    labels: ArrayLike,
    t: float = 2.0,
    block_size: int = DEFAULT_BLOCK_SIZE,
    reference: tuple[float, float] | None = None,
) -> dict[str, float]:
    """Everything docs/method.md#geometry-metrics reports for one student: U, T, G, A, dU, dT, S, U_2d, T_2d
    (``reference``: the 2D side's ``(U_2d, T_2d)`` when already known, :func:`structural_gap`)."""
    gap = structural_gap(x3d, x2d, labels, t=t, block_size=block_size, reference=reference)
    return {
        "U": gap.U_3d,
        "T": gap.T_3d,
        "G": modality_gap(x3d, x2d),
        "A": alignment(x3d, x2d),
        "dU": gap.dU,
        "dT": gap.dT,
        "S": gap.S,
        "U_2d": gap.U_2d,
        "T_2d": gap.T_2d,
    }
