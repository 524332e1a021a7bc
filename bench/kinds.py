"""Suite kinds: how a run of each kind is resolved (checked, completed with its defaults) and executed, and how
the runs of a suite are named. The run core's entry for ``python -m bench.run`` and the study tools.

A *resolver* ``(run, workspace) -> resolved configuration`` raises ``ValueError`` on a bad value; an *executor*
``(resolved, run_dir, device, progress, workers, workspace) -> metrics`` runs (or reads, when finished) one run
into its folder, with the process's :class:`bench.workspace.Workspace`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.config import configuration_identity
from bench.distill import execute_distill, resolve_distill
from bench.suites import run_names
from bench.toy.runner import execute_toy, resolve_toy
from bench.workspace import Workspace
from geomstruct.run_folder import flat_config

RESOLVERS: dict[str, Callable[..., dict[str, Any]]] = {"toy": resolve_toy, "distill": resolve_distill}
EXECUTORS: dict[str, Callable[..., dict[str, Any]]] = {"toy": execute_toy, "distill": execute_distill}


def name_runs(
    kind: str, runs: list[dict[str, Any]], source: Path | None = None, workspace: Workspace | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """Every run of a suite of kind ``kind`` as ``(name, resolved configuration)``: resolved (:data:`RESOLVERS`:
    every value checked; a CLIP checkpoint hashed once per ``workspace``), then named from the resolved values
    (:func:`bench.suites.run_names`: a field set to its default value is not varied).

    Raises:
        ValueError: a bad value (naming the suite file ``source``, the run and the field), or two runs of one
            resolved configuration (:func:`bench.config.configuration_identity`: loss parameters completed with
            the loss's defaults), naming both.
    """
    resolved = []
    for i, run in enumerate(runs):
        try:
            resolved.append(RESOLVERS[kind](run, workspace))
        except ValueError as exc:
            loss = f"{run.get('loss')} {run.get('loss_params') or ''}".strip()
            where = f"{source}: " if source is not None else ""
            raise ValueError(f"{where}run {i + 1} ({loss}, seed {run.get('seed')}): {exc}") from None
    try:
        flat = [flat_config(r) for r in resolved]  # run names are made of flat keys (LEGACY_KEYS)
        names = run_names(runs, flat, [configuration_identity(r) for r in resolved])
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}" if source is not None else str(exc)) from None
    return list(zip(names, resolved, strict=True))
