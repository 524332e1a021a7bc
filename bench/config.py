"""The configuration of one distillation run (suite kind ``distill``): every choice of docs/method.md is a field.

Defaults follow docs/method.md and SLidR (Sautier et al., CVPR 2022) where they say something, and are marked
*(choice)* where the harness had to decide (sizes that keep a CPU run short). A suite's ``defaults`` and
``grid`` set any field; :meth:`DistillConfig.resolved` is what ``config.json`` holds.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import re
import sys
import types
import typing
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from bench.data.augment import Augmentation
from bench.data.nuscenes import dataroot_info, split_scene_names
from bench.data.registry import READERS
from bench.data.superpixels import settings_from
from bench.data.synthetic.generate import VARIANTS
from bench.segmentation_loss import CLASS_WEIGHTS, SEGMENTATION_LOSSES
from geomstruct.run_folder import LABEL_PROTOCOLS, PROTOCOLS
from models.losses import LOSSES, get_loss, loss_inputs
from models.losses import parameter_errors as loss_parameter_value_errors
from models.students.factory import STANDARD_OPTIONS, STUDENTS, accepted_options
from models.students.minkunet import INPUTS as STUDENT_INPUTS
from models.students.minkunet import PRESETS, MinkUNetConfig
from models.teachers import TEACHERS
from models.teachers.synthetic import load_params

REGION_LOSSES = tuple(name for name in LOSSES if loss_inputs(name) == "superpixels")
OPTIMIZERS = ("sgd", "adamw")
LOSS_DTYPES = ("float32", "bfloat16")
"""Precision of the loss's N x N products (``torch.autocast``; sums and the loss stay float32)."""


