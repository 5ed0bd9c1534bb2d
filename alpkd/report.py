"""The results of the replication: table, summaries and figures, from the metrics files of every run.

`collect` reads `metrics/teacher/*.json` and `metrics/students/*.json` under an output root into one
DataFrame; `summarise` turns it into mean and standard deviation over seeds for each task and for the
average over tasks; `write_report` writes, atomically, under `report/`:

- `results.md`    the table (teacher row, then a row per student depth and method; a column per task and
                  the average), with the profile, data source, teacher model and seeds that produced it
- `results.csv`   the same numbers to 4 decimals (layers, method, task, mean, std, n_seeds)
- `scores.csv`    students' mean scores in long form (task, depth, method, score) for `dvc plots`
- `scores_by_depth.csv`  the average over tasks, a column per method, a row per depth (`dvc plots`)
- `significance.csv`  paired bootstrap of each ALP method against KD and PKD at each depth (gap, 95%
                  interval, p-value; `alpkd.significance`), also in results.md
- `summary.json`  the mean scores (teacher, and `students_<depth>L.<method>.<task or average>`) for
                  `dvc metrics show` and `dvc metrics diff`
- `figures/`      score vs depth, ALP attention maps per task, training curves per task (PNG)

Scores are the task's headline GLUE metric (accuracy, F1, Matthews correlation or Pearson) x100. With
several seeds a cell is `mean ± std` (sample standard deviation, ddof=1). The average over tasks is taken
per seed (over seeds that have every task), then averaged over seeds.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .paths import Layout, run_name

AVERAGE = "average"
METRIC_ABBREVIATIONS = {"accuracy": "acc", "f1": "F1", "matthews": "MCC", "pearson": "Pearson r",
                        "spearman": "Spearman", "accuracy_matched": "acc-m"}
COLUMNS = ["role", "task", "depth", "method", "seed", "score", "headline", "profile", "data_source", "model",
           "teacher_layers", "run", "file"]


# --- reading -------------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # a half-written or foreign file is not a result


def collect(root: str | Path) -> pd.DataFrame:
    """Every teacher and student metrics file under `root`, one row each (columns `COLUMNS`)."""
    root = Path(root)
    rows = []
    for role, folder in (("teacher", root / "metrics" / "teacher"), ("student", root / "metrics" / "students")):
        for path in sorted(folder.glob("*.json")):
            rec = _read_json(path)
            if not rec or "score" not in rec or "task" not in rec:
                continue
            is_teacher = role == "teacher"
            rows.append({
                "role": role, "task": rec["task"], "depth": int(rec["depth"]),
                "method": "teacher" if is_teacher else rec["method"], "seed": int(rec["seed"]),
                "score": float(rec["score"]), "headline": rec.get("headline", "score"),
                "profile": rec.get("profile"), "data_source": rec.get("data_source"),
                "model": rec.get("model"),
                "teacher_layers": int(rec["depth"]) if is_teacher else rec.get("teacher_layers"),
                "run": f"teacher-{rec['task']}" if is_teacher else run_name(rec["task"], rec["depth"], rec["method"],
                                                                           rec["seed"]),
                "file": str(path.relative_to(root)),
            })
    return pd.DataFrame(rows, columns=COLUMNS)


def select(records: pd.DataFrame, tasks, depths, methods, seeds) -> pd.DataFrame:
    """The records of the configured grid only (files left behind by an earlier grid are ignored)."""
    teacher = (records["role"] == "teacher") & records["task"].isin(tasks)
    student = ((records["role"] == "student") & records["task"].isin(tasks) & records["depth"].isin(depths)
               & records["method"].isin(methods) & records["seed"].isin(seeds))
    return records[teacher | student].reset_index(drop=True)


def missing_runs(records: pd.DataFrame, tasks, depths, methods, seeds) -> list[str]:
    """Names of the grid's runs that have no metrics file (teachers as `teacher-<task>`)."""
    have = set(records["run"])
    wanted = [f"teacher-{t}" for t in tasks]
    wanted += [run_name(t, d, m, s) for t in tasks for d in depths for m in methods for s in seeds]
    return [r for r in wanted if r not in have]


