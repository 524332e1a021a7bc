"""Shared fixtures of the teacher tests: no network, one synthetic scene (the tiny open_clip ViT is in
tests/conftest.py)."""

from __future__ import annotations

import os
import socket

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # prove that nothing reaches the Hugging Face hub


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="session")
def scene():
    """Synthetic scene 0 (six 416 x 224 cameras)."""
    from bench.data.synthetic import generate_scene

    return generate_scene(0)
