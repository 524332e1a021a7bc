"""The configuration of one distillation run (suite kind ``distill``), in sections: every choice of docs/method.md
is a field of a section (:mod:`bench.config_sections`).

Defaults follow docs/method.md and SLidR (Sautier et al., CVPR 2022) where they say something, and are marked
*(choice)* where the harness had to decide (sizes that keep a CPU run short). A suite's ``defaults`` and ``grid``
set any field, in its section (``teacher: {name: clip, arch: ViT-B-16, checkpoint: FILE}``, ``distillation:
{steps: 300}``, a dotted ``distillation.steps``) or by its flat key (``steps``, ``clip_arch``, ``lp_steps``: every
field name of the configuration before sections, mapped to its section field by the one table
:data:`geomstruct.run_folder.LEGACY_KEYS`). :meth:`DistillConfig.from_run` builds a configuration from either;
:meth:`DistillConfig.resolved` is what ``config.json`` holds (sectioned, docs/run-folder.md#configjson) and
:meth:`DistillConfig.flat` its flat form, the run's identity (hashed into its checkpoint, named in its folder name
and the report's labels): the same for a run written before sections and after.

Each section checks its own fields when it is built; :func:`check_across_sections` checks what needs several
sections or the file system, once, when the configuration is built.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from bench.config_sections import (
    COUNT,
    LOSS_DTYPES,
    OPTIMIZERS,
    POSITIVE,
    REGION_LOSSES,
    SECTION_TYPES,
    SEED,
    SOME,
    STUDENT_OVERRIDE_RANGES,
    DataConfig,
    DistillationConfig,
    FewShotConfig,
    GeometryConfig,
    LinearProbeConfig,
    OodConfig,
    ProbeConfig,
    Range,
    SegmentationConfig,
    StudentConfig,
    TeacherConfig,
    complete_loss_params,
    loss_parameter_errors,
    type_error,
)
from bench.data.nuscenes import dataroot_info, split_scene_names
from geomstruct.run_folder import (
    CONFIG_FORMAT,
    CONFIG_FORMAT_FIELD,
    LABEL_PROTOCOLS,
    LEGACY_KEYS,
    LEGACY_TEACHER,
    LEGACY_TEACHER_OPTIONS,
    PROTOCOLS,
    SECTIONS,
    TEACHER_OPTIONS_KEY,
    flat_config,
    flat_key,
    update_flat,
)
from models.teachers import TEACHERS
from models.teachers.clip import check_maskclip_arch
from models.teachers.synthetic import load_params

__all__ = [
    "COUNT",
    "FIELD_RANGES",
    "LOSS_DTYPES",
    "OPTIMIZERS",
    "POSITIVE",
    "REGION_LOSSES",
    "SOME",
    "STUDENT_OVERRIDE_RANGES",
    "DataConfig",
    "DistillConfig",
    "DistillationConfig",
    "FewShotConfig",
    "GeometryConfig",
    "LinearProbeConfig",
    "OodConfig",
    "ProbeConfig",
    "Range",
    "SegmentationConfig",
    "StudentConfig",
    "TeacherConfig",
    "check_across_sections",
    "clip_embed_dim",
    "clip_model_config",
    "complete_loss_params",
    "configuration_identity",
    "loss_parameter_errors",
    "type_error",
    "with_overrides",
]

FIELD_RANGES: dict[str, Range] = {
    "seed": SEED,
    **{flat_key(key, name): rng for key, kind in SECTION_TYPES.items() for name, rng in kind.RANGES.items()},
}
"""The valid range of every numeric field by its flat key (each section's ``RANGES``), checked when a section is
built."""


def synthetic_teacher_dim() -> int:
    """The feature dimension of the synthetic teacher, read from its committed parameter file."""
    return int(load_params().dim)


def clip_model_config(arch: str) -> dict[str, Any] | None:
    """The open_clip model config (``{"embed_dim", "vision_cfg", "text_cfg"}``) of the architecture ``arch``, read
    without building or downloading anything: from the model-config JSON that ``arch`` names, from open_clip's
    registry when open_clip is already imported (it holds the configs registered in this process), else from
    open_clip's own ``model_configs/<arch>.json`` (found without importing open_clip); None when open_clip is not
    installed or the JSON file cannot be read.

    Raises:
        ValueError: ``arch`` names a ``.json`` file that does not exist, or an architecture open_clip lacks.
    """
    unknown = (
        f"unknown open_clip architecture teacher.arch (clip_arch) {arch!r}; see open_clip.list_models() or give a "
        ".json config"
    )
    path = Path(arch)
    if path.suffix == ".json":
        if not path.is_file():
            raise ValueError(f"teacher.arch (clip_arch): open_clip model config {path} does not exist")
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
    elif "open_clip" in sys.modules:
        open_clip = sys.modules["open_clip"]
        if arch not in open_clip.list_models():
            raise ValueError(unknown)
        config = open_clip.get_model_config(arch)  # a registered name: no download
    else:
        spec = importlib.util.find_spec("open_clip")
        folders = [Path(f) / "model_configs" for f in (spec.submodule_search_locations or [])] if spec else []
        folders = [f for f in folders if f.is_dir()]
        if not folders:
            return None
        if not (folders[0] / f"{arch}.json").is_file():
            raise ValueError(unknown)
        config = json.loads((folders[0] / f"{arch}.json").read_text(encoding="utf-8"))
    return config if isinstance(config, dict) else None


def clip_embed_dim(arch: str) -> int | None:
    """The feature dimension (``embed_dim``) of the open_clip architecture ``arch`` (:func:`clip_model_config`);
    None when open_clip is not installed or the config gives no ``embed_dim`` (then the run's start checks it).

    Raises:
        ValueError: ``arch`` names a ``.json`` file that does not exist, or an architecture open_clip lacks.
    """
    config = clip_model_config(arch)
    embed = config.get("embed_dim") if isinstance(config, dict) else None
    return embed if isinstance(embed, int) and not isinstance(embed, bool) else None


def configuration_identity(resolved: dict[str, Any]) -> dict[str, Any]:
    """What makes two resolved run configurations (:meth:`DistillConfig.resolved`, or a toy run's) the same run:
    the flat configuration (:func:`geomstruct.run_folder.flat_config`) with its loss parameters completed
    (:func:`complete_loss_params`) and every number a float
    (``lr: 1`` and ``lr: 1.0`` are one value)."""

    def floats(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: floats(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [floats(v) for v in value]
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    out = flat_config(resolved)
    if "loss" in out:
        out["loss_params"] = complete_loss_params(out["loss"], dict(out.get("loss_params") or {}))
    return floats(out)


def with_overrides(run: dict[str, Any], items: Sequence[str]) -> dict[str, Any]:
    """``run`` with the command-line overrides ``FIELD=VALUE`` applied in order (``VALUE`` read as YAML, so
    ``voxel_size=0.1`` is a float and ``planes=[16,32]`` a list; ``FIELD`` a flat key or ``section.field``:
    :func:`geomstruct.run_folder.update_flat`); a ``ValueError`` names an item without ``=``.
    The fields are checked later, by :meth:`DistillConfig.from_run`."""
    out = dict(run)
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"an override takes FIELD=VALUE; got {item!r}")
        out = update_flat(out, {key: yaml.safe_load(value)})
    return out


@dataclass(frozen=True, init=False)
class DistillConfig:
    """One distillation run: ``seed``, the evaluation ``protocols`` (of :data:`geomstruct.run_folder.PROTOCOLS`)
    and one section per concern (:mod:`bench.config_sections`): ``data``, ``ood``, ``teacher``, ``student``,
    ``distillation``, ``probe``, ``geometry``, ``segmentation``, ``linear_probe``, ``few_shot``. Build it from a
    suite run with :meth:`from_run` (flat keys, sections or both); building it runs :func:`check_across_sections`.

    ``dataset``, ``ood.dataset``, ``teacher.name``, ``student.name`` and ``distillation.loss`` name a component of
    their registry (:data:`models.losses.LOSSES`, :data:`models.teachers.TEACHERS`,
    :data:`models.students.STUDENTS`, :data:`bench.data.registry.READERS`) or a plug-in ``"module:object"``
    defined outside the package, resolved and checked like the built-ins (:mod:`models.registry`;
    docs/implementation.md#plug-ins).
    """

    seed: int
    distillation: DistillationConfig
    data: DataConfig = field(default_factory=DataConfig)
    ood: OodConfig = field(default_factory=OodConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    linear_probe: LinearProbeConfig = field(default_factory=LinearProbeConfig)
    few_shot: FewShotConfig = field(default_factory=FewShotConfig)
    protocols: tuple[str, ...] = PROTOCOLS

    def __post_init__(self) -> None:
        problems = [type_error("seed", self.seed, int), type_error("protocols", self.protocols, tuple[str, ...])]
        problems = [p for p in problems if p]
        if problems:
            raise ValueError("; ".join(problems))
        problem = FIELD_RANGES["seed"].error("seed", self.seed)
        if problem:
            raise ValueError(problem)
        unknown = sorted(set(self.protocols) - set(PROTOCOLS))
        if unknown:
            raise ValueError(f"unknown protocols {unknown}; valid protocols: {', '.join(PROTOCOLS)}")
        for key, kind in SECTION_TYPES.items():
            if not isinstance(getattr(self, key), kind):
                raise ValueError(f"section {key} must be a {kind.__name__}; got {type(getattr(self, key)).__name__}")
        check_across_sections(self)

    def __init__(self, **values: Any) -> None:
        """Build from keyword fields: flat keys (``loss="similarity", seed=0, steps=6, clip_arch=...``), sections
        as mappings (``teacher={"name": "clip", ...}``) or as section objects (``distillation=DistillationConfig(
        ...)``), dotted keys, or a mix (:meth:`from_run`); then :func:`check_across_sections`."""
        for name, value in _parts(values).items():
            object.__setattr__(self, name, value)
        self.__post_init__()

    @classmethod
    def from_run(cls, run: dict[str, Any]) -> DistillConfig:
        """Build from a suite run (a dict of flat keys, sections ``{section: {field: value}}``, dotted keys
        ``section.field``, or a mix; a ``config.json`` of either format); unknown keys are an error that lists the
        valid ones. ``kind`` and the format marker are ignored."""
        return cls(**run)

    @classmethod
    def field_defaults(cls) -> dict[str, Any]:
        """Every field with a plain default value by its flat key: what a run directory written before that field
        existed used (a field the stored configuration lacks is compared at this value)."""
        out: dict[str, Any] = {}
        for key, kind in SECTION_TYPES.items():
            out |= {flat_key(key, f.name): f.default for f in fields(kind) if f.default is not MISSING}
        out |= {flat: other for flat, (_, other) in LEGACY_TEACHER_OPTIONS.items()}
        out["protocols"] = PROTOCOLS
        return out

    def resolved(self) -> dict[str, Any]:
        """JSON-ready configuration in sections, as ``config.json`` holds it (docs/run-folder.md#configjson):
        ``config_format``, ``kind: distill``, ``seed``, ``protocols`` and every section."""
        out: dict[str, Any] = {CONFIG_FORMAT_FIELD: CONFIG_FORMAT, "kind": "distill", "seed": self.seed}
        out["protocols"] = list(self.protocols)
        for key in SECTION_TYPES:
            out[key] = getattr(self, key).resolved()
        return out

    def flat(self) -> dict[str, Any]:
        """The flat form of :meth:`resolved` (:func:`geomstruct.run_folder.flat_config`): the run's identity, key
        for key what a ``config.json`` written before sections held."""
        return flat_config(self.resolved())


def _parts(run: dict[str, Any]) -> dict[str, Any]:
    """``seed``, ``protocols`` and every section of a configuration given as keyword fields
    (:meth:`DistillConfig.__init__`): a section given as an object is taken as it is (updated by the flat keys of
    its fields given beside it); the others are built from their fields.

    Raises:
        ValueError: an unknown key (listing the valid ones), no seed or no loss, or a section's own check.
    """
    given = {k: v for k, v in run.items() if k in SECTION_TYPES and isinstance(v, SECTION_TYPES[k])}
    flat = flat_config({k: v for k, v in run.items() if k != "kind" and k not in given}, complete=False)
    valid = {*LEGACY_KEYS, *LEGACY_TEACHER_OPTIONS, TEACHER_OPTIONS_KEY, "seed", "protocols"}
    unknown = sorted(set(flat) - valid)
    if unknown:
        raise ValueError(
            f"unknown distill run parameters {unknown}; valid: {', '.join(sorted(valid))} (or the same fields "
            f"in their sections: {', '.join(SECTIONS)})"
        )
    if "seed" not in flat or ("loss" not in flat and "distillation" not in given):
        raise ValueError("a distill run needs a loss (distillation.loss) and a seed")
    values: dict[str, dict[str, Any]] = {key: {} for key in SECTIONS}
    for key, value in flat.items():
        if key in LEGACY_KEYS:
            section, name = LEGACY_KEYS[key]
            values[section][name] = value
    options = _teacher_options(flat)
    if options or "teacher" not in given:
        values["teacher"]["options"] = options
    if isinstance(values["student"].get("inputs"), list):
        values["student"]["inputs"] = tuple(values["student"]["inputs"])
    parts: dict[str, Any] = {"seed": flat["seed"]}
    for key, kwargs in values.items():
        if key in given:
            parts[key] = replace(given[key], **kwargs) if kwargs else given[key]
        else:
            parts[key] = SECTION_TYPES[key](**kwargs)
    if "student" not in given and "out_dim" not in values["student"]:
        dim, _ = known_teacher_dim(parts["teacher"])  # out_dim unset: the teacher's dimension where known
        if dim is not None and dim != parts["student"].out_dim:
            parts["student"] = replace(parts["student"], out_dim=dim)
    protocols = flat.get("protocols", PROTOCOLS)
    parts["protocols"] = tuple(protocols) if isinstance(protocols, list) else protocols
    return parts


def _teacher_options(flat: dict[str, Any]) -> dict[str, Any]:
    """The teacher's options from a flat run: ``teacher_options``, and the CLIP teacher's flat keys
    (``clip_arch``, ...) under their option names; for another teacher, a CLIP key at the value every flat
    configuration held is dropped, and one at another value is kept (the teacher's check then refuses it)."""
    options = dict(flat.get(TEACHER_OPTIONS_KEY) or {})
    clip = flat.get("teacher", TeacherConfig.name) == LEGACY_TEACHER
    for key, (option, other) in LEGACY_TEACHER_OPTIONS.items():
        if key in flat and (clip or flat[key] != other):
            options[option] = flat[key]
    return options


def check_across_sections(cfg: DistillConfig) -> None:
    """What no section can check alone, once every section is built: ``student.out_dim`` is the teacher's feature
    dimension where it is known without building the teacher; the synthetic teacher reads the synthetic world; the
    splits named exist and are not empty; the OOD evaluation split is not empty when ``few_shot_ood`` runs; and
    the file system: a CLIP checkpoint, a published student checkpoint and a non-synthetic dataroot exist, a
    nuScenes dataroot holds its tables (and lidarseg labels for the protocols that need them).

    Raises:
        ValueError: naming the fields and what to do.
    """
    data, teacher = cfg.data, cfg.teacher
    _check_teacher_dim(cfg)
    _check_zero_shot(cfg)
    checkpoint = teacher.options.get("checkpoint")
    if teacher.name == LEGACY_TEACHER:
        if checkpoint is None:
            raise ValueError("teacher clip needs a local checkpoint (--clip-checkpoint); nothing is downloaded")
        if not Path(str(checkpoint)).is_file():
            raise ValueError(f"CLIP checkpoint {checkpoint} does not exist")
    elif checkpoint is not None and not Path(str(checkpoint)).is_file():
        raise ValueError(f"teacher {teacher.name} checkpoint {checkpoint} does not exist")
    published = cfg.student.checkpoint
    if published is not None and not Path(published).is_file():
        raise ValueError(f"student.checkpoint (student_checkpoint) {published} does not exist")
    for name, root in ((data.dataset, data.dataroot), (cfg.ood.dataset, cfg.ood.dataroot)):
        if name != "synthetic" and (root is None or not Path(root).is_dir()):
            raise ValueError(f"dataset {name} needs a dataroot that exists (--dataroot); got {root!r}")
    if teacher.name == "synthetic" and data.dataset != "synthetic":
        raise ValueError(
            f"the synthetic teacher reads the synthetic world's rendered class maps; dataset {data.dataset} "
            "needs --teacher clip --clip-checkpoint FILE"
        )
    splits = (data.train_split, data.eval_split, cfg.probe.split or data.eval_split)
    if data.dataset == "nuscenes":
        _check_nuscenes(cfg, splits)
    if data.dataset == "synthetic":
        sizes = data.split_sizes()
        for split in splits:
            if split not in sizes:
                raise ValueError(f"synthetic splits are train, val and test; got {split!r}")
            if sizes[split] < 1:
                raise ValueError(f"split {split} is empty: set {split}_scenes to at least 1")
    ood = cfg.ood
    if ood.dataset != "semantickitti" and "few_shot_ood" in cfg.protocols:
        if ood.split_sizes()[ood.eval_split] < 1:
            raise ValueError(f"the OOD split {ood.eval_split} is empty: set ood_{ood.eval_split}_scenes to at least 1")


def teacher_has_text(name: str) -> bool:
    """Whether the teacher ``name`` has a text tower (its class's ``has_text``; a builder that does not say is
    taken to have one, and fails at zero-shot time otherwise)."""
    return bool(getattr(TEACHERS.get(name), "has_text", True))


def known_teacher_dim(teacher: TeacherConfig) -> tuple[int | None, str]:
    """The teacher's feature dimension where it is known without building the teacher, and its source in words:
    the synthetic teacher's parameter file, the model config of a CLIP architecture (:func:`clip_embed_dim`; an
    architecture the MaskCLIP recipe cannot read is refused here, by name:
    :func:`models.teachers.clip.maskclip_problem`), or the ``dim()`` of a teacher's options dataclass (DINOv2's);
    ``(None, ...)`` otherwise (a plug-in's dimension is known once it is built: the run's start checks it)."""
    name = teacher.name
    if name == "synthetic":
        return synthetic_teacher_dim(), "the synthetic teacher"
    if name == LEGACY_TEACHER:
        arch = str(teacher.options.get("arch"))
        config = clip_model_config(arch)
        if config is not None:
            check_maskclip_arch(arch, config)
        return clip_embed_dim(arch), f"CLIP {arch}"
    typed = teacher.typed()
    if callable(getattr(typed, "dim", None)):
        arch = teacher.options.get("arch")
        return int(typed.dim()), f"teacher {name}" + (f" {arch}" if arch else "")
    return None, f"teacher {name}"


def _check_teacher_dim(cfg: DistillConfig) -> None:
    """``student.out_dim`` is the teacher's feature dimension where it is known without building the teacher
    (:func:`known_teacher_dim`; otherwise the run's start checks it)."""
    dim, source = known_teacher_dim(cfg.teacher)
    if dim is not None and dim != cfg.student.out_dim:
        raise ValueError(
            f"out_dim must be the teacher's feature dimension, {dim} for {source}; got {cfg.student.out_dim}"
        )


def _check_zero_shot(cfg: DistillConfig) -> None:
    """A text-free teacher (:func:`teacher_has_text`) has no zero-shot classifier: a run that asks for the
    ``zero_shot`` protocol with it is refused, naming the protocols that work."""
    name = cfg.teacher.name
    if "zero_shot" in cfg.protocols and not teacher_has_text(name):
        others = ", ".join(p for p in PROTOCOLS if p != "zero_shot")
        raise ValueError(
            f"teacher {name} has no text tower, hence no zero-shot classifier: the zero_shot protocol cannot run "
            f"with it. Set the run's protocols without it, e.g. protocols: [{others}] in the suite (or --protocols "
            f"{others.replace(', ', ',')}); every other protocol and the geometry work with any teacher"
        )


def _check_nuscenes(cfg: DistillConfig, splits: tuple[str, ...]) -> None:
    """The dataroot holds the table version; protocols that need labels need nuScenes-lidarseg."""
    data = cfg.data
    try:
        info = dataroot_info(str(data.dataroot), data.version)
        for split in splits:
            split_scene_names(split, data.version)
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from None
    needs = [p for p in LABEL_PROTOCOLS if p in cfg.protocols]
    if needs and not info.has_lidarseg:
        raise ValueError(
            f"nuScenes dataroot {data.dataroot} has no lidarseg labels ({info.dataroot / data.version}/"
            f"lidarseg.json is missing): protocols {', '.join(needs)} need the nuScenes-lidarseg add-on "
            "extracted into the dataroot; without it, run --protocols none (or few_shot_ood) to distil and "
            "measure the label-free geometry"
        )