# --- numbers -------------------------------------------------------------------------------------------
def _stats(values) -> tuple[float, float, int]:
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return float("nan"), float("nan"), 0
    std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return float(np.mean(values)), std, len(values)


def summarise(records: pd.DataFrame, tasks: list[str]) -> pd.DataFrame:
    """Mean, std and count over seeds of the score x100, per (layers, method, task) and for the average.

    Columns: role, layers, method, task (a task name or `average`), mean, std, n_seeds. The average of a
    (layers, method) is computed for each seed that has every task, then over those seeds.
    """
    out = []
    if records.empty:
        return pd.DataFrame(columns=["role", "layers", "method", "task", "mean", "std", "n_seeds"])
    records = records.assign(score100=records["score"] * 100.0)
    for (role, layers, method), group in records.groupby(["role", "depth", "method"], sort=False):
        for task in tasks:
            mean, std, n = _stats(group.loc[group["task"] == task, "score100"])
            if n:
                out.append((role, layers, method, task, mean, std, n))
        per_seed = group.pivot_table(index="seed", columns="task", values="score100", aggfunc="mean")
        complete = per_seed.reindex(columns=tasks).dropna()
        if len(complete):
            mean, std, n = _stats(complete.mean(axis=1))
            out.append((role, layers, method, AVERAGE, mean, std, n))
    return pd.DataFrame(out, columns=["role", "layers", "method", "task", "mean", "std", "n_seeds"])


def format_cell(mean: float, std: float, n: int) -> str:
    """`71.2`, or `71.2 ± 0.4` with several seeds; `–` where there is no result."""
    if n == 0 or pd.isna(mean):
        return "–"
    if n > 1 and not pd.isna(std):
        return f"{mean:.1f} ± {std:.1f}"
    return f"{mean:.1f}"


def results_table(summary: pd.DataFrame, tasks: list[str], depths: list[int], methods: list[str]) -> pd.DataFrame:
    """Rows: the teacher(s), then each student depth (as configured) and method; columns: tasks, average."""
    from .plots import method_label

    index = {(r.role, r.layers, r.method, r.task): r for r in summary.itertuples(index=False)}
    keys = [("teacher", int(layers), "teacher")
            for layers in sorted(set(summary.loc[summary["role"] == "teacher", "layers"]), reverse=True)]
    keys += [("student", int(d), m) for d in depths for m in methods]
    rows = []
    for role, layers, method in keys:
        row = {"layers": layers, "method": "teacher" if role == "teacher" else method_label(method)}
        for task in [*tasks, AVERAGE]:
            r = index.get((role, layers, method, task))
            row[task] = format_cell(r.mean, r.std, r.n_seeds) if r is not None else "–"
        rows.append(row)
    return pd.DataFrame(rows, columns=["layers", "method", *tasks, AVERAGE])


