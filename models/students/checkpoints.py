"""Published 3D backbones in their original layout, mapped onto this project's students (``python -m bench.lens``).

A *layout* (:data:`LAYOUTS`) is a function ``(state, student) -> state dict of the student`` that reads a
checkpoint's tensors under the reference code's key names and shapes and returns them under the student's
``state_dict()`` names, or raises :class:`CheckpointMismatch` listing every missing, unexpected and wrongly shaped
key; with the student family it maps onto (``student``) and the preset whose names and shapes it fits by default
(``preset``). Adding a layout: write its mapping function and register it (docs/implementation.md#checkpoint-layouts).

``slidr``: SLidR's MinkUNet (``Res16UNet34C``, valeoai/SLidR @ 14729d0, ``model/res16unet.py``) on
MinkowskiEngine (NVIDIA/MinkowskiEngine @ 02fc608), head included; ``slidr-trunk``: the same without its head
``final`` (the student's own head stays, as SLidR's downstream loading drops ``final``), for a teacher whose
dimension is not the head's 64. Keys, per module of :class:`~models.students.minkunet.MinkUNet`
(``D`` = 4 levels, ``i`` in 0..3, ``j`` in 0..3, ``b`` a block):

- ``stem.conv.weight`` <- ``conv0p1s1.kernel``; ``stem.norm.*`` <- ``bn0.bn.*``;
- ``down.i.conv.weight`` <- ``conv{i+1}p{2^i}s2.kernel``; ``down.i.norm.*`` <- ``bn{i+1}.bn.*``;
- ``encoder.i.b`` <- ``block{i+1}.b``, ``decoder.j.b`` <- ``block{D+1+j}.b``, inside a block ``conv1.conv.weight``
  <- ``conv1.kernel``, ``conv1.norm.*`` <- ``norm1.bn.*``, ``conv2.weight`` <- ``conv2.kernel``, ``norm2.*`` <-
  ``norm2.bn.*``, ``shortcut.0.weight`` <- ``downsample.0.kernel``, ``shortcut.1.*`` <- ``downsample.1.bn.*``;
- ``up.j.conv.weight`` <- ``convtr{D+j}p{2^(D-j)}s2.kernel``; ``up.j.norm.*`` <- ``bntr{D+j}.bn.*``;
- ``head.weight`` <- ``final.kernel``; ``head.bias`` <- ``final.bias`` (``slidr`` only).

``*`` is ``weight``, ``bias``, ``running_mean``, ``running_var`` and ``num_batches_tracked`` (``MinkowskiBatchNorm``
wraps an ``nn.BatchNorm1d`` as ``bn``; ``num_batches_tracked`` may be absent, read as 0). Shapes
(``MinkowskiConvolutionBase.__init__``, ``MinkowskiEngine/MinkowskiConvolution.py:262-279``): a kernel of volume
``K > 1`` is ``(K, C_in, C_out)`` like this project's; a 1x1 stride-1 kernel (``final``, ``downsample.0``) is
``(C_in, C_out)`` (here ``(1, C_in, C_out)``); a bias is ``(1, C_out)`` (here ``(C_out,)``).

Kernel offset order: MinkowskiEngine's hypercube region numbers offset ``(i_x, i_y, i_z)`` (each in
``0..k-1``) ``m = i_x + k i_y + k^2 i_z``, x fastest (``kernel_region::coordinate_at``, ``src/kernel_region.hpp``),
the input at ``p + (i - k // 2) s`` for an odd ``k`` and ``p + i s`` for an even one (``s`` the tensor stride);
this project numbers the same offsets ``i_x k^2 + i_y k + i_z``, z fastest
(:func:`~models.students.sparse.kernel_map.kernel_offsets`), with the same input positions and the same pairing of
weight and input (cross-correlation; a transposed convolution uses the kernel map of its strided one, in both).
So ``W_here = W_ME.reshape(k, k, k, C_in, C_out).permute(2, 1, 0, 3, 4).reshape(K, C_in, C_out)``.

``scalr``: ScaLR's WaffleIron (valeoai/ScaLR @ 53c474d, ``distill.py``, ``finetune.py``, WaffleIron v0.3.1's
``Segmenter``), head ``classif`` included (ScaLR's pre-training head: ``Conv1d(768, 1024, 1)``, DINOv2 ViT-L's
dimension); ``scalr-trunk``: the same without any ``classif.*`` (the student keeps its own head), for a teacher of
another dimension and for ScaLR's linear-probing and fine-tuning checkpoints, whose ``classif`` is a
``Sequential(BatchNorm1d, Conv1d)`` to the classes (``finetune.py`` replaces the head the same way). The student's
parameters have the reference's names and shapes (:mod:`models.students.waffleiron`): the mapping adds
``network.``; it is checked against :func:`~models.students.waffleiron.load_reference_state_dict`.

Checkpoint files (:func:`read_state`): SLidR's pre-training ``{"model_points": ..., "model_images": ...,
"epoch": ..., "config": ...}`` (``pretrain/lightning_trainer.py`` ``save``), a Lightning checkpoint
(``{"state_dict": {"model_points.<key>": ...}}``), a downstream one or a bare state dict, with the prefixes
``model.``, ``model_points.``, ``module.`` (DDP) or ``encoder.`` removed as ``downstream/model_builder.py``
``load_state_with_same_shape`` does; ScaLR's ``{"epoch", "model_point", "optim", "scheduler", "scaler"}``
(``utils/distiller.py`` ``save_state``; ``finetune.py`` also reads ``model_points``) and its downstream
``{"net": ...}`` (``utils/finetuner.py``), keys carrying DDP's ``module.``. WaffleIron's keys (``embed.``,
``waffleiron.``, ``classif.``) carry none of these prefixes.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.state_dicts import compare_state
from models.students.waffleiron import SCALR_INPUTS, WaffleIron, load_reference_state_dict

MAX_LISTED = 20
"""Keys listed per kind of mismatch in a :class:`CheckpointMismatch` message (then a count of the rest)."""


class CheckpointMismatch(ValueError):
    """A checkpoint that does not fit its layout's student: ``missing`` (expected, absent), ``unexpected`` (in the
    file, not expected) and ``shapes`` (key -> (shape in the file, shape expected)), named in the message."""

    def __init__(
        self,
        source: str,
        layout: str,
        missing: list[str],
        unexpected: list[str],
        shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]],
    ) -> None:
        self.source, self.layout = source, layout
        self.missing, self.unexpected, self.shapes = missing, unexpected, shapes
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_listed(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_listed(unexpected)}")
        if shapes:
            shown = [f"{k} {list(got)} in the file, {list(want)} expected" for k, (got, want) in shapes.items()]
            parts.append(f"{len(shapes)} keys of the wrong shape: {_listed(shown)}")
        super().__init__(
            f"checkpoint {source} does not fit layout {layout} for this student: "
            + "; ".join(parts)
            + " (check the student's preset and overrides, and out_dim against the checkpoint's head)"
        )


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f", ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


PREFIXES = ("model.", "model_points.", "module.", "encoder.")
"""Key prefixes removed from a checkpoint's state dict, in this order (SLidR's ``load_state_with_same_shape``)."""


ENTRIES = ("model_points", "model_point", "net", "state_dict")
"""Entries of a checkpoint holding the point backbone's state dict, the first present taken: SLidR's and ScaLR's
``model_points``, ScaLR's ``model_point`` (pre-training) and ``net`` (downstream), a Lightning ``state_dict``."""


