"""Which open_clip image towers the CLIP teacher's MaskCLIP recipe reads: every registered architecture sorted
into accepted and refused (by name, with the reason) from its model config alone; a small custom ViT config,
randomly initialised by open_clip, through a real open_clip state-dict file; refusals at config load."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from bench.config import DistillConfig, clip_model_config
from models.teachers._torchvision_shim import import_open_clip
from models.teachers.clip import CLIPTeacher, maskclip_problem

SMALL_VIT = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 48, "patch_size": 8, "head_width": 24, "ls_init_value": 0.1},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 24, "heads": 2, "layers": 1},
}
"""A 2-block ViT with layer scale (like ViT-M-16-alt) and a 1-layer text tower."""

REFUSED = {
    "RN50": "ModifiedResNet",
    "RN50x4-quickgelu": "ModifiedResNet",
    "convnext_tiny": "timm model convnext_tiny (a convolutional network",
    "swin_base_patch4_window7_224": "windowed attention",
    "ViT-B-16-SigLIP": "timm model vit_base_patch16_siglip_224",
    "EVA02-B-16": "timm model eva02_base_patch16_clip_224",
    "coca_ViT-B-32": "attentional pooler",
    "ViT-L-14-CLIPA": "pools the tokens (avg",
    "xlm-roberta-base-ViT-B-32": "Hugging Face xlm-roberta-base",
}
ACCEPTED = ("ViT-B-16", "ViT-B-32", "ViT-L-14", "ViT-H-14", "ViT-S-16", "ViT-M-16-alt", "ViT-B-16-quickgelu")


@pytest.mark.parametrize("arch", sorted(REFUSED))
def test_towers_the_recipe_cannot_read_are_refused_by_name_with_the_reason(arch):
    problem = maskclip_problem(arch, clip_model_config(arch))
    assert problem is not None and f"{arch!r}" in problem and REFUSED[arch] in problem


@pytest.mark.parametrize("arch", ACCEPTED)
def test_open_clip_vit_towers_are_accepted(arch):
    assert maskclip_problem(arch, clip_model_config(arch)) is None


def test_every_registered_architecture_is_sorted():
    """Each of open_clip's architectures is accepted (a plain open_clip ViT) or refused with a reason."""
    open_clip = import_open_clip()
    accepted = [a for a in open_clip.list_models() if maskclip_problem(a, open_clip.get_model_config(a)) is None]
    assert set(ACCEPTED) <= set(accepted)
    assert not set(REFUSED) & set(accepted)
    for arch in accepted:  # a plain VisionTransformer: no timm trunk, no ResNet, class token pooled
        vision = open_clip.get_model_config(arch)["vision_cfg"]
        assert "timm_model_name" not in vision and not isinstance(vision.get("layers"), list), arch


def test_a_custom_config_builds_and_reads_a_real_open_clip_state_dict(tmp_path):
    config = tmp_path / "small-ViT.json"
    config.write_text(json.dumps(SMALL_VIT))
    source = CLIPTeacher(str(config), image_size=(32, 48), seed=7)  # open_clip's own random initialisation
    weights = tmp_path / "small.pt"
    torch.save(source.model.state_dict(), weights)  # a real open_clip state dict file
    loaded = CLIPTeacher(str(config), checkpoint=weights, image_size=(32, 48))
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 48, 3), dtype=np.uint8)
    torch.testing.assert_close(loaded.encode_images(images), source.encode_images(images))
    assert loaded.dim == 24 and loaded.identity != source.identity
    flat = {"loss": "similarity", "seed": 0, "teacher": "clip", "clip_arch": str(config)}
    cfg = DistillConfig(**flat, clip_checkpoint=str(weights))
    assert cfg.student.out_dim == 24  # out_dim unset: the teacher's, from the config


@pytest.mark.parametrize(
    ("vision", "reason"),
    [
        ({"layers": [1, 1, 1, 1], "width": 16}, "ModifiedResNet"),
        ({"qk_norm": True}, "custom attention (qk_norm)"),
        ({"timm_model_name": "convnext_tiny"}, "timm model convnext_tiny"),
    ],
)
def test_a_refused_tower_is_refused_at_config_load_and_by_the_teacher(tmp_path, vision, reason):
    config = tmp_path / "odd.json"
    config.write_text(json.dumps({**SMALL_VIT, "vision_cfg": {**SMALL_VIT["vision_cfg"], **vision}}))
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"never read")
    flat = {"loss": "similarity", "seed": 0, "teacher": "clip", "clip_arch": str(config), "out_dim": 24}
    expected = f"refused for MaskCLIP dense features.*{re.escape(reason)}.*Accepted: open_clip's own"
    with pytest.raises(ValueError, match=expected):
        DistillConfig(**flat, clip_checkpoint=str(weights))
    with pytest.raises(ValueError, match=re.escape(reason)):
        CLIPTeacher(str(config))


def test_a_registered_refused_architecture_is_refused_at_config_load_before_its_checkpoint_is_read(tmp_path):
    with pytest.raises(ValueError, match="'RN50' is refused.*ModifiedResNet"):
        DistillConfig(loss="similarity", seed=0, teacher="clip", clip_arch="RN50", clip_checkpoint="/no/such.pt")
