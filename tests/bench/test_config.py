"""Suites checked before anything runs: runs named from their resolved values and one configuration under two
names refused; every field and loss parameter within its range; the suite's name a plain folder name; a
non-UTF-8 suite file and YAML 1.1's ``5e-3`` named with the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.config import FIELD_RANGES, STUDENT_OVERRIDE_RANGES, DistillConfig, clip_embed_dim
from bench.config_sections import SECTION_TYPES, field_label
from bench.kinds import name_runs
from bench.run import main
from bench.suites import NAMED_KEYS, available_suites, load_suite, run_name
from geomstruct.run_folder import LEGACY_KEYS, flat_key
from models.losses import LOSSES, PARAMETER_RANGES, parameter_errors
from models.students.minkunet import MinkUNetConfig
from tests.conftest import TINY_DEFAULTS

REPO = Path(__file__).resolve().parents[2]


def _old_names(runs: list[dict[str, Any]]) -> list[str]:
    """The names the code before resolved naming gave: the varied fields computed on the runs as written."""
    keys = sorted({k for run in runs for k in run} - set(NAMED_KEYS))
    varied = tuple(k for k in keys if len({json.dumps(r.get(k), sort_keys=True, default=str) for r in runs}) > 1)
    return [run_name(run, varied) for run in runs]


def _new_names(name: str) -> list[str]:
    """The names ``bench.run`` gives the shipped suite ``name`` (resolved; the nuscenes suite, which needs a
    dataroot and a CLIP checkpoint to resolve, with its runs completed by the field defaults instead)."""
    suite = load_suite(name)
    if name == "nuscenes":
        from bench.suites import run_names

        defaults = DistillConfig.field_defaults()
        return run_names(suite.runs, [{**defaults, **run} for run in suite.runs])
    return [n for n, _ in name_runs(suite.kind, suite.runs, suite.source)]


@pytest.mark.parametrize("name", available_suites())
def test_shipped_suites_keep_their_run_names(name):
    assert _new_names(name) == _old_names(load_suite(name).runs)


def test_committed_study_folders_are_the_suites_run_names():
    def folders(sub: str) -> set[str]:
        return {p.name for p in (REPO / "study" / sub).iterdir() if (p / "config.json").is_file()}

    assert folders("full") == set(_new_names("full"))
    assert folders("tune") == set(_new_names("tune"))
    assert set(_new_names("doubling")) <= folders("doubling1600")  # plus two runs of 400-step recipes
    assert folders("doubling3200") <= set(_new_names("doubling"))  # four configurations at --steps 3200


def _write(path: Path, grid: Any, name: str | None = None, **defaults: Any) -> Path:
    data = {"name": name or path.stem, "kind": "distill", "defaults": {**TINY_DEFAULTS, **defaults}, "grid": grid}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _names(path: Path) -> list[str]:
    suite = load_suite(str(path))
    return [n for n, _ in name_runs(suite.kind, suite.runs, suite.source)]


def test_a_field_set_to_its_default_value_is_not_varied(tmp_path):
    grids = [
        {"loss": ["similarity"], "seed": [0], "out_dim": [512]},
        {"loss": [{"name": "contrastive", "params": {"tau": 0.07}}], "seed": [0]},
    ]
    path = _write(tmp_path / "a.yaml", grids)
    assert _old_names(load_suite(str(path)).runs) == ["similarity-out_dim512-s0", "contrastive-tau0.07-out_dimNone-s0"]
    assert _names(path) == ["similarity-s0", "contrastive-tau0.07-s0"]
    varied = [
        {"loss": ["similarity"], "seed": [0], "lr": [0.05]},
        {"loss": ["similarity"], "seed": [1]},  # lr: the suite's default, 0.5
    ]
    assert _names(_write(tmp_path / "b.yaml", varied)) == ["similarity-lr0.05-s0", "similarity-lr0.5-s1"]


@pytest.mark.parametrize(
    "grids,written",
    [
        (
            [{"loss": ["similarity"], "seed": [0], "out_dim": [512]}, {"loss": ["similarity"], "seed": [0]}],
            "out_dim 512 vs unset",
        ),
        (
            [{"loss": ["contrastive", {"name": "contrastive", "params": {"tau": 0.07}}], "seed": [0]}],
            "loss_params {} vs {'tau': 0.07}",
        ),
        (
            [
                {"loss": ["st_slidr"], "seed": [0]},
                {"loss": [{"name": "st_slidr", "params": {"min_quantile": 0.01}}], "seed": [0]},
            ],  # fmt: skip
            "loss_params {} vs {'min_quantile': 0.01}",
        ),
        ([{"loss": ["similarity"], "seed": [0], "lr": [1, 1.0]}], "lr 1 vs 1.0"),
    ],
)
def test_one_configuration_under_two_names_is_refused_naming_both(tmp_path, capsys, grids, written):
    path = _write(tmp_path / "twice.yaml", grids, lr=0.5)
    with pytest.raises(ValueError, match="are one configuration") as info:
        _names(path)
    assert written in str(info.value) and "run 1" in str(info.value) and "run 2" in str(info.value)
    assert main(["--suite", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "are one configuration" in capsys.readouterr().err and not (tmp_path / "out").exists()


BAD_VALUES = [
    ("uniformity_t", 0),
    ("lp_batch_points", 0),
    ("lp_points_per_scan", 0),
    ("ft_batch_size", 0),
    ("few_shot_every", 0),
    ("seed", -1),
    ("geometry_seed", -1),
    ("out_dim", 256),
    ("n_pairs", 1),
    ("probe_scenes", 0),
    ("eval_scenes", 0),
    ("crop_radius", 0),
    ("lr", -1),
    ("lp_lr", 0),
    ("ft_lr", -0.1),
    ("momentum", 1.0),
    ("weight_decay", -1e-4),
    ("steps", 0),
    ("lp_steps", 0),
    ("ft_steps", 0),
    ("probe_per_class", 0),
    ("features_per_class", 0),
    ("lp_max_points", 0),
    ("train_scenes", -1),
    ("ood_val_scenes", -2),
    ("voxel_size", [0.1, 0.1]),
    ("voxel_size", 0.0),
    ("ft_clip_norm", 0.0),
    ("ft_warmup", 1.5),
    ("lr", ".nan"),
    ("student", "pointnet"),
    ("preset", "huge"),
    ("variant", "mars"),
    ("student_overrides", {"width": 8}),
    ("student_overrides", {"planes": [8, 8, 8]}),
    ("student_overrides", {"init_dim": 0}),
    ("student_overrides", {"bn_momentum": 1.5}),
    ("clip_arch", "ViT-Nonexistent-1"),
]


def _bad_suite(tmp_path: Path, key: str, value: Any) -> Path:
    extra = {"teacher": "clip", "clip_checkpoint": str(_checkpoint(tmp_path))} if key == "clip_arch" else {}
    if key == "seed":  # a grid field
        return _write(tmp_path / "bad.yaml", {"loss": ["similarity"], "seed": [value]})
    text = _write(tmp_path / "bad.yaml", {"loss": ["similarity"], "seed": [0]}, **extra).read_text()
    return _with_default(tmp_path / "bad.yaml", text, key, value)


def _with_default(path: Path, text: str, key: str, value: Any) -> Path:
    """The suite text with ``defaults[key]`` set to ``value`` (written as YAML text where ``value`` is a str)."""
    data = yaml.safe_load(text)
    data["defaults"][key] = "@@"
    shown = value if isinstance(value, str) else json.dumps(value)  # JSON is YAML
    path.write_text(yaml.safe_dump(data, sort_keys=False).replace("'@@'", shown))
    return path


def _checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "clip.pt"
    path.write_bytes(b"weights")
    return path


@pytest.mark.parametrize("key,value", BAD_VALUES, ids=[f"{k}={v}" for k, v in BAD_VALUES])
def test_bad_values_are_refused_when_the_suite_loads_naming_the_field(tmp_path, capsys, key, value):
    path = _bad_suite(tmp_path, key, value)
    suite = load_suite(str(path))
    shown = key if key != "student_overrides" else "student_overrides"
    with pytest.raises(ValueError, match=shown) as info:
        name_runs(suite.kind, suite.runs, suite.source)
    assert str(path) in str(info.value) and "run 1 (similarity, seed " in str(info.value)
    out = tmp_path / "out"
    assert main(["--suite", str(path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert shown in err and not out.exists()


@pytest.mark.parametrize(
    "key,value",
    [("uniformity_t", 0), ("lp_batch_points", 0), ("seed", -1), ("n_pairs", 1), ("crop_radius", 0), ("lr", -1)],
)
def test_range_errors_name_field_value_and_range(key, value):
    with pytest.raises(ValueError) as info:
        DistillConfig(**{"loss": "similarity", "seed": 0, key: value})
    message = str(info.value)
    label = field_label(*LEGACY_KEYS[key]) if key in LEGACY_KEYS else key  # section.field (flat key)
    assert message.startswith(f"{label} must be ") and message.endswith(f"got {value!r}")
    assert str(FIELD_RANGES[key]) in message


BAD_LOSS_PARAMETERS = [
    ("contrastive", {"tau": 0}, "tau must be positive"),
    ("contrastive", {"tau": -0.07}, "tau must be positive"),
    ("slidr", {"tau": 0.0}, "tau must be positive"),
    ("st_slidr", {"tau": 0}, "tau must be positive"),
    ("relational", {"lam": -1.0}, "lam must be at least 0"),
    ("relational_intra", {"lam": -0.5}, "lam must be at least 0"),
    ("relational", {"cross": False, "intra": False}, "cross=True or intra=True"),
    ("st_slidr", {"min_quantile": -0.1}, "min_quantile must be in [0, 1]"),
    ("st_slidr", {"max_quantile": 1.5}, "max_quantile must be in [0, 1]"),
    ("st_slidr", {"min_quantile": 0.5, "max_quantile": 0.2}, "min_quantile <= max_quantile"),
    ("st_slidr", {"noise_threshold": 2.0}, "noise_threshold must be in [-1, 1]"),
]


@pytest.mark.parametrize("loss,params,match", BAD_LOSS_PARAMETERS)
def test_bad_loss_parameters_are_refused_before_the_loss_is_called(tmp_path, capsys, loss, params, match):
    assert any(match in e for e in parameter_errors(loss, params))
    path = _write(tmp_path / "loss.yaml", {"loss": [{"name": loss, "params": params}], "seed": [0]})
    suite = load_suite(str(path))
    with pytest.raises(ValueError, match=f"loss {loss}"):
        name_runs(suite.kind, suite.runs, suite.source)
    assert main(["--suite", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert match in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_shipped_loss_parameters_are_valid():
    for loss in LOSSES:
        assert parameter_errors(loss, {}) == []
    assert parameter_errors("contrastive", {"tau": 0.07}) == [] and parameter_errors("relational", {"lam": 0}) == []


def _numeric(annotation: Any) -> bool:
    args = typing.get_args(annotation) or (annotation,)
    inner = [a for arg in args for a in (typing.get_args(arg) or (arg,))]  # tuple[float, ...] -> float
    return any(a in (int, float) for a in inner)


def test_every_numeric_field_and_loss_parameter_has_a_range():
    numeric = {"seed"}
    for key, kind in SECTION_TYPES.items():
        hints = typing.get_type_hints(kind)
        numeric |= {flat_key(key, f.name) for f in fields(kind) if _numeric(hints[f.name])}
    assert numeric == set(FIELD_RANGES)
    student = typing.get_type_hints(MinkUNetConfig)
    assert {f.name for f in fields(MinkUNetConfig) if _numeric(student[f.name])} == set(STUDENT_OVERRIDE_RANGES)
    for loss, fn in LOSSES.items():
        floats = {k for k, v in typing.get_type_hints(fn).items() if v is float}
        assert floats <= set(PARAMETER_RANGES), loss


def test_out_dim_is_checked_against_the_teacher_where_known_cheaply(tmp_path):
    config = tmp_path / "tiny-ViT.json"
    config.write_text(json.dumps({"embed_dim": 32, "vision_cfg": {}, "text_cfg": {}}))
    assert clip_embed_dim(str(config)) == 32
    if clip_embed_dim("ViT-B-16") is not None:  # open_clip installed: its own model config
        assert clip_embed_dim("ViT-B-16") == 512
    checkpoint = _checkpoint(tmp_path)
    base = {"loss": "similarity", "seed": 0, "teacher": "clip", "clip_checkpoint": str(checkpoint)}
    assert DistillConfig(**base, clip_arch=str(config), out_dim=32).student.out_dim == 32
    with pytest.raises(ValueError, match="out_dim must be the teacher's feature dimension, 32"):
        DistillConfig(**base, clip_arch=str(config), out_dim=512)
    with pytest.raises(ValueError, match="does not exist"):
        DistillConfig(**base, clip_arch=str(tmp_path / "missing.json"), out_dim=32)


@pytest.mark.parametrize("name", ["/abs/path", "../../x", "a/b", "..", ".hidden", "a\\b", "", "tab\there"])
def test_suite_name_must_be_a_plain_folder_name(tmp_path, capsys, name):
    path = _write(tmp_path / "named.yaml", {"loss": ["similarity"], "seed": [0]}, name="placeholder")
    data = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**data, "name": name}))
    with pytest.raises(ValueError, match="not a plain folder name") as info:
        load_suite(str(path))
    assert str(path) in str(info.value)
    cwd = os.getcwd()
    os.chdir(tmp_path)  # the default output, runs/<name>, would land relative to here
    try:
        assert main(["--suite", str(path), "--no-progress"]) == 2
    finally:
        os.chdir(cwd)
    assert "not a plain folder name" in capsys.readouterr().err and not (tmp_path / "runs").exists()


def test_a_plain_suite_name_is_kept(tmp_path):
    path = _write(tmp_path / "named.yaml", {"loss": ["similarity"], "seed": [0]}, name="my-suite_2")
    assert load_suite(str(path)).name == "my-suite_2"


def test_a_non_utf8_suite_file_is_named(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\nkind: distill\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8") as info:
        load_suite(str(path))
    assert str(path) in str(info.value)


def test_a_yaml11_exponent_read_as_text_gets_the_fix(tmp_path):
    path = _with_default(tmp_path / "exp.yaml", _write(tmp_path / "exp.yaml", {"loss": ["similarity"], "seed": [0]})
                         .read_text(), "lr", "5e-3")  # fmt: skip
    suite = load_suite(str(path))
    assert suite.runs[0]["lr"] == "5e-3"  # PyYAML follows YAML 1.1: a float needs a '.' and a signed exponent
    with pytest.raises(ValueError, match=r"lr must be float; got '5e-3' \(str\)") as info:
        name_runs(suite.kind, suite.runs, suite.source)
    assert "YAML 1.1 reads 5e-3 as a string: write 5.0e-3 or 0.005" in str(info.value)
    assert yaml.safe_load("5.0e-3") == 0.005
    with pytest.raises(ValueError, match="write 1000"):
        DistillConfig(loss="similarity", seed=0, steps="1e3")


@pytest.mark.slow
def test_the_command_line_exits_2_before_creating_any_run_folder(tmp_path):
    path = _bad_suite(tmp_path, "few_shot_every", 0)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--suite", str(path), "--no-progress"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert "few_shot.every (few_shot_every) must be at least 1" in result.stderr and str(path) in result.stderr
    assert not (tmp_path / "runs").exists()
