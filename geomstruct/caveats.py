"""Caveats printed right under the claims table of a report: collapsed configurations (from the claims), recipes
selected on the edge of the tuning grid (from a recipes file of ``bench.study.tune``), and free-text notes such as an
unmet target ("supervised ceiling 41% < 50% target").

The recipes file is the JSON ``python -m bench.study.tune`` writes: ``suite``, ``recipe_fields``, ``selected``
(configuration -> ``{"recipe": {field: value}, ...}``) and ``grid`` (entries with ``configuration`` and
``recipe``); an ``edges`` list of notes, when the file has one, is used as written. Otherwise the edge notes are
computed here by the rule of ``bench/study/tune.py`` ``edge_selections`` (geomstruct does not import bench): a
selected recipe is on the edge when, for a numeric field, its value is the smallest or the largest of at least
three values tried for that configuration with the other fields equal.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geomstruct.claims_v2 import ClaimV2


def edge_selections(result: dict[str, Any]) -> list[str]:
    """The configurations of a recipes file whose selected recipe lies on the edge of the grid (module docstring),
    as ``"<configuration>: <field> <value> is the largest value tried"``."""
    fields = result["recipe_fields"]
    notes = []
    for configuration, chosen in result["selected"].items():
        recipe = chosen["recipe"]
        for field in fields:
            value = recipe[field]
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            tried = sorted(
                {
                    entry["recipe"][field]
                    for entry in result["grid"]
                    if entry["configuration"] == configuration
                    and all(entry["recipe"][f] == recipe[f] for f in fields if f != field)
                }
            )
            if len(tried) >= 3 and value in (tried[0], tried[-1]):
                side = "smallest" if value == tried[0] else "largest"
                notes.append(f"{configuration}: {field} {value} is the {side} value tried")
    return notes


def read_recipes(path: Path) -> dict[str, Any]:
    """The content of a recipes file of ``bench.study.tune``.

    Raises:
        ValueError: naming the file, when it cannot be read or is not such a file.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"--recipes {path}: unreadable ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("selected"), dict):
        raise ValueError(f"--recipes {path}: not a recipes file of bench.study.tune (no 'selected' object)")
    return data


def grid_edge_caveats(path: Path) -> list[str]:
    """One caveat per selection on the edge of the tuning grid of the recipes file ``path`` (its ``edges`` when it
    has them), or one saying that none is; ValueError naming the file when it is not a recipes file."""
    data = read_recipes(path)
    edges = data.get("edges")
    if not (isinstance(edges, list) and all(isinstance(e, str) for e in edges)):
        try:
            edges = edge_selections(data)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(
                f"--recipes {path}: not a recipes file of bench.study.tune (no {exc!s} where expected)"
            ) from None
    where = f"tuning suite {data.get('suite', '?')}, {Path(path).as_posix()}"
    if not edges:
        return [f"grid edge: no selected recipe is on the edge of the tuning grid ({where})"]
    return [f"grid edge: {note} ({where}); a wider grid might score higher" for note in edges]


def collapse_caveats(claims: Sequence[ClaimV2]) -> list[str]:
    """One caveat per collapsed configuration among those the claims involve: why it counts as collapsed and which
    claims name it in their verdict."""
    found: dict[str, tuple[str, list[int]]] = {}
    for claim in claims:
        for configuration in claim.configurations:
            if configuration.collapsed:
                reason, numbers = found.setdefault(configuration.name, (configuration.collapse_reason, []))
                if claim.number not in numbers:
                    numbers.append(claim.number)
    return [
        f"collapse: {name} ({reason}); claim{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))} "
        "name it in the verdict"
        for name, (reason, numbers) in found.items()
    ]
