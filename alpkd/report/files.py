"""Writing the report's files: each atomically (a temporary file renamed into place); floats to 4 decimals."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..paths import replace_atomically
from .comparisons import detectable_gaps
from .tables import AVERAGE


def write_text(path: Path, text: str) -> Path:
    """Atomic: a temporary file renamed into place."""
    return replace_atomically(path, lambda tmp: tmp.write_text(text))


def rounded(df: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    return df.round({c: digits for c in df.columns if df[c].dtype.kind == "f"})


def remove_stale(folder: Path, pattern: str, keep: list[Path]) -> None:
    """Delete the files matching `pattern` under `folder` that this report did not write (an earlier grid's)."""
    for stale in folder.glob(pattern) if folder.exists() else []:
        if stale not in keep:
            stale.unlink()


def write_plot_tables(folder: Path, tables: dict[str, pd.DataFrame]) -> dict[str, Path]:
    """`plot_tables` as CSV under `folder` (`report/plots`), stale CSVs removed; keys `plots/<kind>/<name>`."""
    written = [write_text(folder / name, rounded(table).to_csv()) for name, table in tables.items()]
    remove_stale(folder, "**/*.csv", keep=written)
    return {f"plots/{p.parent.name}/{p.stem}": p for p in written}


def write_numbers(out: Path, summary: pd.DataFrame, methods: list[str], trivial: dict, sig: pd.DataFrame,
                  attention: pd.DataFrame, intervals: pd.DataFrame) -> dict[str, Path]:
    """The CSV files and `summary.json` (headline numbers for `dvc metrics`)."""
    files = {}
    student_summary = summary[summary["role"] == "student"].rename(columns={"layers": "depth"})
    files["results.csv"] = write_text(out / "results.csv", rounded(summary).to_csv(index=False))
    scores = student_summary[["task", "depth", "method", "mean", "std"]].rename(columns={"mean": "score"})
    files["scores.csv"] = write_text(out / "scores.csv", rounded(scores).to_csv(index=False))
    wide = (student_summary[student_summary["task"] == AVERAGE]
            .pivot_table(index="depth", columns="method", values="mean")
            .reindex(columns=[m for m in methods if m in set(student_summary["method"])]).sort_index())
    files["scores_by_depth.csv"] = write_text(out / "scores_by_depth.csv", rounded(wide).to_csv())
    files["significance.csv"] = write_text(out / "significance.csv", rounded(sig).to_csv(index=False))
    files["attention.csv"] = write_text(out / "attention.csv", rounded(attention).to_csv(index=False))
    files["intervals.csv"] = write_text(out / "intervals.csv", rounded(intervals).to_csv(index=False))

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
