#!/usr/bin/env python
"""Keep the committed notebooks clean: no outputs, except the printed output of `# NBVAL_CHECK_OUTPUT` cells, and
every output of the notebooks in EXECUTED (read on the web as a companion to the paper: its figures must show).

  python scripts/notebooks.py strip [NB ...]     drop outputs and execution counts (CHECK cells keep theirs;
                                                 an EXECUTED notebook keeps all, its CHECK cells text only)
  python scripts/notebooks.py refresh [NB ...]   execute (smoke defaults, under scratch/), then strip
  python scripts/notebooks.py check [NB ...]     exit 1 if a notebook is not clean (what CI and the tests run):
                                                 an EXECUTED notebook must store an output in every code cell
                                                 but its `parameters` cell and cells tagged `silent`

nbval compares a CHECK cell's output with the one stored in the notebook, so those outputs (plain text, fixed
rounding) are part of the source; everything else (figures, training logs, timings) is produced by running, and
stored only in an EXECUTED notebook (small tensors, no timings: its outputs change only with the code).
Default: every notebook in notebooks/.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat

CHECK = "# NBVAL_CHECK_OUTPUT"
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
EXECUTED = {"00_method.ipynb"}  # committed with every output a reader should see
SILENT = "silent"  # the tag of a cell that prints and draws nothing (imports)


def is_executed(path: Path) -> bool:
    return Path(path).name in EXECUTED


def tags(cell) -> list[str]:
    return cell.metadata.get("tags", [])


def is_check(cell) -> bool:
    return cell.cell_type == "code" and cell.source.lstrip().startswith(CHECK)


def text_only(outputs):
    """Stream and plain-text outputs only (no images, no HTML), so the stored output stays small and stable."""
    kept = []
    for out in outputs:
        if out.output_type == "stream":
            kept.append(out)
        elif out.output_type in ("execute_result", "display_data") and "text/plain" in out.get("data", {}):
            out.data = {"text/plain": out.data["text/plain"]}
            out.metadata = {}
            kept.append(out)
    return kept


def coalesce(outputs):
    """Consecutive stream outputs of one stream as one (the kernel splits a cell's prints where it flushed)."""
    kept = []
    for out in outputs:
        if kept and out.output_type == "stream" and kept[-1].output_type == "stream" and kept[-1].name == out.name:
            kept[-1].text += out.text
        else:
            kept.append(out)
    return kept


def strip(nb, keep_check: bool = True, executed: bool = False):
    """Drop outputs and execution counts but those of CHECK cells (text only); `executed`: keep every output and
    count, numbered in order (CHECK cells still text only)."""
    count = 0
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        if executed:
            count += 1
            cell.execution_count = count
            cell.outputs = coalesce(text_only(cell.outputs) if is_check(cell) else cell.outputs)
        elif keep_check and is_check(cell) and cell.outputs:
            count += 1
            cell.execution_count = count  # nbval compares only cells that have an execution count
            cell.outputs = text_only(cell.outputs)
        else:
            cell.execution_count = None
            cell.outputs = []
    for key in ("papermill", "widgets"):
        nb.metadata.pop(key, None)
    return nb


def problems(nb, executed: bool = False) -> list[str]:
    out = []
    for k, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if executed and cell.execution_count is None:
            out.append(f"cell {k} was not executed: an executed notebook keeps every output (run `refresh`)")
        elif executed and not cell.outputs and not {"parameters", SILENT} & set(tags(cell)):
            out.append(f"cell {k} stores no output: an executed notebook keeps every output (run `refresh`; "
                       f"tag a cell that shows nothing `{SILENT}`)")
        if is_check(cell):
            if not cell.outputs or cell.execution_count is None:
                out.append(f"cell {k} is marked {CHECK} but stores no output (run `refresh`)")
            elif any(o.output_type != "stream" and set(o.get("data", {})) != {"text/plain"} for o in cell.outputs):
                out.append(f"cell {k} stores non-text output (run `strip`)")
        elif not executed and (cell.outputs or cell.execution_count is not None):
            out.append(f"cell {k} stores outputs (run `strip`)")
    if not any("parameters" in c.metadata.get("tags", []) for c in nb.cells):
        out.append("no cell is tagged `parameters`")
    return out


def refresh(path: Path) -> None:
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=600,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    nbformat.write(strip(nb, executed=is_executed(path)), path)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("strip", "refresh", "check"):
        print(__doc__)
        return 2
    paths = [Path(p) for p in argv[1:]] or sorted(NOTEBOOKS.glob("*.ipynb"))
    bad = 0
    for path in paths:
        if argv[0] == "refresh":
            refresh(path)
        elif argv[0] == "strip":
            nbformat.write(strip(nbformat.read(path, as_version=4), executed=is_executed(path)), path)
        else:
            for problem in problems(nbformat.read(path, as_version=4), is_executed(path)):
                print(f"{path}: {problem}")
                bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