@dataclass(frozen=True)
class Range:
    """The valid numbers of a field: finite, from ``low`` (excluded when ``low_open``) up to ``high`` (None:
    unbounded; excluded when ``high_open``). ``none`` says what None means where the field admits it; ``why``
    is added to the error. A tuple value is checked entry by entry."""

    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    none: str | None = None
    why: str = ""
    rule: str = ""

    def admits(self, value: Any) -> bool:
        """Whether ``value`` (a number, a sequence of numbers, or None) lies in the range."""
        if value is None:
            return self.none is not None
        if isinstance(value, (list, tuple)):
            return all(self.admits(v) for v in value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        above = self.low < value if self.low_open else self.low <= value
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        if self.high is not None:
            text = f"in {'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"
        elif self.low_open:
            text = f"positive (> {self.low})" if self.low == 0 else f"> {self.low}"
        else:
            text = f"at least {self.low}"
        text += f" ({self.why})" if self.why else ""
        return text + (f", or None ({self.none})" if self.none is not None else "")

    def error(self, name: str, value: Any) -> str | None:
        """``"<name> must be <range>; got <value>"`` (``rule`` replaces "must be <range>" where set), or None
        when ``value`` is in the range."""
        return None if self.admits(value) else f"{name} {self.rule or f'must be {self}'}; got {value!r}"


COUNT = Range(0)
"""A number of scenes (0: none)."""
SOME = Range(1)
"""A positive count (steps, points, a period)."""
POSITIVE = Range(0, low_open=True)
"""A positive real (learning rates, lengths)."""

FIELD_RANGES: dict[str, Range] = {
    "seed": Range(0, why="a generator seed"),
    "train_scenes": COUNT,
    "val_scenes": COUNT,
    "test_scenes": COUNT,
    "eval_scenes": Range(1, none="every scan of the eval split"),
    "crop_radius": Range(0, low_open=True, none="keep every point"),
    "ood_train_scenes": COUNT,
    "ood_val_scenes": COUNT,
    "ood_test_scenes": COUNT,
    "few_shot_every": Range(1, why="the 1% split takes every few_shot_every-th train scene"),
    "few_shot_subsets": Range(1, why="1% subsets fine-tuned on: subset 0 is the 1% split, j >= 1 seeded draws"),
    "out_dim": SOME,
    "voxel_size": Range(0, low_open=True, why="metres, or degrees for the cylindrical phi"),
    "steps": SOME,
    "batch_size": SOME,
    "n_pairs": Range(2, why="a loss compares at least 2 pairs"),
    "lr": POSITIVE,
    "momentum": Range(0, 1, high_open=True),
    "weight_decay": Range(0),
    "checkpoint_every": SOME,
    "probe_every": SOME,
    "probe_scenes": SOME,
    "probe_per_class": SOME,
    "features_per_class": SOME,
    "geometry_seed": Range(0, why="a generator seed"),
    "uniformity_t": Range(0, low_open=True, why="the uniformity's temperature; 0 gives U = 0 for any features"),
    "lp_steps": SOME,
    "lp_lr": POSITIVE,
    "lp_batch_points": SOME,
    "lp_points_per_scan": SOME,
    "lp_max_points": SOME,
    "ft_steps": SOME,
    "ft_lr": POSITIVE,
    "ft_batch_size": SOME,
    "ft_warmup": Range(0, 1, high_open=True, rule="is a fraction of ft_steps in [0, 1)"),
    "ft_clip_norm": Range(0, low_open=True, none="no clipping"),
}
"""The valid range of every numeric field of :class:`DistillConfig`, checked when a configuration is built."""

STUDENT_OVERRIDE_RANGES: dict[str, Range] = {
    "planes": SOME,
    "layers": SOME,
    "init_dim": SOME,
    "stem_kernel": SOME,
    "bn_momentum": Range(0, 1),
    "block_bn_momentum": Range(0, 1),
    "downstream_bn_momentum": Range(0, 1, none="the pre-training momentum"),
}
"""The valid range of every numeric field of :class:`models.students.minkunet.MinkUNetConfig` in
``student_overrides``."""


@cache
def synthetic_teacher_dim() -> int:
    """The feature dimension of the synthetic teacher, read from its committed parameter file."""
    return int(load_params().dim)


def clip_embed_dim(arch: str) -> int | None:
    """The feature dimension (``embed_dim``) of the open_clip architecture ``arch``, read without building or
    downloading anything: from the model-config JSON that ``arch`` names, from open_clip's registry when open_clip
    is already imported (it holds the configs registered in this process), else from open_clip's own
    ``model_configs/<arch>.json`` (found without importing open_clip); None when open_clip is not installed or the
    config gives no ``embed_dim`` (then the run's start checks it).

    Raises:
        ValueError: ``arch`` names a ``.json`` file that does not exist, or an architecture open_clip lacks.
    """
    unknown = f"unknown open_clip architecture clip_arch {arch!r}; see open_clip.list_models() or give a .json config"
    path = Path(arch)
    if path.suffix == ".json":
        if not path.is_file():
            raise ValueError(f"clip_arch: open_clip model config {path} does not exist")
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
    embed = config.get("embed_dim") if isinstance(config, dict) else None
    return embed if isinstance(embed, int) and not isinstance(embed, bool) else None


def type_error(name: str, value: Any, annotation: Any) -> str | None:
    """Why ``value`` does not fit the type ``annotation`` of field ``name`` (None when it fits).

    Understands the annotations of :class:`DistillConfig` and of the losses' parameters: ``int``, ``float``
    (an int is a float; a bool is neither), ``str``, ``bool``, ``None``, unions, ``tuple[X, ...]``,
    ``dict[str, Any]``, ``Any``.
    """

    def fits(v: Any, t: Any) -> bool:
        if t is Any:
            return True
        origin = typing.get_origin(t)
        if origin in (typing.Union, types.UnionType):
            return any(fits(v, a) for a in typing.get_args(t))
        if t is type(None):
            return v is None
        if t is bool:
            return isinstance(v, bool)
        if t is int:
            return isinstance(v, int) and not isinstance(v, bool)
        if t is float:
            return isinstance(v, (int, float)) and not isinstance(v, bool)
        if t is str:
            return isinstance(v, str)
        if origin is tuple:
            args = typing.get_args(t)
            return isinstance(v, (list, tuple)) and all(fits(x, args[0]) for x in v) if args else True
        if origin is dict or t is dict:
            return isinstance(v, dict)
        return True  # an annotation this checker does not know: accepted

    if fits(value, annotation):
        return None
    shown = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
    return f"{name} must be {shown}; got {value!r} ({type(value).__name__}){_number_text_hint(value, annotation)}"


_YAML11_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _number_text_hint(value: Any, annotation: Any) -> str:
    """A hint for a number YAML read as text: YAML 1.1 (PyYAML) reads ``5e-3`` and ``1e3`` as strings, since its
    floats need a decimal point and a signed exponent (``5.0e-3``, ``1.0e+3``); empty when it does not apply."""
    if not isinstance(value, str) or not _YAML11_EXPONENT.fullmatch(value.strip()):
        return ""
    mantissa, _, exponent = value.strip().lower().partition("e")
    mantissa = mantissa if "." in mantissa else f"{mantissa}.0"
    written = f"{mantissa}e{exponent if exponent[0] in '+-' else '+' + exponent}"
    number = float(value)
    wanted = typing.get_args(annotation) or (annotation,)
    if float not in wanted and int in wanted and number.is_integer():
        return f" (YAML 1.1 reads {value} as a string: write {int(number)})"
    plain = repr(number)
    decimal = f" or {plain}" if "e" not in plain else ""
    return f" (YAML 1.1 reads {value} as a string: write {written}{decimal})"


def loss_parameter_errors(loss: str, params: dict[str, Any]) -> list[str]:
    """What is wrong with ``params`` for the loss ``loss`` (unknown names, wrong types), from its signature."""
    signature = inspect.signature(get_loss(loss))
    accepted = [p for p in list(signature.parameters)[2:] if p != "segments"]  # after K and Q; regions: data
    hints = typing.get_type_hints(get_loss(loss))
    errors = []
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        valid = ", ".join(accepted) if accepted else "none"
        errors.append(f"loss {loss} has no parameter {', '.join(unknown)} (its parameters: {valid})")
    for key in set(params) & set(accepted):
        problem = type_error(f"{loss} parameter {key}", params[key], hints.get(key, Any))
        if problem:
            errors.append(problem)
    if not errors:  # the values, once the names and types are right
        errors = loss_parameter_value_errors(loss, params)
    return errors


def complete_loss_params(loss: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with every parameter of the loss ``loss`` it leaves out set to the default of the loss
    function's signature: ``contrastive`` and ``contrastive`` with ``tau: 0.07`` are one loss configuration."""
    signature = inspect.signature(get_loss(loss)).parameters.values()
    defaults = {p.name: p.default for p in signature if p.default is not inspect.Parameter.empty}
    defaults.pop("segments", None)  # data of the region losses, not a parameter
    return {**defaults, **params}


def configuration_identity(resolved: dict[str, Any]) -> dict[str, Any]:
    """What makes two resolved run configurations (:meth:`DistillConfig.resolved`, or a toy run's) the same run:
    the configuration with its loss parameters completed (:func:`complete_loss_params`) and every number a float
    (``lr: 1`` and ``lr: 1.0`` are one value)."""

    def floats(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: floats(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [floats(v) for v in value]
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    out = dict(resolved)
    if "loss" in out:
        out["loss_params"] = complete_loss_params(out["loss"], dict(out.get("loss_params") or {}))
    return floats(out)


def with_overrides(run: dict[str, Any], items: Sequence[str]) -> dict[str, Any]:
    """``run`` with the command-line overrides ``FIELD=VALUE`` applied in order (``VALUE`` read as YAML, so
    ``voxel_size=0.1`` is a float and ``planes=[16,32]`` a list); a ``ValueError`` names an item without ``=``.
    The fields are checked later, by :meth:`DistillConfig.from_run`."""
    out = dict(run)
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"an override takes FIELD=VALUE; got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


@dataclass(frozen=True)
class DistillConfig:
    """One distillation run: data, teacher, student, loss, optimisation, probes and evaluation protocols.

    Data: ``dataset`` (``synthetic``, ``nuscenes``, ``semantickitti``) with ``dataroot`` (for synthetic the
    scene cache folder; for nuScenes the table ``version``, ``v1.0-trainval`` or ``v1.0-mini``), synthetic split
    sizes ``train_scenes`` / ``val_scenes`` / ``test_scenes`` (three disjoint splits: distillation and downstream
    training on train, selection on val, reported numbers on test), ``crop_radius`` metres *(choice; None keeps
    every point)*;
    distillation and downstream training on ``train_split``, evaluation on the first ``eval_scenes`` scans of
    ``eval_split`` (None = all; nuScenes roles ``train``/``val``, and ``train_fit``/``holdout`` for
    hyper-parameter selection, :mod:`bench.data.nuscenes`). OOD few-shot on ``ood_dataset`` (``synthetic`` = the
    ``ood`` variant with ``ood_train_scenes`` / ``ood_val_scenes`` / ``ood_test_scenes``, or ``semantickitti``),
    trained on its 1% split and scored on its ``ood_eval_split`` (``val``, or ``test`` for the synthetic world:
    selection on val, reported numbers on test as in distribution; SemanticKITTI's test sequences have no
    labels, so there the OOD score is always its val split, as in SLidR). Teacher features are read from the
    cache ``feature_cache`` (default ``cache/features``), filled before the first step.

    Teacher: ``teacher`` (``synthetic`` or ``clip`` with ``clip_arch`` and the local ``clip_checkpoint``, whose
    content hash ``clip_checkpoint_sha256`` is filled in when the run is resolved, so that new weights at the
    same path are a new configuration; ``allow_torchscript`` reads OpenAI's TorchScript archives, which run code
    stored in the file).

    Student: ``student`` ``preset`` (``small`` for CPUs, ``slidr`` = SLidR's MinkUNet34C) with
    ``student_overrides``, ``voxel_size`` metres on ``voxel_system`` coordinates (``cartesian``, or SLidR's
    ``cylindrical``: rho and z in metres, phi in degrees), reading the per-point channels ``student_inputs``
    (``intensity``, ``z``, ``range``: :data:`models.students.minkunet.INPUTS`; SLidR reads intensity only).
    ``augmentation``: None (off), or the fields of
    :class:`bench.data.augment.Augmentation` to change (``{}``: SLidR's cloud rotation and flips, DropCuboids,
    resized crop and horizontal flip, applied to the train scans of every distillation step).

    Region losses (``slidr``, ``st_slidr``): superpixels of every train image by SLIC with ``slic`` (None: SLidR's
    ``{n_segments: 150, compactness: 6, sigma: 3}``), cached in ``superpixel_cache`` (default
    ``cache/superpixels``) before the first step (:mod:`bench.data.superpixels`); they use every pair of a batch, not
    ``n_pairs``. A superpixel's teacher feature is the mean of its L2-normalised upsampled pixels
    (``region_pixel_norm`` True, SLidR's image head; False: of the raw pixels; None for the other losses).

    Distillation (docs/method.md#pair-sampling): ``n_pairs`` = 4096 point-pixel pairs per step, sampled uniformly over
    all valid pairs of the batch of ``batch_size`` scans (over every rank under ``torchrun``, with batch norm
    synchronised over the ranks when ``sync_bn``: results do not depend on the number of ranks);
    ``optimizer`` ``sgd`` (momentum, SLidR's lr 0.5) or ``adamw``; cosine schedule over ``steps``; the loss's
    products in ``loss_dtype`` (``float32``, or ``bfloat16`` autocast, which pays on CPUs with AMX and on GPUs:
    ``benchmarks/profile_step.py --compare`` measures its speed and error); a
    checkpoint every ``checkpoint_every`` steps; U, T, G on the probe set (``probe_per_class`` points per class
    of the first ``probe_scenes`` scans of ``probe_split``; None: of ``eval_split``, as every run before the field
    existed; ``val`` keeps a suite that reports on test off its test scans during training) every ``probe_every``
    steps.

    Evaluation (docs/method.md#point-set, docs/method.md#evaluation-protocols): geometry on ``features_per_class``
    class-balanced paired points of the evaluation scans (seed ``geometry_seed``, ``uniformity_t`` = 2); linear probe
    (``lp_*``: frozen backbone, ``lp_points_per_scan`` labelled points per train scan); few-shot fine-tuning (``ft_*``)
    on the 1% split (nuScenes and SemanticKITTI: SLidR's scene-level split files; synthetic: every ``few_shot_every``-th
    train scene) with ``ft_optimizer`` (``sgd``: momentum 0.9; or ``adamw``), weight decay 1e-4, cosine schedule after a
    linear warm-up over the first ``ft_warmup`` fraction of ``ft_steps`` (0: none), the gradient's global L2 norm
    clipped to ``ft_clip_norm`` (None: no clipping), once per 1% subset when ``few_shot_subsets`` > 1 (subset 0 the 1%
    split, subset ``j`` as many train scenes drawn with seed ``j``, :mod:`bench.data.fewshot`; the result is their mean,
    :func:`bench.distill.few_shot_scores`); the linear probe with SGD momentum 0.9, weight decay 1e-4, cosine schedule;
    both with loss ``seg_loss`` (``ce``, or ``ce+lovasz`` = cross-entropy + Lovász-softmax) with the cross-entropy's
    classes weighted by ``seg_class_weight`` (``none``, ``inverse_sqrt``, ``inverse_log``;
    :mod:`bench.segmentation_loss`).

    Every value is checked when the configuration is built, before anything runs: its type, every numeric field
    within its range (:data:`FIELD_RANGES`), the loss's parameters (:func:`models.losses.parameter_errors`),
    ``student_overrides`` against the preset's configuration, and ``out_dim`` against the teacher's dimension
    where it is known without building the teacher.

    ``loss``, ``teacher``, ``student``, ``dataset`` and ``ood_dataset`` name a component of their registry
    (:data:`models.losses.LOSSES`, :data:`models.teachers.TEACHERS`, :data:`models.students.STUDENTS`,
    :data:`bench.data.registry.READERS`) or a plug-in ``"module:object"`` defined outside the package, resolved and
    checked like the built-ins (:mod:`models.registry`; docs/implementation.md#plug-ins).
    """

    loss: str
    seed: int
    loss_params: dict[str, Any] = field(default_factory=dict)
    dataset: str = "synthetic"
    dataroot: str | None = None
    version: str = "v1.0-trainval"
    train_split: str = "train"
    eval_split: str = "val"
    variant: str = "nuscenes"
    train_scenes: int = 40
    val_scenes: int = 8
    test_scenes: int = 0
    eval_scenes: int | None = None
    crop_radius: float | None = 20.0
    ood_dataset: str = "synthetic"
    ood_dataroot: str | None = None
    ood_train_scenes: int = 40
    ood_val_scenes: int = 4
    ood_test_scenes: int = 0
    ood_eval_split: str = "val"
    few_shot_every: int = 100
    few_shot_subsets: int = 1
    teacher: str = "synthetic"
    clip_arch: str = "ViT-B-16"
    clip_checkpoint: str | None = None
    clip_checkpoint_sha256: str | None = None
    allow_torchscript: bool = False
    feature_cache: str | None = None
    student: str = "minkunet"
    preset: str = "small"
    out_dim: int = 512
    voxel_size: float | tuple[float, ...] = 0.1
    student_overrides: dict[str, Any] = field(default_factory=dict)
    student_inputs: tuple[str, ...] = ("intensity",)
    steps: int = 500
    batch_size: int = 2
    n_pairs: int = 4096
    sync_bn: bool = True
    augmentation: dict[str, Any] | None = None
    slic: dict[str, Any] | None = None
    region_pixel_norm: bool | None = None
    loss_dtype: str = "float32"
    superpixel_cache: str | None = None
    voxel_system: str = "cartesian"
    optimizer: str = "sgd"
    lr: float = 0.5
    momentum: float = 0.9
    weight_decay: float = 1e-4
    checkpoint_every: int = 50
    probe_every: int = 100
    probe_scenes: int = 2
    probe_split: str | None = None
    probe_per_class: int = 200
    features_per_class: int = 5000
    geometry_seed: int = 0
    uniformity_t: float = 2.0
    protocols: tuple[str, ...] = PROTOCOLS
    lp_steps: int = 300
    lp_lr: float = 0.5
    lp_batch_points: int = 4096
    lp_points_per_scan: int = 2000
    lp_max_points: int = 500_000
    ft_steps: int = 60
    ft_lr: float = 0.05
    ft_batch_size: int = 1
    ft_optimizer: str = "sgd"
    ft_warmup: float = 0.0
    ft_clip_norm: float | None = None
    seg_loss: str = "ce"
    seg_class_weight: str = "none"

    def __post_init__(self) -> None:
        self._resolve_region_pixel_norm()
        if self.loss not in LOSSES:
            get_loss(self.loss)  # raises, listing the valid names
        hints = typing.get_type_hints(DistillConfig)
        problems = [type_error(f.name, getattr(self, f.name), hints[f.name]) for f in fields(self)]
        problems = [p for p in problems if p] + loss_parameter_errors(self.loss, dict(self.loss_params))
        if problems:
            raise ValueError("; ".join(problems))
        self._check_ranges()
        READERS.get(self.dataset)  # each raises naming the valid names, or what is wrong with a plug-in
        READERS.get(self.ood_dataset)
        TEACHERS.get(self.teacher)
        self._check_teacher_dim()
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
        if not self.student_inputs or set(self.student_inputs) - set(STUDENT_INPUTS):
            raise ValueError(f"unknown student_inputs {list(self.student_inputs)}; valid: {', '.join(STUDENT_INPUTS)}")
        self._check_student()
        self._check_variant()
        if self.ft_optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown ft_optimizer {self.ft_optimizer!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
        if self.seg_class_weight not in CLASS_WEIGHTS:
            raise ValueError(f"unknown seg_class_weight {self.seg_class_weight!r}; valid: {', '.join(CLASS_WEIGHTS)}")
        if self.seg_loss not in SEGMENTATION_LOSSES:
            raise ValueError(f"unknown seg_loss {self.seg_loss!r}; valid: {', '.join(SEGMENTATION_LOSSES)}")
        unknown = sorted(set(self.protocols) - set(PROTOCOLS))
        if unknown:
            raise ValueError(f"unknown protocols {unknown}; valid protocols: {', '.join(PROTOCOLS)}")
        if self.teacher == "clip" and self.clip_checkpoint is None:
            raise ValueError("teacher clip needs a local checkpoint (--clip-checkpoint); nothing is downloaded")
        if self.teacher == "clip" and not Path(str(self.clip_checkpoint)).is_file():
            raise ValueError(f"CLIP checkpoint {self.clip_checkpoint} does not exist")
        for name, root in ((self.dataset, self.dataroot), (self.ood_dataset, self.ood_dataroot)):
            if name != "synthetic" and (root is None or not Path(root).is_dir()):
                raise ValueError(f"dataset {name} needs a dataroot that exists (--dataroot); got {root!r}")
        if self.teacher == "synthetic" and self.dataset != "synthetic":
            raise ValueError(
                f"the synthetic teacher reads the synthetic world's rendered class maps; dataset {self.dataset} "
                "needs --teacher clip --clip-checkpoint FILE"
            )
        if self.dataset == "nuscenes":
            self._check_nuscenes()
        if self.dataset == "synthetic":
            sizes = {"train": self.train_scenes, "val": self.val_scenes, "test": self.test_scenes}
            for split in (self.train_split, self.eval_split, self.probe_split or self.eval_split):
                if split not in sizes:
                    raise ValueError(f"synthetic splits are train, val and test; got {split!r}")
                if sizes[split] < 1:
                    raise ValueError(f"split {split} is empty: set {split}_scenes to at least 1")
        self._check_ood_split()
        if self.voxel_system not in ("cartesian", "cylindrical"):
            raise ValueError(f"unknown voxel_system {self.voxel_system!r}; valid: cartesian, cylindrical")
        if self.augmentation is not None:
            self.augmentations()
        if self.loss_dtype not in LOSS_DTYPES:
            raise ValueError(f"unknown loss_dtype {self.loss_dtype!r}; valid: {', '.join(LOSS_DTYPES)}")
        if self.slic is not None:
            settings_from(self.slic)

    def _check_ranges(self) -> None:
        """Every numeric field within its range (:data:`FIELD_RANGES`; ``voxel_size`` one number or one per axis);
        the error lists every field out of range, with its value and range."""
        names = [f.name for f in fields(self) if f.name in FIELD_RANGES]
        problems = [FIELD_RANGES[name].error(name, getattr(self, name)) for name in names]
        if isinstance(self.voxel_size, (list, tuple)) and len(self.voxel_size) != 3:
            problems.append(f"voxel_size must be one number or 3 (one per axis); got {list(self.voxel_size)}")
        problems = [p for p in problems if p]
        if problems:
            raise ValueError("; ".join(problems))

    def _check_teacher_dim(self) -> None:
        """``out_dim`` is the teacher's feature dimension where it is known without building the teacher: the
        synthetic teacher's parameter file, or the model config of a CLIP architecture (:func:`clip_embed_dim`;
        otherwise the run's start checks it)."""
        if self.teacher not in ("synthetic", "clip"):
            return  # a plug-in's dimension is known once it is built: the run's start checks it
        dim = synthetic_teacher_dim() if self.teacher == "synthetic" else clip_embed_dim(self.clip_arch)
        if dim is not None and dim != self.out_dim:
            source = "the synthetic teacher" if self.teacher == "synthetic" else f"CLIP {self.clip_arch}"
            raise ValueError(f"out_dim must be the teacher's feature dimension, {dim} for {source}; got {self.out_dim}")

    def _check_student(self) -> None:
        """``student`` exists (:data:`models.students.STUDENTS`, or a plug-in builder); for ``minkunet`` the
        ``preset`` exists and ``student_overrides`` names fields of the preset's
        :class:`~models.students.minkunet.MinkUNetConfig`, of their types and ranges
        (:data:`STUDENT_OVERRIDE_RANGES`), that make a valid configuration; another student's builder must take
        the overrides as keywords (its own checks run when it builds)."""
        builder = STUDENTS.get(self.student)
        if self.student != "minkunet":
            accepted = accepted_options(builder)
            unknown = sorted(
                set(self.student_overrides) - set(accepted if accepted is not None else self.student_overrides)
            )
            if unknown or set(self.student_overrides) & set(STANDARD_OPTIONS):
                bad = unknown or sorted(set(self.student_overrides) & set(STANDARD_OPTIONS))
                raise ValueError(f"student {self.student} takes no student_overrides {bad}")
            return
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; valid presets: {', '.join(sorted(PRESETS))}")
        valid = [f.name for f in fields(MinkUNetConfig)]
        unknown = sorted(set(self.student_overrides) - set(valid))
        if unknown:
            raise ValueError(f"unknown student_overrides keys {unknown}; valid: {', '.join(valid)}")
        hints = typing.get_type_hints(MinkUNetConfig)
        problems = []
        for key, value in self.student_overrides.items():
            problem = type_error(f"student_overrides {key}", value, hints[key])
            if problem is None and key in STUDENT_OVERRIDE_RANGES:
                problem = STUDENT_OVERRIDE_RANGES[key].error(f"student_overrides {key}", value)
            problems += [problem] if problem else []
        if problems:
            raise ValueError("; ".join(problems))
        overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in self.student_overrides.items()}
        try:
            replace(PRESETS[self.preset], **overrides)
        except ValueError as exc:
            raise ValueError(f"student_overrides on preset {self.preset}: {exc}") from None

    def _check_variant(self) -> None:
        """``variant`` is a synthetic world variant (:data:`bench.data.synthetic.VARIANTS`)."""
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; valid synthetic variants: {', '.join(VARIANTS)}")

    def _resolve_region_pixel_norm(self) -> None:
        """``region_pixel_norm`` is SLidR's True for the region losses when unset, and stays None for the others
        (where it means nothing: setting it there is an error)."""
        regions = loss_inputs(self.loss) == "superpixels"
        if self.region_pixel_norm is None and regions:
            object.__setattr__(self, "region_pixel_norm", True)
        elif self.region_pixel_norm is not None and not regions:
            raise ValueError(
                f"region_pixel_norm applies to the region losses ({', '.join(REGION_LOSSES)}) only; "
                f"loss {self.loss} has no superpixel features: remove it"
            )

    def _check_ood_split(self) -> None:
        """The OOD evaluation split exists and has labels (the synthetic world: a non-empty val or test split;
        SemanticKITTI: val, its only labelled held-out split)."""
        if self.ood_dataset == "semantickitti":
            if self.ood_eval_split != "val":
                raise ValueError(
                    f"ood_eval_split {self.ood_eval_split!r}: SemanticKITTI's only labelled held-out split is val"
                )
            return
        sizes = {"val": self.ood_val_scenes, "test": self.ood_test_scenes}
        if self.ood_eval_split not in sizes:
            raise ValueError(f"ood_eval_split is val or test; got {self.ood_eval_split!r}")
        if "few_shot_ood" in self.protocols and sizes[self.ood_eval_split] < 1:
            raise ValueError(
                f"the OOD split {self.ood_eval_split} is empty: set ood_{self.ood_eval_split}_scenes to at least 1"
            )

    def _check_nuscenes(self) -> None:
        """The dataroot holds the table version; protocols that need labels need nuScenes-lidarseg."""
        try:
            info = dataroot_info(str(self.dataroot), self.version)
            for split in (self.train_split, self.eval_split, self.probe_split or self.eval_split):
                split_scene_names(split, self.version)
        except FileNotFoundError as exc:
            raise ValueError(str(exc)) from None
        needs = [p for p in LABEL_PROTOCOLS if p in self.protocols]
        if needs and not info.has_lidarseg:
            raise ValueError(
                f"nuScenes dataroot {self.dataroot} has no lidarseg labels ({info.dataroot / self.version}/"
                f"lidarseg.json is missing): protocols {', '.join(needs)} need the nuScenes-lidarseg add-on "
                "extracted into the dataroot; without it, run --protocols none (or few_shot_ood) to distil and "
                "measure the label-free geometry"
            )

    def augmentations(self) -> Augmentation | None:
        """The :class:`bench.data.augment.Augmentation` of ``augmentation`` (None: no augmentation); ``{}`` is every
        SLidR augmentation with SLidR's parameters."""
        if self.augmentation is None:
            return None
        valid = {f.name for f in fields(Augmentation)}
        unknown = sorted(set(self.augmentation) - valid)
        if unknown:
            raise ValueError(f"unknown augmentation fields {unknown}; valid: {', '.join(sorted(valid))}")
        return Augmentation(**self.augmentation)

    @classmethod
    def from_run(cls, run: dict[str, Any]) -> DistillConfig:
        """Build from a suite run (a dict); unknown keys are an error that lists the valid ones."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(run) - names)
        if unknown:
            raise ValueError(f"unknown distill run parameters {unknown}; valid: {', '.join(sorted(names))}")
        values = dict(run)
        for name in ("protocols", "student_inputs"):
            if isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        return cls(**values)

    @classmethod
    def field_defaults(cls) -> dict[str, Any]:
        """Every field with a plain default value: what a run directory written before that field existed used."""
        return {f.name: f.default for f in fields(cls) if f.default is not MISSING}

    def resolved(self) -> dict[str, Any]:
        """JSON-ready configuration, with ``kind: distill``."""
        cfg = asdict(self)
        cfg["protocols"] = list(self.protocols)
        cfg["kind"] = "distill"
        return cfg
