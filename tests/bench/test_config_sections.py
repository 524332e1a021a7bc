"""The configuration in sections (docs/implementation.md#the-configuration): each section checks its own fields,
flat and sectioned suites are one configuration with the same run names, a flat ``config.json`` (written before
sections) is read, compared and resumed through the one table ``geomstruct.run_folder.LEGACY_KEYS``, and a new
teacher with its own options needs no new field."""

from __future__ import annotations

import importlib
import json
import textwrap
import uuid
from pathlib import Path

import pytest
import torch
import yaml

from bench.config import DistillConfig
from bench.config_sections import DataConfig, DistillationConfig, FewShotConfig, StudentConfig, TeacherConfig
from bench.kinds import name_runs
from bench.results import RunConflictError, RunDir
from bench.suites import load_suite
from bench.train import config_hash
from bench.workspace import Workspace
from geomstruct.run_folder import CONFIG_FORMAT_FIELD, LEGACY_KEYS, flat_config, read_config, write_config
from models.teachers import TEACHERS

SMALL = {"dataset": "synthetic", "train_scenes": 2, "val_scenes": 1, "ood_train_scenes": 2, "ood_val_scenes": 1}


def _suite(path: Path, defaults: dict, grid: dict) -> Path:
    suite = {"name": "s", "kind": "distill", "defaults": defaults, "grid": grid}
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def test_each_section_checks_its_own_fields_naming_section_and_field():
    cases = [
        (lambda: DataConfig(train_scenes=-1), "data.train_scenes must be at least 0"),
        (lambda: DataConfig(variant="mars"), "unknown variant 'mars'"),
        (lambda: FewShotConfig(warmup=1.5), "few_shot.warmup (ft_warmup) is a fraction"),
        (lambda: StudentConfig(overrides={"init_dim": 0}), "student.overrides (student_overrides) init_dim must be"),
        (lambda: DistillationConfig(loss="similarity", steps="300"), "distillation.steps must be int"),
        (lambda: TeacherConfig("clip", {"arch": 3}), "teacher.arch (clip_arch) must be str"),
        (lambda: TeacherConfig("synthetic", {"arch": "ViT-B-16"}), "teacher synthetic has no option teacher.arch"),
    ]
    for build, message in cases:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            build()
    assert TeacherConfig("clip", {"checkpoint": "w.pt"}).options == {
        "arch": "ViT-B-16", "checkpoint": "w.pt", "checkpoint_sha256": None, "allow_torchscript": False,
    }  # fmt: skip


def test_a_bad_value_in_a_sectioned_suite_is_refused_at_load_naming_section_and_field(tmp_path):
    data = {k: v for k, v in SMALL.items() if not k.startswith("ood")}
    path = _suite(tmp_path / "bad.yaml", {"data": data, "linear_probe": {"steps": 0}}, {"loss": ["similarity"],
                  "seed": [0]})  # fmt: skip
    suite = load_suite(str(path))
    with pytest.raises(ValueError, match=r"linear_probe.steps \(lp_steps\) must be at least 1; got 0"):
        name_runs(suite.kind, suite.runs, suite.source)


def test_flat_and_sectioned_suites_are_one_configuration_with_the_same_run_names(tmp_path):
    flat = _suite(
        tmp_path / "flat.yaml",
        {**SMALL, "teacher": "synthetic", "steps": 6, "lp_steps": 20, "ft_steps": 3, "probe_every": 3},
        {"loss": ["similarity", {"name": "contrastive", "params": {"tau": 0.07}}], "lr": [0.05, 0.5], "seed": [0]},
    )
    sectioned = _suite(
        tmp_path / "sectioned.yaml",
        {
            "data": {k: v for k, v in SMALL.items() if not k.startswith("ood")},
            "ood": {"train_scenes": 2, "val_scenes": 1},
            "teacher": {"name": "synthetic"},
            "distillation": {"steps": 6},
            "linear_probe": {"steps": 20},
            "few_shot": {"steps": 3},
            "probe": {"every": 3},
        },
        {
            "loss": ["similarity", {"name": "contrastive", "params": {"tau": 0.07}}],
            "distillation.lr": [0.05, 0.5],
            "seed": [0],
        },  # fmt: skip
    )
    runs = [name_runs("distill", load_suite(str(p)).runs) for p in (flat, sectioned)]
    assert [name for name, _ in runs[0]] == [name for name, _ in runs[1]]
    assert [name for name, _ in runs[0]] == [
        "similarity-lr0.05-s0", "similarity-lr0.5-s0", "contrastive-tau0.07-lr0.05-s0", "contrastive-tau0.07-lr0.5-s0",
    ]  # fmt: skip
    assert [r for _, r in runs[0]] == [r for _, r in runs[1]]
    a = DistillConfig.from_run(runs[0][0][1])
    assert a.distillation.lr == 0.05 and a.linear_probe.steps == 20 and a.few_shot.steps == 3 and a.probe.every == 3
    assert DistillConfig.from_run(a.resolved()) == a == DistillConfig.from_run(a.flat())


