"""Every figure of the report legible at its saved size: nothing cut by the canvas, no text over another, a legend
entry per line drawn. Checked on the Figure objects (matplotlib's own text and legend extents, with the figure's
renderer) before they are saved, and on the saved PNG (its outer pixels are background).

Two reports: a synthetic one of the default profile's shape (SST-2; NO-KD, KD, PKD, ALP-NO, ALP-PO, ALP at 3 and 1
layers, the reverse and all-to-one controls; three teachers, six students) written in the run's file formats, and
(slow) the report of a real smoke run.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import TASK

DEFAULT_METHODS = ["nokd", "kd", "pkd", "alp_no", "alp_po", "alp", "reverse", "all_to_one"]
DEFAULT_DEPTHS = [3, 1]
TEACHER_SEEDS = [42, 43, 44]
STUDENT_SEEDS = [1, 2, 3, 4, 5, 6]  # student k learns from teacher TEACHER_SEEDS[(k - 1) % 3]
SAME_AT_ONE = {"pkd": "kd", "alp_no": "alp", "alp_po": "alp"}  # one student layer: the same objective
N_LAYERS, N_EVAL, STEPS = 6, 50, list(range(5, 380, 5))


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _log(path: Path, rng, terms: dict[str, float]) -> None:
    """A training log as the Trainer writes it (`loss`, each `loss_*` term, `epoch`, `step`), decaying noisily."""
    decay = np.exp(-np.asarray(STEPS) / 150.0)
    cols = {f"loss_{k}": v * (0.3 + decay) * rng.uniform(0.8, 1.2, len(STEPS)) for k, v in terms.items()}
    frame = pd.DataFrame({"loss": sum(cols.values()), **cols, "epoch": np.asarray(STEPS) / 376, "step": STEPS})
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def default_shaped_root(root: Path) -> Path:
    """Metrics, markers, logs, attention maps and predictions of the default profile's grid, in the run's layout
    (as the committed metrics/, logs/, attention/ folders)."""
    from alpkd.paths import Layout, Run

    rng, layout = np.random.default_rng(0), Layout(root)
    labels = rng.integers(0, 2, N_EVAL).tolist()
    common = {"task": "sst2", "headline": "accuracy", "profile": "mini",
              "data_source": "ALPKD_GLUE_DIR (a local copy of nyu-mll/glue)",
              "environment": {"cpu": "AMD EPYC", "cpu_capability": "AVX2", "numerics": "portable"}}
    for seed in TEACHER_SEEDS:
        score = float(rng.uniform(0.84, 0.87))
        _write(layout.teacher_metrics("sst2", seed), {**common, "role": "teacher", "method": "teacher",
                                                      "depth": N_LAYERS, "seed": seed, "model": "minilm",
                                                      "trivial": {"accuracy": 0.509}, "score": score,
                                                      "metrics": {"accuracy": score}})
        _log(layout.teacher_log("sst2", seed), rng, {"ce": 0.7})
    for depth, method in itertools.product(DEFAULT_DEPTHS, DEFAULT_METHODS):
        if depth == 1 and method in SAME_AT_ONE:
            _write(layout.same_as("sst2", depth, method), {"task": "sst2", "depth": depth, "method": method,
                                                           "same_as": SAME_AT_ONE[method], "why": "one layer",
                                                           "seeds": STUDENT_SEEDS})
            continue
        for seed in STUDENT_SEEDS:
            run = Run("sst2", depth, method, seed)
            score = float(rng.uniform(0.75, 0.82))
            _write(layout.student_metrics(run), {**common, "role": "student", "method": method, "depth": depth,
                                                 "seed": seed, "teacher_layers": N_LAYERS,
                                                 "teacher_seed": TEACHER_SEEDS[(seed - 1) % 3], "score": score,
                                                 "metrics": {"accuracy": score}, "constant_predictions": False})
            preds = [y if rng.random() < score else 1 - y for y in labels]
            _write(layout.predictions(run), {"task": "sst2", "validation": {"labels": labels, "predictions": preds}})
            # the controls' layer term is weighted by pkd_beta=100: hundreds, against the others' units
            terms = {"ce": 0.6} | ({"kd": 2.0} if method != "nokd" else {}) | (
                {"pkd": 3.0} if method == "pkd" else {"alp": 0.2} if method.startswith("alp") else
                {"pkd": 300.0 if method == "all_to_one" else 150.0} if method in ("reverse", "all_to_one") else {})
            _log(layout.log(run), rng, terms)
            if method.startswith("alp"):
                w = rng.dirichlet(np.ones(N_LAYERS) * 0.3, size=depth)
                history = [{"step": s, "weights": rng.dirichlet(np.ones(N_LAYERS), size=depth).tolist(),
                            "entropy_bits": [1.0] * depth} for s in (0, 120, 240, 376)]
                _write(layout.attention(run), {"task": "sst2", "depth": depth, "method": method, "seed": seed,
                                               "split": "validation", "scale": False, "weights": w.tolist(),
                                               "entropy_bits": [1.0] * depth, "history": history})
    return root


def default_params(smoke_raw):
    from alpkd import config

    smoke_raw["profile"] = "mini"
    smoke_raw["data"]["tasks"] = ["sst2"]
    smoke_raw["student"]["depths"] = DEFAULT_DEPTHS
    smoke_raw["distill"]["methods"] = DEFAULT_METHODS
    smoke_raw["distill"]["seeds"] = STUDENT_SEEDS
    smoke_raw["teacher"]["seeds"] = TEACHER_SEEDS
    return config.validate(smoke_raw)


# --- the checks -------------------------------------------------------------------------------------------
def _texts(fig):
    """Every text drawn: titles, labels, legend entries, annotations, and the tick labels of the ticks in view
    (matplotlib keeps spare tick objects outside the view that it does not draw)."""
    from matplotlib.text import Text

    axes = [ax for ax in fig.axes if ax.get_visible()]
    all_ticks = {t for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)
                 for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()] for t in (tick.label1, tick.label2)}
    drawn_ticks = [t for ax in axes for axis in (ax.xaxis, ax.yaxis) for tick in axis._update_ticks()
                   for t in (tick.label1, tick.label2) if tick.get_visible() and t.get_visible()]
    others = [t for t in fig.findobj(Text) if t not in all_ticks and t.get_visible()
              and (t.axes is None or t.axes.get_visible())]
    return [t for t in [*others, *drawn_ticks] if t.get_text().strip()]


def _legends(fig):
    return [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]


def _line_key(line) -> tuple:
    from matplotlib.colors import to_hex

    return to_hex(line.get_color()), line.get_linestyle()


def figure_faults(fig) -> list[str]:
    """What makes `fig` illegible at its size: text or a legend outside the canvas, texts over each other, a
    legend over a text that is not its own, lines that share one legend entry or have none."""
    from matplotlib.container import ErrorbarContainer

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    canvas, faults = fig.bbox, []
    texts = _texts(fig)
    boxes = [(t, t.get_window_extent(renderer)) for t in texts]
    for t, box in boxes:
        if box.x0 < canvas.x0 - 0.5 or box.y0 < canvas.y0 - 0.5 or box.x1 > canvas.x1 + 0.5 or box.y1 > canvas.y1 + 0.5:
            faults.append(f"text {t.get_text()!r} cut by the canvas")
    for (a, ba), (b, bb) in itertools.combinations(boxes, 2):
        if ba.overlaps(bb) and ba.width and bb.width:
            faults.append(f"text {a.get_text()!r} over {b.get_text()!r}")
    for legend in _legends(fig):
        box = legend.get_window_extent(renderer)
        if box.x0 < canvas.x0 - 0.5 or box.y0 < canvas.y0 - 0.5 or box.x1 > canvas.x1 + 0.5 or box.y1 > canvas.y1 + 0.5:
            faults.append(f"legend {[t.get_text() for t in legend.get_texts()]} outside the figure")
        own = set(legend.get_texts()) | ({legend.get_title()} if legend.get_title() else set())
        for t, tb in boxes:
            if t not in own and box.overlaps(tb):
                faults.append(f"legend {[x.get_text() for x in legend.get_texts()][:3]}... over {t.get_text()!r}")
    shown = {text.get_text() for legend in _legends(fig) for text in legend.get_texts()}
    for ax in fig.axes:
        labelled = {}  # a line's legend label: its own, or that of the error bar it is the data line of
        for handle, label in zip(*ax.get_legend_handles_labels()):
            labelled[id(handle.lines[0] if isinstance(handle, ErrorbarContainer) else handle)] = label
        lines = [ln for ln in ax.get_lines() if ln.get_visible() and len(ln.get_xdata()) > 1
                 and ln.get_linestyle() not in ("None", "", " ")]
        by_style = {}
        for ln in lines:
            by_style.setdefault(_line_key(ln), []).append(ln)
            if labelled.get(id(ln)) not in shown:
                faults.append(f"a line in {ax.get_title()!r} with no legend entry {_line_key(ln)}")
        for key, same in by_style.items():
            if len(same) > 1:
                faults.append(f"{len(same)} lines drawn alike in {ax.get_title()!r}: one legend entry for several")
    return faults


def png_faults(path: Path) -> list[str]:
    """The saved image's outermost two pixel rows and columns must be background (white): nothing runs off it."""
    import matplotlib.image as mpimg

    image = mpimg.imread(path)[..., :3]
    border = np.concatenate([image[:2].reshape(-1, 3), image[-2:].reshape(-1, 3),
                             image[:, :2].reshape(-1, 3), image[:, -2:].reshape(-1, 3)])
    return [] if np.all(border > 0.98) else [f"{path.name}: drawn to the edge of the image"]


