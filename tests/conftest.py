"""Fixtures shared by every test folder: a tiny open_clip ViT registered under a test name."""

from __future__ import annotations

import json

import pytest

TINY_ARCH = "tiny-test-ViT"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
"""A 2-block ViT with patch size 8 and a 1-layer text tower, using CLIP's bundled BPE tokenizer."""


@pytest.fixture(scope="session")
def tiny_arch(tmp_path_factory) -> str:
    """Register :data:`TINY_CONFIG` with open_clip under :data:`TINY_ARCH`."""
    from models.teachers._torchvision_shim import import_open_clip

    folder = tmp_path_factory.mktemp("open_clip_configs")
    (folder / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_CONFIG))
    import_open_clip().add_model_config(folder)
    return TINY_ARCH
