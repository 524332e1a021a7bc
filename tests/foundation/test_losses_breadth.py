"""The published losses added for breadth (issue 14): ScaLR's L2 regression, SLidR's superpixel InfoNCE and
ST-SLidR's semantically tolerant, class-balanced InfoNCE -- hand-computed values, loop references, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.losses import (
    LOSS_INPUTS,
    anchor_weights,
    negative_weights,
    pool_segments,
    pool_selected_rows,
    regression,
    slidr,
    st_slidr,
)


def test_loss_inputs_name_the_region_losses():
    assert LOSS_INPUTS["slidr"] == LOSS_INPUTS["st_slidr"] == "superpixels"
    assert LOSS_INPUTS["regression"] == LOSS_INPUTS["contrastive"] == "pairs"


def test_regression_hand_computed():
    # k = [e1, e1], q = [e1, e2] (scaled): distances 0 and sqrt(2)
    k = torch.tensor([[3.0, 0.0], [0.5, 0.0]], dtype=torch.float64)
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    assert regression(k, q).item() == pytest.approx(math.sqrt(2) / 2)
    # opposite rows: distance 2
    assert regression(-q, q).item() == pytest.approx(2.0)


def test_pool_segments_hand_computed():
    x = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0], [0.0, 4.0]])
    pooled, ids = pool_segments(x, torch.tensor([7, 2, 7, 2]))
    assert ids.tolist() == [2, 7]
    torch.testing.assert_close(pooled, torch.tensor([[1.5, 3.0], [3.0, 2.5]]))


def test_pool_selected_rows_equals_pooling_the_gathered_rows_values_and_gradients():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    rows = torch.randint(0, 40, (90,), generator=gen)  # repeats, and rows never selected
    segments = torch.randint(3, 20, (90,), generator=gen)
    weights = torch.randn(len(torch.unique(segments)), 6, generator=gen, dtype=torch.float64)
    results = []
    for pool in (lambda: pool_segments(x[rows], segments), lambda: pool_selected_rows(x, rows, segments)):
        pooled, ids = pool()
        (pooled * weights).sum().backward()
        results.append((pooled.detach(), ids, x.grad.clone()))
        x.grad = None
    (a, ids_a, grad_a), (b, ids_b, grad_b) = results
    assert torch.equal(ids_a, ids_b)
    torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_b, grad_a, rtol=1e-12, atol=1e-12)
    hand, _ = pool_selected_rows(
        torch.tensor([[1.0, 0.0], [3.0, 2.0]]), torch.tensor([1, 0, 1]), torch.tensor([5, 5, 9])
    )
    torch.testing.assert_close(hand, torch.tensor([[2.0, 1.0], [3.0, 2.0]]))
    with pytest.raises(ValueError, match="same length"):
        pool_selected_rows(x, rows, segments[:-1])


def test_slidr_hand_computed_pools_and_drops_empty_regions():
    e1, e2 = torch.eye(2, dtype=torch.float64)
    # four pairs: two in region 0 (directions e1 and e1 + small), two in region 2; region 1 has no point
    k = torch.stack([e1, 2 * e1, e2, 5 * e2])
    q = torch.stack([3 * e1, torch.tensor([1.0, 1.0], dtype=torch.float64), e2])
    segments = torch.tensor([0, 0, 2, 2])
    # regions kept: 0 and 2; pooled k = (e1, e2), q = (e1, e2): logits diag 1/tau, off 0
    tau = 0.5
    assert slidr(k, q, segments, tau=tau).item() == pytest.approx(math.log(1 + math.exp(-1 / tau)))
    # rows already pooled give the same value
    assert slidr(torch.stack([e1, e2]), torch.stack([e1, e2]), tau=tau).item() == pytest.approx(
        math.log(1 + math.exp(-1 / tau))
    )


def _reference_slidr(k, q, segments, tau):
    """Loop reference: normalise, pool by python dict, re-normalise, InfoNCE."""
    groups: dict[int, list[torch.Tensor]] = {}
    for row, s in zip(F.normalize(k, dim=1), segments.tolist(), strict=True):
        groups.setdefault(s, []).append(row)
    ids = sorted(groups)
    kk = [F.normalize(torch.stack(groups[s]).mean(0), dim=0) for s in ids]
    qq = [F.normalize(q[s], dim=0) for s in ids]
    total = 0.0
    for i in range(len(ids)):
        logits = [float(kk[i] @ qq[j]) / tau for j in range(len(ids))]
        total += -logits[i] + math.log(sum(math.exp(v) for v in logits))
    return total / len(ids)


def test_slidr_matches_loop_reference_and_pooling_twice_changes_nothing():
    gen = torch.Generator().manual_seed(0)
    k = torch.randn(40, 6, generator=gen, dtype=torch.float64)
    q = torch.randn(12, 6, generator=gen, dtype=torch.float64)
    segments = torch.randint(0, 12, (40,), generator=gen)
    value = slidr(k, q, segments, tau=0.07).item()
    assert value == pytest.approx(_reference_slidr(k, q, segments, 0.07), rel=1e-10)
    # pooling per half (as the distributed trainer pools per scan, whose regions are disjoint) then
    # concatenating the pooled rows gives the same loss
    disjoint = torch.where(torch.arange(40) < 20, segments % 6, 6 + segments % 6)
    ref = slidr(k, q, disjoint).item()
    pk, ik = pool_segments(F.normalize(k[:20], dim=1), disjoint[:20])
    pk2, ik2 = pool_segments(F.normalize(k[20:], dim=1), disjoint[20:])
    again = slidr(torch.cat([pk, pk2]), torch.cat([q[ik], q[ik2]])).item()
    assert again == pytest.approx(ref, rel=1e-12)


def _reference_st_slidr(k, q, tau, min_quantile, noise_threshold, class_balance):
    """Loop reference written from the public code's steps (quantiles with numpy's default interpolation)."""
    import numpy as np

    k = F.normalize(k, dim=1)
    q = F.normalize(q, dim=1)
    n = k.shape[0]
    sim = (q @ q.T).numpy()
    weight = 1.0 - np.clip(sim, 0.0, 1.0)
    if min_quantile > 0:
        lows = [np.quantile(weight[i], min_quantile) for i in range(n)]
        for i in range(n):
            for j in range(n):
                weight[i, j] = 0.0 if weight[i, j] < lows[i] or weight[i, j] == 0 else 1.0
    for i in range(n):
        weight[i, i] = 1.0
    losses = []
    for i in range(n):
        logits = [float(k[i] @ q[j]) / tau * weight[i, j] for j in range(n)]
        losses.append(-logits[i] + math.log(sum(math.exp(v) for v in logits)))
    if not class_balance:
        return sum(losses) / n
    votes = [sum(v for v in sim[i] if v >= noise_threshold) for i in range(n)]
    lo, hi = min(votes), max(votes)
    a = [1.0 - (v - lo) / (hi - lo) for v in votes]
    return sum(w * v for w, v in zip(a, losses, strict=True)) / sum(a)


@pytest.mark.parametrize("min_quantile", [0.0, 0.1, 0.25])
@pytest.mark.parametrize("class_balance", [True, False])
def test_st_slidr_matches_loop_reference(min_quantile, class_balance):
    gen = torch.Generator().manual_seed(1)
    k = torch.randn(9, 5, generator=gen, dtype=torch.float64)
    q = torch.randn(9, 5, generator=gen, dtype=torch.float64) + 0.8  # some similar regions, some not
    value = st_slidr(k, q, tau=0.3, min_quantile=min_quantile, class_balance=class_balance).item()
    ref = _reference_st_slidr(k, q, 0.3, min_quantile, 0.5, class_balance)
    assert value == pytest.approx(ref, rel=1e-10)


def test_st_slidr_hand_computed():
    # q: regions 0 and 1 identical (cos 1), region 2 orthogonal to both; k = q's directions
    e1, e2 = torch.eye(2, dtype=torch.float64)
    q = torch.stack([e1, e1, e2])
    k = torch.stack([e1, e1, e2])
    tau = 1.0
    # W: 1 - clip(sim): [[0,0,1],[0,0,1],[1,1,0]] -> diagonal set to 1: [[1,0,1],[0,1,1],[1,1,1]]
    w = negative_weights(q @ q.T, min_quantile=0.0)
    torch.testing.assert_close(w, torch.tensor([[1.0, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=torch.float64))
    # logits x W: row 0: (1, 0, 0) -> l0 = -1 + log(e + 2); row 1 the same; row 2: (0, 0, 1) -> same value
    each = -1 + math.log(math.e + 2)
    assert st_slidr(k, q, tau=tau, min_quantile=0.0, class_balance=False).item() == pytest.approx(each)
    # votes (sim >= 0.5, self included): 2, 2, 1 -> a = 1 - (v - 1) / 1 = 0, 0, 1: only anchor 2 counts
    torch.testing.assert_close(anchor_weights(q @ q.T), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    assert st_slidr(k, q, tau=tau, min_quantile=0.0).item() == pytest.approx(each)
    # plain InfoNCE would count the same-class region 1 as a full negative of anchor 0: a larger loss
    assert slidr(k, q, tau=tau).item() > each


def test_row_quantile_matches_torch_quantile():
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(30, 30, generator=gen, dtype=torch.float64)
    from models.losses import _row_quantile

    for f in (0.0, 0.01, 0.37, 0.8, 0.99, 1.0):
        torch.testing.assert_close(_row_quantile(x, f), torch.quantile(x, f, dim=1))


def test_equal_votes_give_equal_anchor_weights():
    assert anchor_weights(torch.eye(4)).tolist() == [1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("fn", [slidr, st_slidr])
def test_region_losses_gradcheck_with_segments(fn):
    gen = torch.Generator().manual_seed(3)
    k = torch.randn(14, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    q = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    segments = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 3, 3, 5, 5, 2, 0])  # region 4 empty
    assert torch.autograd.gradcheck(lambda x: fn(x, q, segments, tau=0.2), (k,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda k, q: slidr(k, q, torch.zeros(3, dtype=torch.long)), "shape"),
        (lambda k, q: slidr(k, q, torch.full((4,), 9)), r"lie in \[0, 4\)"),
        (lambda k, q: slidr(k, q, torch.zeros(4)), "integer region ids"),
        (lambda k, q: slidr(k, q[:, :2], torch.zeros(4, dtype=torch.long)), "same D"),
        (lambda k, q: slidr(k, q, torch.zeros(4, dtype=torch.long)), "at least 2"),
        (lambda k, q: st_slidr(k, q, min_quantile=0.5, max_quantile=0.2), "min_quantile"),
    ],
)
def test_region_bad_input_messages(call, match):
    k = torch.randn(4, 5)
    q = torch.randn(4, 5)
    with pytest.raises(ValueError, match=match):
        call(k, q)
