"""Runs side by side (`python -m alpkd compare`): the parameters that differ and the headline metrics.

A run is a folder holding params.yaml and report/summary.json (the pipeline's root, or a try of
scripts/try.sh), or, for a DVC project, its committed run and each of its experiments (`dvc exp show --json`).
The table fits 100 columns: the runs go in blocks of columns when there are many.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .params_file import read_yaml


WIDTH = 100
SUMMARY = "report/summary.json"


class CompareError(RuntimeError):
    """Nothing to compare, or a run that cannot be read: the message says which and what to run."""


def flatten(tree, prefix: str = "") -> dict[str, object]:
    """Nested mappings as dotted keys (`distill.temperature`); lists and scalars are leaves."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, object] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _folder(path: Path) -> tuple[dict, dict]:
    params, summary = path / "params.yaml", path / SUMMARY
    if not summary.is_file():
        raise CompareError(f"{path}: no {SUMMARY}; the run has not finished (scripts/try.sh PROFILE runs one)")
    return read_yaml(params) or {}, json.loads(summary.read_text())


def _is_project(path: Path) -> bool:
    return (path / "dvc.yaml").is_file() and (path / ".dvc").is_dir() and (path / ".git").exists()


def _experiments(path: Path) -> list[tuple[str, dict, dict]]:
    """The DVC project's committed run (`baseline`), its experiments by name, and the workspace when it holds a
    run that is neither."""
    try:
        done = subprocess.run(["dvc", "exp", "show", "--json"], cwd=path, capture_output=True, text=True,
                              check=True)
    except (OSError, subprocess.CalledProcessError) as err:
        raise CompareError(f"{path}: `dvc exp show --json` failed: {getattr(err, 'stderr', '') or err}") from None
    runs = []

    def add(name: str, data: dict | None) -> None:
        data = data or {}
        params = (data.get("params") or {}).get("params.yaml", {}).get("data") or {}
        metrics = (data.get("metrics") or {}).get(SUMMARY, {}).get("data")
        if metrics:
            runs.append((name, params, metrics))

    workspace = None
    for entry in json.loads(done.stdout or "[]"):
        if entry.get("rev") == "workspace":
            workspace = entry.get("data")
            continue
        add("baseline", entry.get("data"))
        for exp in entry.get("experiments") or []:
            for rev in exp.get("revs") or []:
                add(rev.get("name") or exp.get("name") or str(rev.get("rev", ""))[:7], rev.get("data"))
    if workspace is not None:
        before = len(runs)
        add("workspace", workspace)
        if len(runs) > before and any(r[1:] == runs[-1][1:] for r in runs[:-1]):
            runs.pop()  # the workspace is one of the runs above
    return runs


def gather(paths: list[str]) -> list[tuple[str, dict, dict]]:
    """(name, params, summary) per run: the folders given, or the experiments of the one DVC project given."""
    if len(paths) <= 1:
        where = Path(paths[0] if paths else ".")
        if not where.is_dir():
            raise CompareError(f"{where}: not a folder")
        if _is_project(where):
            runs = _experiments(where)
            if not runs:
                raise CompareError(f"{where}: no finished run with {SUMMARY} (scripts/try.sh PROFILE runs one)")
            return runs
        if len(paths) == 1:
            return [(where.resolve().name, *_folder(where))]
        raise CompareError("give run folders to compare (e.g. tries/quick .), or run it in a DVC project")
    names = [Path(p).resolve().name for p in paths]
    return [(name if names.count(name) == 1 else p, *_folder(Path(p))) for name, p in zip(names, paths)]


def _show(value, metric: bool = False) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if metric else f"{value:g}"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "–" if value is None else str(value)


def rows(runs: list[tuple[str, dict, dict]]) -> tuple[list[list[str]], list[list[str]]]:
    """The parameter rows (keys whose values differ between the runs) and the metric rows (every key)."""
    params = [flatten(p) for _, p, _ in runs]
    metrics = [flatten(m) for _, _, m in runs]

    def table(dicts: list[dict], changed_only: bool) -> list[list[str]]:
        keys = list(dict.fromkeys(k for d in dicts for k in d))
        out = []
        for key in keys:
            values = [_show(d.get(key), metric=not changed_only) for d in dicts]
            if not changed_only or len(set(values)) > 1:
                out.append([key, *values])
        return out

    return table(params, True), table(metrics, False)


def render(runs: list[tuple[str, dict, dict]], width: int = WIDTH) -> str:
    """A plain-text table: parameters that differ, then the headline metrics (x100), runs as columns."""
    changed, metrics = rows(runs)
    names = [name for name, _, _ in runs]
    everything = changed + metrics
    key_width = min(max([len(r[0]) + 2 for r in everything] + [22]), 36)
    cell = [min(max([len(names[i])] + [len(r[i + 1]) for r in everything]), 16) for i in range(len(names))]
    blocks, block, used = [], [], key_width
    for i in range(len(names)):
        if block and used + 2 + cell[i] > width:
            blocks.append(block)
            block, used = [], key_width
        block.append(i)
        used += 2 + cell[i]
    blocks.append(block)

    def line(first: str, values: list[str], cols: list[int]) -> str:
        text = first[:key_width].ljust(key_width)
        return (text + "".join("  " + values[i][:cell[i]].rjust(cell[i]) for i in cols)).rstrip()

    out = []
    for cols in blocks:
        out.append(line("", names, cols))
        out.append(line("parameters that differ", [""] * len(names), cols) if changed
                   else "parameters: the same in every run")
        out += [line("  " + r[0], r[1:], cols) for r in changed]
        out.append(f"metrics ({SUMMARY})")
        out += [line("  " + r[0], r[1:], cols) for r in metrics]
        out.append("")
    return "\n".join(out).rstrip()
