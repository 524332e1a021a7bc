"""Lovász-softmax against the Jaccard loss it extends, by hand and by brute force; gradients; cross-entropy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.data.classes import IGNORE_INDEX
from bench.evaluate import confusion_matrix
from bench.segmentation_loss import lovasz_softmax, segmentation_loss


def _present_class_jaccard(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> float:
    """Mean over the classes in ``target`` of ``1 - IoU_c`` of hard predictions (from a confusion matrix)."""
    conf = confusion_matrix(pred, target, n_classes).astype(float)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    present = [c for c in range(n_classes) if (target == c).any()]
    return float(np.mean([1.0 - tp[c] / union[c] for c in present]))


def test_lovasz_by_hand():
    # 4 points, 2 classes; predictions 0, 0, 1, 1 for labels 0, 1, 1, 1: IoU_0 = 1/2, IoU_1 = 2/3
    probs = F.one_hot(torch.tensor([0, 0, 1, 1]), 2).double()
    loss = lovasz_softmax(probs, torch.tensor([0, 1, 1, 1]), IGNORE_INDEX)
    assert loss.item() == pytest.approx(((1 - 1 / 2) + (1 - 2 / 3)) / 2, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_lovasz_equals_jaccard_loss_at_one_hot_predictions(seed):
    g = torch.Generator().manual_seed(seed)
    n, c = 200, 6
    target = torch.randint(c - 1, (n,), generator=g)  # class c - 1 is never in the ground truth
    pred = torch.where(torch.rand(n, generator=g) < 0.6, target, torch.randint(c, (n,), generator=g))
    target[torch.rand(n, generator=g) < 0.1] = IGNORE_INDEX
    loss = lovasz_softmax(F.one_hot(pred, c).double(), target, IGNORE_INDEX)
    keep = target != IGNORE_INDEX
    assert loss.item() == pytest.approx(_present_class_jaccard(pred[keep], target[keep], c), abs=1e-12)


def test_lovasz_is_zero_for_perfect_predictions_and_ignores_ignored_points():
    target = torch.tensor([0, 2, 2, IGNORE_INDEX])
    probs = F.one_hot(torch.tensor([0, 2, 2, 1]), 3).double()
    assert lovasz_softmax(probs, target, IGNORE_INDEX).item() == pytest.approx(0.0, abs=1e-15)
    only_ignored = torch.full((3,), IGNORE_INDEX)
    assert lovasz_softmax(torch.rand(3, 3), only_ignored, IGNORE_INDEX).item() == 0.0


def test_lovasz_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(30, 4, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(4, (30,), generator=g)
    assert torch.autograd.gradcheck(lambda x: lovasz_softmax(x.softmax(1), target, IGNORE_INDEX), (logits,))


def test_segmentation_loss_names():
    g = torch.Generator().manual_seed(1)
    logits, target = torch.randn(50, 5, generator=g), torch.randint(5, (50,), generator=g)
    ce = F.cross_entropy(logits, target)
    assert segmentation_loss(logits, target, "ce", IGNORE_INDEX).item() == pytest.approx(ce.item())
    both = segmentation_loss(logits, target, "ce+lovasz", IGNORE_INDEX)
    assert both.item() == pytest.approx(ce.item() + lovasz_softmax(logits.softmax(1), target, IGNORE_INDEX).item())
    with pytest.raises(ValueError, match="valid: ce, ce\\+lovasz"):
        segmentation_loss(logits, target, "focal", IGNORE_INDEX)


def test_config_rejects_an_unknown_segmentation_loss():
    from bench.config import DistillConfig

    assert DistillConfig(loss="contrastive", seed=0, seg_loss="ce+lovasz").segmentation.loss == "ce+lovasz"
    with pytest.raises(ValueError, match="unknown seg_loss 'focal'; valid: ce, ce\\+lovasz"):
        DistillConfig(loss="contrastive", seed=0, seg_loss="focal")


def test_class_weights_hand_computed_and_weighted_cross_entropy():
    from bench.segmentation_loss import class_weights

    counts = torch.tensor([75, 25, 0])  # frequencies 0.75, 0.25, absent
    assert class_weights(counts, "none") is None
    w = class_weights(counts, "inverse_sqrt")  # raw 1/sqrt(f): 1.1547, 2; mean weight 0.75*1.1547 + 0.25*2
    raw = torch.tensor([1 / math.sqrt(0.75), 2.0, 0.0])
    torch.testing.assert_close(w, (raw / (0.75 * raw[0] + 0.25 * raw[1])).float())
    assert float((w[:2] * torch.tensor([0.75, 0.25])).sum()) == pytest.approx(1.0)
    log = class_weights(counts, "inverse_log")
    raw = torch.tensor([1 / math.log(1.77), 1 / math.log(1.27)])
    torch.testing.assert_close(log[:2], (raw / (0.75 * raw[0] + 0.25 * raw[1])).float())
    assert log[2] == 0
    with pytest.raises(ValueError, match="valid: none, inverse_sqrt, inverse_log"):
        class_weights(counts, "median")
    # weighted CE = sum_i w_{y_i} CE_i / sum_i w_{y_i} (PyTorch's mean reduction), ignored points skipped
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    target = torch.tensor([0, 1, IGNORE_INDEX])
    ce = -torch.log_softmax(logits, dim=1)[[0, 1], [0, 1]]
    expected = (w[0] * ce[0] + w[1] * ce[1]) / (w[0] + w[1])
    assert segmentation_loss(logits, target, "ce", IGNORE_INDEX, w).item() == pytest.approx(expected.item(), rel=1e-6)
