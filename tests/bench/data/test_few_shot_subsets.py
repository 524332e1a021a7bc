"""Several 1% subsets: subset 0 is the 1% split of today, subsets j >= 1 seeded draws of as many train ids; a run
with few_shot_subsets > 1 fine-tunes once per subset and writes their mean, spread and interval, and a run with
the default writes what it always wrote."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy import stats

from bench.config import FIELD_RANGES, DistillConfig
from bench.data.fewshot import (
    SEMANTICKITTI_TRAIN_FRAMES,
    draw_subset,
    few_shot_ids,
    few_shot_split,
    few_shot_subset,
    read_split_file,
    semantickitti_train_ids,
)
from bench.data.nuscenes import split_scene_names
from bench.data.registry import open_dataset
from bench.data.semantickitti import SemanticKITTIDataset
from bench.data.synthetic import SyntheticDataset
from bench.data.synthetic.dataset import synthetic_ids
from bench.distill import combine_scores, few_shot_scores, fine_tuning, mean_interval
from bench.evaluate import fine_tune
from bench.results import RunDir, read_config
from bench.train import build_distill_student
from bench.workspace import Workspace
from tests.conftest import TINY_DEFAULTS

SMOKE = Path(__file__).resolve().parents[3] / "bench" / "suites" / "smoke.yaml"
FINE_TUNE_KEYS = {"miou", "per_class", "points", "chance", "below_chance", "train_loss", "grad_norm_max"}
"""What :func:`bench.evaluate.fine_tune` returns (with its optimisation trace)."""


def _check_subsets(first: list[str], train: list[str], draws: list[list[str]]) -> None:
    """Subsets 1.. differ from subset 0 and from each other, hold as many ids, all of the train split."""
    assert all(len(d) == len(first) == len(set(d)) for d in draws)
    assert all(set(d) <= set(train) for d in draws)
    assert len({tuple(first), *(tuple(d) for d in draws)}) == 1 + len(draws)
    order = {name: i for i, name in enumerate(train)}
    assert all([order[i] for i in d] == sorted(order[i] for i in d) for d in draws)  # the train split's order


def test_split_names_round_trip_and_bad_names_are_refused():
    assert few_shot_split(0) == "train_1pct" and few_shot_split(3) == "train_1pct@3"
    assert [few_shot_subset(few_shot_split(j)) for j in range(4)] == [0, 1, 2, 3]
    assert few_shot_subset("train") is None and few_shot_subset("val") is None
    for bad in ("train_1pct@0", "train_1pct@x", "train_1pct@01", "train_1pct@-1", "train_1pct@"):
        with pytest.raises(ValueError, match="train_1pct@j"):
            few_shot_subset(bad)


def test_draw_is_numpy_default_rng_of_the_subset_index():
    train = [f"s{i:03d}" for i in range(200)]
    expected = np.sort(np.random.default_rng(2).choice(200, size=5, replace=False))
    assert draw_subset(train, 5, 2) == [train[i] for i in expected]
    assert draw_subset(train, 5, 2) == draw_subset(list(train), 5, 2)  # reproducible
    with pytest.raises(ValueError):
        draw_subset(train, 5, 0)


def test_nuscenes_subset_zero_is_the_split_file_and_draws_are_reproducible():
    first = split_scene_names("train_1pct")
    assert first == read_split_file("nuscenes_train_1pct.txt") and len(first) == 7
    train = split_scene_names("train")
    draws = [split_scene_names(few_shot_split(j)) for j in (1, 2, 3)]
    _check_subsets(first, train, draws)
    assert draws == [split_scene_names(f"train_1pct@{j}") for j in (1, 2, 3)]
    mini = split_scene_names("train_1pct", "v1.0-mini")  # a version without a split file: every 100th train scene
    assert mini == few_shot_ids(split_scene_names("train", "v1.0-mini"))
    assert len(split_scene_names("train_1pct@1", "v1.0-mini")) == len(mini)


def test_semantickitti_subset_zero_is_the_split_file_and_draws_come_from_the_train_scans(tmp_path):
    (tmp_path / "sequences").mkdir()
    first = SemanticKITTIDataset(tmp_path, "train_1pct").ids
    assert first == read_split_file("semantickitti_train_1pct.txt")
    train = semantickitti_train_ids()
    assert len(train) == sum(SEMANTICKITTI_TRAIN_FRAMES.values())
    draws = [SemanticKITTIDataset(tmp_path, few_shot_split(j)).ids for j in (1, 2, 3)]
    _check_subsets(first, train, draws)
    assert draws[0] == SemanticKITTIDataset(tmp_path, "train_1pct@1").ids
    with pytest.raises(ValueError, match="train_1pct@j"):
        SemanticKITTIDataset(tmp_path, "train_2pct")


def test_synthetic_subset_zero_is_every_nth_train_scene(tmp_path, monkeypatch):
    monkeypatch.setattr(SyntheticDataset, "generate_missing", lambda self, progress=True: None)  # ids only
    train = synthetic_ids("nuscenes", "train", 700)
    first = SyntheticDataset(tmp_path, "train_1pct").ids
    assert first == train[::100] == read_split_file("synthetic_train_1pct.txt")
    draws = [SyntheticDataset(tmp_path, few_shot_split(j)).ids for j in (1, 2, 3)]
    _check_subsets(first, train, draws)
    # the harness's reader (few_shot_every of the configuration) through the same helper
    sizes = {"train": 40}
    opened = open_dataset("synthetic", "train_1pct", tmp_path, sizes=sizes, few_shot_every=10, progress=False)
    train40 = synthetic_ids("nuscenes", "train", 40)
    assert opened.ids == train40[::10] and opened.split == "train_1pct"
    draws40 = [
        open_dataset("synthetic", few_shot_split(j), tmp_path, sizes=sizes, few_shot_every=10, progress=False).ids
        for j in (1, 2, 3)
    ]
    _check_subsets(opened.ids, train40, draws40)
    again = open_dataset("synthetic", "train_1pct@2", tmp_path, sizes=sizes, few_shot_every=10, progress=False)
    assert again.ids == draws40[1] and again.split == "train_1pct@2"


def test_field_default_keeps_old_configurations(tmp_path):
    assert DistillConfig.field_defaults()["few_shot_subsets"] == 1 and "few_shot_subsets" in FIELD_RANGES
    with pytest.raises(ValueError, match="few_shot_subsets"):
        DistillConfig(loss="similarity", seed=0, few_shot_subsets=0)
    cfg = DistillConfig(loss="similarity", seed=0)
    old = {k: v for k, v in cfg.flat().items() if k != "few_shot_subsets"}  # a config.json from before
    (tmp_path / "config.json").write_text(json.dumps(old))
    run_dir = RunDir(tmp_path)
    assert run_dir.config_differences(cfg.resolved(), DistillConfig.field_defaults()) == []
    more = DistillConfig(loss="similarity", seed=0, few_shot_subsets=3).flat()
    assert run_dir.config_differences(more, DistillConfig.field_defaults()) == ["few_shot_subsets"]


def test_mean_interval_is_student_t():
    mean, std, ci = mean_interval([0.1, 0.2, 0.3])
    half = stats.t.ppf(0.975, 2) * 0.1 / np.sqrt(3)
    assert mean == pytest.approx(0.2) and std == pytest.approx(0.1)
    assert ci == pytest.approx([0.2 - half, 0.2 + half])
    assert mean_interval([0.4]) == (0.4, None, None)
    assert mean_interval([0.4, None]) == (None, None, None)
    assert mean_interval([0.4, float("nan")]) == (None, None, None)


def test_combine_scores_means_per_class_over_defined_values():
    a = {"miou": 0.3, "per_class": {"car": 0.5, "bus": None}, "points": 10, "chance": {"car": 0.4, "bus": None}}
    b = {"miou": 0.5, "per_class": {"car": 0.3, "bus": 0.2}, "points": 10, "chance": {"car": 0.4, "bus": None}}
    out = combine_scores([a, b])
    assert out["miou"] == pytest.approx(0.4) and out["per_class"] == pytest.approx({"car": 0.4, "bus": 0.2})
    assert out["below_chance"] == ["car"] and out["points"] == 10  # 0.4 does not exceed chance 0.4


def _tiny(tmp_path, **overrides) -> DistillConfig:
    run = {**TINY_DEFAULTS, "train_scenes": 4, "few_shot_every": 2, "dataroot": str(tmp_path / "scenes"),
           "feature_cache": str(tmp_path / "features"), "loss": "similarity", "seed": 0, "ft_steps": 1,
           **overrides}  # fmt: skip
    return DistillConfig.from_run(run)


@pytest.mark.slow
def test_one_subset_is_the_plain_fine_tuning_of_the_one_percent_split(tmp_path):
    cfg = _tiny(tmp_path)
    student = build_distill_student(cfg)
    workspace = Workspace()
    evaluation = workspace.scenes(cfg, cfg.data.eval_split, None, False)
    classes = [f"c{i}" for i in range(16)]
    got = few_shot_scores(workspace, student, cfg, evaluation, classes, torch.device("cpu"))
    few = workspace.scenes(cfg, "train_1pct", None, False)
    direct = fine_tune(student, few, evaluation, classes, cfg.few_shot, torch.device("cpu"), **fine_tuning(cfg))
    assert set(got) == FINE_TUNE_KEYS | {"train_scans"} and got["train_scans"] == len(few) == 2
    assert got["miou"] == pytest.approx(direct["miou"], abs=1e-9) and got["points"] == direct["points"]


def _smoke_suite(tmp_path: Path) -> Path:
    """The smoke suite's defaults, one loss, two distillation steps, the few-shot protocols only, subsets 1 and 3."""
    defaults = yaml.safe_load(SMOKE.read_text())["defaults"]
    defaults |= {"dataroot": str(tmp_path / "scenes"), "feature_cache": str(tmp_path / "features"), "steps": 2,
                 "checkpoint_every": 2, "probe_every": 2, "ft_steps": 1, "few_shot_every": 2,
                 "protocols": ["few_shot", "few_shot_ood"]}  # fmt: skip
    suite = {"name": "subsets", "kind": "distill", "defaults": defaults,
             "grid": {"loss": ["similarity"], "seed": [0], "few_shot_subsets": [1, 3]}}  # fmt: skip
    path = tmp_path / "subsets.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


