"""Losses of docs/method.md#losses: hand-computed values, brute-force references, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.losses import LOSSES, contrastive, get_loss, relational, similarity

NAMES = [
    "contrastive",
    "similarity",
    "relational",
    "relational_cross",
    "relational_intra",
    "regression",
    "slidr",
    "st_slidr",
]


def _reference_relational(k, q, lam=1.0, cross=True, intra=True):
    """Plain autograd implementation of the formulas of docs/method.md#relational, written independently of the fused
    one."""
    k = F.normalize(k, dim=1)
    q = F.normalize(q.detach(), dim=1)
    n = k.shape[0]
    off = ~torch.eye(n, dtype=torch.bool)
    p = q @ q.T
    loss = k.new_zeros(())
    if cross:
        c = (k @ q.T - p).abs()
        loss = loss + c.diagonal().mean() + c[off].mean()
    if intra:
        loss = loss + lam * (k @ k.T - p).abs()[off].mean()
    return loss


def _reference_contrastive(k, q, tau):
    k = F.normalize(k, dim=1)
    q = F.normalize(q, dim=1)
    total = 0.0
    for i in range(k.shape[0]):
        logits = [float(k[i] @ q[j]) / tau for j in range(k.shape[0])]
        total += -logits[i] + math.log(sum(math.exp(v) for v in logits))
    return total / k.shape[0]


def test_registry_names_and_unknown_name():
    assert sorted(LOSSES) == sorted(NAMES)
    assert get_loss("relational") is relational
    with pytest.raises(KeyError, match="valid losses: contrastive, similarity, relational, "):
        get_loss("infonce")


def test_hand_computed_tiny_case():
    # k = [e1, e1] (scaled: rows are normalised inside), q = [e1, e2]
    k = torch.tensor([[3.0, 0.0], [0.5, 0.0]], dtype=torch.float64)
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    # K Q^T = [[1, 0], [1, 0]], Q Q^T = I, K K^T = all ones
    assert similarity(k, q).item() == pytest.approx(0.5)  # 1 - mean(1, 0)
    # C = |[[0, 0], [1, -1]]|: diag mean (0 + 1) / 2, off-diagonal mean (0 + 1) / 2
    assert relational(k, q, intra=False).item() == pytest.approx(1.0)
    # |K K^T - I| off-diagonal: both 1
    assert relational(k, q, cross=False).item() == pytest.approx(1.0)
    assert relational(k, q).item() == pytest.approx(2.0)
    assert relational(k, q, lam=0.5).item() == pytest.approx(1.5)
    # tau = 1: row 0 logits (1, 0) target 0; row 1 logits (1, 0) target 1
    expected = 0.5 * (math.log(1 + math.exp(-1)) + math.log(1 + math.e))
    assert contrastive(k, q, tau=1.0).item() == pytest.approx(expected)
    # identity pairing: log(1 + exp(-1/tau))
    eye = torch.eye(2, dtype=torch.float64)
    assert contrastive(eye, eye, tau=0.5).item() == pytest.approx(math.log(1 + math.exp(-2.0)))


@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_contrastive_matches_loop_reference(tau):
    gen = torch.Generator().manual_seed(1)
    k = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    q = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    assert contrastive(k, q, tau=tau).item() == pytest.approx(_reference_contrastive(k, q, tau), rel=1e-12)


@pytest.mark.parametrize(
    "cross,intra,lam", [(True, True, 1.0), (True, False, 1.0), (False, True, 0.3), (True, True, 2)]
)
def test_relational_matches_autograd_reference(cross, intra, lam):
    gen = torch.Generator().manual_seed(2)
    k = torch.randn(33, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    q = torch.randn(33, 8, generator=gen, dtype=torch.float64)
    k_ref = k.detach().clone().requires_grad_(True)
    loss = relational(k, q, lam=lam, cross=cross, intra=intra)
    ref = _reference_relational(k_ref, q, lam=lam, cross=cross, intra=intra)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    loss.backward()
    ref.backward()
    torch.testing.assert_close(k.grad, k_ref.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_float64(name):
    gen = torch.Generator().manual_seed(3)
    k = torch.randn(6, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    q = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    fn = get_loss(name)
    assert torch.autograd.gradcheck(lambda x: fn(x, q), (k,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_no_gradient_into_teacher(name):
    gen = torch.Generator().manual_seed(4)
    k = torch.randn(16, 8, generator=gen, requires_grad=True)
    q = torch.randn(16, 8, generator=gen, requires_grad=True)
    get_loss(name)(k, q).backward()
    assert q.grad is None
    assert k.grad is not None and torch.isfinite(k.grad).all() and k.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["similarity", "relational", "relational_cross", "relational_intra", "regression"])
def test_zero_when_student_equals_teacher(name):
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(64, 16, generator=gen, dtype=torch.float64)
    # same directions at another scale: zero up to rounding of the normalisation
    assert get_loss(name)(2.5 * q, q).item() == pytest.approx(0.0, abs=1e-12)
    # bitwise equal: exactly zero, and (sign(0) = 0 for the L1 terms) a zero gradient
    k = q.clone().requires_grad_(True)
    loss = get_loss(name)(k, q)
    assert loss.item() == pytest.approx(0.0, abs=1e-15)
    loss.backward()
    assert k.grad.abs().max().item() < 1e-12


@pytest.mark.parametrize("name", ["relational", "relational_cross", "relational_intra"])
@pytest.mark.parametrize("shape", [(64, 512), (300, 77), (33, 1000)])
@pytest.mark.parametrize("layout", ["clone", "column-major"])
def test_relational_is_exactly_zero_for_a_student_equal_to_its_teacher_on_any_cpu(name, shape, layout):
    """float32, CLIP-sized rows: ``K Q^T - Q Q^T`` computed as two products is not bitwise 0 when the two GEMMs
    round differently (other kernels on another CPU, another memory layout); the loss computes ``(K - Q) Q^T``,
    which is exactly 0 whatever the kernels, and so are the L1 terms' signs and the gradient."""
    gen = torch.Generator().manual_seed(7)
    q = torch.randn(*shape, generator=gen)
    k = q.clone() if layout == "clone" else q.T.contiguous().T  # same values; column-major: other kernels
    k.requires_grad_(True)
    loss = get_loss(name)(k, q)
    loss.backward()
    assert loss.item() == 0.0
    assert k.grad.abs().max().item() == 0.0


