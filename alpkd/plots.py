"""Figures of the replication (matplotlib): score vs depth, ALP attention maps, training curves.

Every function returns a `matplotlib.figure.Figure` and draws nothing else; `save` writes one atomically.
Inputs are plain tables (pandas) and arrays, so the figures can be redrawn from `report/results.csv`,
`attention/*.json` and `logs/*.csv` without the library's training code.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt  # headless, pyplot falls back to Agg; in Jupyter it draws inline
import numpy as np
import pandas as pd

from .paths import replace_atomically

def _look(method: str, looks: dict | None) -> tuple[str, dict]:
    """A method's legend label and line style, from `looks` (`alpkd.methods.looks()`; passed in, so drawing a
    teacher's curve reads no method declaration)."""
    look = dict((looks or {}).get(method, {}))
    return look.pop("label", method), look


def _grid(panels: int, width: float = 3.6, height: float = 3.0, cols: int | None = None):
    # constrained layout reserves room for every title, label and legend, inside the canvas
    cols = cols or min(panels, 3)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[panels:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:panels])


def suptitle(fig, title: str, fontsize: float = 11) -> None:
    """A figure title wrapped to the figure's width (a narrow figure's long title would be cut at both edges)."""
    chars = max(16, int(fig.get_figwidth() * 72 / (0.58 * fontsize)))  # ~0.58 em per character of DejaVu Sans
    fig.suptitle(textwrap.fill(title, chars), fontsize=fontsize)


def _figure_legend(fig, handles, labels, fontsize: float = 8) -> None:
    """One legend for the figure, outside the panels on the right (centred: clear of a wrapped title), in as many
    columns as its height needs."""
    per_column = max(1, int(fig.get_figheight() * 72 / (fontsize * 2.0)))
    fig.legend(handles, labels, loc="outside right center", ncol=math.ceil(len(labels) / per_column),
               fontsize=fontsize, frameon=False)


def score_vs_depth(scores: pd.DataFrame, teacher: dict[str, float] | None = None,
                   panels: list[str] | None = None, headline: dict[str, str] | None = None,
                   trivial: dict[str, float] | None = None, looks: dict | None = None):
    """One panel per task (and `average`): headline score (x100) against student depth, a line per method,
    error bars one standard deviation over seeds.

    `scores` has columns task, depth, method, mean and std (std NaN with one seed); `teacher` and `trivial`
    map a panel to the teacher's and the trivial predictor's score, drawn as horizontal lines.
    """
    panels = panels or list(dict.fromkeys(scores["task"]))
    fig, axes = _grid(len(panels))
    for ax, panel in zip(axes, panels):
        rows = scores[scores["task"] == panel]
        for method, group in rows.groupby("method", sort=False):
            group = group.sort_values("depth")
            std = group["std"].fillna(0.0).to_numpy()
            label, style = _look(method, looks)
            ax.errorbar(group["depth"], group["mean"], yerr=std if std.any() else None, capsize=3, label=label, **style)
        if teacher and panel in teacher and teacher[panel] is not None and not pd.isna(teacher[panel]):
            ax.axhline(teacher[panel], color="black", linewidth=1, label="teacher")
        if trivial and panel in trivial and not pd.isna(trivial[panel]):
            ax.axhline(trivial[panel], color="black", linewidth=1, linestyle=":", label="trivial predictor")
        depths = sorted(set(rows["depth"]))
        ax.set_xticks(depths)
        ax.set_xlabel("student layers")
        metric = (headline or {}).get(panel, "score")
        ax.set_ylabel(f"{metric} x100")
        ax.set_title(panel)
        ax.grid(alpha=0.3)
    handles, labels = {}, []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    if handles:  # beside the panels, clear of their axis labels
        _figure_legend(fig, [handles[lab] for lab in labels], labels)
    return fig