def markdown_table(table: pd.DataFrame, headers: dict[str, str] | None = None) -> str:
    headers = headers or {}
    names = [headers.get(c, c) for c in table.columns]
    lines = ["| " + " | ".join(names) + " |", "|" + "|".join("---:" if c != "method" else ":---" for c in table.columns) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


# --- writing -------------------------------------------------------------------------------------------
def write_text(path: Path, text: str) -> Path:
    """Atomic: a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def _round(df: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    return df.round({c: digits for c in df.columns if df[c].dtype.kind == "f"})


def load_attention(root: str | Path, runs: list[str]) -> dict[str, np.ndarray]:
    """ALP attention maps (student layer x teacher layer) of the runs that have one."""
    layout, maps = Layout(Path(root)), {}
    for run in runs:
        rec = _read_json(layout.attention(run))
        if rec and rec.get("weights") is not None:
            maps[run] = np.asarray(rec["weights"], dtype=float)
    return maps


def mark_no_attention(root: str | Path, record: dict) -> Path:
    """For a run without ALP: write `attention/<run>.json` with `weights: null` unless a map exists.

    The pipeline's `distill` matrix stage declares the same outputs for every method, so each run needs the
    file; `load_attention` skips it.
    """
    run = run_name(record["task"], record["depth"], record["method"], record["seed"])
    path = Layout(Path(root)).attention(run)
    if not path.exists():
        keys = ("task", "depth", "method", "seed")
        write_text(path, json.dumps({**{k: record[k] for k in keys}, "weights": None,
                                     "note": "no attention: not an ALP method"}, indent=2) + "\n")
    return path


def load_logs(root: str | Path, names: list[str]) -> dict[str, pd.DataFrame]:
    """Training logs (`logs/<name>.csv`) of the named runs that have one."""
    layout, logs = Layout(Path(root)), {}
    for name in names:
        path = layout.log(name)
        if path.exists() and path.stat().st_size:
            logs[name] = pd.read_csv(path)
    return logs


def load_predictions(root: str | Path, run: str, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, predictions) of a run on a validation split, from `predictions/<run>.json`, or None."""
    rec = _read_json(Layout(Path(root)).predictions(run))
    if not rec or split not in rec:
        return None
    return np.asarray(rec[split]["labels"]), np.asarray(rec[split]["predictions"])


BASELINES = ("nokd", "kd", "pkd")  # what each ALP method is compared with


def significance(params, root: str | Path, records: pd.DataFrame, resamples: int = 1000) -> pd.DataFrame:
    """Paired bootstrap (`alpkd.significance`) of each ALP method against each baseline, at each depth.

    Over the tasks where both methods have per-example predictions; gap and interval x100. Columns: layers,
    method, baseline, gap, low, high, p_value, n_tasks, n_seeds.
    """
    from .significance import paired_bootstrap

    columns = ["layers", "method", "baseline", "gap", "low", "high", "p_value", "n_tasks", "n_seeds"]
    students = records[records["role"] == "student"]
    methods = list(params.distill.methods)
    rows = []
    for depth in params.student.depths:
        for a in [m for m in methods if m.startswith("alp")]:
            for b in [m for m in BASELINES if m in methods]:
                items = []
                for task_name in params.data.tasks:
                    task = params.task(task_name)
                    split = task.validation_splits[0]
                    preds = {}
                    for m in (a, b):
                        runs = students[(students["task"] == task_name) & (students["depth"] == depth)
                                        & (students["method"] == m)]["run"]
                        preds[m] = [p for p in (load_predictions(root, r, split) for r in runs) if p is not None]
                    if not preds[a] or not preds[b]:
                        continue
                    labels = preds[a][0][0]
                    if any(len(lab) != len(labels) or (lab != labels).any() for lab, _ in preds[a] + preds[b]):
                        continue  # runs evaluated on different examples cannot be paired
                    items.append({"metric": task.headline, "labels": labels,
                                  "a": [p for _, p in preds[a]], "b": [p for _, p in preds[b]]})
                if items:
                    c = paired_bootstrap(items, resamples=resamples)
                    rows.append((depth, a, b, 100 * c.gap, 100 * c.low, 100 * c.high, c.p_value, c.n_tasks,
                                 c.n_seeds))
    return pd.DataFrame(rows, columns=columns)


def significance_table(sig: pd.DataFrame) -> pd.DataFrame:
    from .plots import method_label

    return pd.DataFrame({
        "layers": sig["layers"],
        "method": [f"{method_label(a)} − {method_label(b)}" for a, b in zip(sig["method"], sig["baseline"])],
        "gap": [f"{g:+.1f}" for g in sig["gap"]],
        "95% interval": [f"[{lo:+.1f}, {hi:+.1f}]" for lo, hi in zip(sig["low"], sig["high"])],
        "p": [f"{p:.3f}" for p in sig["p_value"]],
        "tasks": sig["n_tasks"],
        "seeds": sig["n_seeds"],
        "verdict": [("within noise" if p >= 0.05 else ("ALP better" if g > 0 else "ALP worse"))
                    for g, p in zip(sig["gap"], sig["p_value"])],
    })


def _describe(values) -> str:
    values = sorted({str(v) for v in values if v is not None and not pd.isna(v)})
    return ", ".join(f"`{v}`" for v in values) if values else "unknown"


def write_report(params, root: str | Path = ".", resamples: int = 1000) -> dict:
    """Write the report of the grid configured in `params` (an `alpkd.config.Params`) under `root/report`.

    Returns {"table": the table (strings), "summary": the numbers, "significance": the paired bootstrap
    comparisons, "missing": runs without results, "files": {name: path}}.
    """
    from . import plots

    root = Path(root)
    tasks, depths = list(params.data.tasks), list(params.student.depths)
    methods, seeds = list(params.distill.methods), list(params.distill.seeds)
    records = select(collect(root), tasks, depths, methods, seeds)
    summary = summarise(records, tasks)
    table = results_table(summary, tasks, depths, methods)
    missing = missing_runs(records, tasks, depths, methods, seeds)
    out = Layout(root).report()
    figures = out / "figures"

    headline = {t: records.loc[records["task"] == t, "headline"].iloc[0] for t in tasks if (records["task"] == t).any()}
    headers = {t: f"{t} ({METRIC_ABBREVIATIONS.get(h, h)})" for t, h in headline.items()}
    teachers = records[records["role"] == "teacher"]
    students = records[records["role"] == "student"]
    files = {}

    # figures: written into report/figures, stale ones (from an earlier grid) removed
    written = []
    student_summary = summary[summary["role"] == "student"].rename(columns={"layers": "depth"})
    teacher_scores = summary[summary["role"] == "teacher"].set_index("task")["mean"].to_dict()
    if not student_summary.empty:
        panels = [t for t in [*tasks, AVERAGE] if (student_summary["task"] == t).any()]
        fig = plots.score_vs_depth(student_summary, teacher_scores, panels, headline)
        written.append(plots.save(fig, figures / "scores_vs_depth.png"))
    alp_methods = [m for m in methods if m.startswith("alp")]
    for task in tasks:
        runs = students[(students["task"] == task) & students["method"].isin(alp_methods)]
        maps = load_attention(root, list(runs["run"]))
        by_cell = {}
        for (depth, method), group in runs.groupby(["depth", "method"]):
            arrays = [maps[r] for r in group["run"] if r in maps]
            if arrays:
                by_cell[(int(depth), method)] = np.mean(arrays, axis=0)  # mean over seeds
        if by_cell:
            n = teachers.loc[teachers["task"] == task, "depth"]
            title = f"{task}: ALP attention over teacher layers" + (f" (teacher: {int(n.iloc[0])} layers)" if len(n) else "")
            shown = [d for d in depths if any(k[0] == d for k in by_cell)]
            fig = plots.attention_grid(by_cell, shown, [m for m in alp_methods if any(k[1] == m for k in by_cell)], title)
            written.append(plots.save(fig, figures / f"attention_{task}.png"))
        task_runs = students[students["task"] == task]
        logs = load_logs(root, [f"teacher-{task}", *task_runs["run"]])
        if logs:
            panel_runs = {"teacher": [f"teacher-{task}"]}
            panel_runs.update({f"{d} layer(s)": list(task_runs.loc[task_runs["depth"] == d, "run"]) for d in depths
                               if (task_runs["depth"] == d).any()})
            method_of = dict(zip(task_runs["run"], task_runs["method"])) | {f"teacher-{task}": "teacher"}
            fig = plots.training_curves(logs, panel_runs, "loss", method_of)
            fig.suptitle(f"{task}: training loss")
            fig.tight_layout()
            written.append(plots.save(fig, figures / f"curves_{task}.png"))
    for stale in figures.glob("*.png") if figures.exists() else []:
        if stale not in written:
            stale.unlink()
    files.update({p.stem: p for p in written})

    # numbers
    files["results.csv"] = write_text(out / "results.csv", _round(summary).to_csv(index=False))
    scores = student_summary[["task", "depth", "method", "mean"]].rename(columns={"mean": "score"})
    files["scores.csv"] = write_text(out / "scores.csv", _round(scores).to_csv(index=False))
    wide = (student_summary[student_summary["task"] == AVERAGE]
            .pivot_table(index="depth", columns="method", values="mean")
            .reindex(columns=methods).sort_index())
    files["scores_by_depth.csv"] = write_text(out / "scores_by_depth.csv", _round(wide).to_csv())
    metrics = {"teacher": {t: round(v, 4) for t, v in teacher_scores.items()}}
    for r in student_summary.itertuples(index=False):  # students_<depth>L.<method>.<task or average>
        metrics.setdefault(f"students_{int(r.depth)}L", {}).setdefault(r.method, {})[r.task] = round(r.mean, 4)
    files["summary.json"] = write_text(out / "summary.json", json.dumps(metrics, indent=2) + "\n")
    sig = significance(params, root, records, resamples)
    files["significance.csv"] = write_text(out / "significance.csv", _round(sig).to_csv(index=False))

    # the table, with what produced it
    teacher_models = [f"{m} ({int(n)} layers)" for m, n in
                      teachers[["model", "depth"]].drop_duplicates().itertuples(index=False)]
    profiles = set(records["profile"].dropna())
    lines = [
        "# ALP-KD replication: results",
        "",
        f"- Profile: {_describe(profiles or [params.profile])}"
        + (f" (params.yaml now says `{params.profile}`: these results are stale)" if profiles - {params.profile} else ""),
        f"- Data: GLUE validation splits, from {_describe(records['data_source'])}",
        f"- Teacher: {', '.join(teacher_models) or 'none found'}",
        f"- Student seeds: {', '.join(str(s) for s in sorted(set(students['seed']))) or 'none'}"
        f" (configured: {', '.join(str(s) for s in seeds)}); teacher seed: "
        f"{', '.join(str(s) for s in sorted(set(teachers['seed']))) or 'none'}",
        f"- Student initialisation: `{params.student.init}`; ALP scores scaled by 1/sqrt(d): "
        f"{'yes' if params.distill.alp_scale else 'no (the paper)'}",
        "- Cells: the task's headline metric x100 on its validation split; `mean ± std` (sample std) over seeds "
        "when there are several. `average`: the mean over tasks, per seed, then over seeds.",
        "",
        markdown_table(table, headers),
        "",
    ]
    if len(sig):
        from .plots import method_label

        against = ", ".join(method_label(m) for m in BASELINES if m in set(sig["baseline"]))
        lines += [
            "## Is the gap more than noise?",
            "",
            f"Each ALP method against {against}: the gap in the headline metric "
            "x100, averaged over tasks (each method's seeds averaged per task), with a 95% interval and a "
            f"two-sided p-value from {resamples} paired bootstrap resamples of the validation examples "
            "(`alpkd.significance`).",
            "",
            markdown_table(significance_table(sig)),
            "",
            f"{int((sig['p_value'] >= 0.05).sum())} of {len(sig)} gaps are within noise (p >= 0.05); "
            "a gap within noise is no evidence that one method is better than the other."
            + (" These runs have one seed per cell, so the intervals cover the validation sample only, not "
               "the variation between training seeds; five seeds: `dvc exp run -S 'distill.seeds=[1,2,3,4,5]'` "
               "(five times the distill stages' time)." if int(sig["n_seeds"].max()) == 1 else ""),
            "",
        ]
    if missing:
        lines += [f"Missing runs ({len(missing)}, shown as –): " + ", ".join(f"`{m}`" for m in missing), ""]
    if written:
        lines += ["## Figures", ""] + [f"![{p.stem}](figures/{p.name})" for p in written] + [""]
    files["results.md"] = write_text(out / "results.md", "\n".join(lines))
    return {"table": table, "summary": summary, "significance": sig, "missing": missing, "files": files}
