"""The configuration of one distillation run (suite kind ``distill``): every choice of METHOD.md is a field.

Defaults follow METHOD.md and SLidR (Sautier et al., CVPR 2022) where they say something, and are marked
*(choice)* where the harness had to decide (sizes that keep a CPU run short). A suite's ``defaults`` and
``grid`` set any field; :meth:`DistillConfig.resolved` is what ``config.json`` holds.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from bench.scenes import DATASETS
from bench.segmentation_loss import CLASS_WEIGHTS, SEGMENTATION_LOSSES
from models.losses import LOSSES, get_loss
from models.students.minkunet import INPUTS as STUDENT_INPUTS

TEACHERS = ("synthetic", "clip")
PROTOCOLS = ("zero_shot", "linear_probe", "few_shot", "few_shot_ood")
LABEL_PROTOCOLS = ("zero_shot", "linear_probe", "few_shot")
"""Protocols that score (or train on) the labels of the main dataset."""
OPTIMIZERS = ("sgd", "adamw")
LOSS_DTYPES = ("float32", "bfloat16")
"""Precision of the loss's N x N products (``torch.autocast``; sums and the loss stay float32)."""


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
    return f"{name} must be {shown}; got {value!r} ({type(value).__name__})"


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
    return errors


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
    :class:`bench.augment.Augmentation` to change (``{}``: SLidR's cloud rotation and flips, DropCuboids,
    resized crop and horizontal flip, applied to the train scans of every distillation step).

    Region losses (``slidr``, ``st_slidr``): superpixels of every train image by SLIC with ``slic`` (None: SLidR's
    ``{n_segments: 150, compactness: 6, sigma: 3}``), cached in ``superpixel_cache`` (default
    ``cache/superpixels``) before the first step (:mod:`bench.superpixels`); they use every pair of a batch, not
    ``n_pairs``.

    Distillation (METHOD.md section 2): ``n_pairs`` = 4096 point-pixel pairs per step, sampled uniformly over
    all valid pairs of the batch of ``batch_size`` scans (over every rank under ``torchrun``, with batch norm
    synchronised over the ranks when ``sync_bn``: results do not depend on the number of ranks);
    ``optimizer`` ``sgd`` (momentum, SLidR's lr 0.5) or ``adamw``; cosine schedule over ``steps``; the loss's
    products in ``loss_dtype`` (``float32``, or ``bfloat16`` autocast, which pays on CPUs with AMX and on GPUs:
    ``benchmarks/profile_step.py --compare`` measures its speed and error); a
    checkpoint every ``checkpoint_every`` steps; U, T, G on the probe set (``probe_per_class`` points per class
    of the first ``probe_scenes`` val scans) every ``probe_every`` steps.

    Evaluation (METHOD.md sections 4-5): geometry on ``features_per_class`` class-balanced paired points of the
    evaluation scans (seed ``geometry_seed``, ``uniformity_t`` = 2); linear probe (``lp_*``: frozen backbone,
    ``lp_points_per_scan`` labelled points per train scan); few-shot fine-tuning (``ft_*``) on the 1% split (nuScenes
    and SemanticKITTI: SLidR's scene-level split files; synthetic: every ``few_shot_every``-th train scene) with
    ``ft_optimizer`` (``sgd``: momentum 0.9; or ``adamw``), weight decay 1e-4, cosine schedule after a linear warm-up
    over the first ``ft_warmup`` fraction of ``ft_steps`` (0: none), the gradient's global L2 norm clipped to
    ``ft_clip_norm`` (None: no clipping); the linear probe with SGD momentum 0.9, weight decay 1e-4, cosine schedule;
    both with loss ``seg_loss`` (``ce``, or ``ce+lovasz`` = cross-entropy + Lovász-softmax) with the cross-entropy's
    classes weighted by ``seg_class_weight`` (``none``, ``inverse_sqrt``, ``inverse_log``;
    :mod:`bench.segmentation_loss`).
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
        if self.loss not in LOSSES:
            get_loss(self.loss)  # raises, listing the valid names
        hints = typing.get_type_hints(DistillConfig)
        problems = [type_error(f.name, getattr(self, f.name), hints[f.name]) for f in fields(self)]
        problems = [p for p in problems if p] + loss_parameter_errors(self.loss, dict(self.loss_params))
        if problems:
            raise ValueError("; ".join(problems))
        if self.dataset not in DATASETS or self.ood_dataset not in DATASETS:
            bad = self.dataset if self.dataset not in DATASETS else self.ood_dataset
            raise ValueError(f"unknown dataset {bad!r}; valid datasets: {', '.join(DATASETS)}")
        if self.teacher not in TEACHERS:
            raise ValueError(f"unknown teacher {self.teacher!r}; valid teachers: {', '.join(TEACHERS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
        if not self.student_inputs or set(self.student_inputs) - set(STUDENT_INPUTS):
            raise ValueError(f"unknown student_inputs {list(self.student_inputs)}; valid: {', '.join(STUDENT_INPUTS)}")
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
            for split in (self.train_split, self.eval_split):
                if split not in sizes:
                    raise ValueError(f"synthetic splits are train, val and test; got {split!r}")
                if sizes[split] < 1:
                    raise ValueError(f"split {split} is empty: set {split}_scenes to at least 1")
        self._check_ood_split()
        if not 0.0 <= self.ft_warmup < 1.0:
            raise ValueError(f"ft_warmup is a fraction of ft_steps in [0, 1); got {self.ft_warmup}")
        if self.ft_clip_norm is not None and not self.ft_clip_norm > 0:
            raise ValueError(f"ft_clip_norm must be positive (or None: no clipping); got {self.ft_clip_norm}")
        if self.voxel_system not in ("cartesian", "cylindrical"):
            raise ValueError(f"unknown voxel_system {self.voxel_system!r}; valid: cartesian, cylindrical")
        if self.augmentation is not None:
            self.augmentations()
        if self.loss_dtype not in LOSS_DTYPES:
            raise ValueError(f"unknown loss_dtype {self.loss_dtype!r}; valid: {', '.join(LOSS_DTYPES)}")
        if self.slic is not None:
            from bench.superpixels import settings_from

            settings_from(self.slic)
        positive = (
            "steps",
            "batch_size",
            "n_pairs",
            "checkpoint_every",
            "probe_every",
            "features_per_class",
            "lp_max_points",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1; got {getattr(self, name)}")
        sizes = self.voxel_size if isinstance(self.voxel_size, (list, tuple)) else (self.voxel_size,)
        if not all(v > 0 for v in sizes):
            raise ValueError(f"voxel_size must be positive; got {self.voxel_size}")

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
        from bench.data.nuscenes import dataroot_info, split_scene_names

        try:
            info = dataroot_info(str(self.dataroot), self.version)
            for split in (self.train_split, self.eval_split):
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

    def augmentations(self) -> Any:
        """The :class:`bench.augment.Augmentation` of ``augmentation`` (None: no augmentation); ``{}`` is every
        SLidR augmentation with SLidR's parameters."""
        if self.augmentation is None:
            return None
        from bench.augment import Augmentation

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
