"""The sections of a distillation run's configuration, each a typed dataclass that checks its own fields.

A run's configuration (:class:`bench.config.DistillConfig`) is ``seed``, ``protocols`` and one section per concern:
``data`` (:class:`DataConfig`), ``ood`` (:class:`OodConfig`), ``teacher`` (:class:`TeacherConfig`: a name and that
teacher's options), ``student`` (:class:`StudentConfig`), ``distillation`` (:class:`DistillationConfig`),
``probe`` (:class:`ProbeConfig`), ``geometry`` (:class:`GeometryConfig`), ``segmentation``
(:class:`SegmentationConfig`), ``linear_probe`` (:class:`LinearProbeConfig`) and ``few_shot``
(:class:`FewShotConfig`). Building a section checks its fields' types, their ranges (the section's ``RANGES``) and
the names it gives (through the registries); an error names the field as ``section.field`` (with its flat key,
:data:`geomstruct.run_folder.LEGACY_KEYS`, where that differs). What needs several sections or the file system
(the teacher's dimension, a split's size, a dataroot or checkpoint that must exist) is checked by
:func:`bench.config.check_across_sections`, once every section is built.

Adding a field: add it with its default to its section (and its range to the section's ``RANGES`` if numeric), and
its flat key to :data:`geomstruct.run_folder.LEGACY_KEYS` (docs/implementation.md#the-configuration).
"""

from __future__ import annotations

import inspect
import math
import re
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace
from typing import Any, ClassVar

from bench.data.augment import Augmentation
from bench.data.registry import READERS
from bench.data.superpixels import settings_from
from bench.data.synthetic.generate import VARIANTS
from bench.segmentation_loss import CLASS_WEIGHTS, SEGMENTATION_LOSSES
from geomstruct.run_folder import TEACHER_OPTIONS_KEY, flat_key
from models.losses import LOSSES, get_loss, loss_inputs
from models.losses import parameter_errors as loss_parameter_value_errors
from models.students.checkpoints import LAYOUTS
from models.students.factory import STANDARD_OPTIONS, STUDENTS, accepted_options
from models.students.minkunet import INPUTS as STUDENT_INPUTS
from models.students.minkunet import MinkUNetConfig
from models.teachers import TEACHERS

REGION_LOSSES = tuple(name for name in LOSSES if loss_inputs(name) == "superpixels")
OPTIMIZERS = ("sgd", "adamw")
LOSS_DTYPES = ("float32", "bfloat16")
"""Precision of the loss's N x N products (``torch.autocast``; sums and the loss stay float32)."""
VOXEL_SYSTEMS = ("cartesian", "cylindrical")


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
SEED = Range(0, why="a generator seed")


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


def field_label(section: str, name: str) -> str:
    """How an error names the field ``name`` of ``section``: ``section.name``, followed by its flat key in
    parentheses where that is another word (``few_shot.steps (ft_steps)``)."""
    flat = flat_key(section, name)
    shown = flat not in (name, f"{section}.{name}", TEACHER_OPTIONS_KEY)
    return f"{section}.{name}" + (f" ({flat})" if shown else "")


def _raise(problems: list[str | None]) -> None:
    found = [p for p in problems if p]
    if found:
        raise ValueError("; ".join(found))


def _one_of(label: str, value: str, valid: typing.Iterable[str], what: str = "") -> str | None:
    valid = tuple(valid)
    return None if value in valid else f"unknown {what or label} {value!r}; valid: {', '.join(valid)}"


