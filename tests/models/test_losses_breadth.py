"""The published losses added for breadth (issue 14): ScaLR's L2 regression, SLidR's superpixel InfoNCE and
ST-SLidR's semantically tolerant, class-balanced InfoNCE -- hand-computed values, loop references, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.losses import (
    anchor_weights,
    loss_inputs,
    negative_weights,
    pool_segments,
    pool_selected_rows,
    regression,
    slidr,
    st_slidr,
)


def test_loss_inputs_name_the_region_losses():
    assert loss_inputs("slidr") == loss_inputs("st_slidr") == "superpixels"
    assert loss_inputs("regression") == loss_inputs("contrastive") == "pairs"


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
    # four pairs: region 0 holds directions e1 and e2, region 2 holds e2 twice; region 1 has no point
    k = torch.stack([e1, 2 * e2, e2, 5 * e2])
    q = torch.stack([(e1 + e2) / 2, torch.tensor([1.0, 1.0], dtype=torch.float64), e2])
    segments = torch.tensor([0, 0, 2, 2])
    # regions kept: 0 and 2; superpoints kbar = ((e1 + e2) / 2, e2), not re-normalised (|kbar_0| = 0.71);
    # logits * tau: row 0: (0.5, 0.5); row 2: (0.5, 1)
    tau = 0.5
    expected = (math.log(2) + math.log(1 + math.exp(-0.5 / tau))) / 2
    assert slidr(k, q, segments, tau=tau).item() == pytest.approx(expected)
    # rows already pooled give the same value
    kbar = torch.stack([(e1 + e2) / 2, e2])
    assert slidr(kbar, q[[0, 2]], tau=tau).item() == pytest.approx(expected)
    # the cosine variant re-normalises both sides: row 0 (1, 1/sqrt 2), row 2 (1/sqrt 2, 1)
    cos = (1 / tau) * (1 - 1 / math.sqrt(2))
    assert slidr(k, q, segments, tau=tau, cosine=True).item() == pytest.approx(math.log(1 + math.exp(-cos)))


def _slidr_code(output_points, pairing_points, pairing_images, superpixels, output_images, tau, eps=1e-6):
    """valeoai/SLidR @ 14729d0, ``loss_superpixels_average`` followed by ``NCELoss``, transcribed line by line
    (``superpixel_size`` = the largest label + 1; the ``1e-6`` guards of the code are ``eps``)."""
    superpixel_size = int(superpixels.max()) + 1
    superpixels = (
        torch.arange(0, output_images.shape[0] * superpixel_size, superpixel_size)[:, None, None] + superpixels
    )
    m = tuple(pairing_images.T.long())
    superpixels_i = superpixels.flatten()
    idx_p = torch.arange(pairing_points.shape[0])
    total_pixels = superpixels_i.shape[0]
    idx_i = torch.arange(total_pixels)
    size = superpixels.shape[0] * superpixel_size
    dtype = output_points.dtype
    one_hot_p = torch.sparse_coo_tensor(
        torch.stack((superpixels[m], idx_p), dim=0), torch.ones(pairing_points.shape[0], dtype=dtype),
        (size, pairing_points.shape[0]), check_invariants=True,
    )  # fmt: skip
    one_hot_i = torch.sparse_coo_tensor(
        torch.stack((superpixels_i, idx_i), dim=0),
        torch.ones(total_pixels, dtype=dtype),
        (size, total_pixels),
        check_invariants=True,
    )
    k = one_hot_p @ output_points[pairing_points]
    k = k / (torch.sparse.sum(one_hot_p, 1).to_dense()[:, None] + eps)
    q = one_hot_i @ output_images.permute(0, 2, 3, 1).flatten(0, 2)
    q = q / (torch.sparse.sum(one_hot_i, 1).to_dense()[:, None] + eps)
    mask = torch.where(k[:, 0] != 0)
    k, q = k[mask], q[mask]
    logits = torch.mm(k, q.transpose(1, 0))  # NCELoss
    target = torch.arange(k.shape[0]).long()
    return F.cross_entropy(torch.div(logits, tau), target)


def test_slidr_equals_slidr_code_on_the_same_inputs():
    """SLidR's loss from unit point features, unit pixel features and superpixel maps (2 images of 6 x 7
    pixels, 30 points paired with pixels): the project's pooling of both sides + ``slidr`` against the code."""
    gen = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(2, 5, 6, 7, generator=gen, dtype=torch.float64), dim=1)  # unit pixels
    labels = torch.randint(0, 4, (2, 6, 7), generator=gen)
    points = F.normalize(torch.randn(40, 5, generator=gen, dtype=torch.float64), dim=1)  # the student's head
    pairing_points = torch.randperm(40, generator=gen)[:30]
    pairing_images = torch.stack(
        [torch.randint(0, 2, (30,), generator=gen), torch.randint(0, 6, (30,), generator=gen),
         torch.randint(0, 7, (30,), generator=gen)], dim=1,
    )  # fmt: skip
    code = _slidr_code(points, pairing_points, pairing_images, labels, images, tau=0.07, eps=0.0)
    region = pairing_images[:, 0] * 4 + labels[tuple(pairing_images.T)]  # regions numbered over the images
    pixel_region = (torch.arange(2)[:, None, None] * 4 + labels).flatten()
    q, ids = pool_segments(images.permute(0, 2, 3, 1).flatten(0, 2), pixel_region)
    q_all = torch.zeros(8, 5, dtype=torch.float64)
    q_all[ids] = q
    ours = slidr(points[pairing_points], q_all, region, tau=0.07)
    assert ours.item() == pytest.approx(code.item(), rel=1e-12)  # float64 rounding
    # with the code's 1e-6 guards in the means: relative changes of about 1e-6 / count
    assert ours.item() == pytest.approx(_slidr_code(points, pairing_points, pairing_images, labels, images,
                                                    tau=0.07).item(), rel=1e-5)  # fmt: skip
    # the former re-normalised variant is another loss (effective temperature tau / (|kbar| |qbar|))
    assert abs(slidr(points[pairing_points], q_all, region, tau=0.07, cosine=True).item() - code.item()) > 0.1


