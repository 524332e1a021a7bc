"""Figures of the distillation study (docs/method.md#geometry-metrics; docs/usage.md#the-report).

- :func:`plot_pca` (the paper's Figure 1): the teacher's 2D space and one panel per loss on the same
  class-balanced points, first two principal components (fit per space), 16 fixed class colours, U, T, G in
  every title.
- :func:`plot_ut_plane`: every student in the uniformity-tolerance plane (one marker per loss, seeds as repeated
  markers, tau labelled for contrastive) and the teacher's point.
- :func:`plot_trajectories`: U, T and G over training steps per loss, the teacher's values as horizontal lines.
- :func:`plot_gap_vs_performance`: S, dU and dT against every protocol's mIoU, with the least-squares line and
  Pearson r / Spearman rho (bootstrap 95% CIs, n) printed on each panel.
- :func:`plot_predictors`: "which measure predicts downstream?": per protocol, Spearman rho (and Pearson r) of
  every structure quantity with the mIoU, bootstrap 95% CIs as bars, quantities ranked by |rho|.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from geomstruct.correlation import pearson, spearman
from geomstruct.runs import FEATURES_FILE, Run
from geomstruct.style import loss_rank, loss_style
from geomstruct.summary import PROTOCOL_TITLES, PROTOCOLS

CLASS_COLOURS = (
    "#7f7f7f", "#bcbd22", "#ff7f0e", "#1f77b4", "#8c564b", "#e377c2", "#d62728", "#ffbb78",
    "#9467bd", "#17becf", "#393b79", "#c49c94", "#2ca02c", "#98df8a", "#aec7e8", "#006400",
)  # fmt: skip
CONTRASTIVE_SHADES = ("#67000d", "#d62728", "#fb6a4a", "#f4a582", "#a50f15", "#ef3b2c")
CONTRASTIVE_MARKERS = ("o", "p", "h", "8", "P", "X")


def label_styles(labels: Sequence[tuple[str, str, float]]) -> dict[str, tuple[str, str, str]]:
    """``{label: (colour, marker, linestyle)}`` for ``(label, loss, tau)`` triples.

    One colour and marker per loss; the contrastive temperatures get their own shade of red and marker (in
    increasing tau), and every tau but 0.07 a dashed line, so that a temperature sweep stays readable.
    """
    styles: dict[str, tuple[str, str, str]] = {}
    taus = sorted({tau for _, loss, tau in labels if loss == "contrastive" and np.isfinite(tau)})
    for label, loss, tau in labels:
        colour, marker = loss_style(loss)
        linestyle = "-"
        if loss == "contrastive" and np.isfinite(tau) and len(taus) > 1:
            rank = taus.index(tau)
            colour = CONTRASTIVE_SHADES[rank % len(CONTRASTIVE_SHADES)]
            marker = CONTRASTIVE_MARKERS[rank % len(CONTRASTIVE_MARKERS)]
            linestyle = "-" if np.isclose(tau, 0.07) else "--"
        styles[label] = (colour, marker, linestyle)
    return styles


def _frame_styles(students: pd.DataFrame) -> dict[str, tuple[str, str, str]]:
    rows = students.drop_duplicates("label")
    return label_styles(list(zip(rows["label"], rows["loss"], rows["tau"].astype(float), strict=True)))


def _one_per_label(runs: Sequence[Run]) -> list[Run]:
    chosen: dict[str, Run] = {}
    for run in sorted(runs, key=lambda r: (loss_rank(r.label), r.seed)):
        chosen.setdefault(run.label, run)
    return list(chosen.values())


def _fmt(value: float | None) -> str:
    """Two decimals, or "–" for a quantity a run has not (T of a label-free run)."""
    return "–" if value is None else f"{value:.2f}"


def _pca2(x: np.ndarray) -> np.ndarray:
    """The first two principal components of the unit rows of ``x`` (scikit-learn's PCA, exact SVD; signs by
    its deterministic convention)."""
    return PCA(n_components=2, svd_solver="full").fit_transform(x / np.linalg.norm(x, axis=1, keepdims=True))


def class_names(run: Run, n: int) -> list[str]:
    """Class names of a run's labels: ``metrics.json`` ``class_names`` when present, else ``class <id>``."""
    names = run.metrics.get("class_names")
    return list(names) if names and len(names) >= n else [f"class {i}" for i in range(n)]