def _lab(rgb) -> np.ndarray:
    """sRGB (0-1) to CIELAB (D65), for colour distances as the eye sees them."""
    rgb = np.asarray(rgb, dtype=float)[..., :3]
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = lin @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


MIN_COLOUR_DISTANCE = 45.0  # CIE76 delta E between adjacent teacher layers: viridis at 6 layers has 28, 43, 42
# (three pairs under it; the two greens of layers 4 and 5: 48), tab10's neighbours 52 or more
MIN_CURVE_SHARE = 0.25  # each curve spans at least this share of its panel's y axis


def data_faults(name: str, fig) -> list[str]:
    """What hides the data in the report's figures: a score axis not fitted to the students' means ± std (or a
    reference line drawn outside it), a training curve flattened by another's scale, adjacent teacher layers in
    colours alike."""
    from matplotlib.colors import to_rgb

    from alpkd.plots import fitted_limits

    faults = []
    axes = [ax for ax in fig.axes if ax.get_visible()]
    if name == "scores_vs_depth.png":
        for ax in axes:
            if ax.get_xlabel() != "student layers":
                continue
            low, high = [], []  # the error bars' ends (a point without a bar: the point)
            for container in ax.containers:
                y = np.asarray(container.lines[0].get_ydata(), dtype=float)
                bars = container.lines[2]
                if bars:
                    segments = np.concatenate([s for s in bars[0].get_segments()])
                    low.append(segments[:, 1].min()), high.append(segments[:, 1].max())
                low.append(y.min()), high.append(y.max())
            want = fitted_limits(low, high)
            if not np.allclose(ax.get_ylim(), want, atol=1e-6):
                faults.append(f"{ax.get_title()!r}: score axis {ax.get_ylim()} not fitted to the data {want}")
            for line in ax.get_lines():
                y = line.get_ydata()
                if len(y) == 2 and y[0] == y[1] and not want[0] <= y[0] <= want[1]:
                    faults.append(f"{ax.get_title()!r}: a reference line at {y[0]} outside the axis")
    if name.startswith("curves_"):
        for ax in axes:
            low, high = ax.get_ylim()
            for line in ax.get_lines():
                y = np.asarray(line.get_ydata(), dtype=float)
                if len(y) > 1 and (y.max() - y.min()) < MIN_CURVE_SHARE * (high - low):
                    faults.append(f"{ax.get_title()!r}: {line.get_label()!r} spans {y.max() - y.min():.3g} of an "
                                  f"axis {high - low:.3g} high")
    if name.startswith("attention_history_"):
        for ax in axes:
            colours = [to_rgb(line.get_color()) for line in ax.get_lines()]
            for j, (a, b) in enumerate(zip(colours, colours[1:])):
                distance = float(np.linalg.norm(_lab(a) - _lab(b)))
                if distance < MIN_COLOUR_DISTANCE:
                    faults.append(f"{ax.get_title()!r}: teacher layers {j + 1} and {j + 2} in colours "
                                  f"{distance:.0f} apart")
    return faults