def test_slidr_on_region_rows_equals_slidr_nce_loss():
    gen = torch.Generator().manual_seed(5)
    kbar = 0.6 * F.normalize(torch.randn(12, 6, generator=gen, dtype=torch.float64), dim=1)
    qbar = 0.64 * F.normalize(torch.randn(12, 6, generator=gen, dtype=torch.float64), dim=1)
    logits = torch.mm(kbar, qbar.transpose(1, 0))
    nce = F.cross_entropy(torch.div(logits, 0.07), torch.arange(12))  # SLidR's NCELoss
    assert slidr(kbar, qbar, tau=0.07).item() == pytest.approx(nce.item(), rel=1e-13)


def _reference_slidr(k, q, segments, tau):
    """Loop reference: normalise every point row, pool by python dict, InfoNCE of the means (not re-normalised)."""
    groups: dict[int, list[torch.Tensor]] = {}
    for row, s in zip(F.normalize(k, dim=1), segments.tolist(), strict=True):
        groups.setdefault(s, []).append(row)
    ids = sorted(groups)
    kk = [torch.stack(groups[s]).mean(0) for s in ids]
    qq = [q[s] for s in ids]
    total = 0.0
    for i in range(len(ids)):
        logits = [float(kk[i] @ qq[j]) / tau for j in range(len(ids))]
        total += -logits[i] + math.log(sum(math.exp(v) for v in logits))
    return total / len(ids)


def test_slidr_matches_loop_reference_and_pooling_per_scan_changes_nothing():
    gen = torch.Generator().manual_seed(0)
    k = torch.randn(40, 6, generator=gen, dtype=torch.float64)
    q = 0.7 * F.normalize(torch.randn(12, 6, generator=gen, dtype=torch.float64), dim=1)
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


def _reference_st_slidr(k, q, tau, min_quantile, noise_threshold, class_balance, clip=False):
    """Loop reference written from the public code's steps (``loss_superpixel_stslidr_classbalance``; ``clip``:
    ``NCELoss``'s clipping of the similarity), on region rows as they are (quantiles: numpy's default)."""
    import numpy as np

    n = k.shape[0]
    unit = F.normalize(q, dim=1)
    sim = (unit @ unit.T).numpy()
    if clip:
        sim = np.clip(sim, 0.0, 1.0)
    weight = 1.0 - sim
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
@pytest.mark.parametrize("clip", [False, True])
def test_st_slidr_matches_loop_reference(min_quantile, class_balance, clip):
    gen = torch.Generator().manual_seed(1)
    k = 0.6 * F.normalize(torch.randn(9, 5, generator=gen, dtype=torch.float64), dim=1)
    q = torch.randn(9, 5, generator=gen, dtype=torch.float64) + 0.8  # some similar regions, some not
    q = 0.7 * F.normalize(q, dim=1)
    params = {"tau": 0.3, "min_quantile": min_quantile, "class_balance": class_balance, "clip_similarity": clip}
    value = st_slidr(k, q, **params).item()
    ref = _reference_st_slidr(k, q, 0.3, min_quantile, 0.5, class_balance, clip)
    assert value == pytest.approx(ref, rel=1e-10)


def test_st_slidr_unclipped_weights_reach_two_for_opposite_regions():
    """The class-balanced code path weighs a negative by 1 - cos unclipped (2 for an opposite region); NCELoss's
    clipping (``clip_similarity``) gives it 1: with min_quantile = 0 the two losses differ."""
    e1 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    q = torch.stack([e1, -e1])
    torch.testing.assert_close(negative_weights(q @ q.T, 0.0), torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=q.dtype))
    clipped = negative_weights(q @ q.T, 0.0, clip_similarity=True)
    torch.testing.assert_close(clipped, torch.ones(2, 2, dtype=q.dtype))
    k = q.clone()
    tau = 1.0
    # row 0: logits (1, 2 * -1) unclipped -> log(1 + e^-3); clipped (1, -1) -> log(1 + e^-2)
    assert st_slidr(k, q, tau=tau, min_quantile=0.0).item() == pytest.approx(math.log(1 + math.exp(-3)))
    value = st_slidr(k, q, tau=tau, min_quantile=0.0, clip_similarity=True).item()
    assert value == pytest.approx(math.log(1 + math.exp(-2)))


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