def plot_pca(runs: Sequence[Run], out: Path, max_points: int = 20_000, seed: int = 0) -> Path | None:
    """Figure 1: the 2D teacher space and one panel per loss (lowest seed), PCA fit per space."""
    chosen = [r for r in _one_per_label(runs) if (r.path / FEATURES_FILE).is_file()]
    if not chosen:
        return None
    panels = []
    for i, run in enumerate(chosen):
        with np.load(run.path / FEATURES_FILE) as f:
            k3d, q2d, labels = f["k3d"].astype(np.float32), f["q2d"].astype(np.float32), f["labels"]
        if i == 0:
            panels.append(("2D teacher", q2d, labels, run.metrics["geometry"], True))
        panels.append((run.label, k3d, labels, run.metrics["geometry"], False))
    n_classes = int(max(p[2].max() for p in panels)) + 1
    names = class_names(chosen[0], n_classes)
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 4.2 * nrows + 1.0), squeeze=False)
    rng = np.random.default_rng(seed)
    for ax, (title, x, labels, geo, is_teacher) in zip(axes.flat, panels, strict=False):
        keep = rng.permutation(len(x))[:max_points]
        y = _pca2(x[keep])
        ax.scatter(y[:, 0], y[:, 1], s=2, c=[CLASS_COLOURS[c % 16] for c in labels[keep]], linewidths=0)
        stats = (
            f"U={_fmt(geo['U_2d'])} T={_fmt(geo['T_2d'])}"
            if is_teacher
            else f"U={_fmt(geo['U'])} T={_fmt(geo['T'])} G={_fmt(geo['G'])}"
        )
        ax.set_title(f"{title}\n{stats}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal", adjustable="datalim")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles = [
        plt.Line2D([], [], marker="o", linestyle="", color=CLASS_COLOURS[c % 16], label=names[c])
        for c in range(n_classes)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(8, n_classes), fontsize=8, frameon=False)
    fig.suptitle("First two principal components of each space (same class-balanced points)")
    fig.tight_layout(rect=(0, 0.9 / fig.get_figheight() + 0.02, 1, 1))
    path = out / "pca.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_ut_plane(students: pd.DataFrame, out: Path) -> Path:
    """Every student in the (U, T) plane, the teacher's point, and a dashed line from the teacher to each loss's
    mean (the structural gap)."""
    fig, ax = plt.subplots(figsize=(7.0, 5.6))
    styles = _frame_styles(students)
    for label, group in students.groupby("label", sort=False):
        colour, marker, _ = styles[label]
        ax.scatter(
            group["U"],
            group["T"],
            color=colour,
            marker=marker,
            s=45,
            label=f"{label} (n={len(group)})",
            edgecolors="black",
            linewidths=0.4,
            zorder=3,
        )
        if np.isfinite(group["tau"]).any():
            ax.annotate(
                f"τ={group['tau'].iloc[0]:g}",
                (group["U"].mean(), group["T"].mean()),
                xytext=(6, 4),
                textcoords="offset points",
                fontsize=8,
                color=colour,
            )
    u2d, t2d = students["U_2d"].mean(), students["T_2d"].mean()
    ax.scatter([u2d], [t2d], marker="*", s=260, color="gold", edgecolors="black", zorder=4, label="2D teacher")
    for _, group in students.groupby("label", sort=False):
        ax.plot([u2d, group["U"].mean()], [t2d, group["T"].mean()], color="0.6", linestyle=":", linewidth=0.8)
    ax.set_xlabel("uniformity U (higher = more uniform)")
    ax.set_ylabel("tolerance T (mean same-class cosine)")
    ax.set_title("Students in the uniformity–tolerance plane")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    path = out / "uniformity_tolerance.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_trajectories(runs: Sequence[Run], out: Path) -> Path | None:
    """U, T, G over training steps per loss (mean over seeds, min-max band); teacher U and T as lines."""
    per_label: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        if run.trajectory is not None and "step" in run.trajectory:
            per_label[run.label].append(run)
    if not per_label:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15.0, 4.6))
    teacher = {}  # the teacher's U and T lines (T_2d is null in label-free runs)
    for key in ("U", "T"):
        values = [r.metrics["geometry"].get(f"{key}_2d") for r in runs]
        if any(v is not None for v in values):
            teacher[key] = float(np.mean([v for v in values if v is not None]))
    styles = label_styles(
        [
            (label, m[0].loss, float((m[0].metrics.get("params") or {}).get("tau", np.nan)))
            for label, m in per_label.items()
        ]
    )
    for ax, key in zip(axes, ("U", "T", "G"), strict=True):
        for label in sorted(per_label, key=loss_rank):
            members = per_label[label]
            frame = pd.concat([m.trajectory.set_index("step")[key] for m in members], axis=1)
            colour, _, linestyle = styles[label]
            ax.plot(frame.index, frame.mean(axis=1), color=colour, linestyle=linestyle, label=label)
            ax.fill_between(frame.index, frame.min(axis=1), frame.max(axis=1), color=colour, alpha=0.12)
        if key in teacher:
            ax.axhline(teacher[key], color="black", linestyle="--", linewidth=1.1, label="2D teacher")
        ax.set_xlabel("training step")
        ax.set_ylabel({"U": "uniformity U", "T": "tolerance T", "G": "modality gap G"}[key])
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), fontsize=8, frameon=False)
    fig.suptitle("Geometry of the students on the probe set over training (mean over seeds, min-max band)")
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    path = out / "trajectories.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_gap_vs_performance(students: pd.DataFrame, out: Path, n_boot: int = 10_000) -> Path | None:
    """Rows: S, dU, dT; columns: the protocols with scores; each panel: students, fitted line, correlations."""
    protocols = [p for p in PROTOCOLS if students[p].notna().any()]
    if not protocols:
        return None
    gaps = ("S", "dU", "dT")
    fig, axes = plt.subplots(len(gaps), len(protocols), figsize=(4.6 * len(protocols), 4.0 * len(gaps)),
                             squeeze=False)  # fmt: skip
    styles = _frame_styles(students)
    for i, gap in enumerate(gaps):
        for j, protocol in enumerate(protocols):
            ax = axes[i, j]
            for label, group in students.groupby("label", sort=False):
                colour, marker, _ = styles[label]
                ax.scatter(group[gap], group[protocol], color=colour, marker=marker, s=40, label=label,
                           edgecolors="black", linewidths=0.3)  # fmt: skip
            x, y = students[gap].to_numpy(float), students[protocol].to_numpy(float)
            ok = np.isfinite(x) & np.isfinite(y)
            if ok.sum() >= 2 and np.ptp(x[ok]) > 0:
                slope, intercept = np.polyfit(x[ok], y[ok], 1)
                xs = np.linspace(x[ok].min(), x[ok].max(), 2)
                ax.plot(xs, slope * xs + intercept, color="black", linewidth=1.0)
            p, s = pearson(x, y, n_boot=n_boot), spearman(x, y, n_boot=n_boot)
            ax.set_title(f"{p}\n{s}", fontsize=7, loc="left")  # above the axes: never hides a student
            ax.set_xlabel({"S": "structural gap S", "dU": "ΔU = U_3D − U_2D", "dT": "ΔT = T_3D − T_2D"}[gap])
            ax.set_ylabel(f"{PROTOCOL_TITLES[protocol]} mIoU (%)")
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), fontsize=8, frameon=False)
    fig.suptitle("Structural gap against segmentation (one point per student)")
    fig.tight_layout(rect=(0, 0.5 / fig.get_figheight() + 0.02, 1, 1))
    path = out / "gap_vs_performance.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


