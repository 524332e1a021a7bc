"""A ``teacher`` axis in suites: teacher x loss grids expand, their runs are named by one folder-safe teacher piece,
``out_dim`` follows each teacher when the suite leaves it unset, and a text-free teacher's runs are refused the
zero-shot protocol when the suite loads."""

from __future__ import annotations

import pytest
import yaml

from bench.config import DistillConfig
from bench.distill import resolve_distill
from bench.suites import load_suite, run_names, teacher_labels

TINY_DINOV2 = {"name": "dinov2", "depth": 2, "embed_dim": 48, "num_heads": 2}


def _suite(tmp_path, teachers, **defaults):
    path = tmp_path / "axis.yaml"
    grid = {"loss": ["similarity", "contrastive"], "seed": [0], "teacher": teachers}
    body = {"name": "axis", "kind": "distill", "defaults": {"protocols": ["linear_probe"], **defaults}, "grid": grid}
    path.write_text(yaml.safe_dump(body))
    suite = load_suite(str(path))
    resolved = [resolve_distill(run) for run in suite.runs]
    return suite, resolved


def test_a_teacher_by_loss_grid_expands_and_names_each_teacher_once(tmp_path):
    suite, resolved = _suite(tmp_path, [{"name": "synthetic"}, TINY_DINOV2])
    assert [run["teacher"] for run in suite.runs] == ["synthetic", "dinov2", "synthetic", "dinov2"]
    assert run_names(suite.runs, resolved) == [
        "similarity-teachersynthetic-s0",
        "similarity-teacherdinov2-s0",
        "contrastive-teachersynthetic-s0",
        "contrastive-teacherdinov2-s0",
    ]
    assert [r["out_dim"] for r in resolved] == [512, 48, 512, 48]  # unset: each teacher's dimension


def test_teachers_of_one_name_are_told_apart_by_the_options_that_differ(tmp_path):
    other = {**TINY_DINOV2, "arch": "dinov2_vitb14", "checkpoint": None, "image_size": [56, 112]}
    suite, resolved = _suite(tmp_path, [TINY_DINOV2, other])
    names = run_names(suite.runs, resolved)
    assert names[:2] == [
        "similarity-teacherdinov2-archvit_small_patch14_dinov2-image_size224-448-s0",
        "similarity-teacherdinov2-archvit_base_patch14_dinov2-image_size56-112-s0",
    ]


def test_teacher_labels_are_folder_safe():
    runs = [
        {"teacher": "dinov2", "teacher_options": {"checkpoint": "/w/dinov2_vits14_pretrain.pth", "arch": "a"}},
        {"teacher": "dinov2", "teacher_options": {"checkpoint": "/w/other.safetensors", "arch": "a"}},
        {"teacher": "clip", "clip_arch": "/configs/tiny-ViT.json", "clip_checkpoint_sha256": "abcdef0123456789"},
        {"teacher": "clip", "clip_arch": "ViT-B-16", "clip_checkpoint_sha256": "abcdef0123456789"},
        {"teacher": "my_teachers:frozen_resnet"},
    ]
    assert teacher_labels(runs) == [
        "dinov2-checkpointdinov2_vits14_pretrain",
        "dinov2-checkpointother",
        "clip-archtiny-ViT",
        "clip-archViT-B-16",
        "frozen_resnet",
    ]


def test_shipped_suites_do_not_vary_the_teacher():
    for name in ("smoke", "full", "claims"):
        suite = load_suite(name)
        assert len({run.get("teacher", "synthetic") for run in suite.runs}) == 1


def test_a_text_free_teacher_is_refused_the_zero_shot_protocol_at_load(tmp_path):
    with pytest.raises(ValueError, match=r"teacher dinov2 has no text tower.*protocols: \[linear_probe, few_shot, "):
        DistillConfig(loss="similarity", seed=0, teacher=TINY_DINOV2)  # default protocols include zero_shot
    path = tmp_path / "zs.yaml"
    body = {
        "name": "zs",
        "kind": "distill",
        "defaults": {"protocols": ["zero_shot", "linear_probe"]},
        "grid": {"loss": ["similarity"], "seed": [0], "teacher": [TINY_DINOV2]},
    }
    path.write_text(yaml.safe_dump(body))
    (run,) = load_suite(str(path)).runs
    with pytest.raises(ValueError, match="zero_shot protocol cannot run with it"):
        resolve_distill(run)
    cfg = DistillConfig(loss="similarity", seed=0, teacher=TINY_DINOV2, protocols=["linear_probe", "few_shot_ood"])
    assert cfg.student.out_dim == 48 and "zero_shot" not in cfg.protocols


def test_out_dim_set_against_the_teacher_is_refused():
    with pytest.raises(ValueError, match="out_dim must be the teacher's feature dimension, 48 for teacher dinov2"):
        DistillConfig(loss="similarity", seed=0, teacher=TINY_DINOV2, protocols=["linear_probe"], out_dim=512)
    with pytest.raises(ValueError, match="teacher dinov2 checkpoint /no/such.pth does not exist"):
        DistillConfig(
            loss="similarity", seed=0, teacher={**TINY_DINOV2, "checkpoint": "/no/such.pth"}, protocols=["few_shot"]
        )
