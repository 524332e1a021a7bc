"""Plug-ins end to end (docs/implementation.md#plug-ins): a researcher benchmarks a new loss -- and a teacher and a
student of their own -- without forking, by naming ``module:object`` in a suite. The module is a file in a temporary
folder on ``PYTHONPATH``; ``bench.run --jobs 2`` trains the runs in worker processes, which resolve the plug-ins
again from the strings that ``config.json`` records."""

from __future__ import annotations

import json
import os
import textwrap

import pytest
import yaml

from bench.run import main
from geomstruct.run_folder import read_config
from tests.conftest import TINY_DEFAULTS

PLUGINS = """
    from dataclasses import replace

    import torch
    import torch.nn.functional as F

    from models.students.minkunet import build_minkunet
    from models.teachers.synthetic import SyntheticTeacher, load_params


    def cosine_hinge(k: torch.Tensor, q: torch.Tensor, margin: float = 0.1) -> torch.Tensor:
        '''mean_i max(0, 1 - margin - k_i . q_i) on unit rows: pairs already closer than 1 - margin pull no more.'''
        k, q = F.normalize(k, dim=1), F.normalize(q.detach(), dim=1)
        return (1.0 - margin - (k * q).sum(dim=1)).clamp(min=0).mean()


    cosine_hinge.parameter_ranges = {"margin": (0.0, 1.0, False, "in [0, 1]")}


    def quiet_teacher(device="cpu"):
        '''The synthetic teacher with half its white noise.'''
        params = load_params()
        return SyntheticTeacher(replace(params, white_ratio=params.white_ratio / 2), device)


    def narrow_unet(out_dim, preset, voxel_size, system, inputs, width=8):
        '''MinkUNet with every stage ``width`` channels wide.'''
        return build_minkunet(out_dim=out_dim, voxel_size=voxel_size, system=system, inputs=inputs,
                              init_dim=width, planes=(width,) * 8)
"""


@pytest.fixture
def plugin_folder(tmp_path, monkeypatch):
    """A folder holding ``my_plugins.py``, importable here (``sys.path``) and in worker processes (``PYTHONPATH``)."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "my_plugins.py").write_text(textwrap.dedent(PLUGINS))
    monkeypatch.syspath_prepend(str(folder))
    paths = [str(folder), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    return folder


def _suite(tmp_path, grid, **defaults) -> str:
    suite = {
        "name": "plugins",
        "kind": "distill",
        "defaults": {**TINY_DEFAULTS, "dataroot": str(tmp_path / "scenes"), "steps": 4, **defaults},
        "grid": grid,
    }
    path = tmp_path / "plugins.yaml"
    path.write_text(yaml.safe_dump(suite))
    return str(path)


def test_a_suite_benchmarks_plugin_losses_teachers_and_students_in_worker_processes(plugin_folder, tmp_path, capsys):
    loss = {"name": "my_plugins:cosine_hinge", "params": {"margin": 0.2}}
    grid = [
        {"loss": [loss], "seed": [0]},
        {"loss": [loss], "teacher": ["my_plugins:quiet_teacher"], "student": ["my_plugins:narrow_unet"],
         "student_overrides": [{"width": 4}], "seed": [0]},
    ]  # fmt: skip
    suite = _suite(tmp_path, grid, protocols=["linear_probe"])
    out = tmp_path / "out"
    assert main(["--suite", suite, "--out", str(out), "--jobs", "2", "--no-progress"]) == 0, capsys.readouterr()
    builtin = (
        "cosine_hinge-margin0.2-studentminkunet-student_overridesinit_dim8_planes8-8-8-8-8-8-8-8-teachersynthetic-s0"
    )
    plugin = "cosine_hinge-margin0.2-studentnarrow_unet-student_overrideswidth4-teacherquiet_teacher-s0"
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted([builtin, plugin])
    for name in (builtin, plugin):
        config = read_config(out / name)  # flat form of the sectioned file
        assert config["loss"] == "my_plugins:cosine_hinge" and config["loss_params"] == {"margin": 0.2}
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert 0.0 <= metrics["linear_probe"]["miou"] <= 1.0 and "U" in metrics["geometry"]
    config = read_config(out / plugin)
    assert config["teacher"] == "my_plugins:quiet_teacher" and config["student"] == "my_plugins:narrow_unet"


@pytest.mark.parametrize(
    ("loss", "params", "message"),
    [
        ("my_plugins:focal", {}, "plug-in loss 'my_plugins:focal': module 'my_plugins' has no object 'focal'"),
        ("no_such_plugins:focal", {}, "plug-in loss 'no_such_plugins:focal': module 'no_such_plugins' does not"),
        ("my_plugins:cosine_hinge", {"margin": 3.0}, "parameter margin must be in [0, 1]; got 3.0"),
        ("my_plugins:cosine_hinge", {"gamma": 1.0}, "has no parameter gamma (its parameters: margin)"),
    ],
)
def test_a_bad_plugin_is_refused_when_the_suite_loads(plugin_folder, tmp_path, capsys, loss, params, message):
    suite = _suite(tmp_path, {"loss": [{"name": loss, "params": params}], "seed": [0]})
    assert main(["--suite", suite, "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_bad_plugin_teacher_is_refused_when_the_suite_loads(plugin_folder, tmp_path, capsys):
    suite = _suite(tmp_path, {"loss": ["similarity"], "seed": [0]}, teacher="my_plugins:cosine_hinge")
    assert main(["--suite", suite, "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert (
        "plug-in teacher 'my_plugins:cosine_hinge': a teacher builder takes the keyword device"
        in capsys.readouterr().err
    )
