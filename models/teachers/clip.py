"""The CLIP teacher on open_clip: dense MaskCLIP features and prompt-ensemble text embeddings.

Dense features (MaskCLIP, Zhou et al., "Extract Free Dense Labels from CLIP", ECCV 2022): CLIP's image
embedding is the attention-pooled class token; MaskCLIP drops the query-key attention of the last block and
keeps its value path for every patch token ``x_i`` (the input of the last residual block):

    f_i = LN_post( LS_1( W_out (W_v LN_1(x_i) + b_v) + b_out ) ) @ proj

(no residual, no MLP; ``LS_1`` is the block's layer scale, the identity for OpenAI's models). ``f`` lives in the
joint image-text space of dimension ``embed_dim``, on the patch grid ``(H / p, W / p)``; it is upsampled
bilinearly to pixels (:func:`~models.teachers.base.upsample`). The positional embedding is interpolated
bicubically to the grid of the input size (224 x 416 for ViT-B/16 gives a 14 x 26 grid).

Preprocessing, without torchvision's compiled operators: ``uint8 RGB / 255``, bilinear (antialiased) resize with
``torch.nn.functional.interpolate`` to ``image_size``, then ``(x - mean) / std`` with the model's statistics
(:func:`preprocess_images`). :meth:`CLIPTeacher.preprocessor` does it on the CPU for every camera of a scan
(:class:`CLIPPreprocessor`, picklable and weight-free, for data-loader workers); :meth:`CLIPTeacher.encode` runs
the network on the result, on the teacher's device.

Weights come from a local file only (no network): an open_clip/PyTorch state dict (``.pt``, ``.pth``, ``.bin``,
optionally under a ``"state_dict"`` key, ``"module."`` prefixes removed), a ``.safetensors`` file, or OpenAI's
TorchScript archive (e.g. ``ViT-B-16.pt`` of the ``clip`` package), which is loaded into the quick-GELU variant
of the architecture, the activation OpenAI trained with. ``checkpoint=None`` gives seeded random weights (tests).

Which towers: open_clip's own VisionTransformer with a class token pooled by attention, default blocks (the value
path above is that of their ``torch.nn.MultiheadAttention``), a final projection and no attentional pooler;
:func:`maskclip_problem` refuses every other open_clip architecture by name, with the reason, from its model
config alone (the benchmark calls it when a run's configuration is built, before anything is read).
"""

from __future__ import annotations

import logging
import zipfile
from abc import abstractmethod
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.state_dicts import compare_state
from models.teachers._torchvision_shim import import_open_clip
from models.teachers.base import ScanInput, Teacher, file_sha256

