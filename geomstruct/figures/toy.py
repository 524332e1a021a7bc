"""Figures and table of the toy experiment (docs/method.md#toy-experiment; the paper's Figures 2-4).

- :func:`plot_initial_outputs` (Figure 3): the randomly initialised MLP's outputs against the source targets.
- :func:`plot_evolution` (Figure 2): the predicted space at several iterations, one row per loss.
- :func:`plot_uniformity` (Figure 4): uniformity (and tolerance) of the predicted space over training per loss,
  against the source's.
- :func:`toy_table`: final U, T, G per set-up and loss, mean and standard deviation over seeds.

Inputs are :class:`~geomstruct.runs.Run` objects of kind ``toy`` whose folder holds ``snapshots.npz``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from geomstruct.run_folder import SNAPSHOT_FILE
from geomstruct.runs import Run
from geomstruct.style import loss_colour, loss_rank

CLUSTER_COLOURS = ("#1b9e77", "#d95f02", "#7570b3")
SETUP_TITLES = {"1cluster": "1 cluster", "3clusters": "3 clusters"}


def _sort_key(run: Run) -> tuple:
    return (run.metrics.get("setup", ""), loss_rank(run.loss)[0], run.label, run.seed)


def _by_setup(runs: Sequence[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in sorted(runs, key=_sort_key):
        groups[run.metrics.get("setup", "?")].append(run)
    return dict(groups)


def _first_seed(runs: Sequence[Run]) -> list[Run]:
    """One run per loss configuration: the one with the lowest seed."""
    chosen: dict[str, Run] = {}
    for run in sorted(runs, key=_sort_key):
        chosen.setdefault(run.label, run)
    return list(chosen.values())


def _snapshots(run: Run) -> dict[str, np.ndarray]:
    with np.load(run.path / SNAPSHOT_FILE) as data:
        return {k: data[k] for k in data.files}


def _sphere_axes(ax, elev: float, azim: float, tick_labels: bool = True) -> None:
    u, v = np.mgrid[0 : 2 * np.pi : 25j, 0 : np.pi : 13j]
    ax.plot_wireframe(np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v), color="0.85", linewidth=0.4)
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    ax.set_zlim(-1, 1)
    ax.set_box_aspect((1, 1, 1))
    ax.view_init(elev=elev, azim=azim)
    ax.set_xticks([-1, 0, 1])
    ax.set_yticks([-1, 0, 1])
    ax.set_zticks([-1, 0, 1])
    ax.tick_params(labelsize=6, pad=0)
    if not tick_labels:
        ax.set_xticklabels([])
        ax.set_yticklabels([])
        ax.set_zticklabels([])
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        axis.pane.set_alpha(0.0)


def _view(setup: str) -> tuple[float, float]:
    return (40.0, 30.0) if setup == "1cluster" else (30.0, 60.0)


def _scatter(ax, points: np.ndarray, labels: np.ndarray, size: float = 3.0, marker: str = "o") -> None:
    for c in np.unique(labels):
        sel = labels == c
        ax.scatter(*points[sel].T, s=size, color=CLUSTER_COLOURS[int(c) % 3], marker=marker, depthshade=False)


def plot_initial_outputs(runs: Sequence[Run], out: Path) -> Path:
    """Figure 3: per set-up, the source targets and the randomly initialised MLP's outputs on the sphere."""
    groups = _by_setup(runs)
    fig = plt.figure(figsize=(5.0 * len(groups), 5.2))
    for i, (setup, group) in enumerate(groups.items()):
        snap = _snapshots(group[0])
        ax = fig.add_subplot(1, len(groups), i + 1, projection="3d")
        _sphere_axes(ax, *_view(setup))
        _scatter(ax, snap["targets"], snap["labels"], size=2.0)
        ax.scatter(*snap["pred_0"].T, s=4, color="black", marker="x", depthshade=False, linewidths=0.6)
        ax.set_title(f"{SETUP_TITLES.get(setup, setup)}: initial MLP output (x) vs targets (dots)", fontsize=10)
    handles = [
        plt.Line2D([], [], marker="o", linestyle="", color=CLUSTER_COLOURS[0], label="source targets (by cluster)"),
        plt.Line2D([], [], marker="x", linestyle="", color="black", label="randomly initialised MLP"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=9, frameon=False)
    fig.subplots_adjust(left=0.0, right=1.0, top=0.92, bottom=0.08, wspace=0.05)
    path = out / "toy_initial_outputs.png"
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def plot_evolution(runs: Sequence[Run], setup: str, out: Path) -> Path:
    """Figure 2: rows = losses (lowest seed), columns = snapshot iterations, plus the source in the last column."""
    chosen = _first_seed([r for r in runs if r.metrics.get("setup") == setup])
    first = _snapshots(chosen[0])
    iterations = [int(i) for i in first["snapshot_iterations"]]
    ncols = len(iterations) + 1
    fig = plt.figure(figsize=(2.3 * ncols, 2.45 * len(chosen) + 0.9))
    elev, azim = _view(setup)
    for row, run in enumerate(chosen):
        snap = _snapshots(run)
        traj = run.trajectory
        for col, it in enumerate([*iterations, None]):
            ax = fig.add_subplot(len(chosen), ncols, row * ncols + col + 1, projection="3d")
            _sphere_axes(ax, elev, azim, tick_labels=False)
            if it is None:
                _scatter(ax, snap["targets"], snap["labels"])
                src = run.metrics["source"]
                ax.set_title(f"source\nU={src['U']:.2f} T={src['T']:.2f}", fontsize=8)
                continue
            _scatter(ax, snap[f"pred_{it}"], snap["labels"])
            title = f"t = {it}"
            if traj is not None and it in set(traj["iteration"]):
                rec = traj.loc[traj["iteration"] == it].iloc[0]
                title += f"\nU={rec['U']:.2f} T={rec['T']:.2f}"
            ax.set_title(title, fontsize=8)
            if col == 0:
                ax.text2D(
                    -0.12,
                    0.5,
                    run.label,
                    transform=ax.transAxes,
                    rotation=90,
                    va="center",
                    ha="center",
                    fontsize=9,
                    fontweight="bold",
                    color=loss_colour(run.loss),
                )
    fig.suptitle(
        f"Toy experiment, {SETUP_TITLES.get(setup, setup)}: predicted space over training (seed {chosen[0].seed})",
        fontsize=11,
    )
    fig.subplots_adjust(
        left=0.04, right=0.99, top=1 - 0.95 / fig.get_figheight(), bottom=0.01, wspace=0.02, hspace=0.25
    )
    path = out / f"toy_evolution_{setup}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_uniformity(runs: Sequence[Run], out: Path) -> Path:
    """Figure 4: U (top) and T (bottom) over iterations per loss, mean over seeds with min-max band;
    the source's values as dashed lines."""
    groups = _by_setup(runs)
    fig, axes = plt.subplots(2, len(groups), figsize=(6.0 * len(groups), 7.6), squeeze=False, sharex="col")
    for col, (setup, group) in enumerate(groups.items()):
        per_loss: dict[str, list[Run]] = defaultdict(list)
        for run in group:
            if run.trajectory is not None:
                per_loss[run.label].append(run)
        for row, key in enumerate(("U", "T")):
            ax = axes[row, col]
            for label, members in per_loss.items():
                frame = pd.concat([m.trajectory.set_index("iteration")[key] for m in members], axis=1)
                colour = loss_colour(members[0].loss)
                ax.plot(frame.index, frame.mean(axis=1), color=colour, label=f"{label} (n={len(members)})")
                ax.fill_between(frame.index, frame.min(axis=1), frame.max(axis=1), color=colour, alpha=0.15)
            source = np.mean([r.metrics["source"][key] for r in group])
            ax.axhline(source, color="black", linestyle="--", linewidth=1.2, label="source (mean over seeds)")
            ax.annotate(
                f"source {key} = {source:.2f}",
                xy=(0.99, source),
                xycoords=("axes fraction", "data"),
                xytext=(0, 3),
                textcoords="offset points",
                ha="right",
                va="bottom",
                fontsize=8,
            )
            ax.set_ylabel("uniformity U (higher = more uniform)" if key == "U" else "tolerance T")
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(SETUP_TITLES.get(setup, setup))
            else:
                ax.set_xlabel("iteration")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.suptitle("Toy experiment: geometry of the predicted space over training (mean over seeds, min-max band)")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path = out / "toy_uniformity.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def toy_table(runs: Sequence[Run]) -> pd.DataFrame:
    """Final U, T, G of the predicted space and the source's U, T, per set-up and loss configuration (mean, std
    over seeds), and last, ``runs``: the run folders of the row (``; ``-separated, in seed order)."""
    rows = []
    for run in runs:
        geo, src = run.metrics["geometry"], run.metrics["source"]
        rows.append(
            {
                "setup": run.metrics.get("setup", "?"),
                "loss": run.label,
                "seed": run.seed,
                "path": run.path.as_posix(),
                "U": geo["U"],
                "T": geo["T"],
                "G": geo["G"],
                "U_source": src["U"],
                "T_source": src["T"],
            }
        )
    frame = pd.DataFrame(rows)
    order = {label: i for i, label in enumerate(sorted(frame["loss"], key=loss_rank))}
    stats = frame.groupby(["setup", "loss"]).agg(
        n=("seed", "count"),
        **{f"{k}_{fn}": (k, fn) for k in ("U", "T", "G", "U_source", "T_source") for fn in ("mean", "std")},
    )
    folders = frame.sort_values(["seed", "path"]).groupby(["setup", "loss"])["path"].agg("; ".join)
    stats["runs"] = folders
    stats = stats.reset_index()
    stats["_order"] = stats["loss"].map(order)
    return stats.sort_values(["setup", "_order"]).drop(columns="_order").reset_index(drop=True)


def write_toy_table(table: pd.DataFrame, out: Path) -> list[Path]:
    """Write the toy table as CSV (all columns) and Markdown (mean ± std)."""
    csv_path = out / "toy_table.csv"
    table.to_csv(csv_path, index=False, float_format="%.4f")
    lines = [
        "Final geometry of the predicted space per set-up and loss: uniformity U (negated, t = 2; higher = more "
        "uniform), tolerance T (mean same-cluster cosine), modality gap G to the source (centroid distance); "
        "mean ± std over n seeds; the source's own U and T for comparison.",
        "",
        "| set-up | loss | n | U | T | G | U source | T source |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        cells = [f"{r[f'{k}_mean']:.3f} ± {_std(r[f'{k}_std'])}" for k in ("U", "T", "G", "U_source", "T_source")]
        lines.append(
            f"| {SETUP_TITLES.get(r['setup'], r['setup'])} | {r['loss']} | {r['n']} | " + " | ".join(cells) + " |"
        )
    md_path = out / "toy_table.md"
    md_path.write_text("\n".join(lines) + "\n")
    return [csv_path, md_path]


def _std(value: float) -> str:
    return "–" if not np.isfinite(value) else f"{value:.3f}"


def write_toy_report(runs: Sequence[Run], out: Path) -> list[Path]:
    """All toy figures and the table into ``out`` (created); returns the written paths."""
    usable = [r for r in runs if (r.path / SNAPSHOT_FILE).is_file()]
    out.mkdir(parents=True, exist_ok=True)
    written = [plot_initial_outputs(usable, out)] if usable else []
    for setup in _by_setup(usable):
        written.append(plot_evolution(usable, setup, out))
    if usable:
        written.append(plot_uniformity(usable, out))
    written += write_toy_table(toy_table(runs), out)
    return written
