"""Suites as data: each YAML file in this folder is a suite, a grid of runs (docs/usage.md#suites).

A suite file holds ``name``, ``kind`` (the trainer that runs it), ``description``, ``defaults`` (the parameters
shared by every run) and ``grid``: every combination of the listed values is one run (``grid`` may also be a list
of such grids, whose runs are concatenated). A ``loss`` entry is a name
or ``{name: ..., params: {...}}``. A user suite is any YAML file of the same form, passed by path, in UTF-8; its
``name`` is a plain folder name (the default output folder is ``runs/<name>``). Kinds: ``toy`` (the toy
experiment, :mod:`bench.toy`) and ``distill`` (image-to-lidar distillation, :mod:`bench.distill`).

A distill suite writes a field by its flat key (``steps``, ``clip_arch``, ``lp_steps``) or in its section
(``distillation: {steps: 300}``, ``teacher: {name: clip, arch: ViT-B-16, checkpoint: FILE}``, or a dotted key
``distillation.steps`` in a grid); the runs are held under flat keys, mapped by the one table
:data:`geomstruct.run_folder.LEGACY_KEYS` (:func:`geomstruct.run_folder.update_flat`), so the two forms are one
configuration with one name (docs/usage.md#the-configuration-in-sections).

Every run is named by its loss, the loss parameters it lists, every field whose resolved value differs between
the runs (a field set to its default value is not varied) and its seed (:func:`run_names`); two runs of one
resolved configuration are an error naming both (``bench.run`` resolves and names every run before any starts).

``defaults_from: SUITE`` (a shipped suite's name, or a path relative to the suite file) starts the defaults from
that suite's ``defaults`` (recursively), which the file's own ``defaults`` then update: a tuning or checking suite
stays the same study as the suite it serves, changing only what it lists.

``recipes: FILE`` (a path relative to the suite file) gives every run the optimisation recipe selected for its
loss configuration by the tuning suite (:mod:`bench.study.tune`): the fields of the file's ``selected`` entry for the
run's ``loss`` and ``loss_params`` (e.g. ``optimizer``, ``lr``) replace the defaults; a value the grid lists
explicitly still wins. A loss configuration the file does not hold is an error naming the file and the command
that regenerates it.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from geomstruct.run_folder import LEGACY_TEACHER, LEGACY_TEACHER_OPTIONS, TEACHER_OPTIONS_KEY, update_flat
from models.registry import plugin_label

SUITE_DIR = Path(__file__).resolve().parent
KINDS = ("toy", "distill")


def available_suites() -> list[str]:
    """Names of the suites shipped with the package."""
    return sorted(p.stem for p in SUITE_DIR.glob("*.yaml"))


@dataclass(frozen=True)
class Suite:
    """A parsed suite: its name, kind, description, shared defaults and the expanded list of runs."""

    name: str
    kind: str
    description: str
    source: Path
    runs: list[dict[str, Any]] = field(default_factory=list)


def _loss_entry(entry: Any, source: Path) -> dict[str, Any]:
    if isinstance(entry, str):
        return {"name": entry, "params": {}}
    if isinstance(entry, dict) and isinstance(entry.get("name"), str):
        return {"name": entry["name"], "params": dict(entry.get("params") or {})}
    raise ValueError(f"{source}: a loss must be a name or {{name: ..., params: {{...}}}}; got {entry!r}")


NAMED_KEYS = ("setup", "loss", "loss_params", "seed")
"""Fields always in a run's name (the others only when the suite varies them)."""


def _component(key: str, value: Any) -> str:
    """``key`` and ``value`` as a readable piece of a folder name (``lr0.05``, ``planes16-32``)."""
    if isinstance(value, (list, tuple)):
        text = "-".join(str(v) for v in value)
    elif isinstance(value, dict):
        text = "_".join(f"{k}{_component('', v)}" for k, v in sorted(value.items()))
    else:
        text = str(value)
    return f"{key}{text}"


PLUGIN_FIELDS = ("teacher", "student", "dataset", "ood_dataset")
"""Fields besides ``loss`` that may name a plug-in ``"module:object"`` (:mod:`models.registry`)."""


def _plugin_free(key: str, value: Any) -> Any:
    """A plug-in name ``"module:object"`` of a :data:`PLUGIN_FIELDS` field as its object name (a folder-safe
    piece); any other value as it is."""
    return plugin_label(value) if key in PLUGIN_FIELDS and isinstance(value, str) else value


def _check_component(piece: str) -> str:
    if not piece or "/" in piece or "\\" in piece or ".." in piece or piece.startswith(".") or "\0" in piece:
        raise ValueError(f"run name piece {piece!r} would not be a plain folder name (no '/', '\\', '..')")
    return piece