@dataclass(frozen=True)
class Section:
    """A section of the configuration: its fields are checked when it is built (types from the annotations, the
    ranges of :attr:`RANGES`, then :meth:`check`); ``SECTION`` is its key in ``config.json``."""

    SECTION: ClassVar[str] = ""
    RANGES: ClassVar[dict[str, Range]] = {}

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        _raise([type_error(self.label(f.name), getattr(self, f.name), hints[f.name]) for f in fields(self)])
        _raise([rng.error(self.label(name), getattr(self, name)) for name, rng in self.RANGES.items()])
        self.check()

    @classmethod
    def label(cls, name: str) -> str:
        """The field ``name`` as errors name it (:func:`field_label`)."""
        return field_label(cls.SECTION, name)

    def check(self) -> None:
        """The section's own checks beyond types and ranges (names through the registries, consistency)."""

    def resolved(self) -> dict[str, Any]:
        """The section as ``config.json`` holds it (tuples as lists)."""
        return _jsonable(asdict(self))

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every field with a plain default value."""
        return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class DataConfig(Section):
    """The dataset distilled on and evaluated: ``dataset`` (a reader of :data:`bench.data.registry.READERS` or a
    plug-in) at ``dataroot`` (synthetic: the scene cache folder; nuScenes: with the table ``version``), the
    synthetic world's ``variant`` and split sizes (three disjoint splits: distillation and downstream training on
    train, selection on val, reported numbers on test), distillation and downstream training on ``train_split``,
    evaluation on the first ``eval_scenes`` scans of ``eval_split`` (None: all), ``crop_radius`` metres *(choice;
    None keeps every point)*, the SLidR ``augmentation`` (None: none; ``{}``: all, SLidR's parameters) and
    superpixel ``slic`` settings, and the feature and superpixel cache folders (None: the defaults)."""

    SECTION: ClassVar[str] = "data"
    RANGES: ClassVar[dict[str, Range]] = {
        "train_scenes": COUNT,
        "val_scenes": COUNT,
        "test_scenes": COUNT,
        "eval_scenes": Range(1, none="every scan of the eval split"),
        "crop_radius": Range(0, low_open=True, none="keep every point"),
    }

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
    augmentation: dict[str, Any] | None = None
    slic: dict[str, Any] | None = None
    feature_cache: str | None = None
    superpixel_cache: str | None = None

    def check(self) -> None:
        READERS.get(self.dataset)  # raises naming the valid names, or what is wrong with a plug-in
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; valid synthetic variants: {', '.join(VARIANTS)}")
        if self.augmentation is not None:
            self.augmentations()
        if self.slic is not None:
            settings_from(self.slic)

    def split_sizes(self) -> dict[str, int]:
        """The synthetic world's split sizes by split name."""
        return {"train": self.train_scenes, "val": self.val_scenes, "test": self.test_scenes}

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


@dataclass(frozen=True)
class OodConfig(Section):
    """The dataset of the OOD few-shot protocol: ``dataset`` (``synthetic`` = the ``ood`` variant of the world with
    these split sizes, or ``semantickitti`` at ``dataroot``), fine-tuned on its 1% split and scored on its
    ``eval_split`` (``val``, or ``test`` for the synthetic world; SemanticKITTI's only labelled held-out split is
    ``val``)."""

    SECTION: ClassVar[str] = "ood"
    RANGES: ClassVar[dict[str, Range]] = {"train_scenes": COUNT, "val_scenes": COUNT, "test_scenes": COUNT}

    dataset: str = "synthetic"
    dataroot: str | None = None
    train_scenes: int = 40
    val_scenes: int = 4
    test_scenes: int = 0
    eval_split: str = "val"

    def check(self) -> None:
        READERS.get(self.dataset)
        if self.dataset == "semantickitti":
            if self.eval_split != "val":
                raise ValueError(
                    f"{self.label('eval_split')} {self.eval_split!r}: SemanticKITTI's only labelled held-out split "
                    "is val"
                )
        elif self.eval_split not in ("val", "test"):
            raise ValueError(f"{self.label('eval_split')} is val or test; got {self.eval_split!r}")

    def split_sizes(self) -> dict[str, int]:
        """The OOD world's split sizes by split name."""
        return {"train": self.train_scenes, "val": self.val_scenes, "test": self.test_scenes}


@dataclass(frozen=True)
class TeacherConfig(Section):
    """The 2D teacher: ``name`` (:data:`models.teachers.TEACHERS` or a plug-in ``module:object``) and its
    ``options``, checked by the teacher's own options dataclass (the registry entry's ``options`` metadata, a plug-in
    class's ``options`` attribute: e.g. :class:`models.teachers.clip.CLIPOptions`) and completed with its defaults;
    a teacher that declares none takes the keyword options its builder accepts. Written
    ``teacher: {name: clip, arch: ViT-B-16, checkpoint: ...}``: a new teacher needs no new field here."""

    SECTION: ClassVar[str] = "teacher"

    name: str = "synthetic"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "options", self._completed())

    def option_type(self) -> type | None:
        """The teacher's options dataclass, None when it declares none."""
        kind = TEACHERS.meta(self.name, "options")
        return kind if isinstance(kind, type) and is_dataclass(kind) else None

    def _completed(self) -> dict[str, Any]:
        """The options checked against the teacher's options dataclass, every option it declares present."""
        builder = TEACHERS.get(self.name)  # raises naming the valid names, or what is wrong with a plug-in
        kind = self.option_type()
        if kind is None:
            accepted = accepted_options(builder)
            unknown = sorted(set(self.options) - set(accepted if accepted is not None else self.options) - {"device"})
            if unknown:
                raise ValueError(f"teacher {self.name} takes no option {', '.join(unknown)}")
            return dict(self.options)
        valid = [f.name for f in fields(kind)]
        unknown = sorted(set(self.options) - set(valid))
        if unknown:
            shown = [field_label("teacher", k) for k in unknown]
            raise ValueError(
                f"teacher {self.name} has no option {', '.join(shown)} (its options: {', '.join(valid) or 'none'})"
            )
        hints = typing.get_type_hints(kind)
        _raise([type_error(field_label("teacher", k), v, hints[k]) for k, v in self.options.items()])
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in self.options.items()}
        try:
            typed = kind(**values)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"teacher {self.name} options: {exc}") from None
        return _jsonable(asdict(typed))

    def typed(self) -> Any:
        """The options as the teacher's options dataclass (the dict itself when it declares none)."""
        kind = self.option_type()
        if kind is None:
            return dict(self.options)
        return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in self.options.items()})

    def build_options(self) -> dict[str, Any]:
        """The keywords the teacher's builder takes (``models.teachers.build_teacher(name, device, **these)``): the
        options dataclass's ``build_options()`` where it has one (an option that identifies rather than builds,
        such as a checkpoint's hash, is left out there), else every option."""
        typed = self.typed()
        if hasattr(typed, "build_options"):
            return dict(typed.build_options())
        return asdict(typed) if not isinstance(typed, dict) else typed

    def resolved(self) -> dict[str, Any]:
        """``{name: ..., <option>: ...}``, as a suite writes it."""
        return {"name": self.name, **_jsonable(self.options)}


