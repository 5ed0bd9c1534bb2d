"""Checks a step makes before its expensive work, so a cause knowable at the start fails at the start.

`alpkd.config` validates what the params file says; `teacher` asks what it names: the teacher's folder (or the
hub) for its layers, its positions and its classifier. `load` is both, as `check`, every CLI step and every
stage's notebook read their parameters."""
from __future__ import annotations

import os
from pathlib import Path

from . import config
from .config import Params, min_max_length
from .model_files import teacher_config_value, teacher_folder_problem, teacher_num_layers, teacher_path
from .params_file import path_problem
from .tasks import GLUE_TASKS

GLUE_ENV = "ALPKD_GLUE_DIR"  # as alpkd.data reads it (that module loads datasets: too slow for a check)


def check_writable(folders: list[Path], out: Path | None = None) -> None:
    """Each folder exists and is writable, or can be made in its nearest existing parent; else an OSError
    naming it. `os.access` asks the kernel for this process's rights (root passes unless its override
    capabilities are dropped, exactly as a write would)."""
    for folder in ([out] if out is not None else []) + list(map(Path, folders)):
        try:
            folder.exists()
        except OSError as err:  # a name, or the whole path, longer than the file system allows (ENAMETOOLONG)
            raise OSError(path_problem(folder, "an output folder", folder=True) or str(err)) from None
    if out is not None and out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out}: a file, not a folder; pass a folder (it is made if missing)")
    for folder in map(Path, folders):
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing}: a file where the step writes into a folder ({folder})")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(f"{existing}: no write permission; the step writes {folder}. Make it writable "
                                  "or pass another --out")


def check_glue_holds(tasks: list, root: Path) -> None:
    """Each GLUE task of `tasks` (alpkd.tasks.Task) is held by the local GLUE copy (ALPKD_GLUE_DIR): a folder
    <task>/ with a <split>-*.parquet file per split the pipeline reads; else a FileNotFoundError naming what is
    missing. A task already copied into the run (root/data/<task>/train.parquet) needs no source; with no local
    copy (the hub) nothing is asked here: the data stage says what the hub answers."""
    source = os.environ.get(GLUE_ENV)
    if not source:
        return
    for task in tasks:
        if (root / "data" / task.name / "train.parquet").is_file():
            continue
        folder = Path(source) / task.name
        missing = [s for s in ("train", *task.validation_splits) if not any(folder.glob(f"{s}-*.parquet"))]
        if missing:
            held = sorted(p.name for p in Path(source).iterdir() if p.is_dir()) if Path(source).is_dir() else []
            raise FileNotFoundError(
                f"data.tasks: {task.name!r} is not valid here: the local GLUE copy {source} ({GLUE_ENV}) has no "
                f"{', '.join(f'{task.name}/{s}-*.parquet' for s in missing)}; "
                f"it holds: {', '.join(held) or 'nothing'}. "
                f"Remove {task.name!r} from data.tasks, add it to that folder, or unset {GLUE_ENV} to read the hub")


def load(path: str | Path = "params.yaml") -> Params:
    """The params file read and validated (`alpkd.config.load`), then checked against its teacher (`teacher`)."""
    return teacher(config.load(path), str(config.params_path(path)))


def validate(raw: dict, source: str = "params") -> Params:
    """`alpkd.config.validate`, then `teacher`."""
    return teacher(config.validate(raw, source), source)


def teacher(params: Params, source: str = "params") -> Params:
    """`params` unchanged, or one `ConfigError` (as the file's own checks word it) naming what the teacher's files
    refuse: a student depth not below its layers, a maximum length above its positions, a folder it cannot be
    loaded from (no weights, no tokenizer, a classifier of another number of labels). Reads the folder's
    config.json and weights headers (no weights loaded), or asks the hub for a hub id's config."""
    try:
        for check in (_depths_below_teacher, _max_length_fits_teacher, _teacher_folder_usable):
            check(params)
    except ValueError as err:
        raise config.invalid(source, [str(err)]) from None
    return params


def _declared(params: Params, name: str):
    """A task's declaration: the user's (custom_tasks) or GLUE's; both give text_columns and num_labels."""
    return params.custom_tasks.get(name) or GLUE_TASKS[name]


def _depths_below_teacher(params: Params) -> None:
    n = teacher_num_layers(params.teacher)
    for k, depth in enumerate(params.student.depths):
        if depth >= n:
            raise ValueError(f"student.depths.{k} = {depth}: must be >= 1 and < the teacher's {n} layers")
    layer = params.distill.all_to_one_layer
    if layer is not None and layer > n:
        raise ValueError(f"distill.all_to_one_layer = {layer}: the teacher has {n} layers; allowed: 1..{n}, or "
                         "null (its last layer)")


def _max_length_fits_teacher(params: Params) -> None:
    limit = teacher_config_value(params.teacher, "max_position_embeddings")
    if params.data.max_length > limit:
        low = max(min_max_length(len(_declared(params, name).text_columns)) for name in params.data.tasks)
        raise ValueError(f"data.max_length = {params.data.max_length}: above the teacher's {limit} positions "
                         f"(max_position_embeddings of {params.teacher.model!r}); allowed: {low}..{limit}")


def _teacher_folder_usable(params: Params) -> None:
    # what a folder alone tells (no weights loaded): read before anything trains, so `check` and the teacher step
    # refuse it at once instead of a transformers traceback once training starts
    if params.teacher.model == "tiny":
        return
    try:
        folder = Path(teacher_path(params.teacher.model))
    except ImportError as err:
        raise ValueError(str(err)) from None
    if not folder.is_dir():  # a hub id
        return
    labels = {name: _declared(params, name).num_labels for name in params.data.tasks}
    problem = teacher_folder_problem(folder, labels)
    if problem:
        raise ValueError(f"teacher.model = {params.teacher.model!r}: {problem}")


def transfer_room(teacher_samples: int | None, rows: int) -> tuple[int, int]:
    """Where a transfer set starts in the fixed shuffle of a task's `rows` training rows (right after the teacher's
    `data.max_train_samples`), and how many rows are left for it: none where the teacher has the whole split."""
    return (teacher_samples, rows - teacher_samples) if teacher_samples is not None and teacher_samples < rows \
        else (rows, 0)


def transfer_problem(task: str, n: int, teacher_samples: int | None, rows: int) -> str | None:
    """Why `distill.transfer_samples = n` does not fit a task of `rows` training rows, with the numbers; or None."""
    unused = transfer_room(teacher_samples, rows)[1]
    if n <= unused:
        return None
    return (f"distill.transfer_samples = {n}: {task!r} has {rows:,} training rows, {rows - unused:,} of them the "
            f"teacher's (data.max_train_samples), so {unused:,} unused; allowed: 0..{unused}")


def train_rows(task: str, root: Path) -> int | None:
    """A GLUE task's training rows, from the parquet footers alone: the run's copy (root/data/<task>/) or the local
    GLUE copy; None where neither is here (the hub: the distill step counts them)."""
    import pyarrow.parquet as pq

    files = [root / "data" / task / "train.parquet"]
    if not files[0].is_file():
        files = sorted((Path(os.environ.get(GLUE_ENV) or "/nonexistent") / task).glob("train-*.parquet"))
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files) if files and files[0].is_file() else None