def unwrap_state(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The point backbone's tensors of a loaded checkpoint: its first entry of :data:`ENTRIES`, else the mapping
    itself; then each prefix of :data:`PREFIXES` removed where keys carry it (only the keys that
    carry it are kept: a Lightning checkpoint's ``model_images.*`` are dropped with ``model_points.``)."""
    state: Mapping[str, Any] = checkpoint
    for key in ENTRIES:
        if isinstance(checkpoint.get(key), Mapping):
            state = checkpoint[key]
            break
    out = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    for prefix in PREFIXES:
        if any(k.startswith(prefix) for k in out):
            out = {k[len(prefix) :]: v for k, v in out.items() if k.startswith(prefix)}
    return out


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The backbone tensors of the checkpoint file ``path`` (:func:`unwrap_state`), read with
    ``torch.load(weights_only=True)`` (tensors and plain containers only: no code in the file runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle holding more than tensors and containers, a corrupt file
        raise ValueError(f"checkpoint {path} cannot be read as a state dict: {exc}") from None
    if not isinstance(loaded, Mapping):
        raise ValueError(f"checkpoint {path} holds a {type(loaded).__name__}, not a state dict")
    return unwrap_state(loaded)


# --- SLidR's MinkUNet ----------------------------------------------------------------------------------------------

_BLOCK_NAMES = {
    "conv1.conv.weight": "conv1.kernel",
    "conv2.weight": "conv2.kernel",
    "shortcut.0.weight": "downsample.0.kernel",
}
_BLOCK_NORMS = {"conv1.norm.": "norm1.bn.", "norm2.": "norm2.bn.", "shortcut.1.": "downsample.1.bn."}


def slidr_name(key: str, depth: int = 4) -> str:
    """SLidR's key of the key ``key`` of :class:`~models.students.minkunet.MinkUNet`'s state dict (module
    docstring); ``KeyError`` for a key it has no counterpart of."""
    match = re.fullmatch(r"(stem|down|up|encoder|decoder|head)\.?(\d+)?\.?(\d+)?\.?(.*)", key)
    if match is None:
        raise KeyError(key)
    part, index, block, rest = match.group(1), match.group(2), match.group(3), match.group(4)
    if part == "head" and rest in ("weight", "bias"):
        return f"final.{'kernel' if rest == 'weight' else 'bias'}"
    if part == "stem":
        return _conv_bn(rest, "conv0p1s1", "bn0")
    if index is None:
        raise KeyError(key)
    i = int(index)
    if part == "down" and block is None:
        return _conv_bn(rest, f"conv{i + 1}p{2**i}s2", f"bn{i + 1}")
    if part == "up" and block is None:
        return _conv_bn(rest, f"convtr{depth + i}p{2 ** (depth - i)}s2", f"bntr{depth + i}")
    if part in ("encoder", "decoder") and block is not None:
        stage = i + 1 if part == "encoder" else depth + 1 + i
        if rest in _BLOCK_NAMES:
            return f"block{stage}.{block}.{_BLOCK_NAMES[rest]}"
        for ours, theirs in _BLOCK_NORMS.items():
            if rest.startswith(ours):
                return f"block{stage}.{block}.{theirs}{rest[len(ours) :]}"
    raise KeyError(key)


def _conv_bn(rest: str, conv: str, norm: str) -> str:
    if rest == "conv.weight":
        return f"{conv}.kernel"
    if rest.startswith("norm."):
        return f"{norm}.bn.{rest[len('norm.') :]}"
    raise KeyError(rest)


def kernel_from_minkowski(kernel: torch.Tensor) -> torch.Tensor:
    """A MinkowskiEngine kernel ``(K, C_in, C_out)``, offsets x fastest, in this project's order (z fastest)."""
    volume, c_in, c_out = kernel.shape
    k = round(volume ** (1 / 3))
    if k**3 != volume:
        raise ValueError(f"kernel volume {volume} is not a cube")
    return kernel.reshape(k, k, k, c_in, c_out).permute(2, 1, 0, 3, 4).reshape(volume, c_in, c_out)


def kernel_to_minkowski(kernel: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`kernel_from_minkowski` (the permutation of the axes is its own inverse)."""
    return kernel_from_minkowski(kernel)


def slidr_shape(ours: torch.Tensor, key: str) -> tuple[int, ...]:
    """The shape SLidR's checkpoint holds for our tensor ``ours`` of key ``key``."""
    if key.endswith("kernel") and ours.dim() == 3 and ours.shape[0] == 1:
        return tuple(ours.shape[1:])  # 1x1 stride-1: (C_in, C_out)
    if key == "final.bias":
        return (1, ours.shape[0])
    return tuple(ours.shape)


def to_slidr(network_state: Mapping[str, torch.Tensor], depth: int = 4) -> dict[str, torch.Tensor]:
    """A MinkUNet state dict (keys without the student's ``network.`` prefix) in SLidR's layout: what SLidR's
    ``model_points.state_dict()`` holds for the same weights (the test's stand-in for a published file)."""
    out = {}
    for key, value in network_state.items():
        name = slidr_name(key, depth)
        tensor = kernel_to_minkowski(value) if name.endswith("kernel") and value.shape[0] > 1 else value
        out[name] = tensor.reshape(slidr_shape(value, name)).clone()
    return out


def map_slidr(
    state: Mapping[str, torch.Tensor], student: nn.Module, source: str = "<state>", keep_head: bool = True
) -> dict[str, Any]:
    """SLidR's tensors ``state`` as the state dict of ``student`` (a :class:`~models.students.minkunet.PointStudent`
    of a depth-4 MinkUNet); :class:`CheckpointMismatch` listing every offending key. ``keep_head=False`` (layout
    ``slidr-trunk``): SLidR's ``final`` is ignored, as SLidR's downstream loading drops it
    (``downstream/model_builder.py``), and the student keeps its own head (its ``out_dim``, seeded weights)."""
    network = getattr(student, "network", None)
    config = getattr(network, "config", None)
    if config is None or not hasattr(config, "depth"):
        raise ValueError(f"layout slidr maps onto a MinkUNet student; got {type(network).__name__}")
    if config.depth != 4:
        raise ValueError(f"SLidR's MinkUNet has 4 levels; this student has {config.depth} (planes {config.planes})")
    ours = student.state_dict()
    layout = "slidr" if keep_head else "slidr-trunk"
    expected, own = {}, {}
    for key, value in ours.items():
        name = slidr_name(key.removeprefix("network."), config.depth)
        if name.startswith("final.") and not keep_head:
            own[key] = value.detach().clone()
            continue
        expected[name] = (key, value)
    if not keep_head:
        state = {k: v for k, v in state.items() if not k.startswith("final.")}
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = sorted(k for k in expected if k not in state and k not in optional)
    unexpected = sorted(k for k in state if k not in expected)
    shapes = {}
    for name, (_, value) in expected.items():
        if name in state and tuple(state[name].shape) != slidr_shape(value, name):
            shapes[name] = (tuple(state[name].shape), slidr_shape(value, name))
    if missing or unexpected or shapes:
        raise CheckpointMismatch(source, layout, missing, unexpected, dict(sorted(shapes.items())))
    out: dict[str, Any] = dict(own)
    for name, (key, value) in expected.items():
        if name not in state:  # num_batches_tracked of an older checkpoint
            out[key] = torch.zeros_like(value)
            continue
        tensor = state[name].detach().to(value.dtype)
        if name.endswith("kernel") and tensor.dim() == 3 and tensor.shape[0] > 1:
            tensor = kernel_from_minkowski(tensor)
        out[key] = tensor.reshape(value.shape).clone()
    return out


# --- ScaLR's WaffleIron ---------------------------------------------------------------------------------------------

SCALR_HEAD = "classif."
"""ScaLR's head: ``Conv1d(channels, teacher dim, 1)`` in pre-training, ``Sequential(BatchNorm1d, Conv1d)`` to the
classes downstream (``finetune.py``)."""


def map_scalr(
    state: Mapping[str, torch.Tensor], student: nn.Module, source: str = "<state>", keep_head: bool = True
) -> dict[str, Any]:
    """ScaLR's tensors ``state`` (a WaffleIron ``Segmenter`` state dict) as the state dict of ``student`` (a
    :class:`~models.students.waffleiron.WaffleIronStudent`); :class:`CheckpointMismatch` listing every offending
    key. ``keep_head=False`` (layout ``scalr-trunk``): every ``classif.*`` of the file is ignored and the student
    keeps its own head (its ``out_dim``, seeded weights). The tensors are loaded by
    :func:`~models.students.waffleiron.load_reference_state_dict` into a copy of the student (the reference
    names and shapes, strictly), whose state dict is returned."""
    network = getattr(student, "network", None)
    if not isinstance(network, WaffleIron):
        raise ValueError(f"layout scalr maps onto a WaffleIron student; got {type(network).__name__}")
    layout = "scalr" if keep_head else "scalr-trunk"
    ours = {k: v for k, v in network.state_dict().items() if keep_head or not k.startswith(SCALR_HEAD)}
    if not keep_head:
        state = {k: v for k, v in state.items() if not k.startswith(SCALR_HEAD)}
    optional = {k for k in ours if k.endswith("num_batches_tracked")}
    mismatch = compare_state(ours, state, optional)
    if mismatch:
        raise CheckpointMismatch(source, layout, list(mismatch.missing), list(mismatch.unexpected), mismatch.shapes)
    full = dict(state)
    for key in optional - set(state):  # num_batches_tracked of an older checkpoint
        full[key] = torch.zeros_like(ours[key])
    if not keep_head:
        full.update({k: v for k, v in network.state_dict().items() if k.startswith(SCALR_HEAD)})
    target = copy.deepcopy(student)
    try:
        load_reference_state_dict(target, {k: v.detach() for k, v in full.items()}, strict=True)
    except ValueError as exc:  # not expected after the checks above; named after the file all the same
        raise ValueError(f"checkpoint {source} (layout {layout}): {exc}") from None
    return {k: v.detach().clone() for k, v in target.state_dict().items()}


def map_scalr_trunk(state: Mapping[str, torch.Tensor], student: nn.Module, source: str = "<state>") -> dict[str, Any]:
    """:func:`map_scalr` without ScaLR's head ``classif`` (the student keeps its own)."""
    return map_scalr(state, student, source, keep_head=False)


# --- the registry ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """A checkpoint layout: ``map(state, student, source) -> student state dict`` (raising
    :class:`CheckpointMismatch`), the ``student`` family it maps onto, the ``preset`` it fits by default and a
    ``label`` for the report's row (``"<label> (published)"``); ``defaults``: further flat configuration
    fields ``python -m bench.lens`` sets unless ``--set`` changes them (the student's inputs the file was trained
    on)."""

    map: Callable[..., dict[str, Any]]
    student: str
    preset: str
    label: str
    reference: str
    defaults: tuple[tuple[str, Any], ...] = ()


def map_slidr_trunk(state: Mapping[str, torch.Tensor], student: nn.Module, source: str = "<state>") -> dict[str, Any]:
    """:func:`map_slidr` without SLidR's head ``final`` (the student keeps its own)."""
    return map_slidr(state, student, source, keep_head=False)


SCALR_DEFAULTS: tuple[tuple[str, Any], ...] = (
    ("student_inputs", SCALR_INPUTS),
    ("voxel_size", 0.1),
    ("voxel_system", "cartesian"),
)
"""ScaLR's student inputs (``input_features: [intensity, xyz, radius]``; the embedding's first batch norm has one
channel per input) and voxels (0.1 m, Cartesian: ``voxel_size`` of ``WI_768_pretrain.yaml``)."""

LAYOUTS: dict[str, Layout] = {
    "slidr": Layout(map_slidr, "minkunet", "slidr", "slidr", "valeoai/SLidR @ 14729d0 (MinkowskiEngine keys)"),
    "slidr-trunk": Layout(
        map_slidr_trunk, "minkunet", "slidr", "slidr trunk", "valeoai/SLidR @ 14729d0, its head `final` dropped"
    ),
    "scalr": Layout(
        map_scalr,
        "waffleiron",
        "wi-48-768",
        "scalr",
        "valeoai/ScaLR @ 53c474d (WaffleIron Segmenter keys)",
        SCALR_DEFAULTS,
    ),
    "scalr-trunk": Layout(
        map_scalr_trunk,
        "waffleiron",
        "wi-48-768",
        "scalr trunk",
        "valeoai/ScaLR @ 53c474d, its head `classif` dropped",
        SCALR_DEFAULTS,
    ),
}
"""Layout name -> :class:`Layout`."""


def get_layout(name: str) -> Layout:
    """The layout ``name``; ``ValueError`` naming the valid ones."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown checkpoint layout {name!r}; valid: {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


def load_published(student: nn.Module, path: str | Path, layout: str) -> nn.Module:
    """Load the checkpoint file ``path`` of layout ``layout`` into ``student`` (every tensor of the student set:
    the mapping is strict); returns ``student``."""
    mapped = get_layout(layout).map(read_state(path), student, str(path))
    student.load_state_dict(mapped, strict=True)
    return student
