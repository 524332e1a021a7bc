"""The DINOv2 teacher (Oquab et al., TMLR 2024) on timm: dense patch features of a self-supervised ViT, no text.

Dense features, as ScaLR distils them (Puy et al., "Three Pillars improving Vision Foundation Model Distillation
for Lidar", CVPR 2024; valeoai/ScaLR ``models/image_teacher.py``): the patch tokens of the last block,

    f_i = x_i^(L)            (``final_norm=False``: ScaLR's ``x_pre_norm``, the default)
    f_i = LN(x_i^(L))        (``final_norm=True``: DINOv2's ``x_norm_patchtokens``)

with the class token (and the register tokens of the ``reg4`` variants) dropped, reshaped to the patch grid
``(D, H / 14, W / 14)``, optionally divided by their L2 norm (``l2_normalize``), and upsampled bilinearly to pixels
by the benchmark (:func:`~models.teachers.base.upsample`). The positional embedding (learnt on a 37 x 37 grid, 518
pixels) is resampled bicubically to the grid of the input size by timm (``dynamic_img_size``).

Preprocessing (ScaLR's): ``uint8 RGB / 255``, antialiased bilinear resize to ``image_size`` (default 224 x 448,
ScaLR's ``im_size``), ImageNet normalisation (mean ``0.485 0.456 0.406``, std ``0.229 0.224 0.225``); the same
weight-free, picklable CPU half as the CLIP teacher (:class:`~models.teachers.clip.CLIPPreprocessor`).

Weights come from a local file only (the model is created with ``pretrained=False``; nothing is downloaded):

- a timm state dict (``.pth``/``.pt``/``.bin``, optionally under ``"state_dict"`` or ``"model"``, ``"module."``
  prefixes removed, or ``.safetensors``) of the architecture: the keys of ``timm.create_model(arch).state_dict()``;
- the official facebookresearch/dinov2 checkpoint (``dinov2_vits14_pretrain.pth`` ...; recognised by its
  ``mask_token`` key), mapped onto timm's layout by timm's own ``checkpoint_filter_fn`` (``mask_token`` dropped,
  ``register_tokens`` -> ``reg_token``, ViT-g's ``mlp.w12``/``mlp.w3`` -> ``mlp.fc1``/``mlp.fc2``).

Any other layout is refused with the keys that differ. ``checkpoint=None`` gives seeded random weights (tests, and
a path check that draws no scientific conclusion). The teacher has no text tower (:attr:`DINOv2Teacher.has_text`
is False): the zero-shot protocol is refused for it when a run's configuration is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.state_dicts import compare_state
from models.teachers._torchvision_shim import import_timm
from models.teachers.base import file_sha256
from models.teachers.clip import ImageTeacher, preprocess_images, read_state_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_ARCH = "vit_small_patch14_dinov2"
DEFAULT_IMAGE_SIZE = (224, 448)
"""ScaLR's ``im_size``: 16 x 32 patches of 14 pixels."""

ARCHS: dict[str, int] = {
    "vit_small_patch14_dinov2": 384,
    "vit_base_patch14_dinov2": 768,
    "vit_large_patch14_dinov2": 1024,
    "vit_giant_patch14_dinov2": 1536,
    "vit_small_patch14_reg4_dinov2": 384,
    "vit_base_patch14_reg4_dinov2": 768,
    "vit_large_patch14_reg4_dinov2": 1024,
    "vit_giant_patch14_reg4_dinov2": 1536,
}
"""timm's DINOv2 architectures and their feature dimension (ViT-S/B/L/g 14, with and without 4 registers)."""

ALIASES: dict[str, str] = {
    f"dinov2_vit{size}14{reg}": f"vit_{name}_patch14{reg and '_reg4'}_dinov2"
    for size, name in (("s", "small"), ("b", "base"), ("l", "large"), ("g", "giant"))
    for reg in ("", "_reg")
}
"""The torch.hub names of facebookresearch/dinov2 (``dinov2_vits14``, ``dinov2_vitl14_reg``) -> timm's names."""

PATCH = 14


def canonical_arch(arch: str) -> str:
    """timm's name of ``arch`` (a timm DINOv2 name or a torch.hub alias, :data:`ALIASES`).

    Raises:
        ValueError: naming the accepted architectures.
    """
    name = ALIASES.get(arch, arch)
    if name not in ARCHS:
        raise ValueError(
            f"unknown DINOv2 architecture {arch!r}; accepted: {', '.join(ARCHS)} (or the torch.hub names "
            f"{', '.join(ALIASES)})"
        )
    return name


