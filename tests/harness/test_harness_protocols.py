"""The evaluation protocols and the geometry set on known answers: the teacher's features at the sampled
points, a perfect "oracle" student scoring mIoU 1, and the feature cache giving the same run as on-the-fly."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from bench.data.classes import IGNORE_INDEX, NUSCENES_CLASSES
from bench.evaluate import fine_tune, linear_probe, zero_shot
from bench.probe import GeometrySet
from bench.run import main
from bench.scenes import Scene, TeacherFeatures, load_scenes
from models.teachers import build_teacher

from .conftest import write_suite


@pytest.fixture(scope="module")
def synthetic_scene():
    from bench.data.synthetic import generate_scene

    return generate_scene(3)


def test_geometry_set_holds_the_teachers_features_of_its_points(synthetic_scene):
    teacher = build_teacher("synthetic")

    class OneScan:
        name, split, ids = "synthetic", "val", [synthetic_scene.scan_id]

        def load(self, scan_id):
            return synthetic_scene

    (scene,) = load_scenes(OneScan(), TeacherFeatures(teacher), crop_radius=None, progress=False)
    geo = GeometrySet.draw([scene], n_per_class=25, seed=0)
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


class Oracle(nn.Module):
    """A "student" whose feature of a point is the text embedding of its true class (stored in column 3)."""

    def __init__(self, text: torch.Tensor) -> None:
        super().__init__()
        self.text = text
        self.scale = nn.Parameter(torch.ones(()))  # something for the fine-tuning optimiser to hold

    def forward(self, points: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        label = points[:, 3].long().clamp(max=len(self.text) - 1)
        return self.text[label] * self.scale


def _labelled_scenes(seed: int, n: int) -> list[Scene]:
    rng = np.random.default_rng(seed)
    scenes = []
    for i in range(n):
        labels = rng.integers(0, 16, size=500)
        labels[rng.random(500) < 0.1] = IGNORE_INDEX
        points = np.zeros((500, 4), dtype=np.float32)
        points[:, 3] = np.where(labels == IGNORE_INDEX, 0, labels)
        scenes.append(Scene(f"s{i}", points, labels, np.zeros((0, 4), dtype=np.int64), None, ()))
    return scenes


def test_protocols_score_an_oracle_student_perfectly():
    text = torch.nn.functional.normalize(torch.randn(16, 32, generator=torch.Generator().manual_seed(0)), dim=1)
    oracle, scenes = Oracle(text), _labelled_scenes(0, 3)
    cpu = torch.device("cpu")
    result = zero_shot(oracle, scenes, text, NUSCENES_CLASSES, cpu)
    assert result["miou"] == 1.0 and all(v == 1.0 for v in result["per_class"].values())
    assert result["points"] == sum(int((s.labels != IGNORE_INDEX).sum()) for s in scenes)
    cfg = SimpleNamespace(
        seed=0, lp_points_per_scan=400, lp_steps=200, lp_batch_points=512, lp_lr=5.0, ft_steps=50, ft_batch_size=1,
        seg_loss="ce", ft_lr=1.0, out_dim=32, momentum=0.9, weight_decay=1e-4,
    )  # fmt: skip
    assert linear_probe(oracle, scenes, scenes, NUSCENES_CLASSES, cfg, cpu)["miou"] == 1.0
    with_lovasz = SimpleNamespace(**{**vars(cfg), "seg_loss": "ce+lovasz"})
    assert linear_probe(oracle, scenes, scenes, NUSCENES_CLASSES, with_lovasz, cpu)["miou"] == 1.0
    assert fine_tune(oracle, scenes, scenes, NUSCENES_CLASSES, cfg, cpu)["miou"] == 1.0
    # a wrong classifier (classes permuted) scores 0 in zero-shot
    assert zero_shot(oracle, scenes, text.roll(1, dims=0), NUSCENES_CLASSES, cpu)["miou"] == 0.0


def test_feature_cache_gives_the_same_run(tiny_suite, tiny_runs, tmp_path):
    suite = write_suite(
        tmp_path / "cached.yaml", tiny_suite.parent / "scenes", [{"name": "relational", "params": {"lam": 1.0}}], [0]
    )
    out = tmp_path / "out"
    assert main(["--suite", str(suite), "--out", str(out), "--feature-cache", str(tmp_path / "features")]) == 0
    assert list((tmp_path / "features" / "synthetic").iterdir())  # the cache was filled
    cached = json.loads((out / "relational-lam1.0-s0" / "metrics.json").read_text())
    direct = json.loads((tiny_runs / "relational-lam1.0-s0" / "metrics.json").read_text())
    assert cached["geometry"] == pytest.approx(direct["geometry"], rel=1e-6)
    assert cached["zero_shot"]["miou"] == pytest.approx(direct["zero_shot"]["miou"], abs=1e-9)