QUANTITY_TITLES = {
    "dU": "ΔU = U_3D − U_2D",
    "dT": "ΔT = T_3D − T_2D",
    "S": "structural gap S",
    "G": "modality gap G",
    "CKA": "linear CKA",
    "mknn": "mutual k-NN",
    "erank_ratio": "erank_3D / erank_2D",
    "CKA_cal": "CKA − chance",
    "mknn_cal": "mutual k-NN − chance",
    "lidar": "LiDAR (point = class)",
    "alpha_3d": "α-ReQ α_3D",
}


def plot_predictors(predictors: pd.DataFrame, out: Path) -> Path | None:
    """One panel per protocol: Spearman rho (filled) and Pearson r (hollow) of every structure quantity with the
    protocol's mIoU, bootstrap 95% CIs as bars, rank 1 (largest |rho|) on top; grey and marked when n < 5 (not
    a finding). ``predictors``: :func:`geomstruct.tables.predictor_table`; None when it has no row."""
    if predictors.empty:
        return None
    protocols = list(dict.fromkeys(predictors["protocol"]))
    fig, axes = plt.subplots(1, len(protocols), figsize=(4.2 * len(protocols), 0.45 * predictors["quantity"].nunique()
                             + 1.8), squeeze=False, sharey=False)  # fmt: skip
    for ax, protocol in zip(axes[0], protocols, strict=True):
        rows = predictors[predictors["protocol"] == protocol].reset_index(drop=True)  # already in rank order
        y = np.arange(len(rows))[::-1]
        for yi, (_, r) in zip(y, rows.iterrows(), strict=True):
            colour = "#1f4e79" if r["reliable"] else "0.6"
            for key, offset, marker, face in (("spearman", 0.12, "o", colour), ("pearson", -0.12, "D", "white")):
                value = r["spearman_rho" if key == "spearman" else "pearson_r"]
                low, high = r[f"{key}_ci_low"], r[f"{key}_ci_high"]
                if np.isfinite(low) and np.isfinite(high):  # a percentile interval need not contain the estimate
                    ax.plot([low, high], [yi + offset] * 2, color=colour, linewidth=1.4 if key == "spearman" else 0.9)
                if np.isfinite(value):
                    ax.plot([value], [yi + offset], marker=marker, linestyle="", color=colour, markerfacecolor=face,
                            markersize=6 if key == "spearman" else 5)  # fmt: skip
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_yticks(y)
        ax.set_yticklabels(
            [f"{int(r['rank']) if np.isfinite(r['rank']) else '–'}. {QUANTITY_TITLES.get(r['quantity'], r['quantity'])}"
             for _, r in rows.iterrows()], fontsize=8)  # fmt: skip
        ax.set_xlim(-1.05, 1.05)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_xlabel("correlation with mIoU")
        n = int(rows["n"].max()) if len(rows) else 0
        few = "" if rows["reliable"].all() else "\nn < 5: not a finding (grey)"
        ax.set_title(f"{PROTOCOL_TITLES[protocol]} (n = {n}){few}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    handles = [
        plt.Line2D([], [], marker="o", linestyle="", color="#1f4e79", label="Spearman ρ [95% CI]"),
        plt.Line2D([], [], marker="D", linestyle="", color="#1f4e79", markerfacecolor="white",
                   label="Pearson r [95% CI]"),
    ]  # fmt: skip
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle("Which measure predicts downstream? Quantities ranked by |Spearman ρ| per protocol")
    fig.tight_layout(rect=(0, 0.35 / fig.get_figheight() + 0.02, 1, 1))
    path = out / "predictors.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
