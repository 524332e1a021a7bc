"""The plain-text tables ``python -m bench.run`` prints at the end of a suite: every run, and the seed means."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from geomstruct.run_folder import PROTOCOLS

MIOU_KEYS = PROTOCOLS
"""The protocols whose mIoU the tables show, in the order of :data:`_MIOU_HEADS`."""
_MIOU_HEADS = ("zs", "lin", "fs", "ood")


def _miou_cell(metrics: dict[str, Any], key: str) -> str:
    value = (metrics.get(key) or {}).get("miou")
    return f"{100 * value:6.1f}" if isinstance(value, (int, float)) else f"{'-':>6}"


def _number(value: Any, spec: str) -> str:
    """``value`` formatted with ``spec``, or a dash when it is missing (e.g. T without labels)."""
    return format(value, spec) if isinstance(value, (int, float)) else f"{'-':>7}"


def results_table(rows: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """A plain-text table of every run: geometry (U, T, G, structural gap to the 2D side) and mIoUs (%)."""
    src = "2d" if any(m.get("kind") == "distill" for _, m in rows) else "src"
    header = f"{'run':<44} {'U':>7} {'T':>7} {'G':>7} {'dU':>7} {'dT':>7} {'S':>7} {'U_' + src:>7} {'T_' + src:>7}"
    if src == "2d":
        header += "".join(f" {h:>6}" for h in _MIOU_HEADS)
    lines = [header, "-" * len(header)]
    for name, m in rows:
        g = m["geometry"]
        signed = ("dU", "dT")
        line = f"{name:<44}" + "".join(
            f" {_number(g.get(k), '+7.3f' if k in signed else '7.3f')}"
            for k in ("U", "T", "G", "dU", "dT", "S", "U_2d", "T_2d")
        )
        if src == "2d":
            line += "".join(f" {_miou_cell(m, k)}" for k in MIOU_KEYS)
        lines.append(line)
    return "\n".join(lines)


SEED_TABLE_KEYS = ("U", "T", "G", "S", *MIOU_KEYS)


def seed_table(rows: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """Mean ± sample standard deviation over seeds of every configuration run with more than one seed.

    Runs are grouped by their name without the ``-s<seed>`` suffix; U, T, G, S from ``geometry``, the mIoUs in %.
    Returns an empty string when no configuration has several seeds.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for name, m in rows:
        groups.setdefault(name.rsplit("-s", 1)[0], []).append(m)
    header = f"{'configuration (seeds)':<36}" + "".join(f" {k:>15}" for k in ("U", "T", "G", "S", *_MIOU_HEADS))
    lines = [header, "-" * len(header)]
    for config, ms in groups.items():
        if len(ms) < 2:
            continue
        cells = []
        for key in SEED_TABLE_KEYS:
            scale = 100.0 if key in MIOU_KEYS else 1.0
            src = [m.get(key) or {} for m in ms] if key in MIOU_KEYS else [m["geometry"] for m in ms]
            values = [v.get("miou" if key in MIOU_KEYS else key) for v in src]
            if any(not isinstance(v, (int, float)) for v in values):
                cells.append(f"{'-':>15}")
                continue
            arr = scale * np.asarray(values, dtype=np.float64)
            cells.append(f"{arr.mean():8.3f} ± {arr.std(ddof=1):<5.3f}")
        lines.append(f"{config + f' ({len(ms)})':<36}" + "".join(f" {c:>15}" for c in cells))
    return "\n".join(lines) if len(lines) > 2 else ""
