"""Shared fixtures of the teacher tests: no network, a tiny open_clip ViT, one synthetic scene."""

from __future__ import annotations

import json
import os
import socket

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # prove that nothing reaches the Hugging Face hub

TINY_ARCH = "tiny-test-ViT"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
"""A 2-block ViT with patch size 8 and a 1-layer text tower, using CLIP's bundled BPE tokenizer."""


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="session")
def tiny_arch(tmp_path_factory) -> str:
    """Register :data:`TINY_CONFIG` with open_clip under :data:`TINY_ARCH`."""
    from models.teachers._torchvision_shim import import_open_clip

    folder = tmp_path_factory.mktemp("open_clip_configs")
    (folder / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_CONFIG))
    import_open_clip().add_model_config(folder)
    return TINY_ARCH


@pytest.fixture(scope="session")
def scene():
    """Synthetic scene 0 (six 416 x 224 cameras)."""
    from bench.data.synthetic import generate_scene

    return generate_scene(0)
