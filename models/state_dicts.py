"""Comparing the state dict of a weight file with the one a model expects: the one place that says which keys do
not fit (missing, unexpected, of the wrong shape), for every loader of published or user weights (teachers,
students, checkpoint layouts)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_LISTED = 20
"""Keys listed per kind of mismatch in :meth:`StateMismatch.describe` (then a count of the rest)."""

Shape = tuple[int, ...]


def _shape(value: Any) -> Shape:
    """The shape of a tensor or array, or of a shape given as such (a tuple or ``torch.Size``)."""
    return tuple(getattr(value, "shape", value))


@dataclass(frozen=True)
class StateMismatch:
    """What keeps a state dict from fitting: ``missing`` (expected, absent), ``unexpected`` (present, not expected)
    and ``shapes`` (key -> (shape in the file, shape expected)), each sorted by key. False when everything fits."""

    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    shapes: dict[str, tuple[Shape, Shape]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)

    def describe(self, limit: int = MAX_LISTED) -> str:
        """``"2 missing keys: a, b; 1 unexpected keys: c; 1 keys of the wrong shape: d [3, 8] in the file, [6, 8]
        expected"``: every kind present, at most ``limit`` keys of each (then how many more)."""

        def listed(items: list[str]) -> str:
            more = f", ... and {len(items) - limit} more" if len(items) > limit else ""
            return ", ".join(items[:limit]) + more

        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing keys: {listed(list(self.missing))}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected keys: {listed(list(self.unexpected))}")
        if self.shapes:
            shown = [f"{k} {list(got)} in the file, {list(want)} expected" for k, (got, want) in self.shapes.items()]
            parts.append(f"{len(self.shapes)} keys of the wrong shape: {listed(shown)}")
        return "; ".join(parts)


def compare_state(
    expected: Mapping[str, Any], state: Mapping[str, Any], optional: Collection[str] = ()
) -> StateMismatch:
    """Compare ``state`` (a loaded state dict) with ``expected`` (key -> tensor or shape a model expects); keys in
    ``optional`` may be absent (e.g. batch norm's ``num_batches_tracked``)."""
    missing = tuple(sorted(k for k in expected if k not in state and k not in optional))
    unexpected = tuple(sorted(k for k in state if k not in expected))
    shapes = {
        k: (_shape(state[k]), _shape(expected[k]))
        for k in sorted(expected.keys() & state.keys())
        if _shape(state[k]) != _shape(expected[k])
    }
    return StateMismatch(missing, unexpected, shapes)