DEFAULT_ARCH = "ViT-B-16"
DEFAULT_IMAGE_SIZE = (224, 416)
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def is_torchscript_archive(path: Path) -> bool:
    """Whether ``path`` is a TorchScript zip archive (it holds ``constants.pkl`` or ``code/`` entries)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in archive.namelist())


def read_state_dict(path: Path, allow_torchscript: bool = False) -> tuple[dict[str, torch.Tensor], bool]:
    """Read a checkpoint file; returns ``(state_dict, is_openai_torchscript)``.

    A TorchScript archive (OpenAI's ``ViT-B-16.pt``) holds code that ``torch.jit.load`` runs: it is read only
    with ``allow_torchscript=True`` (a trusted file); state dicts and safetensors are read as data only.
    """
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file  # only for a .safetensors checkpoint

        return load_file(str(path), device="cpu"), False
    if is_torchscript_archive(path):
        if not allow_torchscript:
            raise ValueError(
                f"{path} is a TorchScript archive (OpenAI's format): loading it runs code stored in the file. "
                "Allow it for a file you trust (--allow-torchscript, allow_torchscript=True), or save its "
                "state_dict() to a .pt file"
            )
        state = torch.jit.load(str(path), map_location="cpu").state_dict()
        return {k: v for k, v in state.items() if k not in _OPENAI_EXTRA_KEYS}, True
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no state dict of tensors (nor a 'state_dict' entry with one)")
    return {k.removeprefix("module."): v for k, v in state.items()}, False


@contextmanager
def _quiet_random_init_warning():
    """Hide open_clip's "No pretrained weights loaded" warning: weights are loaded right after, from the file."""

    def keep(record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def resolve_arch(arch: str) -> str:
    """The open_clip model name of ``arch``: a registered name, or the path of an open_clip model-config JSON
    file (``{"embed_dim": ..., "vision_cfg": ..., "text_cfg": ...}``), registered under its file stem.

    Raises:
        ValueError: neither a known architecture nor an existing ``.json`` file.
    """
    open_clip = import_open_clip()
    path = Path(arch)
    if path.suffix == ".json":
        if not path.is_file():
            raise ValueError(f"open_clip model config {path} does not exist")
        open_clip.add_model_config(path)
        arch = path.stem
    if arch not in open_clip.list_models():
        raise ValueError(f"unknown open_clip architecture {arch!r}; see open_clip.list_models() or give a .json config")
    return arch


MASKCLIP_TOWERS = (
    "open_clip's own VisionTransformer image towers (the ViT-* architectures: a class token, "
    "torch.nn.MultiheadAttention blocks, a final projection; e.g. ViT-B-16, ViT-L-14, ViT-S-16, ViT-M-16-alt), "
    "registered or given as a model-config .json"
)
"""What :func:`maskclip_problem` accepts, in words (its refusals end with it)."""

_CUSTOM_BLOCK_FLAGS = ("qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc")


def _timm_family(name: str) -> str:
    """Why the MaskCLIP recipe cannot read a timm image tower, by its family (``convnext_tiny`` -> convolutions)."""
    if name.startswith(("convnext", "fastvit", "resnet")):
        return "a convolutional network: it has no attention, hence no value path"
    if name.startswith("swin"):
        return "windowed attention over shifted windows, no class token"
    if "siglip" in name or name.startswith("vit_pe_"):
        return "pooled by an attention head over queries (map pooling), no class token whose attention it reads"
    return "its blocks are timm modules, not open_clip's MultiheadAttention blocks whose value path it reads"


def maskclip_problem(arch: str, config: dict[str, Any]) -> str | None:
    """Why the MaskCLIP dense recipe (module docstring) cannot read the open_clip architecture ``arch`` of model
    config ``config`` (``{"embed_dim", "vision_cfg", "text_cfg"}``), None when it can: the recipe needs open_clip's
    own VisionTransformer tower with a class token pooled by attention, default residual blocks (their attention a
    ``torch.nn.MultiheadAttention``, whose value path it takes), a final projection and no attentional pooler;
    and a text tower whose tokenizer needs no download. Read from the config alone: nothing is built."""
    vision = config.get("vision_cfg") or {}
    text = config.get("text_cfg") or {}
    refused = f"open_clip architecture {arch!r} is refused for MaskCLIP dense features"
    if vision.get("timm_model_name"):
        name = str(vision["timm_model_name"])
        return f"{refused}: its image tower is the timm model {name} ({_timm_family(name)})"
    if isinstance(vision.get("layers"), (list, tuple)):
        return (
            f"{refused}: its image tower is a ModifiedResNet (the RN50 family), a convolutional network with an "
            "attention-pool head; the recipe implemented here reads a ViT's last block"
        )
    if vision.get("attentional_pool"):
        return f"{refused}: its image embedding is an attentional pooler's queries (CoCa), not the class token"
    if vision.get("pool_type", "tok") != "tok":
        return (
            f"{refused}: its image embedding pools the tokens ({vision.get('pool_type')}, as CLIPA), not the class "
            "token through the last block's attention, which the recipe's value path stands for"
        )
    custom = [flag for flag in _CUSTOM_BLOCK_FLAGS if vision.get(flag)]
    if custom or vision.get("block_type") == "custom":
        shown = ", ".join(custom) or "block_type custom"
        return f"{refused}: its blocks use custom attention ({shown}), not torch.nn.MultiheadAttention"
    if text.get("hf_model_name") or text.get("hf_tokenizer_name"):
        name = text.get("hf_tokenizer_name") or text.get("hf_model_name")
        return f"{refused}: its text tower's tokenizer is the Hugging Face {name}, which would be downloaded"
    return None


def check_maskclip_arch(arch: str, config: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming ``arch``, the reason and what is accepted when :func:`maskclip_problem` refuses
    it."""
    problem = maskclip_problem(arch, config)
    if problem is not None:
        raise ValueError(f"{problem}. Accepted: {MASKCLIP_TOWERS}")


def load_clip_model(
    arch: str,
    checkpoint: str | Path | None,
    device: torch.device,
    seed: int = 0,
    quick_gelu: bool | None = None,
    allow_torchscript: bool = False,
) -> torch.nn.Module:
    """An open_clip model of architecture ``arch`` with the weights of ``checkpoint`` (or random, seeded).

    Raises:
        ValueError: unknown architecture, or a checkpoint whose keys or shapes do not match ``arch``.
        FileNotFoundError: the checkpoint file does not exist.
    """
    open_clip = import_open_clip()
    arch = resolve_arch(arch)
    check_maskclip_arch(arch, open_clip.get_model_config(arch) or {})
    state, openai = None, False
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"CLIP checkpoint not found: {path}")
        state, openai = read_state_dict(path, allow_torchscript)
    with torch.random.fork_rng(devices=[]), _quiet_random_init_warning():
        torch.manual_seed(seed)
        model = open_clip.create_model(
            arch, pretrained=None, force_quick_gelu=bool(openai if quick_gelu is None else quick_gelu)
        )
    if state is not None:
        expected = model.state_dict()
        derived = {name for name, _ in model.named_buffers()} - set(expected)  # non-persistent (e.g. attn_mask)
        state = {k: v for k, v in state.items() if k not in derived}
        mismatch = compare_state(expected, state)
        if mismatch:
            raise ValueError(
                f"checkpoint {checkpoint} does not match open_clip architecture {arch!r} ({mismatch.describe()})"
            )
        model.load_state_dict(state, strict=True)
    return model.to(device)


def interpolate_pos_embed(pos: torch.Tensor, grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """Class-token + patch positional embedding ``(1 + h w, C)`` resized bicubically to ``new_grid``."""
    if tuple(grid) == tuple(new_grid):
        return pos
    cls, patches = pos[:1], pos[1:]
    patches = patches.reshape(1, grid[0], grid[1], -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=new_grid, mode="bicubic", align_corners=False)
    return torch.cat([cls, patches.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], -1)])


def preprocess_images(
    images: np.ndarray | torch.Tensor, image_size: tuple[int, int], mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """``(B, H, W, 3)`` or ``(H, W, 3)`` uint8 RGB -> ``(B, 3, H', W')`` normalised float32 at ``image_size``.

    ``x = (resize(rgb / 255) - mean) / std`` with ``resize`` the antialiased bilinear
    ``F.interpolate(align_corners=False, antialias=True)`` (skipped when the image already has ``image_size``);
    computed on the device of ``mean`` (``(3, 1, 1)``, like ``std``).
    """
    if isinstance(images, np.ndarray) and not images.flags.writeable:
        images = np.array(images)  # torch wants writable memory (decoded images can be read-only views)
    x = torch.as_tensor(images, device=mean.device)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must be (B, H, W, 3) or (H, W, 3) RGB; got {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float() / 255.0
    if tuple(x.shape[-2:]) != tuple(image_size):
        x = F.interpolate(x, size=tuple(image_size), mode="bilinear", align_corners=False, antialias=True)
    return (x - mean) / std


@dataclass(frozen=True, eq=False)
class CLIPPreprocessor:
    """The CPU half of :class:`CLIPTeacher`: a scan's camera images -> ``(n_cameras, 3, H, W)`` float32.

    Reads ``view.image`` of every camera (decoding it when it is read lazily) and applies
    :func:`preprocess_images`. Holds only the image size and the normalisation statistics, not the network, so it
    pickles in a few hundred bytes (for ``torch.utils.data.DataLoader`` workers).

    Attributes:
        image_size: ``(H, W)`` images are resized to.
        mean: ``(3, 1, 1)`` float32 per-channel mean of the model, on the CPU.
        std: ``(3, 1, 1)`` float32 per-channel standard deviation, on the CPU.
    """

    image_size: tuple[int, int]
    mean: torch.Tensor
    std: torch.Tensor

    def images(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """:func:`preprocess_images` of ``(B, H, W, 3)`` or ``(H, W, 3)`` uint8 RGB, on the CPU."""
        return preprocess_images(images, self.image_size, self.mean, self.std)

    def __call__(self, scan: ScanInput) -> torch.Tensor:
        """Every camera of ``scan``, in order, preprocessed: ``(n_cameras, 3, H, W)`` float32 (CPU)."""
        if not len(scan.cameras):
            raise ValueError(f"scan {scan.scan_id} has no camera")
        return torch.cat([self.images(view.image) for view in scan.cameras])


class ImageTeacher(Teacher):
    """A teacher whose CPU half resizes and normalises the camera images (:class:`CLIPPreprocessor` with
    ``image_size``, ``mean``, ``std``) and whose device half is :meth:`dense_features` of the normalised images: the
    CLIP and DINOv2 teachers."""

    image_size: tuple[int, int]
    mean: torch.Tensor
    std: torch.Tensor

    def preprocessor(self) -> CLIPPreprocessor:
        """The CPU half (:class:`CLIPPreprocessor`): image size and normalisation statistics, no weights."""
        return CLIPPreprocessor(self.image_size, self.mean.cpu(), self.std.cpu())

    def encode(self, prepared: torch.Tensor) -> torch.Tensor:
        """Dense features ``(n_cameras, D, h, w)`` on :attr:`device` of a :class:`CLIPPreprocessor` output
        ``(n_cameras, 3, H, W)`` (:meth:`dense_features`)."""
        if prepared.ndim != 4 or prepared.shape[1] != 3:
            raise ValueError(f"prepared images must be (B, 3, H, W); got {tuple(prepared.shape)}")
        return self.dense_features(prepared)

    @abstractmethod
    def dense_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Dense features ``(B, D, H / stride, W / stride)`` of normalised images ``(B, 3, H, W)``."""


@dataclass(frozen=True)
class CLIPOptions:
    """The options of the CLIP teacher a run's configuration sets (``teacher: {name: clip, arch: ViT-B-16,
    checkpoint: FILE}``): the open_clip ``arch`` (or a model-config ``.json``), the local ``checkpoint`` (nothing is
    downloaded), its content hash ``checkpoint_sha256`` (filled when the run is resolved: the weights' content,
    not their path, identifies the teacher) and ``allow_torchscript`` (read a TorchScript archive, which runs code
    stored in the file: trusted files only)."""

    arch: str = DEFAULT_ARCH
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    allow_torchscript: bool = False

    def build_options(self) -> dict[str, Any]:
        """The keywords of :class:`CLIPTeacher` (the hash identifies the weights; it builds nothing)."""
        return {"arch": self.arch, "checkpoint": self.checkpoint, "allow_torchscript": self.allow_torchscript}


class CLIPTeacher(ImageTeacher):
    """A frozen open_clip model giving MaskCLIP dense features and text embeddings (module docstring).

    Args:
        arch: open_clip architecture name, or the path of an open_clip model-config JSON (a ViT: dense features
            need the value path of its last block).
        checkpoint: local weight file, or ``None`` for random weights (seeded by ``seed``).
        device: where the model runs.
        image_size: ``(H, W)`` images are resized to before the network (multiples of the patch size).
        seed: seed of the random initialisation when ``checkpoint`` is ``None``.
        quick_gelu: force the quick-GELU activation (default: only for OpenAI TorchScript archives).
        batch_size: prompts per text-tower batch.
        allow_torchscript: read a TorchScript checkpoint (it runs code stored in the file; trusted files only).
    """

    name = "clip"

    def __init__(
        self,
        arch: str = DEFAULT_ARCH,
        checkpoint: str | Path | None = None,
        device: torch.device | str = "cpu",
        image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
        seed: int = 0,
        quick_gelu: bool | None = None,
        batch_size: int = 64,
        allow_torchscript: bool = False,
    ) -> None:
        self.arch = resolve_arch(arch)
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.device = torch.device(device)
        self.seed = seed
        self.batch_size = batch_size
        self.model = load_clip_model(self.arch, checkpoint, self.device, seed, quick_gelu, allow_torchscript)
        self.model.eval()
        self.model.requires_grad_(False)
        visual = self.model.visual
        if not hasattr(visual, "transformer") or not hasattr(visual, "conv1"):
            raise ValueError(f"dense MaskCLIP features need an open_clip VisionTransformer; {arch} has {type(visual)}")
        if getattr(visual, "attn_pool", None) is not None or visual.proj is None:
            raise ValueError(f"{arch}: dense features need a ViT with a final projection and no attentional pooler")
        self.stride = int(visual.patch_size[0])
        self.dim = int(visual.output_dim)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.grid_size(self.image_size)  # validates divisibility
        cfg = getattr(visual, "preprocess_cfg", {}) or {}
        open_clip = import_open_clip()
        self.mean = torch.tensor(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN), device=self.device).view(3, 1, 1)
        self.std = torch.tensor(cfg.get("std", open_clip.OPENAI_DATASET_STD), device=self.device).view(3, 1, 1)
        self.tokenizer = open_clip.get_tokenizer(self.arch)
        self._identity: str | None = None

    @property
    def identity(self) -> str:
        """``clip-<arch>-<12 hex of the checkpoint's SHA-256, or random<seed>>-<H>x<W>``."""
        if self._identity is None:
            weights = f"random{self.seed}" if self.checkpoint is None else file_sha256(self.checkpoint)[:12]
            self._identity = f"clip-{self.arch}-{weights}-{self.image_size[0]}x{self.image_size[1]}"
        return self._identity

    def assert_frozen(self) -> None:
        """Raise if the model left eval mode or a parameter requires a gradient."""
        if self.model.training or any(p.requires_grad for p in self.model.parameters()):
            raise RuntimeError("the CLIP teacher must stay frozen (eval mode, no parameter requiring grad)")

    def preprocess(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``(B, H, W, 3)`` or ``(H, W, 3)`` uint8 RGB -> ``(B, 3, H', W')`` normalised float32 at ``image_size``,
        on :attr:`device` (:func:`preprocess_images`)."""
        return preprocess_images(images, self.image_size, self.mean, self.std)

    @torch.no_grad()
    def dense_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """MaskCLIP features ``(B, D, H / p, W / p)`` of preprocessed images ``(B, 3, H, W)`` (module docstring)."""
        self.assert_frozen()
        visual = self.model.visual
        x = visual.conv1(pixels.to(self.device))
        batch, width, gh, gw = x.shape
        x = x.reshape(batch, width, gh * gw).permute(0, 2, 1)
        cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(batch, -1, -1)
        x = torch.cat([cls, x], dim=1)
        x = x + interpolate_pos_embed(visual.positional_embedding, visual.grid_size, (gh, gw)).to(x.dtype)
        x = visual.ln_pre(x)
        transformer = visual.transformer
        if not transformer.batch_first:
            x = x.transpose(0, 1)
        for block in transformer.resblocks[:-1]:
            x = block(x)
        if not transformer.batch_first:
            x = x.transpose(0, 1)
        last = transformer.resblocks[-1]
        attn = last.attn
        if not isinstance(attn, torch.nn.MultiheadAttention):
            raise ValueError(
                f"{self.arch}: the last block's attention is {type(attn).__name__}, not MultiheadAttention"
            )
        w_v = attn.in_proj_weight[2 * width :]
        b_v = None if attn.in_proj_bias is None else attn.in_proj_bias[2 * width :]
        v = attn.out_proj(F.linear(last.ln_1(x), w_v, b_v))
        v = visual.ln_post(last.ls_1(v)) @ visual.proj
        return v[:, 1:].permute(0, 2, 1).reshape(batch, -1, gh, gw)

    def encode_images(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Dense features ``(B, D, h, w)`` of uint8 RGB images: :meth:`preprocess` then :meth:`dense_features`."""
        return self.dense_features(self.preprocess(images))

    @torch.no_grad()
    def _embed_prompts(self, phrase: str, prompts: Sequence[str]) -> torch.Tensor:
        """``encode_text`` of the tokenised prompts, ``(P, D)``."""
        self.assert_frozen()
        out = []
        for i in range(0, len(prompts), self.batch_size):
            tokens = self.tokenizer(list(prompts[i : i + self.batch_size])).to(self.device)
            out.append(self.model.encode_text(tokens).float())
        return torch.cat(out)