def test_the_mapping_table_covers_every_field_once():
    pairs = list(LEGACY_KEYS.values())
    assert len(pairs) == len(set(pairs))
    config = DistillConfig(loss="similarity", seed=0)
    fields = {(s, f) for s, section in config.resolved().items() if isinstance(section, dict) for f in section}
    assert fields - {("teacher", "name")} <= set(pairs) | {("teacher", "name")}
    assert {s for s, _ in pairs} == {s for s, _ in fields}


def test_an_old_flat_config_json_is_read_compared_and_resumed(tmp_path):
    config = DistillConfig(loss="contrastive", seed=1, steps=6, train_scenes=2, val_scenes=1)
    old = config.flat()  # key for key what config.json held before sections
    assert "clip_arch" in old and "lp_steps" in old and CONFIG_FORMAT_FIELD not in old
    write_config(tmp_path / "old", old)
    write_config(tmp_path / "new", config.resolved())
    (tmp_path / "old" / "trajectory.csv").write_text("step\n")  # a folder with results: bound to its config
    assert read_config(tmp_path / "old") == read_config(tmp_path / "new") == json.loads(json.dumps(old))
    assert RunDir(tmp_path / "old").config_differences(config.resolved()) == []
    assert config_hash(old) == config_hash(config) == config_hash(config.resolved())  # the checkpoint's hash
    with pytest.raises(RunConflictError, match=r"old/config.json holds a run with a different configuration \("
                       r"differs in: steps\)"):  # fmt: skip
        RunDir(tmp_path / "old").check_config(DistillConfig.from_run({**old, "steps": 7}).resolved())


def test_committed_study_folders_read_as_their_configuration():
    folder = next(Path("study/full").glob("*/config.json")).parent
    stored = read_config(folder)
    config = DistillConfig.from_run(stored)
    assert RunDir(folder).config_differences(config.resolved(), DistillConfig.field_defaults()) == []
    assert flat_config(config.resolved()).keys() >= stored.keys()


TEACHER_MODULE = """
    from dataclasses import dataclass, replace

    from models.teachers.synthetic import SyntheticTeacher, load_params


    @dataclass(frozen=True)
    class NoiseOptions:
        '''The options of the scaled-noise teacher.'''

        white_scale: float = 1.0

        def __post_init__(self):
            if not 0 < self.white_scale <= 1:
                raise ValueError(f"white_scale must be in (0, 1]; got {self.white_scale}")


    def scaled_noise(device="cpu", white_scale=1.0):
        '''The synthetic teacher with its white noise scaled.'''
        params = load_params()
        return SyntheticTeacher(replace(params, white_ratio=params.white_ratio * white_scale), device)


    scaled_noise.options = NoiseOptions  # how a plug-in declares its options
"""


@pytest.fixture
def teacher_module(tmp_path, monkeypatch):
    """A new teacher with its own options dataclass, in a module of a temporary folder, registered for one test."""
    name = f"teacher_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(TEACHER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    module = importlib.import_module(name)
    TEACHERS.register("scaled_noise", module.scaled_noise, options=module.NoiseOptions)
    yield name
    TEACHERS.unregister("scaled_noise")


def test_a_new_teacher_with_its_own_options_needs_no_new_field(tmp_path, teacher_module):
    for teacher in ("scaled_noise", f"{teacher_module}:scaled_noise"):  # registered, and as a plug-in
        path = _suite(tmp_path / "teacher.yaml", {**SMALL, "teacher": {"name": teacher, "white_scale": 0.5}},
                      {"loss": ["similarity"], "seed": [0]})  # fmt: skip
        suite = load_suite(str(path))
        ((name, resolved),) = name_runs(suite.kind, suite.runs, suite.source)
        config = DistillConfig.from_run(resolved)
        assert name == "similarity-s0" and config.teacher.options == {"white_scale": 0.5}
        assert config.resolved()["teacher"] == {"name": teacher, "white_scale": 0.5}  # config.json
        assert resolved["teacher_options"] == {"white_scale": 0.5}  # the flat form
        built = Workspace().teacher(config, torch.device("cpu"))
        plain = Workspace().teacher(DistillConfig(loss="similarity", seed=0, **SMALL), torch.device("cpu"))
        assert built.params.white_ratio == pytest.approx(plain.params.white_ratio / 2)
        for options, message in (({"colour": 1}, "has no option teacher.colour"),
                                 ({"white_scale": "half"}, "teacher.white_scale must be float"),
                                 ({"white_scale": 2.0}, r"white_scale must be in \(0, 1\]")):  # fmt: skip
            with pytest.raises(ValueError, match=message):
                DistillConfig(loss="similarity", seed=0, teacher={"name": teacher, **options}, **SMALL)