def test_contrastive_is_minimal_when_aligned():
    gen = torch.Generator().manual_seed(6)
    q = torch.randn(32, 16, generator=gen)
    aligned = contrastive(q, q).item()
    shuffled = contrastive(q[torch.randperm(32, generator=gen)], q).item()
    assert aligned < shuffled


def test_relational_is_invariant_to_a_common_rotation_only_for_the_intra_term():
    # Intra term compares K K^T with Q Q^T: rotating the student space leaves it unchanged.
    gen = torch.Generator().manual_seed(7)
    q = torch.randn(20, 6, generator=gen, dtype=torch.float64)
    rot, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))
    assert relational(q @ rot, q, cross=False).item() == pytest.approx(0.0, abs=1e-12)
    assert relational(q @ rot, q, intra=False).item() > 0.1


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda k, q: contrastive(k, q, tau=0.0), "tau must be positive"),
        (lambda k, q: relational(k, q, cross=False, intra=False), "at least one of"),
        (lambda k, q: relational(k, q, lam=-1.0), "non-negative"),
        (lambda k, q: similarity(k, q[:, :3]), "same shape"),
        (lambda k, q: similarity(k[:1], q[:1]), "at least 2 pairs"),
    ],
)
def test_bad_input_messages(call, match):
    k = torch.randn(4, 5)
    q = torch.randn(4, 5)
    with pytest.raises(ValueError, match=match):
        call(k, q)


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_autocast_keeps_a_float32_loss_close_to_float32(name):
    # the trainer's loss_dtype "bfloat16": products in bfloat16, the loss and K's gradient in float32
    gen = torch.Generator().manual_seed(8)
    k32 = torch.randn(256, 32, generator=gen, requires_grad=True)
    q = torch.randn(256, 32, generator=gen)
    k16 = k32.detach().clone().requires_grad_(True)
    reference = get_loss(name)(k32, q)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = get_loss(name)(k16, q)
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(reference.item(), rel=2e-2)
    reference.backward()
    low.backward()
    assert k16.grad.dtype == torch.float32
    assert F.cosine_similarity(k16.grad.flatten(), k32.grad.flatten(), dim=0) > 0.98
