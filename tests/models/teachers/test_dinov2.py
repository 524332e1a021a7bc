"""The DINOv2 teacher: a tiny DINOv2-shaped timm ViT with random weights, through the registry; its checkpoint
formats (timm state dict as .pth and .safetensors, facebookresearch/dinov2's own layout, with and without
registers); its options; no text tower."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.teachers import TEACHERS, build_teacher
from models.teachers.dinov2 import DINOv2Options, DINOv2Teacher

TINY = {"depth": 2, "embed_dim": 48, "num_heads": 2, "image_size": (28, 56)}
"""A 2-block DINOv2-shaped ViT (patch 14, layer scale), 2 x 4 patches."""


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(2, 40, 70, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny() -> DINOv2Teacher:
    teacher = build_teacher("dinov2", **TINY)
    assert isinstance(teacher, DINOv2Teacher)
    return teacher


def test_registered_with_its_options():
    assert TEACHERS.get("dinov2") is DINOv2Teacher
    assert TEACHERS.meta("dinov2", "options") is DINOv2Options
    assert DINOv2Options().dim() == 384 and DINOv2Options(arch="vit_large_patch14_dinov2").dim() == 1024
    assert DINOv2Options(arch="dinov2_vitb14_reg").arch == "vit_base_patch14_reg4_dinov2"  # torch.hub alias
    assert DINOv2Options(**TINY).dim() == 48
    with pytest.raises(ValueError, match="unknown DINOv2 architecture 'vit_huge'.*vit_small_patch14_dinov2"):
        DINOv2Options(arch="vit_huge")
    with pytest.raises(ValueError, match="multiples of 14"):
        DINOv2Options(image_size=(224, 416))


def test_dense_features_are_the_last_blocks_patch_tokens(tiny, images):
    assert (tiny.dim, tiny.stride, tiny.has_text) == (48, 14, False)
    feats = tiny.encode_images(images)
    assert feats.shape == (2, 48, 2, 4) and feats.dtype == torch.float32
    x = tiny.preprocess(images)
    tokens = tiny.model.forward_features(x)  # after the final LayerNorm: the class token, then the patches
    patches = tokens[:, tiny.model.num_prefix_tokens :]
    normed = build_teacher("dinov2", **TINY, final_norm=True).encode_images(images)
    torch.testing.assert_close(normed, patches.permute(0, 2, 1).reshape(2, 48, 2, 4))
    torch.testing.assert_close(tiny.model.norm(feats.permute(0, 2, 3, 1)).permute(0, 3, 1, 2), normed)
    unit = build_teacher("dinov2", **TINY, l2_normalize=True).encode_images(images)
    torch.testing.assert_close(unit, F.normalize(feats, dim=1))


def test_preprocessing_is_imagenets_and_the_cpu_half_has_no_weights(tiny, images):
    prepared = tiny.preprocessor().images(images)
    assert prepared.shape == (2, 3, 28, 56)
    assert tiny.preprocessor().mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    torch.testing.assert_close(tiny.encode(prepared), tiny.encode_images(images))


def test_random_weights_are_seeded_and_named(tiny, images):
    again = build_teacher("dinov2", **TINY)
    torch.testing.assert_close(again.encode_images(images), tiny.encode_images(images))
    other = build_teacher("dinov2", **TINY, seed=1)
    assert not torch.allclose(other.encode_images(images), tiny.encode_images(images))
    assert tiny.identity == "dinov2-vit_small_patch14_dinov2-d2w48h2-random0-28x56-prenorm"
    assert other.identity != tiny.identity
    assert build_teacher("dinov2", **TINY, l2_normalize=True).identity.endswith("-prenorm-l2")


def test_no_text_tower(tiny):
    with pytest.raises(ValueError, match="no text tower.*linear_probe, few_shot, few_shot_ood"):
        tiny.text_embeddings(["car"])


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_timm_state_dict_file_loads(tmp_path, images, suffix):
    source = build_teacher("dinov2", **TINY, seed=3)
    path = tmp_path / f"dinov2{suffix}"
    state = {k: v.contiguous() for k, v in source.model.state_dict().items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    loaded = build_teacher("dinov2", **TINY, checkpoint=str(path))
    torch.testing.assert_close(loaded.encode_images(images), source.encode_images(images))
    assert "-random" not in loaded.identity and loaded.identity.startswith("dinov2-vit_small_patch14_dinov2-d2w48h2-")


def _official(state: dict[str, torch.Tensor], registers: bool) -> dict[str, torch.Tensor]:
    """facebookresearch/dinov2's layout of a timm DINOv2 state dict: ``mask_token`` added; with registers,
    ``register_tokens`` and a positional embedding that covers the class token (timm folds it into cls_token)."""
    out = dict(state)
    width = state["cls_token"].shape[-1]
    out["mask_token"] = torch.zeros(1, width)
    if registers:
        out["register_tokens"] = out.pop("reg_token")
        cls_position = torch.randn(1, 1, width)
        out["pos_embed"] = torch.cat([cls_position, state["pos_embed"]], dim=1)
        out["cls_token"] = state["cls_token"] - cls_position
    return out


@pytest.mark.parametrize("arch", ["vit_small_patch14_dinov2", "vit_small_patch14_reg4_dinov2"])
def test_the_official_dinov2_layout_is_mapped(tmp_path, images, arch):
    source = build_teacher("dinov2", **TINY, arch=arch, seed=5)
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(_official(source.model.state_dict(), registers="reg4" in arch), path)
    loaded = build_teacher("dinov2", **TINY, arch=arch, checkpoint=str(path))
    torch.testing.assert_close(loaded.encode_images(images), source.encode_images(images), atol=1e-5, rtol=1e-5)


def test_another_layout_is_refused_with_the_keys_and_the_accepted_formats(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"backbone.conv.weight": torch.zeros(3)}, path)
    with pytest.raises(
        ValueError, match=r"missing keys: .*1 unexpected keys: backbone.conv.weight\).*accepted: a timm"
    ):
        build_teacher("dinov2", **TINY, checkpoint=str(path))
    wider = tmp_path / "wider.pt"
    torch.save(build_teacher("dinov2", **{**TINY, "embed_dim": 64}).model.state_dict(), wider)
    with pytest.raises(ValueError, match="keys of the wrong shape: "):
        build_teacher("dinov2", **TINY, checkpoint=str(wider))