def run_name(run: dict[str, Any], varied: tuple[str, ...] = ()) -> str:
    """A readable folder name: set-up, loss, its parameters, every field in ``varied`` (the suite's grid varies
    it) and the seed, e.g. ``1cluster-contrastive-tau0.07-s0`` or ``similarity-lr0.05-s0``. A plug-in loss
    ``"module:object"`` is named by its object (:func:`models.registry.plugin_label`: ``my_losses:focal`` ->
    ``focal-s0``); a varied plug-in teacher, student or dataset likewise.

    Raises:
        ValueError: a piece holding a path separator or ``..`` (a name from a suite file must stay inside the
            output folder).
    """
    parts = [str(run["setup"])] if "setup" in run else []
    parts.append(plugin_label(str(run["loss"])))
    parts += [_component(k, v) for k, v in sorted(run["loss_params"].items())]
    parts += [_component(k, _plugin_free(k, run.get(k))) for k in varied]
    parts.append(f"s{run['seed']}")
    return "-".join(_check_component(p) for p in parts)


TEACHER_FIELDS = ("teacher", TEACHER_OPTIONS_KEY, *LEGACY_TEACHER_OPTIONS)
"""The flat keys of the teacher section: its name and its options (the CLIP teacher's under keys of their own)."""


def _teacher_options(run: dict[str, Any]) -> dict[str, Any]:
    """The teacher options of a flat run, by option name (the CLIP teacher's flat keys mapped back)."""
    options = dict(run.get(TEACHER_OPTIONS_KEY) or {})
    if run.get("teacher") == LEGACY_TEACHER:
        options |= {option: run[flat] for flat, (option, _) in LEGACY_TEACHER_OPTIONS.items() if flat in run}
    return options


def _option_piece(option: str, value: Any, varied: set[str]) -> str | None:
    """An option of a teacher label, folder-safe: a path (checkpoint, a model-config ``.json``) by its file
    stem, a checkpoint hash by 8 hex digits (left out when the checkpoint itself varies)."""
    if option == "checkpoint_sha256":
        return None if "checkpoint" in varied or not value else f"sha{str(value)[:8]}"
    if isinstance(value, str) and ("/" in value or "\\" in value):
        value = Path(value).stem
    return _component(option, value)


def teacher_labels(runs: Sequence[dict[str, Any]]) -> list[str]:
    """A folder-safe label per run for a suite whose runs vary the teacher: its name (a plug-in by its object
    name), then the options that differ between the runs of that teacher (``dinov2``, ``clip-archViT-L-14``)."""
    names = [str(_plugin_free("teacher", run.get("teacher", "synthetic"))) for run in runs]
    options = [_teacher_options(run) for run in runs]
    labels = []
    for name, own in zip(names, options, strict=True):
        peers = [o for n, o in zip(names, options, strict=True) if n == name]
        keys = sorted({k for o in peers for k in o})
        varied = {k for k in keys if len({_canonical(o.get(k)) for o in peers}) > 1}
        pieces = [_option_piece(k, own.get(k), varied) for k in keys if k in varied]
        labels.append("-".join([name, *[p for p in pieces if p]]))
    return labels


def _canonical(value: Any) -> str:
    """``value`` as comparable text (JSON with sorted keys; a tuple and a list of the same values are equal)."""
    return json.dumps(value, sort_keys=True, default=str)


def varied_fields(runs: list[dict[str, Any]], resolved: Sequence[dict[str, Any]] | None = None) -> tuple[str, ...]:
    """Fields (other than :data:`NAMED_KEYS`) that some run sets and whose value differs between the runs, sorted.

    With ``resolved`` (the runs' resolved configurations, in the same order) a field is varied when its resolved
    values differ and so do its given values (the run's own, else its resolved one): a field that one run sets
    to its default value and another leaves unset is not varied, and neither is one the resolution derives from
    another field (a toy run's snapshots, clipped to its iterations).
    """
    keys = sorted({k for run in runs for k in run} - set(NAMED_KEYS))
    if resolved is None:
        return tuple(k for k in keys if len({_canonical(run.get(k)) for run in runs}) > 1)
    pairs = list(zip(runs, resolved, strict=True))
    return tuple(
        k
        for k in keys
        if len({_canonical(res.get(k)) for _, res in pairs}) > 1
        and len({_canonical(run[k] if k in run else res.get(k)) for run, res in pairs}) > 1
    )


