"""The results of the replication: table, summaries and figures, from the metrics files of every run.

`collect` reads `metrics/teacher/<task>/*.json` and `metrics/students/*.json` under an output root into one
DataFrame; `summarise` turns it into mean and standard deviation over seeds for each task and for the
average over tasks; `write_report` writes, atomically, under `report/`:

- `results.md`    the table (teacher row, then a row per student depth and method; a column per task and
                  the average), with the profile, data source, teacher model and seeds that produced it
- `results.csv`   the same numbers to 4 decimals (layers, method, task, mean, std, n_seeds)
- `scores.csv`    students' mean scores in long form (task, depth, method, score) for `dvc plots`
- `scores_by_depth.csv`  the average over tasks, a column per method, a row per depth (`dvc plots`)
- `significance.csv`  paired, two-stage bootstrap of each layer-mapping method against NO-KD, KD and PKD, and of
                  the baselines among themselves, at each depth (gap, 95% interval, p-value;
                  `alpkd.significance`), also in results.md
- `intervals.csv` each student cell's mean with a 95% interval under the same resampling of teachers and seeds
- `summary.json`  the mean scores (teacher, and `students_<depth>L.<method>.<task or average>`) for
                  `dvc metrics show` and `dvc metrics diff`
- `figures/`      score vs depth, ALP attention maps per task, training curves per task (PNG)
- `plots/`        what `dvc plots show` draws, a column per method: `scores/<task>.csv` (score vs depth) and
                  `curves/<task>-<depth>.csv` (task loss during training, mean over seeds)

Scores are the task's headline GLUE metric (accuracy, F1, Matthews correlation or Pearson) x100. With
several seeds a cell is `mean ± std` (sample standard deviation, ddof=1). The average over tasks is taken
per seed (over seeds that have every task), then averaged over seeds.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .paths import Layout, Run, replace_atomically, run_name

AVERAGE = "average"
METRIC_ABBREVIATIONS = {"accuracy": "acc", "f1": "F1", "matthews": "MCC", "pearson": "Pearson r",
                        "spearman": "Spearman", "accuracy_matched": "acc-m",
                        "accuracy_mismatched": "acc-mm"}
COLUMNS = ["role", "task", "depth", "method", "seed", "teacher_seed", "score", "headline", "profile", "data_source",
           "model", "teacher_layers", "run", "file", "constant", "entropy", "trivial", "cpu", "cpu_capability",
           "numerics"]


# --- reading -------------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # a half-written or foreign file is not a result


def _run_of(rec: dict) -> Run:
    return Run(rec["task"], int(rec["depth"]), rec["method"], int(rec["seed"]))


def collect(root: str | Path) -> pd.DataFrame:
    """Every teacher and student metrics file under `root`, one row each (columns `COLUMNS`)."""
    root = Path(root)
    rows = []
    files = [("teacher", p) for p in sorted((root / "metrics" / "teacher").glob("*/s*.json"))]
    students = root / "metrics" / "students"  # <group>/<method>/, and <task>-assisted/<group>/<method>/
    files += [("student", p) for p in sorted([*students.glob("*/*/s*.json"), *students.glob("*/*/*/s*.json")])]
    for role, path in files:
        rec = _read_json(path)
        if not rec or "score" not in rec or "task" not in rec:
            continue
        is_teacher = role == "teacher"
        score, env = rec["score"], rec.get("environment") or {}
        rows.append({
            "role": role, "task": rec["task"], "depth": int(rec["depth"]),
            "method": "teacher" if is_teacher else rec["method"], "seed": int(rec["seed"]),
            "teacher_seed": int(rec["seed"]) if is_teacher else rec.get("teacher_seed"),
            "score": float("nan") if score is None else float(score), "headline": rec.get("headline", "score"),
            "profile": rec.get("profile"), "data_source": rec.get("data_source"),
            "model": rec.get("model"),
            "teacher_layers": int(rec["depth"]) if is_teacher else rec.get("teacher_layers"),
            "run": teacher_run(rec["task"], int(rec["seed"])) if is_teacher else _run_of(rec).name,
            "file": str(path.relative_to(root)),
            "constant": bool(rec.get("constant_predictions", False)),
            "entropy": rec.get("attention_entropy_bits"),
            "trivial": (rec.get("trivial") or {}).get(rec.get("headline")) if is_teacher else None,
            "cpu": env.get("cpu"), "cpu_capability": env.get("cpu_capability"), "numerics": env.get("numerics"),
        })
        for column, key in further_splits(rec):  # MNLI's mismatched set: a row of its own, task `mnli-mm`
            value = rec["metrics"][key]
            rows.append({**rows[-1], "task": column, "headline": key,
                         "score": float("nan") if value is None else float(value),
                         "trivial": (rec.get("trivial") or {}).get(key) if is_teacher else None})
    return pd.DataFrame(rows, columns=COLUMNS)


SPLIT_COLUMNS = {"_mismatched": "mm"}  # a further validation split's column: `mnli-mm`, as GLUE names it


def further_splits(rec: dict) -> list[tuple[str, str]]:
    """(column, metric key) of a record's validation splits after its first (MNLI: `("mnli-mm",
    "accuracy_mismatched")`): the headline metric with the first split's suffix replaced by another's."""
    headline, scores = rec.get("headline", ""), rec.get("metrics") or {}
    out = []
    for first in ("_matched",):
        if headline.endswith(first):
            base = headline[: -len(first)]
            out += [(f"{rec['task']}-{short}", base + suffix) for suffix, short in SPLIT_COLUMNS.items()
                    if base + suffix in scores]
    return out


def shown_columns(tasks: list[str], records: pd.DataFrame) -> list[str]:
    """The results table's task columns: each task, followed by its further validation splits' columns
    (`mnli`, `mnli-mm`); the average is over `tasks` alone (MNLI counted once, by its matched set)."""
    present = set(records["task"])
    return [c for t in tasks for c in [t, *(f"{t}-{s}" for s in SPLIT_COLUMNS.values())] if c == t or c in present]


def teacher_run(task: str, seed: int) -> str:
    """A teacher's name among the runs (`teacher-<task>-s<seed>`)."""
    return f"teacher-{task}-s{seed}"


def _markers(root: str | Path, name: str) -> list[dict]:
    students = Path(root) / "metrics" / "students"
    found = [_read_json(p) for p in sorted([*students.glob(f"*/*/{name}"), *students.glob(f"*/*/*/{name}")])]
    return [rec for rec in found if rec and "task" in rec]


def duplicates(root: str | Path) -> dict[tuple[str, int, str], dict]:
    """Cells not trained because their objective is another method's at that depth: (task, depth, method)
    -> the `same_as.json` marker (names the method, says why)."""
    return {(r["task"], int(r["depth"]), r["method"]): r for r in _markers(root, "same_as.json") if "same_as" in r}


def undefined(root: str | Path) -> dict[tuple[str, int, str], dict]:
    """Cells whose method is not defined at that depth (a teacher-assistant method at the largest depth, which has
    no deeper student): (task, depth, method) -> the `not_defined.json` marker (says why)."""
    return {(r["task"], int(r["depth"]), r["method"]): r for r in _markers(root, "not_defined.json")}


def select(records: pd.DataFrame, tasks, depths, methods, seeds, teacher_seeds=None) -> pd.DataFrame:
    """The records of the configured grid only (files left behind by an earlier grid are ignored)."""
    teacher = (records["role"] == "teacher") & records["task"].isin(tasks)
    if teacher_seeds is not None:
        teacher &= records["seed"].isin(teacher_seeds)
    student = ((records["role"] == "student") & records["task"].isin(tasks) & records["depth"].isin(depths)
               & records["method"].isin(methods) & records["seed"].isin(seeds))
    return records[teacher | student].reset_index(drop=True)


def missing_runs(records: pd.DataFrame, tasks, depths, methods, seeds, skipped=(), teacher_seeds=()) -> list[str]:
    """Names of the grid's runs that have no metrics file (teachers as `teacher-<task>-s<seed>`); cells in
    `skipped` (duplicates of another method) are not missing."""
    have = set(records["run"])
    wanted = [teacher_run(t, s) for t in tasks for s in teacher_seeds]
    wanted += [run_name(t, d, m, s) for t in tasks for d in depths for m in methods for s in seeds
               if (t, d, m) not in skipped]
    return [r for r in wanted if r not in have]


# --- numbers -------------------------------------------------------------------------------------------
FLAG = "\u26a0"  # a cell with a seed whose validation predictions are constant (or whose metric is undefined)
SUMMARY_COLUMNS = ["role", "layers", "method", "task", "mean", "std", "n_seeds", "n_nan", "n_constant"]


def _stats(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group of `frame` (a row a seed, columns `score100` and `constant`): mean and sample std of the
    defined scores, the number of seeds, how many scores are NaN (undefined), how many seeds were constant."""
    return frame.groupby(by, sort=False).agg(
        mean=("score100", "mean"), std=("score100", "std"), n_seeds=("score100", "size"),
        n_nan=("score100", lambda s: int(s.isna().sum())), n_constant=("constant", "sum")).reset_index()


def _seed_averages(records: pd.DataFrame, tasks: list[str], by: list[str]) -> pd.DataFrame:
    """A row per group and seed that has every task: the mean score over tasks (NaN where a task's is NaN),
    and whether the seed's predictions were constant on any task."""
    seeds = [*by, "seed"]
    cells = records[records["task"].isin(tasks)]
    complete = cells.groupby(seeds)["task"].nunique() == len(set(tasks))
    scores = cells.groupby([*seeds, "task"])["score100"].mean().unstack("task")
    scores = scores.reindex(index=complete.index[complete], columns=tasks)
    constant = records.groupby(seeds)["constant"].any().reindex(scores.index)
    return pd.DataFrame({"score100": scores.mean(axis=1, skipna=False), "constant": constant}).reset_index()


def summarise(records: pd.DataFrame, tasks: list[str]) -> pd.DataFrame:
    """Mean, std and count over seeds of the score x100, per (layers, method, task) and for the average.

    Columns `SUMMARY_COLUMNS`: `n_nan` counts seeds whose metric is undefined (a Pearson r of constant
    predictions), left out of mean and std and flagged; `n_constant` counts seeds with constant predictions.
    The average of a (layers, method) is computed for each seed that has every task, then over those seeds;
    a seed with an undefined task score has an undefined average. Rows: (role, layers, method) in the order
    of `records`, each with its tasks in the order of `tasks`, then the average.
    """
    if records.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    cells = ["role", "depth", "method"]
    records = records.assign(score100=records["score"] * 100.0, cell=records.groupby(cells, sort=False).ngroup())
    per_task = _stats(records[records["task"].isin(tasks)], ["cell", *cells, "task"])
    average = _stats(_seed_averages(records, tasks, ["cell", *cells]), ["cell", *cells]).assign(task=AVERAGE)
    position = {task: i for i, task in enumerate([*tasks, AVERAGE])}
    out = pd.concat([per_task, average]).assign(position=lambda f: f["task"].map(position))
    out = out.sort_values(["cell", "position"]).rename(columns={"depth": "layers"})
    return out[SUMMARY_COLUMNS].reset_index(drop=True)


def format_cell(mean: float, std: float, n: int, n_nan: int = 0, n_constant: int = 0) -> str:
    """`71.2`, or `71.2 ± 0.4` with several seeds; `–` where there is no result; flagged with ⚠ where a seed's
    predictions are constant, and `NaN` (with how many seeds) where a seed's metric is undefined."""
    if n == 0:
        return "–"
    if n_nan:
        return f"NaN ({n_nan} of {n} seeds) {FLAG}"
    cell = f"{mean:.1f} ± {std:.1f}" if n > 1 and not pd.isna(std) else f"{mean:.1f}"
    return f"{cell} {FLAG}" if n_constant else cell


def trivial_row(records: pd.DataFrame, tasks: list[str]) -> dict[str, float]:
    """The trivial predictor's headline score x100 per task (from the teacher records; NaN where the metric
    is undefined for a constant, e.g. Pearson r), and its average over tasks with undefined counted as 0."""
    teachers = records[records["role"] == "teacher"]
    scores = 100.0 * teachers.groupby("task")["trivial"].first().reindex(tasks).astype(float)
    average = float(scores.fillna(0.0).mean()) if scores.notna().any() else float("nan")
    return {**{task: float(v) for task, v in scores.items()}, AVERAGE: average}


def results_table(summary: pd.DataFrame, tasks: list[str], depths: list[int], methods: list[str],
                  trivial: dict[str, float] | None = None, skipped=(), undefined=()) -> pd.DataFrame:
    """Rows: the trivial predictor, the teacher(s), then each student depth (as configured) and method
    (cells in `skipped`, the same objective as another method, left out; cells in `undefined`, a method not
    defined at that depth, say so); columns: tasks, average."""
    from .plots import method_label

    index = {(r.role, r.layers, r.method, r.task): r for r in summary.itertuples(index=False)}
    rows = []
    if trivial is not None:
        row = {"layers": "–", "method": "trivial"}
        for task in [*tasks, AVERAGE]:
            v = trivial.get(task, float("nan"))
            row[task] = "undefined (constant)" if pd.isna(v) else f"{v:.1f}"
        rows.append(row)
    keys = [("teacher", int(layers), "teacher")
            for layers in sorted(set(summary.loc[summary["role"] == "teacher", "layers"]), reverse=True)]
    own = {t.split("-", 1)[0] for t in tasks}  # a further split's column (`mnli-mm`) is its task's (task names hold no -)
    keys += [("student", int(d), m) for d in depths for m in methods
             if not all((t, d, m) in skipped for t in own)]
    for role, layers, method in keys:
        row = {"layers": layers, "method": "teacher" if role == "teacher" else method_label(method)}
        for task in [*tasks, AVERAGE]:
            r = index.get((role, layers, method, task))
            none = "not defined" if all((t, layers, method) in undefined for t in own) and role == "student" else "–"
            row[task] = format_cell(r.mean, r.std, r.n_seeds, r.n_nan, r.n_constant) if r is not None else none
        rows.append(row)
    return pd.DataFrame(rows, columns=["layers", "method", *tasks, AVERAGE])


TEXT_COLUMNS = {"method", "comparison", "verdict", "task", "top teacher layer per student layer, per seed"}


def markdown_table(table: pd.DataFrame, headers: dict[str, str] | None = None) -> str:
    """`table` (cells as they are, columns renamed by `headers`) in Markdown: text columns left-aligned, the
    rest right-aligned. Cells are not padded (tabulate would pad them to the column's width), so each row
    reads `| 3 | KD | 78.7 ± 1.3 |`; the rule under the header is written here for the same reason."""
    header, _, *rows = (table.rename(columns=headers or {})
                        .to_markdown(index=False, stralign=None, numalign=None, disable_numparse=True).splitlines())
    rule = "|" + "|".join(":---" if c in TEXT_COLUMNS else "---:" for c in table.columns) + "|"
    return "\n".join([header, rule, *rows])


# --- writing -------------------------------------------------------------------------------------------
def write_text(path: Path, text: str) -> Path:
    """Atomic: a temporary file renamed into place."""
    return replace_atomically(path, lambda tmp: tmp.write_text(text))


def _round(df: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    return df.round({c: digits for c in df.columns if df[c].dtype.kind == "f"})


def runs_of(frame: pd.DataFrame) -> list[Run]:
    """The student runs of records (rows with task, depth, method, seed)."""
    return [Run(r.task, int(r.depth), r.method, int(r.seed)) for r in frame.itertuples(index=False)]


def load_attention(root: str | Path, runs: list[Run]) -> dict[Run, dict]:
    """The attention records (`weights`, `entropy_bits`, `history`) of the ALP runs that have a map."""
    layout, maps = Layout(Path(root)), {}
    for run in runs:
        rec = _read_json(layout.attention(run))
        if rec and rec.get("weights") is not None:
            maps[run] = rec
    return maps


def load_logs(root: str | Path, runs: list[Run], teachers: list[tuple[str, int]] = ()) -> dict[str, pd.DataFrame]:
    """Training logs of the student runs (keyed by run name) and of the teachers `teachers`, (task, seed) pairs
    (keyed `teacher-<task>-s<seed>`)."""
    layout = Layout(Path(root))
    paths = {run.name: layout.log(run) for run in runs}
    paths |= {teacher_run(task, seed): layout.teacher_log(task, seed) for task, seed in teachers}
    return {name: pd.read_csv(path) for name, path in paths.items() if path.exists() and path.stat().st_size}


def load_predictions(root: str | Path, run: Run, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, predictions) of a run on a validation split, from its predictions file, or None."""
    rec = _read_json(Layout(Path(root)).predictions(run))
    if not rec or split not in rec:
        return None
    return np.asarray(rec[split]["labels"]), np.asarray(rec[split]["predictions"])


BASELINES = ("nokd", "kd", "pkd")  # what each layer-mapping method is compared with
CHALLENGERS = ("alp", "alp_no", "alp_po", "alp_scaled", "rail")
# the controls of ALP's premise (any matching against a mapping chosen against it), and the teacher-assistant
# methods against KD (what they add to it) and against each other
EXTRA_PAIRS = (("reverse", "kd"), ("all_to_one", "kd"), ("pkd", "reverse"), ("alp", "reverse"), ("alp", "all_to_one"),
               ("takd", "kd"), ("dgkd", "kd"), ("ceskd", "kd"), ("dgkd", "takd"), ("ceskd", "takd"),
               ("ceskd", "dgkd"))
SIG_COLUMNS = ["layers", "method", "baseline", "gap", "low", "high", "p_value", "p_adjusted", "n_tasks", "n_seeds",
               "n_teachers"]


def comparisons(methods: list[str]) -> list[tuple[str, str]]:
    """(A, B) pairs the report tests: each layer-mapping method against each baseline, scaled ALP against the
    paper's unscaled ALP, the baselines among themselves (KD against NO-KD, PKD against both: the
    well-replicated effects a run must see before it can judge ALP's finer claim), the matching controls
    (reverse and all-to-one against KD, PKD and ALP) and the teacher-assistant methods (against KD and each
    other)."""
    pairs = [(a, b) for a in CHALLENGERS if a in methods for b in BASELINES if b in methods]
    if "alp_scaled" in methods and "alp" in methods:
        pairs.append(("alp_scaled", "alp"))
    pairs += [(a, b) for a, b in (("kd", "nokd"), ("pkd", "nokd"), ("pkd", "kd"), *EXTRA_PAIRS)
              if a in methods and b in methods]
    return pairs


def significance(params, root: str | Path, records: pd.DataFrame, resamples: int = 1000, skipped=()) -> pd.DataFrame:
    """Paired, hierarchical bootstrap (`alpkd.significance`: teachers, then their students, and validation
    examples) of each comparison at each depth, pooled over the tasks where both methods have predictions for
    the same seeds; gap and interval x100; p-values raw and adjusted (Benjamini-Hochberg) over every comparison
    in the table.
    A comparison involving a cell that is another method's duplicate (`skipped`) is left out: it would
    repeat one already made.
    """
    from .significance import adjust, paired_bootstrap

    students = records[records["role"] == "student"]
    teacher_of = dict(zip(students["seed"], students["teacher_seed"]))  # each student seed's teacher
    rows = []
    for depth in params.student.depths:
        for a, b in comparisons(list(params.distill.methods)):
            if any((t, depth, m) in skipped for t in params.data.tasks for m in (a, b)):
                continue
            items = []
            for task_name in params.data.tasks:
                task = params.task(task_name)
                split = task.validation_splits[0]
                preds = {}
                for m in (a, b):
                    cell = students[(students["task"] == task_name) & (students["depth"] == depth)
                                    & (students["method"] == m)].sort_values("seed")
                    preds[m] = {r.seed: load_predictions(root, r, split) for r in runs_of(cell)}
                    preds[m] = {k: v for k, v in preds[m].items() if v is not None}
                seeds = sorted(set(preds[a]) & set(preds[b]))
                if not seeds:
                    continue
                teachers = [teacher_of.get(k) for k in seeds]
                counts = pd.Series(teachers).value_counts()
                if any(t is None or pd.isna(t) for t in teachers) or counts.nunique() != 1:
                    teachers = None  # no pairing recorded, or an unbalanced subset: resample seeds alone
                labels = preds[a][seeds[0]][0]
                if any(len(preds[m][k][0]) != len(labels) or (preds[m][k][0] != labels).any()
                       for m in (a, b) for k in seeds):
                    continue  # runs evaluated on different examples (or in another order) cannot be paired
                items.append({"metric": task.headline, "labels": labels, "teachers": teachers,
                              "a": [preds[a][k][1] for k in seeds], "b": [preds[b][k][1] for k in seeds]})
            if items:
                c = paired_bootstrap(items, resamples=resamples, resample_seeds=True)
                rows.append((depth, a, b, 100 * c.gap, 100 * c.low, 100 * c.high, c.p_value, np.nan, c.n_tasks,
                             c.n_seeds, c.n_teachers))
    sig = pd.DataFrame(rows, columns=SIG_COLUMNS)
    sig["p_adjusted"] = adjust(sig["p_value"]) if len(sig) else []
    return sig


def significance_table(sig: pd.DataFrame) -> pd.DataFrame:
    from .plots import method_label

    return pd.DataFrame({
        "layers": sig["layers"],
        "comparison": [f"{method_label(a)} − {method_label(b)}" for a, b in zip(sig["method"], sig["baseline"])],
        "gap": [f"{g:+.1f}" for g in sig["gap"]],
        "95% interval": [f"[{lo:+.1f}, {hi:+.1f}]" for lo, hi in zip(sig["low"], sig["high"])],
        "p": [f"{p:.3f}" for p in sig["p_value"]],
        "p (BH)": [f"{p:.3f}" for p in sig["p_adjusted"]],
        "tasks": sig["n_tasks"],
        "teachers": sig["n_teachers"],
        "seeds": sig["n_seeds"],
        "verdict": [("within noise" if p >= 0.05 else (f"{method_label(a)} better" if g > 0 else f"{method_label(a)} worse"))
                    for a, g, p in zip(sig["method"], sig["gap"], sig["p_adjusted"])],
    })


def cell_intervals(records: pd.DataFrame, resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per student (depth, method, task): the mean score x100 over seeds and a 95% percentile interval of that
    mean under the two-stage bootstrap of `alpkd.significance` (teachers, then each drawn teacher's students; the
    validation examples held fixed). What a re-run elsewhere should land in if it draws other teachers and
    students of the same kind. Cells with a NaN score or one seed get no interval."""
    from .significance import seed_resamples

    rng = np.random.default_rng(seed)
    rows = []
    students = records[records["role"] == "student"]
    for (depth, method, task), cell in students.groupby(["depth", "method", "task"], sort=False):
        cell = cell.sort_values("seed")
        scores = 100.0 * cell["score"].to_numpy(dtype=float)
        low = high = np.nan
        if len(scores) > 1 and not np.isnan(scores).any():
            teachers = cell["teacher_seed"].tolist()
            try:
                idx = seed_resamples(rng, resamples, len(scores), None if any(pd.isna(t) for t in teachers) else teachers)
            except ValueError:  # unequal students per teacher (a partial grid): the seeds alone
                idx = seed_resamples(rng, resamples, len(scores))
            low, high = np.percentile(scores[idx].mean(axis=1), [2.5, 97.5])
        rows.append({"layers": int(depth), "method": method, "task": task, "mean": float(scores.mean()),
                     "low": float(low), "high": float(high), "n_seeds": len(scores),
                     "n_teachers": int(cell["teacher_seed"].nunique())})
    return pd.DataFrame(rows, columns=["layers", "method", "task", "mean", "low", "high", "n_seeds", "n_teachers"])


def detectable_gaps(sig: pd.DataFrame) -> pd.DataFrame:
    """Per depth, the ALP − KD gap and the half-width of its 95% interval: gaps smaller than the half-width
    cannot be told from noise by this run (teachers x seeds x validation examples x tasks)."""
    rows = sig[(sig["method"] == "alp") & (sig["baseline"] == "kd")]
    return pd.DataFrame({"layers": rows["layers"], "gap": rows["gap"],
                         "half_width": (rows["high"] - rows["low"]) / 2}).reset_index(drop=True)


def attention_summary(records: pd.DataFrame, maps: dict[Run, dict]) -> pd.DataFrame:
    """Per ALP cell: score, mean attention entropy (bits) over the validation set, and the teacher layer each
    student layer attends to most, per seed, with whether every seed chose the same layers."""
    rows = []
    students = records[(records["role"] == "student") & records["method"].isin(ALP_FAMILY)]
    for (task, depth, method), group in students.groupby(["task", "depth", "method"], sort=False):
        recs = [maps.get(r) for r in runs_of(group)]
        recs = [r for r in recs if r is not None]
        if not recs:
            continue
        top = [tuple(int(j) + 1 for j in np.asarray(r["weights"]).argmax(-1)) for r in recs]
        entropy = [float(np.mean(r["entropy_bits"])) for r in recs if r.get("entropy_bits") is not None]
        rows.append({"task": task, "layers": int(depth), "method": method,
                     "score": 100 * float(np.nanmean(group["score"])),
                     "entropy_bits": float(np.mean(entropy)) if entropy else float("nan"),
                     "entropy_std": float(np.std(entropy, ddof=1)) if len(entropy) > 1 else float("nan"),
                     "teacher_layers": int(np.asarray(recs[0]["weights"]).shape[-1]),
                     "top_layers": " / ".join("(" + ",".join(map(str, t)) + ")" for t in top),
                     "same_across_seeds": len(set(top)) == 1})
    return pd.DataFrame(rows)


ALP_FAMILY = ("alp", "alp_no", "alp_po", "alp_scaled")


def _describe(values) -> str:
    values = sorted({str(v) for v in values if v is not None and not pd.isna(v)})
    return ", ".join(f"`{v}`" for v in values) if values else "unknown"


def _figures(params, records: pd.DataFrame, summary: pd.DataFrame, trivial: dict, headline: dict,
             maps: dict[Run, dict], logs: dict[str, pd.DataFrame], figures: Path) -> list[Path]:
    """Score vs depth, attention maps (final, and during training) and training curves; stale PNGs removed."""
    from . import plots

    tasks, depths, methods = list(params.data.tasks), list(params.student.depths), list(params.distill.methods)
    written = []
    student_summary = summary[summary["role"] == "student"].rename(columns={"layers": "depth"})
    teacher_scores = summary[summary["role"] == "teacher"].set_index("task")["mean"].to_dict()
    if not student_summary.empty:
        panels = [t for t in [*tasks, AVERAGE] if (student_summary["task"] == t).any()]
        fig = plots.score_vs_depth(student_summary, teacher_scores, panels, headline, trivial)
        written.append(plots.save(fig, figures / "scores_vs_depth.png"))
    for task in tasks:
        written += _attention_figures(records, task, depths, [m for m in methods if m in ALP_FAMILY], maps, figures)
        written += _curves_figure(records, task, depths, logs, figures)
    _remove_stale(figures, "*.png", keep=written)
    return written


def _attention_figures(records: pd.DataFrame, task: str, depths: list[int], alp_methods: list[str],
                       maps: dict[Run, dict], figures: Path) -> list[Path]:
    """The task's ALP attention maps (mean over seeds), and the first seed's attention during training."""
    from . import plots

    runs = records[(records["role"] == "student") & (records["task"] == task) & records["method"].isin(alp_methods)]
    by_cell, history, written = {}, {}, []
    for (depth, method), group in runs.groupby(["depth", "method"]):
        recs = [maps[r] for r in runs_of(group) if r in maps]
        if recs:
            by_cell[(int(depth), method)] = np.mean([r["weights"] for r in recs], axis=0)  # mean over seeds
            if recs[0].get("history"):
                history[(int(depth), method)] = recs[0]["history"]  # the first seed's
    n = records.loc[(records["role"] == "teacher") & (records["task"] == task), "depth"]
    teacher_note = f" (teacher: {int(n.iloc[0])} layers)" if len(n) else ""
    if by_cell:
        shown = [d for d in depths if any(k[0] == d for k in by_cell)]
        shown_methods = [m for m in alp_methods if any(k[1] == m for k in by_cell)]
        fig = plots.attention_grid(by_cell, shown, shown_methods, f"{task}: ALP attention over teacher layers"
                                   + teacher_note + ", mean over seeds")
        written.append(plots.save(fig, figures / f"attention_{task}.png"))
    if history:
        fig = plots.attention_history(history, f"{task}: attention during training (first seed, fixed batch)")
        written.append(plots.save(fig, figures / f"attention_history_{task}.png"))
    return written


def _curves_figure(records: pd.DataFrame, task: str, depths: list[int], logs: dict[str, pd.DataFrame],
                   figures: Path) -> list[Path]:
    """The task's training loss: a panel for the teacher and one per student depth, a line per run."""
    from . import plots

    task_runs = records[(records["role"] == "student") & (records["task"] == task)]
    teacher_runs = list(records.loc[(records["role"] == "teacher") & (records["task"] == task), "run"])
    if not any(name in logs for name in [*teacher_runs, *task_runs["run"]]):
        return []
    panel_runs = {"teacher": teacher_runs}
    panel_runs.update({f"{d} layer(s)": list(task_runs.loc[task_runs["depth"] == d, "run"]) for d in depths
                       if (task_runs["depth"] == d).any()})
    method_of = dict(zip(task_runs["run"], task_runs["method"])) | {r: "teacher" for r in teacher_runs}
    fig = plots.training_curves(logs, panel_runs, "loss", method_of)
    fig.suptitle(f"{task}: training loss")
    fig.tight_layout()
    return [plots.save(fig, figures / f"curves_{task}.png")]


def _remove_stale(folder: Path, pattern: str, keep: list[Path]) -> None:
    """Delete the files matching `pattern` under `folder` that this report did not write (an earlier grid's)."""
    for stale in folder.glob(pattern) if folder.exists() else []:
        if stale not in keep:
            stale.unlink()


def plot_tables(records: pd.DataFrame, summary: pd.DataFrame, logs: dict[str, pd.DataFrame], tasks: list[str],
                depths: list[int], methods: list[str]) -> dict[str, pd.DataFrame]:
    """What `dvc plots show` draws, a column per method (every method of the grid, empty where it has no run),
    so each plot holds one task (and depth) and the methods are the lines:

    - `scores/<task>.csv` (and `average.csv`): the mean headline score x100 against the student's depth;
    - `curves/<task>-<depth>.csv`: the task loss (cross-entropy, MSE for regression) during training, mean
      over seeds, against the step: the term every method shares, so the curves can be compared.

    `logs`: the training logs by run name (`load_logs`).
    """
    tables = {}
    student = summary[summary["role"] == "student"]
    for task in [*tasks, AVERAGE]:
        rows = student[student["task"] == task]
        if not rows.empty:
            tables[f"scores/{task}.csv"] = (rows.pivot_table(index="layers", columns="method", values="mean")
                                            .reindex(index=sorted(depths), columns=methods).rename_axis("depth"))
    students = records[records["role"] == "student"]
    for (task, depth), cell in students.groupby(["task", "depth"]):
        curves = {}
        for method, group in cell.groupby("method"):
            frames = [logs[r] for r in group["run"] if r in logs and "loss_ce" in logs[r]]
            if frames:
                curves[method] = pd.concat(frames).groupby("step")["loss_ce"].mean()
        if curves:
            tables[f"curves/{task}-{int(depth)}.csv"] = pd.DataFrame(curves).reindex(columns=methods).sort_index()
    return tables


def _write_plot_tables(folder: Path, tables: dict[str, pd.DataFrame]) -> dict[str, Path]:
    """`plot_tables` as CSV under `folder` (`report/plots`), stale CSVs removed; keys `plots/<kind>/<name>`."""
    written = [write_text(folder / name, _round(table).to_csv()) for name, table in tables.items()]
    _remove_stale(folder, "**/*.csv", keep=written)
    return {f"plots/{p.parent.name}/{p.stem}": p for p in written}


def _numbers(out: Path, summary: pd.DataFrame, methods: list[str], trivial: dict, sig: pd.DataFrame,
             attention: pd.DataFrame, intervals: pd.DataFrame) -> dict[str, Path]:
    """The CSV files and `summary.json` (headline numbers for `dvc metrics`)."""
    files = {}
    student_summary = summary[summary["role"] == "student"].rename(columns={"layers": "depth"})
    files["results.csv"] = write_text(out / "results.csv", _round(summary).to_csv(index=False))
    scores = student_summary[["task", "depth", "method", "mean", "std"]].rename(columns={"mean": "score"})
    files["scores.csv"] = write_text(out / "scores.csv", _round(scores).to_csv(index=False))
    wide = (student_summary[student_summary["task"] == AVERAGE]
            .pivot_table(index="depth", columns="method", values="mean")
            .reindex(columns=[m for m in methods if m in set(student_summary["method"])]).sort_index())
    files["scores_by_depth.csv"] = write_text(out / "scores_by_depth.csv", _round(wide).to_csv())
    files["significance.csv"] = write_text(out / "significance.csv", _round(sig).to_csv(index=False))
    files["attention.csv"] = write_text(out / "attention.csv", _round(attention).to_csv(index=False))
    files["intervals.csv"] = write_text(out / "intervals.csv", _round(intervals).to_csv(index=False))

    def number(v):
        return None if pd.isna(v) else round(float(v), 2)

    teacher_scores = summary[summary["role"] == "teacher"].set_index("task")["mean"].to_dict()
    metrics = {"trivial": {t: number(v) for t, v in trivial.items()},
               "teacher": {t: number(v) for t, v in teacher_scores.items()}}
    for r in student_summary[student_summary["task"] == AVERAGE].itertuples(index=False):
        metrics.setdefault(f"students_{int(r.depth)}L", {})[r.method] = number(r.mean)
    for r in detectable_gaps(sig).itertuples(index=False):
        metrics.setdefault("alp_minus_kd", {})[f"{int(r.layers)}L"] = {"gap": number(r.gap),
                                                                      "half_width": number(r.half_width)}
    files["summary.json"] = write_text(out / "summary.json", json.dumps(metrics, indent=2) + "\n")
    return files


def _attention_table(att: pd.DataFrame) -> pd.DataFrame:
    from .plots import method_label

    return pd.DataFrame({
        "task": att["task"], "layers": att["layers"], "method": [method_label(m) for m in att["method"]],
        "score": [f"{v:.1f}" for v in att["score"]],
        "entropy (bits)": [f"{e:.2f}" + ("" if pd.isna(sd) else f" ± {sd:.2f}")
                           for e, sd in zip(att["entropy_bits"], att["entropy_std"])],
        "max": [f"{np.log2(n):.2f}" for n in att["teacher_layers"]],
        "top teacher layer per student layer, per seed": att["top_layers"],
        "same layers in every seed": ["yes" if v else "**no**" for v in att["same_across_seeds"]],
    })


def write_report(params, root: str | Path = ".", resamples: int = 1000) -> dict:
    """Write the report of the grid configured in `params` (an `alpkd.config.Params`) under `root/report`.

    Returns {"table": the table (strings), "summary": the numbers, "significance": the paired bootstrap
    comparisons, "attention": the ALP attention summary, "missing": runs without results, "files": {name: path}}.
    """
    root, out = Path(root), Layout(Path(root)).report()
    tasks, depths = list(params.data.tasks), list(params.student.depths)
    methods, seeds, teacher_seeds = list(params.distill.methods), list(params.distill.seeds), list(params.teacher.seeds)
    # what the runs left behind
    collected = collect(root)
    records = select(collected, tasks, depths, methods, seeds, teacher_seeds)
    columns = shown_columns(tasks, collected)  # + MNLI's mismatched set, shown but not averaged
    further = select(collected, [c for c in columns if c not in tasks], depths, methods, seeds, teacher_seeds)
    dups = {k: v for k, v in duplicates(root).items() if k[0] in tasks and k[1] in depths and k[2] in methods}
    undef = {k: v for k, v in undefined(root).items() if k[0] in tasks and k[1] in depths and k[2] in methods}
    student_runs = runs_of(records[records["role"] == "student"])
    teacher_runs = [(t, s) for t in tasks for s in teacher_seeds]
    logs, maps = load_logs(root, student_runs, teachers=teacher_runs), load_attention(root, student_runs)
    # the numbers
    summary, trivial = summarise(records, tasks), trivial_row(records, tasks)
    extra = [c for c in columns if c not in tasks]
    shown = pd.concat([summary, summarise(further, extra).query("task != @AVERAGE")]) if extra else summary
    trivial_shown = {**trivial_row(further, extra), **trivial}
    table = results_table(shown, columns, depths, methods, trivial_shown, skipped=dups, undefined=undef)
    missing = missing_runs(records, tasks, depths, methods, seeds, skipped=dups | undef, teacher_seeds=teacher_seeds)
    from . import progress

    progress.log(f"report: {len(records)} records; bootstrap of the comparisons ({resamples} resamples each)")
    sig = significance(params, root, records, resamples, skipped=dups | undef)
    progress.log(f"report: {len(sig)} comparisons done; figures and tables")
    attention = attention_summary(records, maps)
    # the files
    headline = {t: records.loc[records["task"] == t, "headline"].iloc[0] for t in tasks if (records["task"] == t).any()}
    figures = _figures(params, records, summary, trivial, headline, maps, logs, out / "figures")
    headline = {c: collected.loc[collected["task"] == c, "headline"].iloc[0] for c in columns
                if (collected["task"] == c).any()}
    intervals = cell_intervals(records)
    files = {p.stem: p for p in figures} | _numbers(out, shown, methods, trivial_shown, sig, attention, intervals)
    files |= _write_plot_tables(out / "plots", plot_tables(records, summary, logs, tasks, depths, methods))
    sections = [_preamble(params, records), _results_lines(table, headline, extra), _duplicate_lines(dups, methods),
                _undefined_lines(undef, params),
                _significance_lines(sig, resamples), _interval_lines(intervals), _attention_lines(attention),
                _missing_lines(missing),
                _figure_lines(figures)]
    files["results.md"] = write_text(out / "results.md", "\n".join(line for lines in sections for line in lines))
    return {"table": table, "summary": summary, "significance": sig, "attention": attention, "missing": missing,
            "files": files}


# --- results.md, section by section (each a list of lines, ending with a blank one) ---------------------
def _preamble(params, records: pd.DataFrame) -> list[str]:
    """The title, and what produced the results: profile, data, teacher, seeds, initialisation; how to read a cell."""
    teachers, students = records[records["role"] == "teacher"], records[records["role"] == "student"]
    teacher_models = [f"{m} ({int(n)} layers)" for m, n in
                      teachers[["model", "depth"]].drop_duplicates().itertuples(index=False)]
    profiles = set(records["profile"].dropna())
    return [
        "# ALP-KD replication: results",
        "",
        f"- Profile: {_describe(profiles or [params.profile])}"
        + (f" (params.yaml now says `{params.profile}`: these results are stale)" if profiles - {params.profile} else ""),
        f"- Data: GLUE validation splits, from {_describe(records['data_source'])}",
        f"- Teacher: {', '.join(teacher_models) or 'none found'}",
        f"- Teacher seeds: {', '.join(str(s) for s in sorted(set(teachers['seed']))) or 'none'}"
        f" (configured: {', '.join(str(s) for s in params.teacher.seeds)}); student seeds: "
        f"{', '.join(str(s) for s in sorted(set(students['seed']))) or 'none'}"
        f" (configured: {', '.join(str(s) for s in params.distill.seeds)}); each student learns from one "
        f"teacher: {_pairing(params)}",
        f"- Computed on: {_machines(records)}",
        f"- Student initialisation: `{params.student.init}`; ALP, ALP-NO, ALP-PO scores scaled by 1/sqrt(d): "
        f"{'yes' if params.distill.alp_scale else 'no (the paper)'}; ALP-scaled: always",
        "- Cells: the task's headline metric x100 on its validation split; `mean ± std` (sample std) over seeds "
        "when there are several (the teacher row: over the teachers; a student row: over every student, so its "
        "spread holds the teachers' too). `average`: the mean over tasks, per seed, then over seeds. `trivial`: the "
        "training set's majority class (regression: its mean label, whose correlation is undefined; counted "
        f"as 0 in the average). {FLAG}: at least one seed predicted the same value for every validation "
        "example (a constant predictor), or its metric is undefined (NaN, left out of the mean).",
        "",
    ]


def _pairing(params) -> str:
    """`seed 1 -> teacher 42, ...`: which teacher each configured student seed learns from."""
    return ", ".join(f"student {s} ← teacher {params.teacher_seed(s)}" for s in params.distill.seeds)


def _machines(records: pd.DataFrame) -> str:
    """The CPUs, kernel ISAs and numerics settings the records were computed with (`alpkd.numerics`)."""
    seen = records[["cpu", "cpu_capability", "numerics"]].drop_duplicates()
    parts = [f"{r.cpu or 'unknown CPU'} ({r.cpu_capability or '?'} kernels, numerics {r.numerics or 'not recorded'})"
             for r in seen.itertuples(index=False)]
    return "; ".join(parts) if parts else "unknown"


def _results_lines(table: pd.DataFrame, headline: dict[str, str], extra: list[str] = ()) -> list[str]:
    """The results table, a task's column headed with its metric (and a note on further validation splits)."""
    headers = {t: f"{t} ({METRIC_ABBREVIATIONS.get(h, h)})" for t, h in headline.items()}
    note = [f"{', '.join(f'`{c}`' for c in extra)}: the task's further validation set (MNLI: `mnli` is the matched "
            "set, `mnli-mm` the mismatched one, as GLUE reports them); `average` counts each task once, by its first "
            "validation set; the significance tests use the first set.", ""] if extra else []
    return [markdown_table(table, headers), "", *note]


def _duplicate_lines(dups: dict, methods: list[str]) -> list[str]:
    """The cells not run because their objective is another method's at that depth."""
    from .plots import method_label

    if not dups:
        return []
    by_pair = {}
    for (task, depth, method), rec in dups.items():
        by_pair.setdefault((depth, method, rec["same_as"]), []).append(task)
    return ["Not run twice (the same objective as another method at that depth, so shown once, under "
            "that method): " + "; ".join(
                f"{method_label(m)} at {d} layer(s) = {method_label(t)}"
                + ("" if t in methods else f" (not in distill.methods: add `{t}` to see it)")
                + (" (PKD without the last layer matches no layer)" if m == "pkd" else
                   " (one bucket holding every teacher layer)" if m in ("alp_no", "alp_po") else "")
                for (d, m, t) in sorted(by_pair)), ""]


def _undefined_lines(undef: dict, params) -> list[str]:
    """The cells of methods not defined at a depth: the teacher-assistant methods at the largest depth."""
    from .plots import method_label

    if not undef:
        return []
    cells = sorted({(d, m) for (_, d, m) in undef})
    return ["Not defined (no teacher assistant: no student depth is deeper): " + "; ".join(
        f"{method_label(m)} at {d} layer(s)" for d, m in cells) + f". The assistants of the other depths are "
        f"the {method_label(params.distill.assistant)} students of the same seed at every deeper depth.", ""]


def _significance_lines(sig: pd.DataFrame, resamples: int) -> list[str]:
    if not len(sig):
        return []
    lines = [
        "## Is the gap more than noise?",
        "",
        "Each layer-mapping method against the baselines, ALP-scaled against ALP, the baselines among themselves, "
        "the matching controls (reverse, all-to-one) against KD, PKD and ALP, and the teacher-assistant methods "
        "against KD and each other: the gap in the headline "
        "metric x100, averaged over tasks (each method's seeds averaged per task), with a 95% interval and a "
        f"two-sided p-value from {resamples} paired bootstrap resamples of the teachers, of the students of each "
        "teacher drawn, and of the validation examples (seed k of one method paired with seed k of the other: "
        "same teacher, initialisation and data order; `alpkd.significance`), so a verdict holds for other "
        "teachers too, not only for the ones this run drew. `p (BH)`: "
        f"adjusted for the {len(sig)} comparisons of this table (Benjamini-Hochberg, "
        "`scipy.stats.false_discovery_control`); the verdict reads the adjusted p.",
        "",
        markdown_table(significance_table(sig)),
        "",
        f"{int((sig['p_adjusted'] >= 0.05).sum())} of {len(sig)} gaps are within noise after adjustment "
        f"({int((sig['p_value'] >= 0.05).sum())} before); a gap within noise is no evidence that one method is "
        "better than the other.",
        "",
    ]
    gaps = detectable_gaps(sig)
    if len(gaps):
        lines += [
            "**The smallest gap this run can see.** Half-width of the 95% interval of the ALP − KD gap on the "
            "average over tasks, per depth: a true gap smaller than this is within this run's noise "
            "(teachers x seeds x validation examples x tasks).",
            "",
            markdown_table(pd.DataFrame({"layers": gaps["layers"], "ALP − KD": [f"{g:+.1f}" for g in gaps["gap"]],
                                         "95% half-width": [f"{h:.1f}" for h in gaps["half_width"]]})),
            "",
        ]
    return lines


def _interval_lines(intervals: pd.DataFrame) -> list[str]:
    from .plots import method_label

    shown = intervals.dropna(subset=["low"])
    if not len(shown):
        return []
    return [
        "## Where another run's cell means should land",
        "",
        "Each student cell's mean and a 95% interval of it from 2000 two-stage bootstrap resamples of its seeds "
        "(teachers, then the students of each teacher drawn; the validation examples fixed): a re-run on another "
        "machine that draws other teachers and students of the same kind should find each mean inside, 19 times "
        "in 20 (`report/intervals.csv`).",
        "",
        markdown_table(pd.DataFrame({
            "layers": shown["layers"], "method": [method_label(m) for m in shown["method"]], "task": shown["task"],
            "mean": [f"{v:.1f}" for v in shown["mean"]],
            "95% interval": [f"[{lo:.1f}, {hi:.1f}]" for lo, hi in zip(shown["low"], shown["high"])],
            "teachers": shown["n_teachers"], "seeds": shown["n_seeds"]})),
        "",
    ]


def _attention_lines(attention: pd.DataFrame) -> list[str]:
    if not len(attention):
        return []
    return [
        "## ALP's attention: how spread, and is it the same in every seed?",
        "",
        "Mean entropy (bits) of each student layer's attention over the teacher layers, on the validation "
        "set (0: one-hot; `max`: uniform over all teacher layers), and the teacher layer each student "
        "layer attends to most, per seed. A one-hot map makes ALP a learnt one-to-one layer mapping; "
        "where the seeds pick different layers, last-bit differences between machines can do the same "
        "(the run differs across machines; the seeds' spread covers it).",
        "",
        markdown_table(_attention_table(attention)),
        "",
    ]


def _missing_lines(missing: list[str]) -> list[str]:
    if not missing:
        return []
    return [f"Missing runs ({len(missing)}, shown as –): " + ", ".join(f"`{m}`" for m in missing), ""]


def _figure_lines(figures: list[Path]) -> list[str]:
    return ["## Figures", ""] + [f"![{p.stem}](figures/{p.name})" for p in figures] + [""] if figures else []