@dataclass(frozen=True)
class DINOv2Options:
    """The options of the DINOv2 teacher a run's configuration sets (``teacher: {name: dinov2, arch:
    vit_base_patch14_dinov2, checkpoint: FILE}``): the timm ``arch`` (:data:`ARCHS`, or a torch.hub alias), the
    local ``checkpoint`` (None: seeded random weights), its content hash ``checkpoint_sha256`` (filled when the run
    is resolved), the input ``image_size`` (multiples of 14), ``final_norm`` (the last LayerNorm applied: DINOv2's
    normalised tokens; default off, ScaLR's pre-norm tokens), ``l2_normalize`` (unit features), the random
    weights' ``seed``, and ``depth``, ``embed_dim``, ``num_heads`` overriding the architecture's (a small
    DINOv2-shaped ViT for tests; a checkpoint must then match them)."""

    arch: str = DEFAULT_ARCH
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE
    final_norm: bool = False
    l2_normalize: bool = False
    seed: int = 0
    depth: int | None = None
    embed_dim: int | None = None
    num_heads: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "arch", canonical_arch(self.arch))
        if len(self.image_size) != 2 or any(int(s) <= 0 or int(s) % PATCH for s in self.image_size):
            raise ValueError(f"image_size must be two positive multiples of {PATCH}; got {list(self.image_size)}")
        for name in ("depth", "embed_dim", "num_heads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1; got {value}")
        heads = self.num_heads
        if self.embed_dim is not None and heads is not None and self.embed_dim % heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not a multiple of num_heads {heads}")

    def dim(self) -> int:
        """The feature dimension: ``embed_dim`` when set, else the architecture's (:data:`ARCHS`)."""
        return self.embed_dim if self.embed_dim is not None else ARCHS[self.arch]

    def build_options(self) -> dict[str, Any]:
        """The keywords of :class:`DINOv2Teacher` (the hash identifies the weights; it builds nothing)."""
        return {
            "arch": self.arch,
            "checkpoint": self.checkpoint,
            "image_size": tuple(self.image_size),
            "final_norm": self.final_norm,
            "l2_normalize": self.l2_normalize,
            "seed": self.seed,
            "depth": self.depth,
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
        }


def timm_state_dict(path: Path, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of the checkpoint ``path`` in timm's layout (module docstring): a timm file as it is, the
    official DINOv2 layout mapped by timm's ``checkpoint_filter_fn``."""
    state, _ = read_state_dict(path)
    if set(state) == {"model"} or (isinstance(state.get("model"), dict) and len(state) == 1):
        state = state["model"]
    if "mask_token" in state:  # facebookresearch/dinov2's layout
        timm = import_timm()
        state = timm.models.vision_transformer.checkpoint_filter_fn(dict(state), model)
    return state


def load_dinov2_model(options: DINOv2Options | dict[str, Any], checkpoint: str | Path | None) -> torch.nn.Module:
    """timm's ``options.arch`` (``pretrained=False``, ``dynamic_img_size=True``, the overrides of ``options``) with
    the weights of ``checkpoint`` (timm or official DINOv2 layout), or random weights seeded by ``options.seed``.

    Raises:
        ValueError: a checkpoint of another layout or shape, naming the keys that differ and what is accepted.
        FileNotFoundError: the checkpoint does not exist.
    """
    opts = options if isinstance(options, DINOv2Options) else DINOv2Options(**options)
    timm = import_timm()
    overrides = {k: getattr(opts, k) for k in ("depth", "embed_dim", "num_heads") if getattr(opts, k) is not None}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(opts.seed)
        model = timm.create_model(opts.arch, pretrained=False, dynamic_img_size=True, num_classes=0, **overrides)
    if checkpoint is None:
        return model
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"DINOv2 checkpoint not found: {path}")
    state = timm_state_dict(path, model)
    expected = model.state_dict()
    mismatch = compare_state(expected, state)
    if mismatch:
        details = mismatch.describe()
        raise ValueError(
            f"checkpoint {path} does not match the DINOv2 architecture {opts.arch}{overrides or ''} ({details}); "
            "accepted: a timm state dict of that architecture (.pth/.pt/.bin, optionally under 'state_dict' or "
            "'model', or .safetensors) or facebookresearch/dinov2's own checkpoint (dinov2_vit*14*_pretrain.pth)"
        )
    model.load_state_dict(state, strict=True)
    return model