STUDENT_OVERRIDE_RANGES: dict[str, Range] = {
    "planes": SOME,
    "layers": SOME,
    "init_dim": SOME,
    "stem_kernel": SOME,
    "bn_momentum": Range(0, 1),
    "block_bn_momentum": Range(0, 1),
    "downstream_bn_momentum": Range(0, 1, none="the pre-training momentum"),
}
"""The valid range of every numeric field of :class:`models.students.minkunet.MinkUNetConfig` in the student's
``overrides``."""


@dataclass(frozen=True)
class StudentConfig(Section):
    """The 3D student: ``name`` (:data:`models.students.STUDENTS` or a plug-in builder), its ``preset``,
    ``out_dim`` (the teacher's feature dimension), ``voxel_size`` (one number, or one per axis) in the
    ``voxel_system`` (``cartesian`` or ``cylindrical``), the per-point ``inputs`` and ``overrides`` of the preset
    (for ``minkunet``, fields of :class:`~models.students.minkunet.MinkUNetConfig`; another builder's keywords).

    A published backbone (``python -m bench.lens``): ``checkpoint``, a weight file in the original layout
    ``checkpoint_layout`` (:data:`models.students.checkpoints.LAYOUTS`, which names the student family it maps
    onto), identified by its content ``checkpoint_sha256`` (set when the run is resolved); the run loads it into
    the student instead of distilling (no distillation step) and evaluates it as any run."""

    SECTION: ClassVar[str] = "student"
    RANGES: ClassVar[dict[str, Range]] = {
        "out_dim": SOME,
        "voxel_size": Range(0, low_open=True, why="metres, or degrees for the cylindrical phi"),
    }

    name: str = "minkunet"
    preset: str = "small"
    out_dim: int = 512
    voxel_size: float | tuple[float, ...] = 0.1
    voxel_system: str = "cartesian"
    inputs: tuple[str, ...] = ("intensity",)
    overrides: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    checkpoint_layout: str | None = None
    checkpoint_sha256: str | None = None

    def check(self) -> None:
        self._check_checkpoint()
        if isinstance(self.voxel_size, (list, tuple)) and len(self.voxel_size) != 3:
            raise ValueError(
                f"{self.label('voxel_size')} must be one number or 3 (one per axis); got {list(self.voxel_size)}"
            )
        if self.voxel_system not in VOXEL_SYSTEMS:
            raise ValueError(f"unknown voxel_system {self.voxel_system!r}; valid: {', '.join(VOXEL_SYSTEMS)}")
        if not self.inputs or set(self.inputs) - set(STUDENT_INPUTS):
            raise ValueError(f"unknown {self.label('inputs')} {list(self.inputs)}; valid: {', '.join(STUDENT_INPUTS)}")
        self._check_overrides()

    def _check_checkpoint(self) -> None:
        """A ``checkpoint`` comes with its ``checkpoint_layout`` (and a layout with a checkpoint), a layout of
        :data:`~models.students.checkpoints.LAYOUTS` that maps onto this student family (the file itself is checked
        by :func:`bench.config.check_across_sections`, its keys and shapes when it is loaded)."""
        if (self.checkpoint is None) != (self.checkpoint_layout is None):
            given, absent = (
                ("checkpoint", "checkpoint_layout") if self.checkpoint else ("checkpoint_layout", "checkpoint")
            )
            raise ValueError(f"{self.label(given)} needs {self.label(absent)} (valid layouts: {', '.join(LAYOUTS)})")
        if self.checkpoint_layout is None:
            if self.checkpoint_sha256 is not None:
                raise ValueError(f"{self.label('checkpoint_sha256')} without a {self.label('checkpoint')}")
            return
        if self.checkpoint_layout not in LAYOUTS:
            raise ValueError(
                f"unknown {self.label('checkpoint_layout')} {self.checkpoint_layout!r}; valid: {', '.join(LAYOUTS)}"
            )
        family = LAYOUTS[self.checkpoint_layout].student
        if family != self.name:
            raise ValueError(
                f"checkpoint layout {self.checkpoint_layout} maps onto student {family}, not {self.name}: set "
                f"student.name to {family}"
            )

    def _check_overrides(self) -> None:
        """``name`` exists; for a student declaring presets (registry metadata ``presets``: ``minkunet``'s
        :class:`~models.students.minkunet.MinkUNetConfig`, ``waffleiron``'s
        :class:`~models.students.waffleiron.WaffleIronConfig`) the ``preset`` exists and ``overrides`` names
        fields of the preset's configuration dataclass, of their types and ranges (:data:`STUDENT_OVERRIDE_RANGES`
        for ``minkunet``; the dataclass's own checks otherwise), that make a valid configuration; another
        student's builder must take the overrides as keywords (its own checks run when it builds)."""
        label = self.label("overrides")
        builder = STUDENTS.get(self.name)
        presets = STUDENTS.meta(self.name, "presets")
        if not presets:
            accepted = accepted_options(builder)
            unknown = sorted(set(self.overrides) - set(accepted if accepted is not None else self.overrides))
            if unknown or set(self.overrides) & set(STANDARD_OPTIONS):
                bad = unknown or sorted(set(self.overrides) & set(STANDARD_OPTIONS))
                raise ValueError(f"student {self.name} takes no {label} {bad}")
            return
        if self.preset not in presets:
            raise ValueError(f"unknown preset {self.preset!r}; valid presets: {', '.join(sorted(presets))}")
        kind = type(presets[self.preset])
        valid = [f.name for f in fields(kind)]
        unknown = sorted(set(self.overrides) - set(valid))
        if unknown:
            raise ValueError(f"unknown {label} keys {unknown}; valid: {', '.join(valid)}")
        hints = typing.get_type_hints(kind)
        ranges = STUDENT_OVERRIDE_RANGES if kind is MinkUNetConfig else {}
        problems = []
        for key, value in self.overrides.items():
            problem = type_error(f"{label} {key}", value, hints[key])
            if problem is None and key in ranges:
                problem = ranges[key].error(f"{label} {key}", value)
            problems.append(problem)
        _raise(problems)
        overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in self.overrides.items()}
        try:
            replace(presets[self.preset], **overrides)
        except ValueError as exc:
            raise ValueError(f"{label} on preset {self.preset}: {exc}") from None