def run_names(
    runs: list[dict[str, Any]],
    resolved: Sequence[dict[str, Any]] | None = None,
    identities: Sequence[dict[str, Any]] | None = None,
) -> list[str]:
    """:func:`run_name` of every run, naming the fields the runs vary (:func:`varied_fields`, on ``resolved``
    when given: a varied field's piece shows its resolved value).

    Raises:
        ValueError: two runs of one configuration, ``identities`` (what makes two runs the same; default: the
            resolved configurations when given), naming both runs and the fields the suite writes differently;
            or two runs of one name.
    """
    varied = varied_fields(runs, resolved)
    named = [dict(run, **{k: res.get(k) for k in varied}) for run, res in zip(runs, resolved or runs, strict=True)]
    if "teacher" in varied or TEACHER_OPTIONS_KEY in varied:  # a teacher axis: one piece names the teacher
        labels = teacher_labels(list(resolved or runs))
        named = [dict(run, teacher=label) for run, label in zip(named, labels, strict=True)]
        varied = tuple(k for k in varied if k not in TEACHER_FIELDS or k == "teacher")
        varied = varied if "teacher" in varied else tuple(sorted((*varied, "teacher")))
    names = [run_name(run, varied) for run in named]
    identities = identities if identities is not None else resolved
    if identities is not None:
        first: dict[str, int] = {}
        for i, identity in enumerate(identities):
            j = first.setdefault(_canonical(identity), i)
            if j != i:
                raise ValueError(_same_configuration(runs, names, j, i))
    seen: dict[str, int] = {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
    twice = sorted(n for n, c in seen.items() if c > 1)
    if twice:
        raise ValueError(f"the suite gives several runs the same name ({', '.join(twice)}): two runs of one grid "
                         "are identical; remove the duplicate values")  # fmt: skip
    return names


def _same_configuration(runs: list[dict[str, Any]], names: list[str], a: int, b: int) -> str:
    """The error for runs ``a`` and ``b`` (indices) that resolve to one configuration: written alike (a value
    listed twice), or differently only in values equal once resolved (a default written out)."""
    unset = object()
    differ = []
    for key in sorted(set(runs[a]) | set(runs[b])):
        x, y = runs[a].get(key, unset), runs[b].get(key, unset)
        if x is unset or y is unset or _canonical(x) != _canonical(y):
            shown = ["unset" if v is unset else repr(v) for v in (x, y)]
            differ.append(f"{key} {shown[0]} vs {shown[1]}")
    if not differ:
        return (f"the suite gives several runs the same name ({names[a]}): two runs of one grid are identical; "
                "remove the duplicate values")  # fmt: skip
    return (
        f"runs {names[a]!r} (run {a + 1}) and {names[b]!r} (run {b + 1}) of the suite are one configuration once "
        f"defaults and loss parameters are filled in, written differently only in {'; '.join(differ)}: a value "
        "equal to the default is the same run; remove one of them"
    )


def _expand(grid: Any, defaults: dict[str, Any], source: Path, sections: bool = False) -> list[dict[str, Any]]:
    """Every combination of a grid's values, on top of ``defaults``; with ``sections`` (a distill suite), a value
    given in its section or under a dotted key ``section.field`` is set under its flat key
    (:func:`geomstruct.run_folder.update_flat`)."""
    if not isinstance(grid, dict) or "loss" not in grid or "seed" not in grid:
        raise ValueError(f"{source}: every grid must be a mapping listing at least 'loss' and 'seed'")
    keys = list(grid)
    for key in keys:
        if not isinstance(grid[key], list) or not grid[key]:
            raise ValueError(f"{source}: grid entry {key!r} must be a list of values (e.g. [{grid[key]!r}])")
    values = [[_loss_entry(v, source) for v in grid[k]] if k == "loss" else list(grid[k]) for k in keys]
    runs = []
    for combo in itertools.product(*values):
        run = dict(defaults)
        for key, value in zip(keys, combo, strict=True):
            if key == "loss":
                run["loss"], run["loss_params"] = value["name"], value["params"]
            elif sections:
                run = _flat(run, {key: value}, source)
            else:
                run[key] = value
        runs.append(run)
    return runs


def _flat(base: dict[str, Any], entries: dict[str, Any], source: Path) -> dict[str, Any]:
    """``base`` with ``entries`` applied under their flat keys (:func:`geomstruct.run_folder.update_flat`); a
    malformed section is an error naming the suite file."""
    try:
        return update_flat(base, entries)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None


def recipe_key(loss: str, params: dict[str, Any]) -> str:
    """The identity of a loss configuration in a recipes file: ``loss`` plus its sorted parameters as JSON."""
    return f"{loss} {json.dumps(params, sort_keys=True)}"


def apply_recipes(runs: list[dict[str, Any]], path: Path, gridded: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """``runs`` with the recipe of each run's loss configuration from the recipes file ``path`` (module
    docstring); the fields in ``gridded`` (listed by the runs' grid) are kept."""
    if not path.is_file():
        raise ValueError(
            f"recipes file {path} does not exist: run the tuning suite and `python -m bench.study.tune` first"
        )
    try:
        selected = json.loads(path.read_text(encoding="utf-8"))["selected"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a recipes file of bench.study.tune ({exc})") from None
    out = []
    for run in runs:
        key = recipe_key(run["loss"], run["loss_params"])
        if key not in selected:
            raise ValueError(
                f"{path} holds no recipe for {key}: add the configuration to the tuning suite and rerun it "
                f"(its command is in the file's 'command' entry)"
            )
        recipe = {k: v for k, v in selected[key]["recipe"].items() if k not in gridded}
        out.append({**run, **recipe})
    return out


def _suite_path(name_or_path: str, relative_to: Path | None = None) -> Path:
    """The YAML file of a shipped suite name or a suite path (relative paths tried against ``relative_to``)."""
    path = Path(name_or_path)
    if relative_to is not None and not path.is_absolute() and (relative_to / path).is_file():
        path = relative_to / path
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        if name_or_path not in available_suites():
            raise ValueError(
                f"unknown suite {name_or_path!r}; valid suites: {', '.join(available_suites())} "
                "(or the path of a suite .yaml file)"
            )
        path = SUITE_DIR / f"{name_or_path}.yaml"
    return path


def _read_suite_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc}); save the suite file as UTF-8") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a suite file must be a mapping with name, kind, defaults and grid")
    return data