def report_faults(params, root: Path, monkeypatch, panels: dict | None = None) -> dict[str, list[str]]:
    """Write the report of `root`, checking every figure as it is saved (legibility, and `data_faults`); `panels`
    collects each figure's panel titles."""
    from alpkd import plots, report

    real_save, faults = plots.save, {}

    def checked_save(fig, path, *args, **kwargs):
        if panels is not None:
            panels[Path(path).name] = [ax.get_title() for ax in fig.axes if ax.get_visible()]
        found = figure_faults(fig) + data_faults(Path(path).name, fig)
        out = real_save(fig, path, *args, **kwargs)
        faults[Path(path).name] = found + png_faults(out)
        return out

    monkeypatch.setattr(plots, "save", checked_save)
    report.write_report(params, root)
    return faults


def test_default_shaped_report_figures_are_legible(smoke_raw, tmp_path, monkeypatch):
    panels = {}
    faults = report_faults(default_params(smoke_raw), default_shaped_root(tmp_path), monkeypatch, panels)
    assert {"scores_vs_depth.png", "attention_sst2.png", "attention_history_sst2.png", "curves_sst2.png"} <= set(faults)
    # one task: an average panel would repeat it; then each method's gap to NO-KD with its interval
    assert panels["scores_vs_depth.png"] == ["sst2", "gap to NO-KD"]
    assert not any(faults.values()), "\n".join(f"{name}: {f}" for name, found in faults.items() for f in found)


