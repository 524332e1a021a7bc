"""Downstream segmentation losses (METHOD.md section 5): cross-entropy, optionally + Lovász-softmax.

Lovász-softmax (Berman, Rannen Triki & Blaschko, CVPR 2018) is the Lovász extension of the Jaccard loss
``Δ_c = 1 - IoU_c``, evaluated at the per-point errors ``e_i(c) = |1[y_i = c] - p_i(c)|`` of the softmax
probabilities: with the errors sorted in decreasing order ``e_π1 >= e_π2 >= ...`` and ``g = 1[y = c]`` in that
order,

    J_k = 1 - (G - sum_{j<=k} g_j) / (G + sum_{j<=k} (1 - g_j)),   G = sum_j g_j,
    loss_c = sum_k e_πk (J_k - J_{k-1}),   J_0 = 0,

and the loss is the mean of ``loss_c`` over the classes present in the ground truth of the batch (the paper's
``classes='present'``). At one-hot probabilities it equals ``1 - IoU_c`` of the predicted labels exactly, which
is what the tests check. Ignored points are removed first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SEGMENTATION_LOSSES = ("ce", "ce+lovasz")


def lovasz_softmax(probs: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Lovász-softmax of ``(n, C)`` probabilities against ``(n,)`` labels (module docstring); 0 if no point."""
    keep = target != ignore_index
    probs, target = probs[keep], target[keep]
    if target.numel() == 0:
        return probs.sum() * 0.0
    losses = []
    for c in torch.unique(target).tolist():
        fg = (target == c).to(probs.dtype)
        errors = (fg - probs[:, c]).abs()
        errors_sorted, order = torch.sort(errors, descending=True)
        fg_sorted = fg[order]
        gts = fg_sorted.sum()
        intersection = gts - fg_sorted.cumsum(0)
        union = gts + (1.0 - fg_sorted).cumsum(0)
        jaccard = 1.0 - intersection / union
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
        losses.append(torch.dot(errors_sorted, jaccard))
    return torch.stack(losses).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, name: str, ignore_index: int) -> torch.Tensor:
    """``ce``: cross-entropy over non-ignored points; ``ce+lovasz``: that plus Lovász-softmax (equal weights)."""
    if name not in SEGMENTATION_LOSSES:
        raise ValueError(f"unknown segmentation loss {name!r}; valid: {', '.join(SEGMENTATION_LOSSES)}")
    loss = F.cross_entropy(logits, target, ignore_index=ignore_index)
    if name == "ce+lovasz":
        loss = loss + lovasz_softmax(logits.softmax(dim=1), target, ignore_index)
    return loss