def attention_heatmap(weights, ax=None, title: str | None = None, annotate: bool = True, colorbar: bool = True):
    """ALP attention weights as a heatmap: student layer (rows) x teacher layer (columns), 1-based labels."""
    weights = np.asarray(weights, dtype=float)
    m, n = weights.shape
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(0.6 * n + 1.8, 0.5 * m + 1.4), layout="constrained")
    image = ax.imshow(weights, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(n), [str(j + 1) for j in range(n)])
    ax.set_yticks(range(m), [str(i + 1) for i in range(m)])
    ax.set_xlabel("teacher layer")
    ax.set_ylabel("student layer")
    if title:
        ax.set_title(title)
    if annotate and m * n <= 160:
        for i in range(m):
            for j in range(n):
                w = weights[i, j]
                ax.text(j, i, f"{w:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if w > 0.6 else "white")
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return ax.figure


def attention_grid(maps: dict[tuple[int, str], np.ndarray], depths: list[int], methods: list[str], title: str = "",
                   looks: dict | None = None):
    """Heatmaps of several runs: a row per student depth, a column per ALP method (absent runs left blank)."""
    n = max(np.asarray(w).shape[1] for w in maps.values())
    fig, axes = plt.subplots(len(depths), len(methods), squeeze=False,
                             figsize=(max(3.0, 0.45 * n + 1.6) * len(methods), sum(0.4 * d + 1.4 for d in depths)),
                             gridspec_kw={"height_ratios": [d + 2 for d in depths]}, layout="constrained")
    for r, depth in enumerate(depths):
        for c, method in enumerate(methods):
            ax = axes[r][c]
            if (depth, method) in maps:
                attention_heatmap(maps[(depth, method)], ax=ax, title=f"{_look(method, looks)[0]}, {depth} layer(s)",
                                  annotate=n <= 12, colorbar=False)
            else:
                ax.set_axis_off()
    if title:
        suptitle(fig, title)
    return fig


def attention_history(histories: dict[tuple[int, str], list[dict]], title: str = "", looks: dict | None = None):
    """How ALP's attention moves during training: for each (depth, method), the weight each student layer
    puts on each teacher layer (a line per teacher layer, a panel per student layer) against the step."""
    cells = sorted(histories, key=lambda k: (-k[0], k[1]))
    panels = [(cell, i) for cell in cells for i in range(cell[0])]
    deepest = max(c[0] for c in cells)  # a row per cell; one-layer cells side by side
    fig, axes = _grid(len(panels), width=3.0, height=2.4, cols=deepest if deepest > 1 else min(len(panels), 3))
    for ax, ((depth, method), i) in zip(axes, panels):
        steps = [h["step"] for h in histories[(depth, method)]]
        w = np.asarray([h["weights"] for h in histories[(depth, method)]])[:, i, :]  # (snapshots, n)
        colours = plt.cm.viridis(np.linspace(0, 1, w.shape[1]))
        for j in range(w.shape[1]):
            ax.plot(steps, w[:, j], color=colours[j], label=f"teacher layer {j + 1}")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{_look(method, looks)[0]}, {depth}L\nstudent layer {i + 1}", fontsize=9)  # 2 lines: fits a panel
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    _figure_legend(fig, *axes[0].get_legend_handles_labels())
    if title:
        suptitle(fig, title)
    return fig


def training_curves(curves: dict[str, pd.DataFrame], panels: dict[str, list[str]], y: str = "loss",
                    method_of: dict[str, str] | None = None, labels: dict[str, str] | None = None,
                    looks: dict | None = None):
    """Loss against step: one panel per entry of `panels` (panel title -> run names), a line per method.

    `curves` maps a run name to its log (columns `step` and `y`); `method_of` maps a run to its method (runs of one
    method are drawn as one line, their mean at each step, in a band from their lowest to their highest value) and
    `labels` a method to its legend entry (default: its label in `looks`). A panel's legend sits beside it.
    """
    fig, axes = _grid(len(panels), width=4.8, height=2.8, cols=min(len(panels), 2))
    for ax, (title, runs) in zip(axes, panels.items()):
        by_method: dict[str, list[pd.DataFrame]] = {}
        for run in runs:
            log = curves.get(run)
            if log is not None and y in log and not log.empty:
                by_method.setdefault((method_of or {}).get(run, run), []).append(log.set_index("step")[y])
        for method, series in by_method.items():
            label, style = _look(method, looks)
            style.pop("marker", None)
            frame = pd.concat(series, axis=1).sort_index()
            label = (labels or {}).get(method, label)
            line, = ax.plot(frame.index, frame.mean(axis=1), label=label, linewidth=1.2, **style)
            if len(series) > 1:
                ax.fill_between(frame.index, frame.min(axis=1), frame.max(axis=1), color=line.get_color(),
                                alpha=0.15, linewidth=0)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
        if by_method:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    return fig


def training_curve(log: str | Path | pd.DataFrame, title: str = "", y: str = "loss"):
    """One run's training curve: `y` (total loss) and every `loss_*` term the log holds, against step.

    A run shorter than `runtime.logging_steps` logged no step (its log has no rows): the figure says so."""
    log = pd.read_csv(log) if not isinstance(log, pd.DataFrame) else log
    fig, ax = plt.subplots(figsize=(5, 3), layout="constrained")
    if log.empty:
        ax.text(0.5, 0.5, "no step logged\n(fewer steps than runtime.logging_steps)", ha="center", va="center",
                transform=ax.transAxes)
    for column in [y] + [c for c in log.columns if c.startswith("loss_")]:
        if column in log and not log.empty:
            ax.plot(log["step"], log[column], label=column, linewidth=2 if column == y else 1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if not log.empty:
        ax.legend(fontsize=7)
    return fig


def save(fig, path: str | Path, dpi: int = 120) -> Path:
    """Write `fig` as PNG atomically (a temporary file renamed into place) and close it."""
    path = replace_atomically(Path(path), lambda tmp: fig.savefig(tmp, dpi=dpi, format="png",
                                                                  metadata={"Software": None},
                                                                  bbox_inches="tight", pad_inches=0.1))
    plt.close(fig)
    return path
