"""Registries: name -> component, declared once, with plug-ins (docs/implementation.md#where-to-add-what).

A :class:`Registry` holds the built-in components of one kind (losses, teachers, students; the benchmark's
datasets) in declaration order, each with optional metadata (``register(name, obj, **meta)``). Where a name is
asked for, a *plug-in* may stand instead: a ``"module:object"`` string (``"my_losses:focal"``,
``"lab.teachers:DinoTeacher"``; ``object`` may be a dotted attribute path) names a component defined outside the
package, resolved by :func:`importlib.import_module` in the process that asks for it. The string is what a run's
``config.json`` records, so worker processes (a ``--jobs`` pool, ``torchrun``) resolve it again from the same
text: its module must be importable there too (installed, or on ``PYTHONPATH``).

A plug-in is held to the same contract as the built-ins: the registry's ``check`` (e.g. the loss protocol: two
tensors and keyword parameters) runs on the resolved object, and every failure (no such module, no such object,
an object of the wrong kind) is a ``ValueError`` naming the string and what went wrong. A plug-in's metadata is
read from the object's attributes of the same names (``inputs`` on a loss function, say).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

PLUGIN_SEPARATOR = ":"


class UnknownComponent(ValueError, KeyError):
    """An unknown name, or a plug-in that does not resolve or fails its registry's check: a ``ValueError`` (bad
    input, as every configuration error) that is also a ``KeyError`` (a failed look-up, as before registries)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def is_plugin(name: str) -> bool:
    """Whether ``name`` names a plug-in (``"module:object"``) rather than a registered component."""
    return PLUGIN_SEPARATOR in name


def plugin_label(name: str) -> str:
    """A folder-safe short name of a component: a registered name as it is, a plug-in's object name (the last
    dotted part after ``:``; ``"my_losses:focal"`` -> ``"focal"``)."""
    return name.rpartition(PLUGIN_SEPARATOR)[2].rpartition(".")[2] if is_plugin(name) else name


def import_object(spec: str, kind: str = "component") -> Any:
    """The object a ``"module:object"`` string names, imported with :func:`importlib.import_module`.

    Raises:
        ValueError: the string is not of the form ``module:object``, the module does not import (the import
            error is quoted), or it has no such object.
    """
    module_name, _, attribute = spec.partition(PLUGIN_SEPARATOR)
    if not module_name or not attribute or PLUGIN_SEPARATOR in attribute:
        raise UnknownComponent(f"plug-in {kind} {spec!r} must be written 'module:object' (e.g. 'my_module:my_{kind}')")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # any failure while importing the user's module
        raise UnknownComponent(
            f"plug-in {kind} {spec!r}: module {module_name!r} does not import ({type(exc).__name__}: {exc}); "
            "it must be importable in every process of the run (installed, or on PYTHONPATH)"
        ) from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise UnknownComponent(f"plug-in {kind} {spec!r}: module {module_name!r} has no object {attribute!r}")
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Components of one ``kind`` by name, in declaration order, each with its metadata; plug-ins by
    ``"module:object"`` (module docstring).

    Args:
        kind: what the components are (``"loss"``, ``"teacher"``, ...), used in error messages.
        check: validates a component (built-in when registered, plug-in when resolved): returns what is wrong
            with it (``""`` or None when nothing is). Called with the name and the object.
        plural: the plural of ``kind`` in messages (default ``kind + "s"``).
    """

    def __init__(
        self, kind: str, check: Callable[[str, Any], str | None] | None = None, plural: str | None = None
    ) -> None:
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self._check = check
        self._entries: dict[str, tuple[T, dict[str, Any]]] = {}

    def register(self, name: str, obj: T, **meta: Any) -> T:
        """Register ``obj`` under ``name`` with its metadata; returns ``obj``.

        Raises:
            ValueError: the name is taken, holds ``:`` (the plug-in separator) or the object fails the check.
        """
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered already")
        if not name or is_plugin(name):
            raise ValueError(f"a registered {self.kind} name must be non-empty and without ':'; got {name!r}")
        problem = self._check(name, obj) if self._check else None
        if problem:
            raise ValueError(f"{self.kind} {name!r}: {problem}")
        self._entries[name] = (obj, dict(meta))
        return obj

    def unregister(self, name: str) -> None:
        """Remove the registered ``name`` (for tests that register a component for a while)."""
        del self._entries[name]

    def names(self) -> tuple[str, ...]:
        """The registered names, in declaration order."""
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def items(self) -> list[tuple[str, T]]:
        """``(name, component)`` of every registered component, in declaration order."""
        return [(name, obj) for name, (obj, _) in self._entries.items()]

    def get(self, name: str) -> T:
        """The component ``name``: a registered one, or the plug-in a ``"module:object"`` string names, checked.

        Raises:
            UnknownComponent: (a ``ValueError``) an unknown name (the valid names are listed), or a plug-in that
                does not resolve or fails the check (the string and the reason are named).
        """
        if name in self._entries:
            return self._entries[name][0]
        if not isinstance(name, str) or not is_plugin(name):
            raise UnknownComponent(
                f"unknown {self.kind} {name!r}; valid {self.plural}: {', '.join(self._entries)} "
                f"(or a plug-in 'module:object')"
            )
        obj = import_object(name, self.kind)
        problem = self._check(name, obj) if self._check else None
        if problem:
            raise UnknownComponent(f"plug-in {self.kind} {name!r}: {problem}")
        return obj

    def meta(self, name: str, key: str, default: Any = None) -> Any:
        """Metadata ``key`` of component ``name``: the registered value, or for a plug-in the object's attribute
        ``key``; ``default`` when neither is set."""
        if name in self._entries:
            return self._entries[name][1].get(key, default)
        return getattr(self.get(name), key, default)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"
