"""Reading what the runs left behind: the metrics records (one row each), the markers of cells not trained,
the training logs, attention maps and validation predictions of the student runs."""
from __future__ import annotations

import json
import sys
from numbers import Real
from pathlib import Path

import numpy as np
import pandas as pd

from ..params_file import path_problem
from ..paths import Layout, Run, run_name


COLUMNS = ["role", "task", "depth", "method", "seed", "teacher_seed", "score", "headline", "profile", "data_source",
           "model", "teacher_layers", "run", "file", "constant", "entropy", "trivial", "cpu", "cpu_capability",
           "numerics"]


def _read_json(path: Path) -> dict | None:
    if path_problem(path, "a JSON file"):  # a FIFO would be waited on forever; a folder, a link loop: no result
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # a half-written or foreign file is not a result


def _run_of(rec: dict) -> Run:
    return Run(rec["task"], int(rec["depth"]), rec["method"], int(rec["seed"]))


MARKERS = ("same_as.json", "not_defined.json")  # a cell's markers (not trained, and why), not records
# the fields a record must hold, and their types (bool is an int to Python, never a depth, seed or score here)
REQUIRED = {"task": str, "depth": int, "seed": int, "score": (Real, type(None))}


def record_problem(rec, path: Path, root: Path, role: str, profile: str | None = None) -> str | None:
    """Why the record read from `path` must not be counted, or None: it cannot be read, lacks a field or holds one
    of the wrong type, says it is another run than its place says (a backup copy `s43_old.json` beside
    `s43.json`), or is of another profile than `profile` (when the report knows it)."""
    if not isinstance(rec, dict):
        return "cannot be read (not a JSON object: half-written or foreign)"
    required = REQUIRED | ({} if role == "teacher" else {"method": str})
    for key, kind in required.items():
        if key not in rec:
            return f"no `{key}`"
        value = rec[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            return f"`{key}` is {value!r} ({type(value).__name__}), not a {getattr(kind, '__name__', 'number')}"
    layout = Layout(root)
    place = (layout.teacher_metrics(rec["task"], rec["seed"]) if role == "teacher"
             else layout.student_metrics(_run_of(rec)))
    if place != path:
        return f"its content is another run's: it belongs at `{place.relative_to(root)}`"
    if profile is not None and rec.get("profile") not in (None, profile):
        return f"of profile `{rec['profile']}`, not `{profile}` (a stale result of another profile)"
    return None


def collect(root: str | Path, profile: str | None = None, skipped: list | None = None) -> pd.DataFrame:
    """Every teacher and student metrics file under `root` whose content matches its place (and `profile`, when
    given), one row each (columns `COLUMNS`). Each file left out is appended to `skipped` as (file, why), and
    named on stderr."""
    root = Path(root)
    rows = []
    files = [("teacher", p) for p in sorted((root / "metrics" / "teacher").glob("*/s*.json"))]
    students = root / "metrics" / "students"  # <group>/<method>/, and <task>-assisted/<group>/<method>/
    files += [("student", p) for p in sorted([*students.glob("*/*/s*.json"), *students.glob("*/*/*/s*.json")])
              if p.name not in MARKERS]
    for role, path in files:
        rec = _read_json(path)
        kind = path_problem(path, "a metrics record (a JSON file)")
        why = kind.removeprefix(f"{path}: ") if kind else record_problem(rec, path, root, role, profile)
        if why is not None:
            print(f"warning: report: not counted: {path.relative_to(root)}: {why}", file=sys.stderr)
            if skipped is not None:
                skipped.append((str(path.relative_to(root)), why))
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
    root = Path(root)
    layout = Layout(root)
    paths = {run.name: layout.log(run) for run in runs}
    paths |= {teacher_run(task, seed): layout.teacher_log(task, seed) for task, seed in teachers}
    logs = {}
    for name, path in paths.items():
        if not (path.exists() or path.is_symlink()):
            continue
        kind = path_problem(path, "a training log (CSV)")  # a FIFO would be waited on forever
        try:
            if kind is None and path.stat().st_size:
                logs[name] = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError) as err:  # UnicodeDecodeError is a ValueError
            kind = f"cannot be read ({type(err).__name__}: {' '.join(str(err).split())[:160]})"
        if kind is not None:
            print(f"warning: report: not used: {path.relative_to(root)}: {kind.removeprefix(f'{path}: ')}; its "
                  "curve is left out of the figures", file=sys.stderr)
    return logs


def predictions_problem(rec, split: str | None = None) -> str | None:
    """Why the content of a predictions file must not be used, or None: it cannot be read (half-written,
    truncated), or a split's entry (`split`, or every entry that has `labels` or `predictions`) lacks its lists,
    holds other than numbers, or has as many predictions as labels not."""
    if not isinstance(rec, dict):
        return "cannot be read (not a JSON object: half-written, truncated or foreign)"
    names = [split] if split is not None else [k for k, v in rec.items()
                                                if isinstance(v, dict) and {"labels", "predictions"} & set(v)]
    for name in names:
        entry = rec.get(name)
        if not isinstance(entry, dict):
            return f"no `{name}` entry"
        for key in ("labels", "predictions"):
            values = entry.get(key)
            if not isinstance(values, list) or not values or not all(
                    isinstance(v, Real) and not isinstance(v, bool) for v in values):
                return f"`{key}` is not a list of numbers (`{name}`)"
        if len(entry["predictions"]) != len(entry["labels"]):
            return f"{len(entry['predictions'])} predictions for {len(entry['labels'])} labels (`{name}`)"
    return None


def damaged_predictions(root: str | Path, runs: list[Run]) -> list[tuple[str, str]]:
    """(file, why) of each run's predictions file that is there but cannot be used (truncated, damaged, a FIFO or
    folder in its place), each named on stderr: the report leaves it out of the comparisons (the run's score still
    counts), as it leaves out a damaged record. A run without a predictions file is not named here."""
    root, found = Path(root), []
    for run in runs:
        path = Layout(root).predictions(run)
        if not (path.exists() or path.is_symlink()):
            continue
        kind = path_problem(path, "a predictions file (JSON)")
        why = kind.removeprefix(f"{path}: ") if kind else predictions_problem(_read_json(path))
        if why is not None:
            why = f"{why}; left out of the comparisons"
            print(f"warning: report: not used: {path.relative_to(root)}: {why}", file=sys.stderr)
            found.append((str(path.relative_to(root)), why))
    return found


def load_predictions(root: str | Path, run: Run, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, predictions) of a run on a validation split, from its predictions file, or None (none, or one
    `predictions_problem` refuses: `damaged_predictions` names it)."""
    rec = _read_json(Layout(Path(root)).predictions(run))
    if not rec or split not in rec or predictions_problem(rec, split):
        return None
    return np.asarray(rec[split]["labels"]), np.asarray(rec[split]["predictions"])
