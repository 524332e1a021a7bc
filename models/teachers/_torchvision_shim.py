"""Make ``import open_clip`` work when the installed torchvision does not match the installed torch.

torchvision wheels from PyPI are CUDA builds; next to a CPU-only torch their compiled extension fails to load,
and ``import torchvision`` then dies while registering fake kernels for ``torchvision::nms`` ("operator
torchvision::nms does not exist"). open_clip imports torchvision (for its transforms), although this package
uses none of its compiled operators: images are resized and normalised with ``torch.nn.functional``. timm (the
DINOv2 teacher's ViTs) imports torchvision likewise: :func:`import_timm`.

:func:`import_open_clip` first imports open_clip normally; only if that fails with exactly this error does it
declare the two operator schemas torchvision's Python code registers kernels for (``nms`` and ``qnms``,
signatures from torchvision's ``csrc/ops/nms.cpp``) in a ``torch.library`` fragment and import again. The
operators stay unimplemented: calling them raises, nothing computes a wrong result silently.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

import torch

_MISSING_OP = "operator torchvision::nms does not exist"
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_fragment: torch.library.Library | None = None


def _drop_partial_imports(packages: tuple[str, ...] = ("torchvision", "open_clip", "timm")) -> None:
    """Forget half-imported modules of ``packages`` (torchvision and what imports it) so the next import starts
    from scratch."""
    for name in [m for m in sys.modules if m.split(".")[0] in packages]:
        del sys.modules[name]


def schema_defined(qualified_name: str) -> bool:
    """Whether an operator schema ``namespace::name`` is registered with the dispatcher."""
    try:
        torch._C._dispatch_find_schema_or_throw(qualified_name, "")
    except RuntimeError:
        return False
    return True


def define_torchvision_op_schemas() -> bool:
    """Declare ``torchvision::nms`` and ``torchvision::qnms`` if no library defines them yet.

    Returns:
        True if the schemas were declared by this call, False if they already existed.
    """
    global _fragment
    if _fragment is not None or schema_defined("torchvision::nms"):
        return False
    _fragment = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS:
        _fragment.define(schema)
    return True


def _import_beside_torchvision(package: str) -> ModuleType:
    """Import and return ``package`` (which imports torchvision), applying the schema shim only if torchvision
    fails to load as above."""
    try:
        return importlib.import_module(package)
    except RuntimeError as error:
        if _MISSING_OP not in str(error):
            raise
    _drop_partial_imports()
    define_torchvision_op_schemas()
    return importlib.import_module(package)


def import_open_clip() -> ModuleType:
    """Import and return ``open_clip``, applying the schema shim only if torchvision fails to load as above."""
    return _import_beside_torchvision("open_clip")


def import_timm() -> ModuleType:
    """Import and return ``timm`` (the DINOv2 teacher's models), applying the schema shim only if torchvision
    fails to load as above (timm imports torchvision too)."""
    return _import_beside_torchvision("timm")
