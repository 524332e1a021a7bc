"""The CUDA tests (``pytest -m cuda``; skipped without a GPU, so CI only collects them): the students, every loss and
the CLIP teacher agree between CPU and CUDA on the same weights and inputs, and a tiny suite trains on ``--device
cuda`` with loader workers (pinned memory) end to end. Run on a GPU machine by ``benchmarks/gpu/run.sh``."""

from __future__ import annotations

import json

import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run by benchmarks/gpu/run.sh)"),
]


@pytest.fixture(autouse=True)
def _no_tf32():
    """Full float32 matmuls on the GPU, so CPU and CUDA differ by summation order only."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def _scan(n: int = 4000, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    radius = 2.0 + 28.0 * torch.rand(n, generator=gen)
    angle = 2 * torch.pi * torch.rand(n, generator=gen)
    z = -1.8 + 3.0 * torch.rand(n, generator=gen)
    return torch.stack([radius * angle.cos(), radius * angle.sin(), z, torch.rand(n, generator=gen)], 1)


@pytest.mark.parametrize("name", ["minkunet", "waffleiron"])
def test_student_forward_and_backward_match_cpu(name):
    from models.students import build_student

    torch.manual_seed(0)
    cpu = build_student(name, out_dim=64, preset="small", voxel_size=0.1, inputs=("intensity",)).eval()
    torch.manual_seed(0)
    gpu = build_student(name, out_dim=64, preset="small", voxel_size=0.1, inputs=("intensity",)).eval().cuda()
    points = _scan()
    batch = torch.cat([torch.zeros(2000, dtype=torch.int64), torch.ones(2000, dtype=torch.int64)])
    out_cpu = cpu(points, batch)
    out_gpu = gpu(points.cuda(), batch.cuda())
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, rtol=1e-3, atol=1e-4)
    out_cpu.square().sum().backward()
    out_gpu.square().sum().backward()
    for (key, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters(), strict=True):
        if p_cpu.grad is not None:
            torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, rtol=1e-2, atol=1e-4, msg=key)


def test_every_loss_matches_cpu():
    from models.losses import LOSSES, get_loss, loss_inputs

    gen = torch.Generator().manual_seed(0)
    for name in LOSSES.names():
        if loss_inputs(name) == "pairs":
            k, q, extra = torch.randn(256, 32, generator=gen), torch.randn(256, 32, generator=gen), {}
        else:
            segments = torch.cat([torch.arange(40), torch.randint(0, 40, (472,), generator=gen)])
            k, q = torch.randn(512, 32, generator=gen), torch.randn(40, 32, generator=gen)
            extra = {"segments": segments}
        results = []
        for device in ("cpu", "cuda"):
            kk = k.to(device).requires_grad_(True)
            loss = get_loss(name)(kk, q.to(device), **{key: v.to(device) for key, v in extra.items()})
            loss.backward()
            results.append((loss.detach().cpu(), kk.grad.cpu()))
        torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-4, atol=1e-5, msg=name)
        torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-3, atol=1e-6, msg=name)


def test_clip_dense_features_match_cpu(tiny_arch):
    from models.teachers.clip import CLIPTeacher

    images = torch.randint(0, 256, (2, 96, 160, 3), dtype=torch.uint8)
    cpu = CLIPTeacher(tiny_arch, None, "cpu", image_size=(32, 64), seed=0).encode_images(images)
    gpu = CLIPTeacher(tiny_arch, None, "cuda", image_size=(32, 64), seed=0).encode_images(images.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-4)


def test_tiny_suite_trains_on_cuda_with_workers(tmp_path):
    from bench.run import main
    from tests.conftest import write_suite

    losses = [{"name": "contrastive", "params": {"tau": 0.07}}, {"name": "slidr", "params": {"tau": 0.07}}]
    suite = write_suite(tmp_path / "cuda.yaml", tmp_path / "scenes", losses, [0], steps=6)
    out = tmp_path / "runs"
    assert main(["--suite", str(suite), "--out", str(out), "--device", "cuda", "--workers", "2", "--no-progress"]) == 0
    finished = sorted(out.glob("*/metrics.json"))
    assert len(finished) == 2
    for path in finished:
        metrics = json.loads(path.read_text())
        assert metrics["final_loss"] == metrics["final_loss"], path  # not NaN
        assert metrics["geometry"]["U"] == metrics["geometry"]["U"], path
