"""Is a gap more than noise: paired, hierarchical bootstrap comparisons between methods (`alpkd.significance`),
and each student cell's 95% interval under the same resampling of teachers and seeds."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .collect import load_predictions, runs_of


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
    from ..significance import adjust, paired_bootstrap

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
    from ..plots import method_label

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
    from ..significance import seed_resamples

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