@dataclass(frozen=True)
class DistillationConfig(Section):
    """The distillation: the ``loss`` (:data:`models.losses.LOSSES` or a plug-in) with its ``loss_params``,
    ``steps`` of ``batch_size`` scans comparing ``n_pairs`` point-pixel pairs, the ``optimizer`` with ``lr``,
    ``momentum`` and ``weight_decay`` (cosine schedule), synchronised batch norms over ranks (``sync_bn``), the
    precision of the loss's products (``loss_dtype``), SLidR's pixel normalisation of the region losses
    (``region_pixel_norm``: True for them when unset, meaningless and refused for the others) and a checkpoint
    every ``checkpoint_every`` steps."""

    SECTION: ClassVar[str] = "distillation"
    RANGES: ClassVar[dict[str, Range]] = {
        "steps": SOME,
        "batch_size": SOME,
        "n_pairs": Range(2, why="a loss compares at least 2 pairs"),
        "lr": POSITIVE,
        "momentum": Range(0, 1, high_open=True),
        "weight_decay": Range(0),
        "checkpoint_every": SOME,
    }

    loss: str
    loss_params: dict[str, Any] = field(default_factory=dict)
    steps: int = 500
    batch_size: int = 2
    n_pairs: int = 4096
    optimizer: str = "sgd"
    lr: float = 0.5
    momentum: float = 0.9
    weight_decay: float = 1e-4
    sync_bn: bool = True
    loss_dtype: str = "float32"
    region_pixel_norm: bool | None = None
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        if isinstance(self.loss, str) and self.loss not in LOSSES:
            get_loss(self.loss)  # raises, listing the valid names
        super().__post_init__()

    def check(self) -> None:
        _raise(loss_parameter_errors(self.loss, dict(self.loss_params)))
        regions = loss_inputs(self.loss) == "superpixels"
        if self.region_pixel_norm is None and regions:
            object.__setattr__(self, "region_pixel_norm", True)
        elif self.region_pixel_norm is not None and not regions:
            raise ValueError(
                f"{self.label('region_pixel_norm')} applies to the region losses ({', '.join(REGION_LOSSES)}) only; "
                f"loss {self.loss} has no superpixel features: remove it"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
        if self.loss_dtype not in LOSS_DTYPES:
            raise ValueError(f"unknown loss_dtype {self.loss_dtype!r}; valid: {', '.join(LOSS_DTYPES)}")


@dataclass(frozen=True)
class ProbeConfig(Section):
    """The in-run probe of the trajectory: every ``every`` steps, the geometry of ``per_class`` points per class
    of the first ``scenes`` scans of ``split`` (None: the data's evaluation split)."""

    SECTION: ClassVar[str] = "probe"
    RANGES: ClassVar[dict[str, Range]] = {"every": SOME, "scenes": SOME, "per_class": SOME}

    every: int = 100
    scenes: int = 2
    split: str | None = None
    per_class: int = 200


@dataclass(frozen=True)
class GeometryConfig(Section):
    """The geometry measured at the end: a balanced set of ``features_per_class`` points per class drawn with
    ``seed``, its uniformity at temperature ``uniformity_t``."""

    SECTION: ClassVar[str] = "geometry"
    RANGES: ClassVar[dict[str, Range]] = {
        "features_per_class": SOME,
        "seed": SEED,
        "uniformity_t": Range(0, low_open=True, why="the uniformity's temperature; 0 gives U = 0 for any features"),
    }

    features_per_class: int = 5000
    seed: int = 0
    uniformity_t: float = 2.0


@dataclass(frozen=True)
class SegmentationConfig(Section):
    """The segmentation loss of both downstream protocols (linear probe and few-shot fine-tuning): ``loss``
    (:data:`bench.segmentation_loss.SEGMENTATION_LOSSES`) with per-class weights ``class_weight``
    (:data:`bench.segmentation_loss.CLASS_WEIGHTS`)."""

    SECTION: ClassVar[str] = "segmentation"

    loss: str = "ce"
    class_weight: str = "none"

    def check(self) -> None:
        if self.class_weight not in CLASS_WEIGHTS:
            raise ValueError(f"unknown seg_class_weight {self.class_weight!r}; valid: {', '.join(CLASS_WEIGHTS)}")
        if self.loss not in SEGMENTATION_LOSSES:
            raise ValueError(f"unknown seg_loss {self.loss!r}; valid: {', '.join(SEGMENTATION_LOSSES)}")


@dataclass(frozen=True)
class LinearProbeConfig(Section):
    """The linear-probe protocol: a linear head on frozen features, ``steps`` SGD steps at ``lr`` on batches of
    ``batch_points`` of the ``points_per_scan`` points drawn per training scan (at most ``max_points``)."""

    SECTION: ClassVar[str] = "linear_probe"
    RANGES: ClassVar[dict[str, Range]] = {
        "steps": SOME,
        "lr": POSITIVE,
        "batch_points": SOME,
        "points_per_scan": SOME,
        "max_points": SOME,
    }

    steps: int = 300
    lr: float = 0.5
    batch_points: int = 4096
    points_per_scan: int = 2000
    max_points: int = 500_000


@dataclass(frozen=True)
class FewShotConfig(Section):
    """The few-shot protocols (in-domain and OOD): the 1% split takes every ``every``-th train scene; ``subsets``
    1% subsets are fine-tuned on (0: the 1% split, ``j >= 1`` seeded draws); fine-tuning of the whole network,
    ``steps`` steps of ``batch_size`` scans with the ``optimizer`` at ``lr``, a linear warm-up over the first
    ``warmup`` fraction of the steps and the gradient norm clipped to ``clip_norm`` (None: no clipping)."""

    SECTION: ClassVar[str] = "few_shot"
    RANGES: ClassVar[dict[str, Range]] = {
        "every": Range(1, why="the 1% split takes every few_shot_every-th train scene"),
        "subsets": Range(1, why="1% subsets fine-tuned on: subset 0 is the 1% split, j >= 1 seeded draws"),
        "steps": SOME,
        "lr": POSITIVE,
        "batch_size": SOME,
        "warmup": Range(0, 1, high_open=True, rule="is a fraction of ft_steps in [0, 1)"),
        "clip_norm": Range(0, low_open=True, none="no clipping"),
    }

    every: int = 100
    subsets: int = 1
    steps: int = 60
    lr: float = 0.05
    batch_size: int = 1
    optimizer: str = "sgd"
    warmup: float = 0.0
    clip_norm: float | None = None

    def check(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown ft_optimizer {self.optimizer!r}; valid optimizers: {', '.join(OPTIMIZERS)}")


SECTION_TYPES: dict[str, type[Section]] = {
    cls.SECTION: cls
    for cls in (
        DataConfig,
        OodConfig,
        TeacherConfig,
        StudentConfig,
        DistillationConfig,
        ProbeConfig,
        GeometryConfig,
        SegmentationConfig,
        LinearProbeConfig,
        FewShotConfig,
    )
}
"""Section key -> its dataclass, in ``config.json`` order."""