def _defaults(path: Path, data: dict[str, Any], seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The suite's defaults, starting from those of its ``defaults_from`` suite (module docstring); a distill
    suite's under their flat keys (sections and dotted keys mapped, :func:`geomstruct.run_folder.update_flat`)."""
    own = data.get("defaults") or {}
    if not isinstance(own, dict):
        raise ValueError(f"{path}: defaults must be a mapping of run parameters; got {type(own).__name__}")
    sections = data.get("kind") == "distill"
    parent = data.get("defaults_from")
    if parent is None:
        return _flat({}, own, path) if sections else dict(own)
    parent_path = _suite_path(str(parent), path.parent).resolve()
    if parent_path in seen or parent_path == path.resolve():
        raise ValueError(f"{path}: defaults_from makes a cycle through {parent_path}")
    inherited = _defaults(parent_path, _read_suite_file(parent_path), (*seen, path.resolve()))
    return _flat(inherited, own, path) if sections else {**inherited, **own}


def _suite_name(name: Any, path: Path) -> str:
    """The suite's ``name``, a plain folder name (the default output folder is ``runs/<name>``): no path
    separator, not ``.``/``..`` or hidden, not empty, no control character."""
    text = str(name)
    if (
        not text.strip()
        or "/" in text
        or "\\" in text
        or text.startswith(".")
        or any(ord(c) < 32 for c in text)
        or Path(text).is_absolute()
    ):
        raise ValueError(
            f"{path}: the suite name {text!r} is not a plain folder name (runs/<name> is its default output): "
            "use letters, digits, '-' or '_', without '/', '\\' or a leading '.'"
        )
    return text


def _gridded(grid: dict[str, Any], path: Path) -> tuple[str, ...]:
    """The flat keys a distill grid lists (a section or dotted key stands for the fields it sets)."""
    keys: list[str] = []
    for key, values in grid.items():
        for value in values if isinstance(values, list) else [values]:
            keys += [key] if key == "loss" else list(_flat({}, {key: value}, path))
    return tuple(dict.fromkeys(keys))


def load_suite(name_or_path: str) -> Suite:
    """Load a shipped suite by name, or a user suite from a YAML path; errors list the valid names."""
    path = _suite_path(name_or_path)
    data = _read_suite_file(path)
    kind = data.get("kind")
    if kind not in KINDS:
        raise ValueError(f"{path}: unknown suite kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    grids = data.get("grid") or {}
    grids = grids if isinstance(grids, list) else [grids]
    defaults = _defaults(path, data)
    runs = []
    for grid in grids:
        sections = kind == "distill"
        expanded = _expand(grid, dict(defaults), path, sections)
        if data.get("recipes") is not None:
            gridded = tuple(grid) if not sections or not isinstance(grid, dict) else _gridded(grid, path)
            expanded = apply_recipes(expanded, path.parent / str(data["recipes"]), gridded)
        runs += expanded
    return Suite(
        name=_suite_name(data.get("name", path.stem), path),
        kind=kind,
        description=str(data.get("description", "")),
        source=path,
        runs=runs,
    )
