"""Registries and plug-ins (docs/implementation.md#where-to-add-what): the :class:`models.registry.Registry` API,
plug-ins ``"module:object"`` resolved and checked like the built-ins, and what adding a loss, a teacher, a
student, a dataset and a structure metric takes -- each done here with one new file (a module written to a
temporary folder) and one registry line, then used through the run configuration."""

from __future__ import annotations

import importlib
import textwrap
import uuid
from pathlib import Path

import pytest
import torch

from bench.config import DistillConfig, loss_parameter_errors
from bench.data.registry import READERS, class_names, open_dataset, reader, vocabulary
from bench.suites import run_names
from geomstruct import runs as geom_runs
from geomstruct import tables as geom_tables
from geomstruct.structure import STRUCTURE_METRICS, StructureMetric, structure, structure_columns
from geomstruct.style import LOSS_ORDER, LOSS_STYLES, PLUGIN_COLOURS, PLUGIN_MARKERS, loss_rank, loss_style
from models.losses import LOSSES, get_loss, loss_inputs, parameter_errors
from models.registry import Registry, UnknownComponent, import_object, plugin_label
from models.students import STUDENTS, build_student
from models.teachers import TEACHERS, Teacher, build_teacher

BASE = {"loss": "similarity", "seed": 0, "train_scenes": 2, "val_scenes": 1}
"""A small valid distill configuration."""


def new_module(folder: Path, source: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, object]:
    """Write ``source`` as one new Python file in ``folder`` (put on ``sys.path``); return its unique module name and
    the imported module. The only file an extension adds."""
    name = f"plugin_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(folder))
    importlib.invalidate_caches()
    return name, importlib.import_module(name)


@pytest.fixture
def registered(monkeypatch):
    """Register into a registry for one test: ``registered(registry, name, obj, **meta)``, removed afterwards."""
    added: list[tuple[Registry, str]] = []

    def register(registry: Registry, name: str, obj: object, **meta: object) -> None:
        registry.register(name, obj, **meta)
        added.append((registry, name))

    yield register
    for registry, name in added:
        registry.unregister(name)


# -- the registry -------------------------------------------------------------------------------------------------


def test_registry_keeps_declaration_order_metadata_and_refuses_bad_names():
    registry: Registry[int] = Registry("widget", lambda name, obj: None if isinstance(obj, int) else "not an int")
    registry.register("b", 2, colour="red")
    registry.register("a", 1)
    assert registry.names() == ("b", "a") and list(registry) == ["b", "a"] and len(registry) == 2
    assert registry.get("a") == registry["a"] == 1 and "a" in registry and "c" not in registry
    assert registry.meta("b", "colour") == "red" and registry.meta("a", "colour", "none") == "none"
    assert registry.items() == [("b", 2), ("a", 1)]
    with pytest.raises(ValueError, match="registered already"):
        registry.register("a", 3)
    with pytest.raises(ValueError, match="without ':'"):
        registry.register("x:y", 3)
    with pytest.raises(ValueError, match="widget 'c': not an int"):
        registry.register("c", "three")
    with pytest.raises(UnknownComponent, match=r"unknown widget 'c'; valid widgets: b, a \(or a plug-in"):
        registry.get("c")
    registry.unregister("b")
    assert registry.names() == ("a",)