def test_the_checks_see_a_fault(tmp_path):
    """The checks themselves: a legend off the canvas, a label under a legend, two lines under one entry."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, 1], color="C0", label="a")
    ax.plot([0, 1], [1, 0], color="C0")
    ax.set_xlabel("student layers")
    fig.legend(loc="lower center", ncol=1, bbox_to_anchor=(0.5, -0.1))
    fig.suptitle("a title far too long for a figure three inches wide, cut at both edges")
    faults = figure_faults(fig)
    assert any("outside the figure" in f for f in faults), faults
    assert any("cut by the canvas" in f for f in faults), faults
    assert any("over 'student layers'" in f for f in faults), faults
    assert any("one legend entry for several" in f for f in faults), faults
    fig.savefig(tmp_path / "f.png")
    plt.close(fig)
    assert png_faults(tmp_path / "f.png")


@pytest.mark.slow
def test_smoke_report_figures_are_legible(teacher_root, smoke_params, tmp_path, monkeypatch):
    import shutil

    from alpkd import distill

    for part in ("models", "cache", "data", "metrics", "logs"):
        if (teacher_root / part).exists():
            shutil.copytree(teacher_root / part, tmp_path / part)
    distill.distill_group(smoke_params, TASK, 1, tmp_path)
    faults = report_faults(smoke_params, tmp_path, monkeypatch)
    assert {"scores_vs_depth.png", f"curves_{TASK}.png"} <= set(faults), faults
    assert not any(faults.values()), "\n".join(f"{name}: {f}" for name, found in faults.items() for f in found)


def test_the_data_checks_see_a_fault():
    """data_faults itself: a 50-85 score axis, a curve flattened by another's scale, viridis' adjacent layers."""
    import matplotlib.pyplot as plt

    from alpkd import plots

    scores = pd.DataFrame({"task": "sst2", "depth": [3, 3, 1, 1], "method": ["kd", "nokd"] * 2,
                           "mean": [80.5, 80.7, 78.5, 78.6], "std": [0.3, 0.8, 0.8, 0.8]})
    fig = plots.score_vs_depth(scores, {"sst2": 85.7}, trivial={"sst2": 50.9})
    assert data_faults("scores_vs_depth.png", fig) == []
    assert [t.get_text() for t in fig.axes[0].texts] == ["teacher 85.7 above", "trivial predictor 50.9 below"]
    fig.axes[0].set_ylim(50, 85)
    assert any("not fitted" in f for f in data_faults("scores_vs_depth.png", fig))
    plt.close(fig)
    steps = np.arange(5, 380, 5)
    logs = {"a": pd.DataFrame({"step": steps, "loss": 20 * np.exp(-steps / 100)}),
            "b": pd.DataFrame({"step": steps, "loss": 0.7 - 0.0005 * steps})}
    fig = plots.training_curves(logs, {"3 layer(s)": ["a", "b"]})
    assert [f for f in data_faults("curves_sst2.png", fig) if "'b' spans" in f]
    plt.close(fig)
    fig, ax = plt.subplots()
    for j, colour in enumerate(plt.cm.viridis(np.linspace(0, 1, 6))):
        ax.plot([0, 1], [j, j], color=colour)
    assert any("teacher layers 1 and 2" in f for f in data_faults("attention_history_sst2.png", fig))
    plt.close(fig)
    history = [{"step": s, "weights": np.full((1, 12), 1 / 12).tolist()} for s in (0, 10)]
    fig = plots.attention_history({(1, "alp"): history})
    assert data_faults("attention_history_sst2.png", fig) == []  # a BERT-base teacher's 12 layers
    plt.close(fig)


def test_a_narrow_attention_figure_keeps_its_title():
    """One ALP method (the default run's): a figure one panel wide, the report's long title wrapped, not cut."""
    import matplotlib.pyplot as plt

    from alpkd import plots

    rng = np.random.default_rng(0)
    maps = {(3, "alp"): rng.dirichlet(np.ones(6), size=3), (1, "alp"): rng.dirichlet(np.ones(6), size=1)}
    fig = plots.attention_grid(maps, [3, 1], ["alp"], "sst2: ALP attention over teacher layers (teacher: 6 layers), "
                               "mean over seeds")
    assert figure_faults(fig) == []
    plt.close(fig)


def test_the_committed_default_run_figures_are_legible(tmp_path, monkeypatch):
    """The figures the README shows: the committed PNGs have background edges, and drawn again from the committed
    metrics/, logs/ and attention/ with the committed params.yaml every figure passes the checks above."""
    import shutil

    from alpkd import config
    from helpers import REPO

    committed = sorted((REPO / "report" / "figures").glob("*.png"))
    assert {p.name for p in committed} >= {"scores_vs_depth.png", "attention_sst2.png", "curves_sst2.png"}
    assert not [f for p in committed for f in png_faults(p)]
    for part in ("metrics", "logs", "attention"):
        shutil.copytree(REPO / part, tmp_path / part)
    faults = report_faults(config.load(REPO / "params.yaml"), tmp_path, monkeypatch)
    assert {p.name for p in committed} == set(faults), faults
    assert not any(faults.values()), "\n".join(f"{name}: {f}" for name, found in faults.items() for f in found)
