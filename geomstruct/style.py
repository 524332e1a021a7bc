"""How the report shows each loss: its place in tables and legends and its colour and marker, declared once.

The losses themselves are registered in ``models/losses.py`` (:data:`models.losses.LOSSES`, whose order this
follows; ``tests/models/test_registries.py`` checks that the two agree); ``geomstruct`` reads run folders and
imports nothing of ``models``, so the display side lives here. A loss without an entry, e.g. a plug-in
``"module:object"`` (docs/implementation.md#plug-ins), sorts after the listed ones (by label) and takes a colour and
marker of :data:`PLUGIN_COLOURS` / :data:`PLUGIN_MARKERS` picked by a stable hash of its name (CRC-32), the same in
every report; giving it an entry here fixes its look.
"""

from __future__ import annotations

import zlib

LOSS_STYLES: dict[str, tuple[str, str]] = {
    "contrastive": ("#d62728", "o"),
    "similarity": ("#1f77b4", "s"),
    "relational": ("#2ca02c", "D"),
    "relational_cross": ("#9467bd", "^"),
    "relational_intra": ("#ff7f0e", "v"),
    "regression": ("#17becf", "P"),
    "slidr": ("#8c564b", "*"),
    "st_slidr": ("#e377c2", "X"),
}
"""Loss name -> ``(colour, matplotlib marker)``, in the order of tables and legends."""
LOSS_ORDER = tuple(LOSS_STYLES)
"""The losses in the order of tables and legends."""

PLUGIN_COLOURS = ("#bcbd22", "#7f7f7f", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd")
"""Colours of losses without an entry in :data:`LOSS_STYLES` (none of theirs)."""
PLUGIN_MARKERS = ("h", "p", "8", "<", ">", "d")
"""Markers of losses without an entry in :data:`LOSS_STYLES`."""


def loss_style(loss: str) -> tuple[str, str]:
    """``(colour, marker)`` of the loss ``loss``: its :data:`LOSS_STYLES` entry, else one of the plug-in palette
    chosen by ``crc32(loss)`` (module docstring)."""
    if loss in LOSS_STYLES:
        return LOSS_STYLES[loss]
    code = zlib.crc32(loss.encode("utf-8"))
    return PLUGIN_COLOURS[code % len(PLUGIN_COLOURS)], PLUGIN_MARKERS[code % len(PLUGIN_MARKERS)]


def loss_colour(loss: str) -> str:
    """The colour of the loss ``loss`` (:func:`loss_style`)."""
    return loss_style(loss)[0]


def loss_rank(label: str) -> tuple[int, str]:
    """Sort key of a loss label (``"<loss> <parameters>"``): the loss's place in :data:`LOSS_ORDER` (after every
    listed loss when it has none), then the label (so temperatures sort together)."""
    name = label.split(" ")[0]
    return (LOSS_ORDER.index(name) if name in LOSS_ORDER else len(LOSS_ORDER), label)
