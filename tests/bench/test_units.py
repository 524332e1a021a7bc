"""Unit tests of the harness: mIoU from a confusion matrix, pair sampling, cropping, the cosine schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.data.classes import IGNORE_INDEX
from bench.data.scene import Scene, crop_scan
from bench.evaluate import confusion_matrix, miou
from bench.train import cosine_factor, sample_pairs, step_generator, warmup_cosine_factor

CLASSES = ("a", "b", "c", "d")


def test_miou_hand_computed_absent_class_and_ignore_index():
    target = np.array([0, 0, 1, 1, 2, IGNORE_INDEX])
    pred = np.array([0, 1, 1, 1, 0, 1])  # the ignored point's prediction (b) must not count
    conf = confusion_matrix(pred, target, 4)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[0, 0] = expected[0, 1] = expected[2, 0] = 1
    expected[1, 1] = 2
    np.testing.assert_array_equal(conf, expected)
    result = miou(conf, CLASSES)
    # IoU_a = 1 / (2 + 2 - 1), IoU_b = 2 / (2 + 3 - 2), IoU_c = 0 / (1 + 0 - 0); d absent from both: excluded
    assert result["per_class"]["a"] == pytest.approx(1 / 3)
    assert result["per_class"]["b"] == pytest.approx(2 / 3)
    assert result["per_class"]["c"] == 0.0
    assert result["per_class"]["d"] is None
    assert result["miou"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert result["points"] == 5
    # chance IoU p / (1 + p (C - 1)) with shares a 2/5, b 2/5, c 1/5 over C = 4 classes; d has no label
    assert result["chance"]["a"] == pytest.approx(0.4 / 2.2)
    assert result["chance"]["c"] == pytest.approx(0.2 / 1.6)
    assert result["chance"]["d"] is None
    assert result["below_chance"] == ["c"]


def test_chance_iou_matches_a_uniform_random_predictor():
    rng = np.random.default_rng(0)
    target = rng.choice(4, size=400_000, p=[0.7, 0.2, 0.07, 0.03])
    result = miou(confusion_matrix(rng.integers(0, 4, size=target.size), target, 4), CLASSES)
    for name in CLASSES:
        assert result["per_class"][name] == pytest.approx(result["chance"][name], rel=0.05)


def test_miou_class_only_predicted_counts_as_zero():
    conf = confusion_matrix(np.array([0, 3]), np.array([0, 0]), 4)
    result = miou(conf, CLASSES)
    assert result["per_class"]["a"] == pytest.approx(0.5)
    assert result["per_class"]["d"] == 0.0  # predicted, never true: IoU 0, in the mean
    assert result["miou"] == pytest.approx(0.25)


def test_miou_of_nothing_is_nan():
    assert math.isnan(miou(np.zeros((4, 4)), CLASSES)["miou"])


def _scene(n_points: int, n_pairs: int) -> Scene:
    pairs = np.stack([np.arange(n_pairs) % n_points, np.zeros(n_pairs), np.arange(n_pairs), np.zeros(n_pairs)], 1)
    points = np.zeros((n_points, 4), dtype=np.float32)
    return Scene("s", points, np.zeros(n_points, dtype=np.int64), pairs.astype(np.int64), None, ((8, 8),))


def test_sample_pairs_without_replacement_over_all_pairs_of_the_batch():
    scenes = [_scene(50, 30), _scene(40, 70)]
    counts = [len(s.pairs) for s in scenes]
    picks = sample_pairs(counts, 64, step_generator(0, 1))
    assert sum(len(rows) for _, rows in picks) == 64
    for i, rows in picks:
        assert len(np.unique(rows)) == len(rows) and rows.max() < len(scenes[i].pairs)
    # uniform over pairs: over many draws, scene 0 holds 30 / 100 of the pairs
    share = np.mean(
        [sum(len(r) for i, r in sample_pairs(counts, 10, step_generator(0, s)) if i == 0) for s in range(400)]
    )
    assert share == pytest.approx(3.0, abs=0.3)
    # fewer pairs than asked: all of them
    assert sum(len(r) for _, r in sample_pairs(counts, 1000, step_generator(0, 1))) == 100


def test_step_generator_depends_only_on_seed_step_stream():
    a = torch.randperm(100, generator=step_generator(3, 7))
    assert torch.equal(a, torch.randperm(100, generator=step_generator(3, 7)))
    assert not torch.equal(a, torch.randperm(100, generator=step_generator(3, 8)))
    assert not torch.equal(a, torch.randperm(100, generator=step_generator(3, 7, 1)))


def test_crop_scan_reindexes_pairs():
    from bench.data.synthetic import generate_scene

    scan = generate_scene(0)
    points, labels, pairs = crop_scan(scan, 10.0)
    keep = np.hypot(scan.points[:, 0], scan.points[:, 1]) < 10.0
    np.testing.assert_array_equal(points, scan.points[keep])
    np.testing.assert_array_equal(labels, scan.labels[keep])
    full = scan.pairing_table()
    kept_full = full[keep[full[:, 0]]]
    np.testing.assert_array_equal(points[pairs[:, 0]], scan.points[kept_full[:, 0]])
    np.testing.assert_array_equal(pairs[:, 1:], kept_full[:, 1:])


def test_linear_probe_points_per_scan_are_bounded():
    from bench.evaluate import probe_points_per_scan

    assert probe_points_per_scan(40, 2000, 500_000) == 2000  # the CPU suites: every scan gives 2000
    assert probe_points_per_scan(28_130, 2000, 500_000) == 17  # nuScenes train: the pool stays at 500k
    assert probe_points_per_scan(10**7, 2000, 500_000) == 1


def test_cosine_factor():
    assert cosine_factor(0, 10) == 1.0
    assert cosine_factor(5, 10) == pytest.approx(0.5)
    assert cosine_factor(10, 10) == pytest.approx(0.0)


def test_warmup_cosine_factor():
    assert [warmup_cosine_factor(s, 10, 2) for s in (0, 1, 2)] == [0.5, 1.0, 1.0]  # linear, then the cosine
    assert warmup_cosine_factor(6, 10, 2) == pytest.approx(0.5)  # half-way through the 8 cosine steps
    assert warmup_cosine_factor(10, 10, 2) == pytest.approx(0.0)
    assert all(warmup_cosine_factor(s, 10, 0) == cosine_factor(s, 10) for s in range(11))


@pytest.mark.parametrize("clip,expected", [(None, [-2.0, -3.0]), (1.0, [0.4, 0.2]), (10.0, [-2.0, -3.0])])
def test_optimisation_step_clips_the_global_gradient_norm(clip, expected):
    """A gradient (3, 4) (norm 5): clipped to norm 1 it is (0.6, 0.8); SGD lr 1 from (1, 1)."""
    from bench.evaluate import optimisation_step

    p = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([p], lr=1.0)
    norm = optimisation_step((p * torch.tensor([3.0, 4.0])).sum(), optimizer, [p], clip)
    assert float(norm) == pytest.approx(5.0) and p.detach().tolist() == pytest.approx(expected)


def test_seed_table_mean_and_std_over_seeds():
    from bench.tables import seed_table

    def metrics(u, zs):
        geo = {"U": u, "T": 0.5, "G": 1.0, "S": 0.2}
        return {"geometry": geo, "zero_shot": {"miou": zs}, "linear_probe": {"miou": None}}

    rows = [
        ("similarity-s0", metrics(1.0, 0.10)),
        ("similarity-s1", metrics(2.0, 0.20)),
        ("similarity-s2", metrics(3.0, 0.30)),
        ("relational_cross-s0", metrics(9.0, 0.9)),  # one seed: not in the table
    ]
    table = seed_table(rows)
    (line,) = [row for row in table.splitlines() if row.startswith("similarity (3)")]
    assert "2.000 ± 1.000" in line  # U: mean 2, sample std 1
    assert "20.000 ± 10.000" in line  # zero-shot mIoU in %
    assert "relational_cross" not in table
    assert seed_table(rows[3:]) == ""


def test_run_written_before_a_parameter_existed_matches_its_default(tmp_path):
    from bench.config import DistillConfig
    from bench.results import RunConflictError, RunDir, write_json

    current = DistillConfig(loss="similarity", seed=0).flat()  # the flat form, as config.json held it
    older = {k: v for k, v in current.items() if k != "seg_loss"}  # written before seg_loss existed
    write_json(tmp_path / "config.json", older)
    write_json(tmp_path / "metrics.json", {})  # a folder with results: bound to its config.json
    run = RunDir(tmp_path)
    run.check_config(current, DistillConfig.field_defaults())  # the default is what the old run used
    with pytest.raises(RunConflictError, match="differs in: seg_loss"):
        run.check_config({**current, "seg_loss": "ce+lovasz"}, DistillConfig.field_defaults())
    with pytest.raises(RunConflictError, match="differs in: seg_loss"):
        run.check_config(current)  # without defaults every missing key is a difference


def test_overrides_are_read_as_yaml_in_order_and_named_when_malformed():
    from bench.config import with_overrides

    run = {"voxel_size": 0.2, "loss": "similarity"}
    out = with_overrides(run, ["voxel_size=0.1", "planes=[16, 32]", "loss=relational", "loss=contrastive"])
    assert out == {"voxel_size": 0.1, "planes": [16, 32], "loss": "contrastive"} and run["voxel_size"] == 0.2
    for bad in ("voxel_size", "=0.1"):
        with pytest.raises(ValueError, match=f"FIELD=VALUE; got {bad!r}"):
            with_overrides(run, [bad])


@pytest.mark.parametrize(
    "fields,match",
    [
        ({"voxel_size": -0.1}, "voxel_size must be positive"),
        ({"voxel_size": [0.1, 0.0, 0.1]}, "voxel_size must be positive"),
        ({"eval_split": "test"}, "split test is empty: set test_scenes"),
        ({"eval_split": "holdout"}, "synthetic splits are train, val and test"),
        ({"seg_class_weight": "median"}, "unknown seg_class_weight"),
        ({"loss_dtype": "float16"}, "unknown loss_dtype"),
        ({"slic": {"segments": 10}}, "unknown slic fields"),
        ({"ft_warmup": 1.0}, r"few_shot.warmup \(ft_warmup\) is a fraction of ft_steps"),
        ({"ft_clip_norm": 0.0}, r"few_shot.clip_norm \(ft_clip_norm\) must be positive"),
        ({"ood_eval_split": "test"}, "the OOD split test is empty: set ood_test_scenes"),
        ({"ood_eval_split": "holdout"}, r"ood.eval_split \(ood_eval_split\) is val or test"),
    ],
)
def test_config_refuses_bad_values_naming_them(fields, match):
    from bench.config import DistillConfig

    with pytest.raises(ValueError, match=match):
        DistillConfig(loss="similarity", seed=0, **fields)