@pytest.mark.slow
def test_run_writes_every_subset_and_their_mean_and_the_default_writes_what_it_wrote(tmp_path):
    from bench.run import main

    out = tmp_path / "runs"
    assert main(["--suite", str(_smoke_suite(tmp_path)), "--out", str(out), "--no-progress"]) == 0
    metrics = {}
    for path in sorted(out.glob("*/metrics.json")):
        config = read_config(path.parent)  # the flat form of the sectioned config.json
        metrics[config["few_shot_subsets"]] = json.loads(path.read_text())
    assert set(metrics) == {1, 3}
    plain = metrics[1]
    assert set(plain["few_shot"]) == FINE_TUNE_KEYS | {"train_scans"}  # no new key: old reports unchanged
    assert set(plain["few_shot_ood"]) == FINE_TUNE_KEYS | {"train_scans", "dataset", "split"}
    for protocol in ("few_shot", "few_shot_ood"):
        scores = metrics[3][protocol]
        subsets = scores["subsets"]
        assert [s["subset"] for s in subsets] == [0, 1, 2]
        assert [s["split"] for s in subsets] == ["train_1pct", "train_1pct@1", "train_1pct@2"]
        assert all(s["train_scans"] == scores["train_scans"] for s in subsets)
        values = [s["miou"] for s in subsets]
        assert scores["miou"] == pytest.approx(np.mean(values))
        assert scores["miou_std"] == pytest.approx(np.std(values, ddof=1))
        assert scores["miou_ci"][0] <= scores["miou"] <= scores["miou_ci"][1]
        assert set(scores["per_class"]) == set(subsets[0]["per_class"])
        # subset 0 is the default run's split: the same scans
        assert subsets[0]["miou"] == pytest.approx(plain[protocol]["miou"], abs=1e-6)
    assert metrics[3]["few_shot"]["train_scans"] == 2  # every 2nd of the 4 smoke train scenes
    assert metrics[3]["few_shot_ood"]["dataset"] == "synthetic"
