"""Downstream segmentation losses (docs/method.md#few-shot-fine-tuning): cross-entropy, optionally + Lovász-softmax.

Lovász-softmax (Berman, Rannen Triki & Blaschko, CVPR 2018) is the Lovász extension of the Jaccard loss
``Δ_c = 1 - IoU_c``, evaluated at the per-point errors ``e_i(c) = |1[y_i = c] - p_i(c)|`` of the softmax
probabilities: with the errors sorted in decreasing order ``e_π1 >= e_π2 >= ...`` and ``g = 1[y = c]`` in that
order,

    J_k = 1 - (G - sum_{j<=k} g_j) / (G + sum_{j<=k} (1 - g_j)),   G = sum_j g_j,
    loss_c = sum_k e_πk (J_k - J_{k-1}),   J_0 = 0,

and the loss is the mean of ``loss_c`` over the classes present in the ground truth of the batch (the paper's
``classes='present'``). At one-hot probabilities it equals ``1 - IoU_c`` of the predicted labels exactly, which
is what the tests check. Ignored points are removed first.

Class balance (``seg_class_weight``, cross-entropy term only): per-class weights from the label counts ``n_c`` of
the points the head or network trains on, ``f_c = n_c / sum n``:

- ``none``: every point weighs 1;
- ``inverse_sqrt``: ``w_c ∝ 1 / sqrt(f_c)`` (a common softened inverse frequency);
- ``inverse_log``: ``w_c ∝ 1 / ln(1.02 + f_c)`` (ENet, Paszke et al. 2016; Cylinder3D's choice);

scaled so that the mean weight of a training point is 1 (``sum_c f_c w_c = 1``), so the loss keeps its scale;
absent classes get weight 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SEGMENTATION_LOSSES = ("ce", "ce+lovasz")
CLASS_WEIGHTS = ("none", "inverse_sqrt", "inverse_log")


def class_weights(counts: torch.Tensor, scheme: str) -> torch.Tensor | None:
    """Per-class cross-entropy weights ``(C,)`` float32 from label counts ``(C,)`` (module docstring); None for
    ``none``."""
    if scheme not in CLASS_WEIGHTS:
        raise ValueError(f"unknown class weighting {scheme!r}; valid: {', '.join(CLASS_WEIGHTS)}")
    if scheme == "none":
        return None
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if counts.sum() <= 0:
        raise ValueError("class weights need at least one labelled point")
    freq = counts / counts.sum()
    present = counts > 0
    raw = torch.zeros_like(freq)
    if scheme == "inverse_sqrt":
        raw[present] = freq[present].rsqrt()
    else:
        raw[present] = 1.0 / torch.log(1.02 + freq[present])
    return (raw / (freq * raw).sum()).to(torch.float32)


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


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, name: str, ignore_index: int, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """``ce``: cross-entropy over non-ignored points (class-weighted by ``weight``, :func:`class_weights`, as
    ``sum_i w_{y_i} CE_i / sum_i w_{y_i}``); ``ce+lovasz``: that plus Lovász-softmax (equal weights)."""
    if name not in SEGMENTATION_LOSSES:
        raise ValueError(f"unknown segmentation loss {name!r}; valid: {', '.join(SEGMENTATION_LOSSES)}")
    weight = None if weight is None else weight.to(logits.device, logits.dtype)
    loss = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index)
    if name == "ce+lovasz":
        loss = loss + lovasz_softmax(logits.softmax(dim=1), target, ignore_index)
    return loss
