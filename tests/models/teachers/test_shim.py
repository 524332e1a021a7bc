"""The torchvision operator-schema shim: applied only when importing open_clip fails for that reason."""

from __future__ import annotations

import importlib

import pytest

from models.teachers import _torchvision_shim as shim


def test_open_clip_imports_and_nms_schema_exists():
    open_clip = shim.import_open_clip()
    assert callable(open_clip.create_model)
    assert shim.schema_defined("torchvision::nms")
    assert not shim.schema_defined("torchvision::no_such_operator")
    assert shim.define_torchvision_op_schemas() is False  # never declared twice


def test_other_import_errors_are_not_swallowed(monkeypatch):
    def broken(name):
        raise RuntimeError("something else went wrong")

    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(RuntimeError, match="something else"):
        shim.import_open_clip()


def test_shim_retries_after_the_missing_operator_error(monkeypatch):
    calls = []
    real = importlib.import_module

    def flaky(name):
        calls.append(name)
        if len(calls) == 1:
            raise RuntimeError("operator torchvision::nms does not exist")
        return real(name)

    monkeypatch.setattr(importlib, "import_module", flaky)
    monkeypatch.setattr(shim, "_drop_partial_imports", lambda: None)
    assert shim.import_open_clip().__name__ == "open_clip"
    assert calls == ["open_clip", "open_clip"]
