"""The evaluation protocols and the geometry set on known answers: the teacher's features at the sampled
points, a perfect "oracle" student scoring mIoU 1, and a feature cache elsewhere giving the same run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from bench.config_sections import FewShotConfig, LinearProbeConfig, SegmentationConfig
from bench.data.base import ScanDataset
from bench.data.classes import IGNORE_INDEX, NUSCENES_CLASSES
from bench.data.features import FeatureCache
from bench.data.loader import SceneDataset
from bench.data.scan import Scan
from bench.evaluate import fine_tune, linear_probe, zero_shot
from bench.probe import GeometrySet
from bench.run import main
from bench.train import make_optimizer
from models.teachers import build_teacher
from tests.conftest import write_suite


@pytest.fixture(scope="module")
def synthetic_scene():
    from bench.data.synthetic import generate_scene

    return generate_scene(3)


class InMemory(ScanDataset):
    """Scans held in memory, as a dataset."""

    name = "memory"

    def __init__(self, scans: list[Scan]) -> None:
        self.scans = {s.scan_id: s for s in scans}
        super().__init__("val", list(self.scans))

    def load(self, scan_id: str) -> Scan:
        return self.scans[scan_id]


def test_geometry_set_holds_the_teachers_features_of_its_points(synthetic_scene, tmp_path):
    teacher = build_teacher("synthetic")
    dataset = InMemory([synthetic_scene])
    cache = FeatureCache(tmp_path, dataset.cache_key, teacher.identity)
    cache.fill(dataset, teacher, progress=False)
    geo = GeometrySet.draw(SceneDataset(dataset, None, cache), n_per_class=25, seed=0, n_classes=16)
    assert max(np.bincount(geo.labels)) <= 25 and IGNORE_INDEX not in geo.labels
    np.testing.assert_array_equal(geo.labels, synthetic_scene.labels[geo.point_index[0]])
    # the first camera pairing of each chosen point, read from the teacher directly
    paired = [teacher.paired_features(synthetic_scene, k) for k in range(len(synthetic_scene.cameras))]
    expected = []
    for point in geo.point_index[0]:
        for idx, feats in paired:
            hit = np.flatnonzero(idx == point)
            if len(hit):
                expected.append(feats[hit[0]])
                break
    # the scene keeps float16 patch grids: equal to the teacher's float32 features up to float16 rounding
    torch.testing.assert_close(geo.q2d, torch.stack(expected), atol=2e-3, rtol=1e-2)
    # the geometry with the teacher side memoised equals a fresh computation, on the first and a later call
    from bench.probe import TeacherSides
    from geomstruct.metrics import geometry
    from geomstruct.structure import MKNN_QUERIES, structure

    k3d = torch.nn.functional.normalize(
        torch.randn(len(geo.labels), geo.q2d.shape[1], generator=torch.Generator().manual_seed(0)), dim=1
    )
    fresh = {**geometry(k3d, geo.q2d, geo.labels), **structure(k3d, geo.q2d, mknn_queries=MKNN_QUERIES, seed=geo.seed)}
    geo.sides = TeacherSides()
    assert geo.geometry(k3d) == fresh
    assert len(geo.sides) == 1 and geo.geometry(k3d) == fresh


class Oracle(nn.Module):
    """A "student" whose feature of a point is the text embedding of its true class (stored in column 3)."""

    def __init__(self, text: torch.Tensor) -> None:
        super().__init__()
        self.text = text
        self.scale = nn.Parameter(torch.ones(()))  # something for the fine-tuning optimiser to hold

    def forward(self, points: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        label = points[:, 3].long().clamp(max=len(self.text) - 1)
        return self.text[label] * self.scale


def _labelled_scenes(seed: int, n: int) -> SceneDataset:
    rng = np.random.default_rng(seed)
    scans = []
    for i in range(n):
        labels = rng.integers(0, 16, size=500)
        labels[rng.random(500) < 0.1] = IGNORE_INDEX
        points = np.zeros((500, 4), dtype=np.float32)
        points[:, 3] = np.where(labels == IGNORE_INDEX, 0, labels)
        scans.append(Scan(f"s{i}", points, labels, [], NUSCENES_CLASSES))
    return SceneDataset(InMemory(scans), None)


def _fine_tuning() -> dict:
    """The run's values :func:`bench.evaluate.fine_tune` takes beside its section."""
    return {"segmentation": SegmentationConfig(), "seed": 0, "out_dim": 32, "sync_bn": True}


def test_protocols_score_an_oracle_student_perfectly():
    text = torch.nn.functional.normalize(torch.randn(16, 32, generator=torch.Generator().manual_seed(0)), dim=1)
    oracle, scenes = Oracle(text), _labelled_scenes(0, 3)
    cpu = torch.device("cpu")
    result = zero_shot(oracle, scenes, text, NUSCENES_CLASSES, cpu)
    assert result["miou"] == 1.0 and all(v == 1.0 for v in result["per_class"].values())
    assert result["points"] == sum(int((s.labels != IGNORE_INDEX).sum()) for s in scenes.dataset.scans.values())
    probe = LinearProbeConfig(steps=200, lr=5.0, batch_points=512, points_per_scan=400, max_points=10**6)
    run = {"seed": 0, "momentum": 0.9, "weight_decay": 1e-4}
    for segmentation in (SegmentationConfig(), SegmentationConfig(loss="ce+lovasz")):
        result = linear_probe(oracle, scenes, scenes, NUSCENES_CLASSES, probe, cpu, segmentation=segmentation, **run)
        assert result["miou"] == 1.0
    few = FewShotConfig(steps=50, lr=1.0)
    tuned = fine_tune(oracle, scenes, scenes, NUSCENES_CLASSES, few, cpu, **_fine_tuning())
    assert tuned["miou"] == 1.0
    # a wrong classifier (classes permuted) scores 0 in zero-shot
    assert zero_shot(oracle, scenes, text.roll(1, dims=0), NUSCENES_CLASSES, cpu)["miou"] == 0.0