class DINOv2Teacher(ImageTeacher):
    """A frozen timm DINOv2 ViT giving dense patch features (module docstring); no text tower.

    Args:
        arch: a timm DINOv2 architecture (:data:`ARCHS`) or a torch.hub alias (:data:`ALIASES`).
        checkpoint: local weight file (timm or official layout), or ``None`` for random weights (seeded by ``seed``).
        device: where the model runs.
        image_size: ``(H, W)`` images are resized to (multiples of 14).
        final_norm: apply the last LayerNorm to the patch tokens (default: ScaLR's pre-norm tokens).
        l2_normalize: divide every patch feature by its L2 norm.
        seed: seed of the random initialisation when ``checkpoint`` is ``None``.
        depth, embed_dim, num_heads: override the architecture's (a small DINOv2-shaped ViT for tests).
    """

    name = "dinov2"
    has_text = False

    def __init__(
        self,
        arch: str = DEFAULT_ARCH,
        checkpoint: str | Path | None = None,
        device: torch.device | str = "cpu",
        image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
        final_norm: bool = False,
        l2_normalize: bool = False,
        seed: int = 0,
        depth: int | None = None,
        embed_dim: int | None = None,
        num_heads: int | None = None,
    ) -> None:
        self.options = DINOv2Options(
            arch=arch,
            image_size=(int(image_size[0]), int(image_size[1])),
            final_norm=final_norm,
            l2_normalize=l2_normalize,
            seed=seed,
            depth=depth,
            embed_dim=embed_dim,
            num_heads=num_heads,
        )
        self.arch = self.options.arch
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.device = torch.device(device)
        self.image_size = self.options.image_size
        self.model = load_dinov2_model(self.options, checkpoint).to(self.device)
        self.model.eval()
        self.model.requires_grad_(False)
        self.stride = PATCH
        self.dim = int(self.model.embed_dim)
        self.grid_size(self.image_size)
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(3, 1, 1)
        self._identity: str | None = None

    @property
    def identity(self) -> str:
        """``dinov2-<arch>[-d<depth>w<width>h<heads>]-<12 hex of the checkpoint's SHA-256, or random<seed>>-<H>x<W>
        -<prenorm|norm>[-l2]``: the architecture, the weights and every option that changes a feature."""
        if self._identity is None:
            o = self.options
            shape = "".join(f"{k}{v}" for k, v in (("d", o.depth), ("w", o.embed_dim), ("h", o.num_heads)) if v)
            weights = f"random{o.seed}" if self.checkpoint is None else file_sha256(self.checkpoint)[:12]
            parts = [self.name, self.arch, *([shape] if shape else []), weights]
            parts += [f"{o.image_size[0]}x{o.image_size[1]}", "norm" if o.final_norm else "prenorm"]
            parts += ["l2"] if o.l2_normalize else []
            self._identity = "-".join(parts)
        return self._identity

    def assert_frozen(self) -> None:
        """Raise if the model left eval mode or a parameter requires a gradient."""
        if self.model.training or any(p.requires_grad for p in self.model.parameters()):
            raise RuntimeError("the DINOv2 teacher must stay frozen (eval mode, no parameter requiring grad)")

    def preprocess(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``(B, H, W, 3)`` or ``(H, W, 3)`` uint8 RGB -> ``(B, 3, H', W')`` ImageNet-normalised float32 at
        ``image_size``, on :attr:`device`."""
        return preprocess_images(images, self.image_size, self.mean, self.std)

    @torch.no_grad()
    def dense_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """The last block's patch tokens ``(B, D, H / 14, W / 14)`` of preprocessed images (module docstring)."""
        self.assert_frozen()
        (feats,) = self.model.forward_intermediates(
            pixels.to(self.device), indices=1, norm=self.options.final_norm, output_fmt="NCHW", intermediates_only=True
        )
        feats = feats.float()
        return F.normalize(feats, dim=1) if self.options.l2_normalize else feats

    def encode_images(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Dense features ``(B, D, h, w)`` of uint8 RGB images: :meth:`preprocess` then :meth:`dense_features`."""
        return self.dense_features(self.preprocess(images))

    def _embed_prompts(self, phrase: str, prompts: Any) -> torch.Tensor:
        raise ValueError(
            "the DINOv2 teacher has no text tower: it gives no text embeddings, so the zero_shot protocol cannot "
            "run with it (protocols: [linear_probe, few_shot, few_shot_ood] work)"
        )