def test_plugins_resolve_by_importlib_and_every_failure_names_the_string(tmp_path, monkeypatch):
    module, _ = new_module(tmp_path, "VALUE = 7\nclass Holder:\n    inner = 'x'\n", monkeypatch)
    registry: Registry[object] = Registry("widget", lambda name, obj: None if isinstance(obj, int) else "not an int")
    assert registry.get(f"{module}:VALUE") == 7 and import_object(f"{module}:Holder.inner") == "x"
    assert plugin_label(f"{module}:Holder.inner") == "inner" and plugin_label("contrastive") == "contrastive"
    cases = {
        f"{module}:": "must be written 'module:object'",
        f"no_such_module_{uuid.uuid4().hex[:6]}:x": "does not import (ModuleNotFoundError",
        f"{module}:MISSING": f"module '{module}' has no object 'MISSING'",
        f"{module}:Holder": "not an int",
    }
    for spec, reason in cases.items():
        with pytest.raises(ValueError, match="plug-in widget") as err:
            registry.get(spec)
        assert repr(spec) in str(err.value) and reason in str(err.value)
    (tmp_path / "broken_plugin_mod.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ValueError, match="RuntimeError: boom"):
        registry.get("broken_plugin_mod:x")


def test_unknown_names_are_value_and_key_errors():
    for lookup, kind in ((get_loss, "losses"), (TEACHERS.get, "teachers"), (reader, "datasets"), (STUDENTS.get, "")):
        with pytest.raises(ValueError) as err:
            lookup("bogus")
        assert isinstance(err.value, KeyError) and f"valid {kind}" in str(err.value)


# -- losses -------------------------------------------------------------------------------------------------------

PLUGIN_LOSS = """
    import torch
    import torch.nn.functional as F


    def cosine_hinge(k: torch.Tensor, q: torch.Tensor, margin: float = 0.1) -> torch.Tensor:
        '''mean_i max(0, 1 - margin - k_i . q_i) on unit rows.'''
        k, q = F.normalize(k, dim=1), F.normalize(q.detach(), dim=1)
        return (1.0 - margin - (k * q).sum(dim=1)).clamp(min=0).mean()


    cosine_hinge.parameter_ranges = {"margin": (0.0, 1.0, False, "in [0, 1]")}


    def no_default(k, q, weight):
        return (k - q).sum() * weight


    def regions(k, q, segments=None):
        return (k - q).sum()


    regions.inputs = "superpixels"
    not_a_loss = 3
"""


def test_a_plugin_loss_is_checked_like_the_builtins(tmp_path, monkeypatch):
    module, mod = new_module(tmp_path, PLUGIN_LOSS, monkeypatch)
    name = f"{module}:cosine_hinge"
    assert get_loss(name) is mod.cosine_hinge and loss_inputs(name) == "pairs"
    assert loss_inputs(f"{module}:regions") == "superpixels"
    assert parameter_errors(name, {"margin": 0.5}) == []
    assert parameter_errors(name, {"margin": 2.0}) == [f"loss {name} parameter margin must be in [0, 1]; got 2.0"]
    assert loss_parameter_errors(name, {"gamma": 1.0})[0].startswith(f"loss {name} has no parameter gamma")
    cfg = DistillConfig.from_run({**BASE, "loss": name, "loss_params": {"margin": 0.3}})
    assert (
        cfg.resolved()["distillation"]["loss"] == cfg.flat()["loss"] == name
    )  # config.json records the string: every process resolves it again
    for bad, reason in (("no_default", "need defaults"), ("not_a_loss", "a loss must be a function")):
        with pytest.raises(ValueError, match=reason):
            DistillConfig.from_run({**BASE, "loss": f"{module}:{bad}"})
    with pytest.raises(ValueError, match="margin must be in"):
        DistillConfig.from_run({**BASE, "loss": name, "loss_params": {"margin": -1.0}})
    with pytest.raises(ValueError, match="region_pixel_norm applies"):
        DistillConfig.from_run({**BASE, "loss": name, "region_pixel_norm": True})
    assert DistillConfig.from_run({**BASE, "loss": f"{module}:regions"}).distillation.region_pixel_norm is True


def test_adding_a_loss_is_one_file_and_one_registry_line(tmp_path, monkeypatch, registered):
    _, mod = new_module(tmp_path, PLUGIN_LOSS, monkeypatch)  # the one new file
    registered(LOSSES, "cosine_hinge", mod.cosine_hinge)  # the one registry line (in models/losses.py)
    assert LOSSES.names()[-1] == "cosine_hinge" and get_loss("cosine_hinge") is mod.cosine_hinge
    k, q = torch.randn(8, 4), torch.randn(8, 4)
    assert torch.isfinite(get_loss("cosine_hinge")(k, q, margin=0.2))
    cfg = DistillConfig.from_run({**BASE, "loss": "cosine_hinge", "loss_params": {"margin": 0.2}})
    assert cfg.distillation.loss == "cosine_hinge"
    assert loss_rank("cosine_hinge margin=0.2")[0] == len(LOSS_ORDER)  # shown after the listed losses
    assert loss_style("cosine_hinge")[0] in PLUGIN_COLOURS  # a colour without a style line


def test_the_report_styles_every_registered_loss_in_the_registry_order():
    assert LOSS_ORDER == LOSSES.names()
    colours = [colour for colour, _ in LOSS_STYLES.values()]
    assert len(set(colours)) == len(colours) and not set(colours) & set(PLUGIN_COLOURS)
    first, again = loss_style("my_losses:focal"), loss_style("my_losses:focal")
    assert first == again and first[0] in PLUGIN_COLOURS and first[1] in PLUGIN_MARKERS  # the same in every report


def test_a_plugin_gives_a_folder_safe_run_name():
    runs = [
        {"loss": "my_losses:focal", "loss_params": {"gamma": 2.0}, "seed": 0, "teacher": "synthetic"},
        {"loss": "my_losses:focal", "loss_params": {"gamma": 2.0}, "seed": 0, "teacher": "lab.teachers:Dino"},
    ]
    assert run_names(runs) == ["focal-gamma2.0-teachersynthetic-s0", "focal-gamma2.0-teacherDino-s0"]


# -- teachers -----------------------------------------------------------------------------------------------------

PLUGIN_TEACHER = """
    from dataclasses import replace

    from models.teachers.synthetic import SyntheticTeacher, load_params


    def half_noise(device="cpu"):
        '''The synthetic teacher with half its white noise.'''
        params = load_params()
        return SyntheticTeacher(replace(params, white_ratio=params.white_ratio / 2), device)


    class NotATeacher:
        pass
"""


def test_adding_a_teacher_is_one_file_and_one_registry_line(tmp_path, monkeypatch, registered):
    _, mod = new_module(tmp_path, PLUGIN_TEACHER, monkeypatch)  # the one new file
    registered(TEACHERS, "half_noise", mod.half_noise)  # the one registry line (in models/teachers/factory.py)
    teacher = build_teacher("half_noise")
    assert (
        isinstance(teacher, Teacher) and teacher.params.white_ratio == build_teacher("synthetic").params.white_ratio / 2
    )
    assert DistillConfig.from_run({**BASE, "teacher": "half_noise"}).teacher.name == "half_noise"


def test_a_plugin_teacher_is_accepted_or_refused_at_load(tmp_path, monkeypatch):
    module, _ = new_module(tmp_path, PLUGIN_TEACHER, monkeypatch)
    assert DistillConfig.from_run({**BASE, "teacher": f"{module}:half_noise"}).teacher.name == f"{module}:half_noise"
    assert isinstance(build_teacher(f"{module}:half_noise"), Teacher)
    for bad, reason in (("NotATeacher", "must subclass models.teachers.Teacher"), ("nothing", "has no object")):
        with pytest.raises(ValueError, match=reason) as err:
            DistillConfig.from_run({**BASE, "teacher": f"{module}:{bad}"})
        assert f"'{module}:{bad}'" in str(err.value)


# -- students -----------------------------------------------------------------------------------------------------

PLUGIN_STUDENT = """
    from models.students.minkunet import build_minkunet


    def narrow_unet(out_dim, preset, voxel_size, system, inputs, width=8):
        '''MinkUNet with every stage ``width`` channels wide.'''
        return build_minkunet(out_dim=out_dim, voxel_size=voxel_size, system=system, inputs=inputs,
                              init_dim=width, planes=(width,) * 8)


    def no_keywords(out_dim):
        return None
"""


def test_adding_a_student_is_one_file_and_one_registry_line(tmp_path, monkeypatch, registered):
    module, mod = new_module(tmp_path, PLUGIN_STUDENT, monkeypatch)  # the one new file
    registered(STUDENTS, "narrow_unet", mod.narrow_unet)  # the one registry line (in models/students/factory.py)
    student = build_student("narrow_unet", out_dim=16, preset="small", voxel_size=0.3, system="cartesian",
                            inputs=("intensity",), width=4)  # fmt: skip
    points = torch.rand(50, 4) * 5
    assert student(points, torch.zeros(50, dtype=torch.long)).shape == (50, 16)
    cfg = DistillConfig.from_run({**BASE, "student": "narrow_unet", "student_overrides": {"width": 4}})
    assert cfg.student.name == "narrow_unet"
    with pytest.raises(ValueError, match=r"takes no student.overrides \(student_overrides\) \['planes'\]"):
        DistillConfig.from_run({**BASE, "student": "narrow_unet", "student_overrides": {"planes": [4]}})
    assert DistillConfig.from_run({**BASE, "student": f"{module}:narrow_unet"}).student.name == f"{module}:narrow_unet"
    with pytest.raises(ValueError, match="lacks"):
        DistillConfig.from_run({**BASE, "student": f"{module}:no_keywords"})


# -- datasets -----------------------------------------------------------------------------------------------------

PLUGIN_DATASET = """
    from pathlib import Path

    from bench.data.base import ScanDataset


    class FolderScans(ScanDataset):
        '''Scans stored one file per scan in ``<dataroot>/<split>/``.'''

        name = "folder_scans"
        classes = ("ground", "car", "person")
        vocabulary = "nuscenes"

        def __init__(self, dataroot, split="train"):
            super().__init__(split, sorted(p.stem for p in (Path(dataroot) / split).glob("*.npz")))

        def load(self, scan_id):
            raise NotImplementedError


    class Unlabelled(FolderScans):
        classes = ()
"""


def test_adding_a_dataset_is_one_file_and_one_registry_line(tmp_path, monkeypatch, registered):
    _, mod = new_module(tmp_path, PLUGIN_DATASET, monkeypatch)  # the one new file
    registered(READERS, "folder_scans", mod.FolderScans)  # the one registry line (in bench/data/registry.py)
    (tmp_path / "data" / "train").mkdir(parents=True)
    for scan in ("a", "b"):
        (tmp_path / "data" / "train" / f"{scan}.npz").write_bytes(b"")
    assert class_names("folder_scans") == ("ground", "car", "person") and vocabulary("folder_scans") == "nuscenes"
    assert open_dataset("folder_scans", "train", tmp_path / "data").ids == ["a", "b"]
    run = {**BASE, "dataset": "folder_scans", "dataroot": str(tmp_path / "data"), "teacher": "clip"}
    with pytest.raises(ValueError, match="teacher clip needs a local checkpoint"):  # past the dataset's checks
        DistillConfig.from_run(run)
    with pytest.raises(ValueError, match="the synthetic teacher reads the synthetic world"):
        DistillConfig.from_run({**run, "teacher": "synthetic"})


def test_a_plugin_dataset_is_accepted_or_refused_at_load(tmp_path, monkeypatch):
    module, _ = new_module(tmp_path, PLUGIN_DATASET + PLUGIN_TEACHER, monkeypatch)
    run = {**BASE, "dataset": f"{module}:FolderScans", "dataroot": str(tmp_path), "teacher": f"{module}:half_noise"}
    assert DistillConfig.from_run(run).data.dataset == f"{module}:FolderScans"
    for bad, reason in (("Unlabelled", "must set classes"), ("half_noise", "subclass of bench.data.base.ScanDataset")):
        with pytest.raises(ValueError, match=reason):
            DistillConfig.from_run({**run, "dataset": f"{module}:{bad}"})
    with pytest.raises(ValueError, match="needs a dataroot that exists"):
        DistillConfig.from_run({**run, "dataroot": str(tmp_path / "missing")})


# -- structure metrics --------------------------------------------------------------------------------------------

PLUGIN_METRIC = """
    def mean_cosine(data):
        '''Mean cosine of each point's 3D and 2D features (equal dimensions).'''
        return {"mean_cos": float((data.x * data.y).sum(dim=1).mean())}
"""


def test_adding_a_structure_metric_is_one_file_and_one_registry_line(tmp_path, monkeypatch):
    _, mod = new_module(tmp_path, PLUGIN_METRIC, monkeypatch)  # the one new file
    monkeypatch.setitem(STRUCTURE_METRICS, "mean_cos", StructureMetric(mod.mean_cosine, ("mean_cos",)))  # one line
    x = torch.randn(40, 6)
    values = structure(x, x, k=3)
    assert values["mean_cos"] == pytest.approx(1.0) and list(values)[-1] == "mean_cos"
    assert structure_columns()[-1] == "mean_cos"


def test_the_report_reads_its_structure_columns_from_the_registry():
    assert geom_runs.STRUCTURE_COLUMNS == structure_columns() == (
        "CKA", "mknn", "erank_3d", "erank_2d", "erank_ratio", "CKA_cal", "mknn_cal", "lidar", "alpha_3d",
    )  # fmt: skip
    assert geom_tables.STRUCTURE_TITLES == {"CKA": "CKA", "mknn": "mkNN", "erank_ratio": "erank ratio"}
    assert list(structure(torch.randn(30, 5), torch.randn(30, 7), k=3)) == [
        "CKA", "mknn", "mknn_k", "mknn_queries", "mknn_se", "erank_3d", "erank_2d", "erank_ratio", "collapsed",
        "CKA_cal", "CKA_chance", "mknn_cal", "mknn_chance", "lidar", "alpha_3d", "alpha_2d", "alpha_r2",
    ]  # fmt: skip
