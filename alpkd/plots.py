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


def fitted_limits(low, high, pad_share: float = 0.15, min_pad: float = 0.5) -> tuple[float, float]:
    """Axis limits around the span [min(low), max(high)], padded by `max(min_pad, pad_share x span)` on each side,
    so that points a point apart are drawn apart (not squeezed between a teacher and a trivial predictor far off)."""
    lo, hi = float(np.nanmin(low)), float(np.nanmax(high))
    pad = max(min_pad, pad_share * (hi - lo))
    return lo - pad, hi + pad


def _reference(ax, value: float, name: str, style: dict, points: pd.DataFrame) -> None:
    """A reference score (teacher, trivial predictor): a horizontal line where it lies inside the axis, else a short
    note at the edge it lies beyond ("teacher 85.7 above"), so the axis stays fitted to the students. The note goes
    in the corner where the students' points (columns x, low, high) leave the most room."""
    low, high = ax.get_ylim()
    if low <= value <= high:
        ax.axhline(value, color="black", linewidth=1, label=name, **style)
        return
    above = value > high
    middle = sum(ax.get_xlim()) / 2
    left, right = points[points["x"] < middle], points[points["x"] >= middle]
    if above:  # the side whose highest point is lower
        on_left = left["high"].max() <= right["high"].max() if len(left) and len(right) else not len(left)
    else:  # the side whose lowest point is higher
        on_left = left["low"].min() >= right["low"].min() if len(left) and len(right) else not len(left)
    ax.text(0.02 if on_left else 0.98, 0.98 if above else 0.02, f"{name} {value:.1f} {'above' if above else 'below'}",
            transform=ax.transAxes, ha="left" if on_left else "right", va="top" if above else "bottom", fontsize=7,
            color="0.25")


def score_vs_depth(scores: pd.DataFrame, teacher: dict[str, float] | None = None,
                   panels: list[str] | None = None, headline: dict[str, str] | None = None,
                   trivial: dict[str, float] | None = None, looks: dict | None = None,
                   gaps: pd.DataFrame | None = None, gaps_title: str = "gap to NO-KD"):
    """One panel per task (and `average`): headline score (x100) against student depth, a line per method,
    error bars one standard deviation over seeds; the methods of a depth are drawn side by side (a small offset), on
    a score axis fitted to the students' means ± std (`fitted_limits`).

    `scores` has columns task, depth, method, mean and std (std NaN with one seed); `teacher` and `trivial`
    map a panel to the teacher's and the trivial predictor's score: a horizontal line when inside the axis, a note at
    its edge otherwise. `gaps` (columns layers, method, gap, low, high; points x100), when given, adds a panel of each
    method's gap to its baseline with its interval: what the verdicts are about.
    """
    panels = panels or list(dict.fromkeys(scores["task"]))
    show_gaps = gaps is not None and not gaps.empty
    fig, axes = _grid(len(panels) + show_gaps)
    for ax, panel in zip(axes, panels):
        rows = scores[scores["task"] == panel]
        present = list(dict.fromkeys(rows["method"]))  # in the declarations' order, where given
        methods = [m for m in (looks or {}) if m in present] + [m for m in present if m not in (looks or {})]
        for k, method in enumerate(methods):
            group = rows[rows["method"] == method].sort_values("depth")
            std = group["std"].fillna(0.0).to_numpy()
            label, style = _look(method, looks)
            offset = 0.25 * ((k + 0.5) / len(methods) - 0.5) if len(methods) > 1 else 0.0  # side by side
            ax.errorbar(group["depth"] + offset, group["mean"], yerr=std if std.any() else None, capsize=3,
                        label=label, **style)
        std = rows["std"].fillna(0.0)
        points = pd.DataFrame({"x": rows["depth"], "low": rows["mean"] - std, "high": rows["mean"] + std})
        ax.set_ylim(*fitted_limits(points["low"], points["high"]))
        depths = sorted(set(rows["depth"]))
        ax.set_xticks(depths)
        ax.set_xlim(min(depths) - 0.5, max(depths) + 0.5)
        if teacher and panel in teacher and teacher[panel] is not None and not pd.isna(teacher[panel]):
            _reference(ax, float(teacher[panel]), "teacher", {}, points)
        if trivial and panel in trivial and not pd.isna(trivial[panel]):
            _reference(ax, float(trivial[panel]), "trivial predictor", {"linestyle": ":"}, points)
        ax.set_xlabel("student layers")
        metric = (headline or {}).get(panel, "score")
        ax.set_ylabel(f"{metric} x100")
        ax.set_title(panel)
        ax.grid(alpha=0.3)
    if show_gaps:
        _gaps_panel(axes[-1], gaps, looks, gaps_title)
    handles, labels = {}, []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    if handles:  # beside the panels, clear of their axis labels
        _figure_legend(fig, [handles[lab] for lab in labels], labels)
    return fig


def _gaps_panel(ax, gaps: pd.DataFrame, looks: dict | None, title: str) -> None:
    """Each (depth, method)'s gap to its baseline as a point with its interval, a row each, deepest first; a vertical
    line at no gap."""
    rows = gaps.sort_values("layers", ascending=False, kind="stable").reset_index(drop=True)
    for y, row in rows.iterrows():
        _, style = _look(row["method"], looks)
        style.pop("linestyle", None)
        ax.errorbar([row["gap"]], [y], xerr=[[row["gap"] - row["low"]], [row["high"] - row["gap"]]], capsize=3,
                    linestyle="none", **style)
    ax.vlines(0.0, -0.5, len(rows) - 0.5, color="black", linewidth=1)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_yticks(range(len(rows)), [f"{_look(m, looks)[0]}, {int(d)}L" for d, m in zip(rows["layers"], rows["method"])],
                  fontsize=7)
    ax.set_xlabel("gap (points), 95% interval")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="x")


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


def layer_colour(j: int):
    """Teacher layer j's (0-based) colour in line plots: tab10, then tab20's lighter shades beyond ten layers (orange,
    green, red first: far from tab10's last, cyan). Adjacent layers differ by a CIE76 delta E of 52 or more up to 12
    layers (BERT-base); a colour map's neighbours (viridis) are as close as 28."""
    return plt.cm.tab10(j) if j < 10 else plt.cm.tab20((2 * (j - 10) + 3) % 20)


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
        for j in range(w.shape[1]):  # qualitative colours: adjacent layers far apart (a colour map's are alike)
            ax.plot(steps, w[:, j], color=layer_colour(j), label=f"teacher layer {j + 1}")
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
                    looks: dict | None = None, ylabel: str | None = None):
    """Loss against step: one panel per entry of `panels` (panel title -> run names), a line per method.

    `curves` maps a run name to its log (columns `step` and `y`; `ylabel` names `y` on the axis); `method_of` maps a run to its method (runs of one
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
        ax.set_ylabel(ylabel or y)
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