@pytest.mark.parametrize("name,optimizer_class", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)])
def test_fine_tuning_uses_the_configured_optimizer(monkeypatch, name, optimizer_class):
    """``ft_optimizer`` chooses the optimiser of the few-shot fine-tuning (and of the supervised ceiling)."""
    import bench.evaluate

    built = []

    def recording(*args, **kwargs):
        built.append(make_optimizer(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(bench.evaluate, "make_optimizer", recording)
    text = torch.nn.functional.normalize(torch.randn(16, 32, generator=torch.Generator().manual_seed(0)), dim=1)
    scenes = _labelled_scenes(0, 2)
    few = FewShotConfig(steps=3, lr=0.1, optimizer=name)
    fine_tune(Oracle(text), scenes, scenes, NUSCENES_CLASSES, few, torch.device("cpu"), **_fine_tuning())
    assert len(built) == 1 and type(built[0]) is optimizer_class and built[0].param_groups[0]["initial_lr"] == 0.1


@pytest.mark.slow
def test_feature_cache_elsewhere_gives_the_same_run(tiny_suite, tiny_runs, tmp_path):
    suite = write_suite(
        tmp_path / "cached.yaml", tiny_suite.parent / "scenes", [{"name": "relational", "params": {"lam": 1.0}}], [0]
    )
    out = tmp_path / "out"
    args = ["--suite", str(suite), "--out", str(out), "--feature-cache", str(tmp_path / "features"), "--no-progress"]
    assert main(args) == 0
    (manifest,) = (tmp_path / "features").glob("synthetic-*/*/manifest.json")  # filled there, one teacher
    assert json.loads(manifest.read_text())["complete"]
    assert len(list((tmp_path / "features" / "text").glob("*/nuscenes-*.npy"))) == 1  # text embeddings too
    cached = (out / "relational-lam1.0-s0" / "metrics.json").read_bytes()
    assert cached == (tiny_runs / "relational-lam1.0-s0" / "metrics.json").read_bytes()


@pytest.mark.slow
def test_augmented_cylindrical_run_differs_and_reproduces(tiny_suite, tiny_runs, tmp_path):
    losses = [{"name": "relational", "params": {"lam": 1.0}}]
    suite = write_suite(tmp_path / "aug.yaml", tiny_suite.parent / "scenes", losses, [0], augmentation={},
                        voxel_system="cylindrical", voxel_size=[0.25, 2.0, 0.25])  # fmt: skip
    for out in ("a", "b"):
        assert main(["--suite", str(suite), "--out", str(tmp_path / out), "--no-progress"]) == 0
    run = "relational-lam1.0-s0"
    first = (tmp_path / "a" / run / "trajectory.csv").read_text()
    assert first == (tmp_path / "b" / run / "trajectory.csv").read_text()  # seeded augmentations: same run
    assert first != (tiny_runs / run / "trajectory.csv").read_text()  # the augmentations changed the training
    config = json.loads((tmp_path / "a" / run / "config.json").read_text())  # in sections
    assert config["data"]["augmentation"] == {} and config["student"]["voxel_system"] == "cylindrical"


def test_fine_tuning_warms_up_clips_and_reports_its_trace(monkeypatch):
    """``ft_warmup`` ramps the learning rate linearly before the cosine; ``ft_clip_norm`` bounds the gradient's
    norm at every step; the result carries the loss trace and the largest unclipped gradient norm."""
    import bench.evaluate

    steps, lrs, norms = [], [], []
    original = bench.evaluate.optimisation_step

    def recording(loss, optimizer, parameters, clip_norm):
        lrs.append(optimizer.param_groups[0]["lr"])
        steps.append(float(loss.detach()))
        params = list(parameters)
        norm = original(loss, optimizer, params, clip_norm)
        grads = [p.grad for p in params if p.grad is not None]
        norms.append((float(norm), float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))))
        return norm

    monkeypatch.setattr(bench.evaluate, "optimisation_step", recording)
    text = torch.nn.functional.normalize(torch.randn(16, 32, generator=torch.Generator().manual_seed(0)), dim=1)
    scenes = _labelled_scenes(0, 2)
    few = FewShotConfig(steps=10, lr=0.1, warmup=0.3, clip_norm=0.01)
    result = fine_tune(Oracle(text), scenes, scenes, NUSCENES_CLASSES, few, torch.device("cpu"), **_fine_tuning())
    expected = [0.1 / 3, 0.2 / 3, 0.1] + [0.1 * (1 + math.cos(math.pi * s / 7)) / 2 for s in range(7)]
    assert lrs == pytest.approx(expected)
    assert all(after <= 0.01 * (1 + 1e-5) < before for before, after in norms)  # every step clipped to 0.01
    assert result["train_loss"] == {"first": steps[0], "max": max(steps), "last": steps[-1]}
    assert result["grad_norm_max"] == pytest.approx(max(before for before, _ in norms))
