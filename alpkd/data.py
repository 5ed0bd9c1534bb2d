"""GLUE data: loading (local folder or the hub), deterministic subsampling, tokenising, batching.

The `data` stage (`write_task_data`) copies a task's checked splits from its source (ALPKD_GLUE_DIR, the hub or
a custom task's files) to `<root>/data/<task>/<split>.parquet`, with the task's declaration (`task.json`); every
later step reads them from there alone (`read_task_data`), writing them first where they are missing (a `--out scratch` run, a notebook's defaults).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from .data_checks import DataError, causes, check_classes, check_split, load_files, warn_overlap
from .paths import Layout, remove_stale_temporaries, replace_atomically
from .preflight import transfer_problem, transfer_room
from .tasks import Task

GLUE_HUB = "nyu-mll/glue"
GLUE_ENV = "ALPKD_GLUE_DIR"
SUBSAMPLE_SEED = 0  # fixed, so every run (and the teacher cache) sees the same subsample
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
NO_LABEL = -100  # a transfer row's `labels` (its label is never read); regression: NaN, so a use would be loud
TASK_FILE = "task.json"  # the task's declaration, beside its splits (`declaration`)


def glue_source() -> str:
    """The local GLUE folder named by ALPKD_GLUE_DIR, else the hub dataset."""
    return os.environ.get(GLUE_ENV) or GLUE_HUB


def source_label(task: Task) -> str:
    """Where a task's data came from, in words that hold on any machine: the variable or the hub id, or
    the custom task's declared files (as written in params.yaml), never a local absolute path."""
    if task.files:
        return "custom files (custom_tasks." + task.name + ")"
    return f"{GLUE_ENV} (a local copy of {GLUE_HUB})" if os.environ.get(GLUE_ENV) else GLUE_HUB


def load_task(task: Task) -> datasets.DatasetDict:
    """The train and validation splits of a task, checked (`check_split`) before anything trains.

    GLUE tasks come from `glue_source()`; a user's own task from its CSV, TSV or JSON Lines files.
    """
    lines: dict[str, tuple[list[int], str]] = {}
    if task.files:
        raw, where, lines = load_files(task)
    else:
        raw, where = _load_glue(task)
    for split, ds in raw.items():
        check_split(ds, task, where[split], lines.get(split))
    check_classes(raw["train"], task, where["train"])
    warn_overlap(raw, task, where)
    return raw


def _load_glue(task: Task) -> tuple[datasets.DatasetDict, dict[str, str]]:
    source = glue_source()
    splits = ("train", *task.validation_splits)
    local = source != GLUE_HUB
    if local:
        folder = Path(source) / task.name
        if not folder.is_dir():
            found = sorted(p.name for p in Path(source).iterdir() if p.is_dir()) if Path(source).is_dir() else []
            raise DataError(f"GLUE task {task.name!r}: no folder {folder} ({GLUE_ENV}={source}); "
                            f"tasks found there: {found or 'none'}. Expected {task.name}/<split>-*.parquet: set "
                            f"{GLUE_ENV} to a folder holding it, or unset it to read the hub dataset {GLUE_HUB}")
        for split in splits:
            if not list(folder.glob(f"{split}-*")):
                raise DataError(f"GLUE task {task.name!r}: no file {folder}/{split}-*.parquet for split "
                                f"{split!r}; found {sorted(p.name for p in folder.iterdir())}")
    try:
        if local:  # read the parquet files directly: the folder's README (hub configs) is not required
            # one split at a time, so a file with wrong columns is reported as such, not as a schema clash
            raw = {s: datasets.load_dataset("parquet", split="train", data_files=sorted(
                str(f) for f in folder.glob(f"{s}-*"))) for s in splits}
        else:
            raw = datasets.load_dataset(source, task.name)
    except Exception as err:  # noqa: BLE001 - any failure becomes one actionable message
        tried = f"the local folder {source} ({GLUE_ENV})" if local else f"the hub dataset {GLUE_HUB}"
        raise DataError(
            f"could not load GLUE task {task.name!r}: tried {tried}: {causes(err)}. "
            f"Set {GLUE_ENV} to a folder in the hub's layout (one folder per task, e.g. ../shared/glue) "
            f"or make the hub reachable."
        ) from None
    missing = [s for s in splits if s not in raw]
    if missing:
        raise DataError(f"GLUE task {task.name!r} from {source} has no split(s) {missing}; found {list(raw)}")
    where = {s: (f"{source}/{task.name}/{s}-*.parquet" if local else f"{GLUE_HUB}:{task.name}/{s}") for s in splits}
    return datasets.DatasetDict({s: raw[s] for s in splits}), where


def fingerprint(ds: datasets.Dataset) -> str:
    """SHA-256 of a split's content (every column's name, type and values, every row in order).

    Part of a checkpoint's key: a run resumes only on the very data it was trained on, whatever its source
    (GLUE folder, hub, a user's files). Independent of how the Arrow table happens to be chunked.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    table = ds.with_format("arrow")[:]
    h = hashlib.sha256()
    for name in sorted(table.column_names):
        column = table.column(name)
        lengths, values = hashlib.sha256(), hashlib.sha256()
        for chunk in column.chunks:
            if pa.types.is_list(chunk.type) or pa.types.is_large_list(chunk.type):
                lengths.update(pc.fill_null(pc.list_value_length(chunk), -1).to_numpy().astype(np.int64).tobytes())
                chunk = chunk.flatten()
            if (pa.types.is_integer(chunk.type) or pa.types.is_floating(chunk.type)) and chunk.null_count == 0:
                values.update(chunk.to_numpy().tobytes())
            else:
                for v in chunk.to_pylist():
                    values.update(json.dumps(v).encode() + b"\n")
        h.update(f"{name}|{column.type}|{lengths.hexdigest()}|{values.hexdigest()}|".encode())
    return h.hexdigest()


def subsample(ds: datasets.Dataset, n: int | None) -> datasets.Dataset:
    """The first `n` examples of a fixed shuffle (seed 0): the same subset on every run and machine."""
    if n is None or n >= len(ds):
        return ds
    return ds.shuffle(seed=SUBSAMPLE_SEED).select(range(n)).flatten_indices()


def tokenize(ds: datasets.Dataset, task: Task, tokenizer: PreTrainedTokenizerBase, max_length: int,
             first_row: int = 0) -> datasets.Dataset:
    """Token ids (unpadded: batches are padded dynamically), `labels`, `length` and `cache_row` (row number, from
    `first_row`). Rows without the label column (a transfer set's) get `NO_LABEL` (NaN for regression)."""
    missing = float("nan") if task.is_regression else NO_LABEL

    def encode(batch, indices):
        texts = [batch[c] for c in task.text_columns]
        enc = tokenizer(*texts, truncation=True, max_length=max_length)
        enc["labels"] = batch[task.label_column] if task.label_column in batch else [missing] * len(indices)
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        enc["cache_row"] = [first_row + i for i in indices]
        return enc

    return ds.map(encode, batched=True, with_indices=True, remove_columns=ds.column_names,
                  desc=f"tokenizing {task.name}")


def splits(task: Task) -> tuple[str, ...]:
    return ("train", *task.validation_splits)


def write_task_data(task: Task, root: str | Path) -> Path:
    """The `data` stage: the task's checked splits from their source to `<root>/data/<task>/<split>.parquet`
    (the folder replaced as a whole, atomically), and `data/<task>.source.json` (source, rows, fingerprints)."""
    layout = Layout(Path(root))
    # what a killed data stage left (`data/.<task>.tmp-<pid>/`, inside the DVC output `data/<task>`'s parent)
    remove_stale_temporaries([layout.data(task.name), layout.data_source(task.name)])
    raw = load_task(task)

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        for split in splits(task):
            raw[split].to_parquet(str(tmp / f"{split}.parquet"))
        (tmp / TASK_FILE).write_text(json.dumps(declaration(task), indent=2) + "\n")

    replace_atomically(layout.data(task.name), write)
    record = {"task": task.name, "source": source_label(task),
              "splits": {s: {"rows": len(raw[s]), "fingerprint": fingerprint(raw[s])} for s in splits(task)}}
    if task.files:
        record["files"] = _file_hashes(task)
    replace_atomically(layout.data_source(task.name),
                       lambda tmp: tmp.write_text(json.dumps(record, indent=2) + "\n"))
    return layout.data(task.name)


def declaration(task: Task) -> dict:
    """What the later stages read of a task's declaration (columns, labels, metrics; not where its files are).

    Stored in `data/<task>/task.json`, so the data folder's hash in dvc.lock carries it per task: the teacher
    and distill stages need not depend on the whole `custom_tasks` parameter, and editing one custom task's
    declaration re-runs that task's stages alone."""
    fields = dataclasses.asdict(task)
    del fields["files"]
    return fields


def _file_hashes(task: Task) -> dict[str, str]:
    return {split: hashlib.sha256(Path(path).read_bytes()).hexdigest()
            for split, path in task.files if Path(path).is_file()}


def _stored(task: Task, layout: Layout) -> bool:
    """The copy is there; a custom task's copy must be of its files as they are now (else one clear error)."""
    folder = layout.data(task.name)
    if not (layout.data_source(task.name).is_file() and all((folder / f"{s}.parquet").is_file() for s in splits(task))):
        return False
    if not (folder / TASK_FILE).is_file():  # written before the declaration was stored with the data
        return False
    again = (f"write it again (`dvc repro data@{task.name}`, or `python -m alpkd --out {layout.root} data --task "
             f"{task.name}` outside the pipeline)")

    def read(path: Path) -> dict:
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"{path}: damaged ({type(err).__name__}: {err}); {again}") from None
        if not isinstance(content, dict):
            raise DataError(f"{path}: damaged (a JSON {type(content).__name__}, not an object); {again}")
        return content

    recorded = read(layout.data_source(task.name)).get("files")
    if task.files and recorded != _file_hashes(task):
        raise DataError(f"task {task.name!r}: {folder}/ is a copy of its files before they changed; {again}")
    stored, now = read(folder / TASK_FILE), json.loads(json.dumps(declaration(task)))
    if stored != now:  # compared as JSON: the tuples are stored as lists
        changed = sorted(k for k in {*stored, *now} if stored.get(k) != now.get(k))
        raise DataError(f"task {task.name!r}: {folder}/ was written for another declaration of the task (changed: "
                        f"{', '.join(changed)}); {again}")
    return True


def read_task_data(task: Task, root: str | Path) -> datasets.DatasetDict:
    """The task's splits from `<root>/data/<task>/`, written there first (`write_task_data`) when missing."""
    import pyarrow.parquet as pq

    layout = Layout(Path(root))
    if not _stored(task, layout):
        try:
            write_task_data(task, root)
        except DataError as err:
            raise DataError(f"task {task.name!r}: no {layout.data(task.name)}/ (the data stage's copy) and it could "
                            f"not be written from the source: {err}") from None
    out = {}
    for split in splits(task):
        path = layout.data(task.name) / f"{split}.parquet"
        try:
            table = pq.read_table(path)
        except Exception as err:  # noqa: BLE001 - truncated or overwritten: pyarrow's own message says how
            why = " ".join(str(err).split())  # one line
            raise DataError(f"{path}: cannot be read ({type(err).__name__}: {why}); the data stage's copy is "
                            f"damaged: write it again (`dvc repro data@{task.name}`, or `python -m alpkd --out "
                            f"{layout.root} data --task {task.name}` outside the pipeline)") from None
        out[split] = datasets.Dataset(table)  # features (ClassLabel, ...) from the file's schema
        check_split(out[split], task, str(path))
    return datasets.DatasetDict(out)


def stored_source(task_name: str, root: str | Path) -> str | None:
    """Where the stored data of a task came from originally (`source_label` when it was written)."""
    path = Layout(Path(root)).data_source(task_name)
    return json.loads(path.read_text())["source"] if path.is_file() else None


def prepare(task: Task, tokenizer: PreTrainedTokenizerBase, data_params, root: str | Path,
            train_samples: int | None) -> datasets.DatasetDict:
    """Read (`read_task_data`), subsample and tokenise the train and validation splits of `task`: the first
    `train_samples` training examples (None: all) of a fixed shuffle, and `data.max_eval_samples` of each validation
    split.

    Callers name the count: the teacher's (`data.max_train_samples`) or the students' (`Params.student_train_samples`),
    which lie inside the teacher's whenever they are fewer (the shuffle is the same), so the teacher has seen every
    one of them.
    """
    return _tokenized(read_task_data(task, root), task, tokenizer, data_params, train_samples)


def prepare_teacher(task: Task, tokenizer: PreTrainedTokenizerBase, data_params, root: str | Path,
                    student_samples: int | None) -> tuple[datasets.DatasetDict, datasets.DatasetDict]:
    """The teacher's data (`data.max_train_samples` examples) and its students' (`student_samples`), each as `prepare`
    gives it, read and tokenised once: the teacher stage trains on the first and caches the teacher's outputs on the
    second. Where the teacher's training rows are themselves drawn from the fixed shuffle, the students' are their
    first rows (`cache_row` counts from 0 in both); where the teacher has the whole split in its own order, the
    students' draw is tokenised apart. The validation splits are the same."""
    raw = read_task_data(task, root)
    teacher = _tokenized(raw, task, tokenizer, data_params, data_params.max_train_samples)
    rows = len(raw["train"])
    drawn, students_drawn = _drawn(data_params.max_train_samples, rows), _drawn(student_samples, rows)
    if students_drawn == drawn:
        return teacher, teacher
    students = datasets.DatasetDict(teacher)
    if drawn is not None and students_drawn is not None and students_drawn < drawn:
        students["train"] = teacher["train"].select(range(students_drawn))
    else:
        students["train"] = tokenize(subsample(raw["train"], student_samples), task, tokenizer, data_params.max_length)
    return teacher, students


def prepare_transfer(task: Task, tokenizer: PreTrainedTokenizerBase, data_params, root: str | Path, n: int,
                     first_row: int) -> datasets.Dataset:
    """The transfer set (`distill.transfer_samples`): `n` training sentences that only the teacher labels, the rows
    of the fixed shuffle (`subsample`'s) right after the teacher's `data.max_train_samples`, so disjoint from every
    labelled row of the teacher and its students. Only the text columns are read from the stored split: a transfer
    row's label is never loaded (`labels` is `NO_LABEL`). `cache_row` counts on from `first_row` (the students'
    labelled rows come first)."""
    import pyarrow.parquet as pq

    layout = Layout(Path(root))
    if not _stored(task, layout):
        read_task_data(task, root)  # writes the data stage's copy (or says why it cannot)
    path = layout.data(task.name) / "train.parquet"
    texts = datasets.Dataset(pq.read_table(path, columns=list(task.text_columns)))
    problem = transfer_problem(task.name, n, data_params.max_train_samples, len(texts))
    if problem:
        raise DataError(problem)
    first = transfer_room(data_params.max_train_samples, len(texts))[0]
    rows = texts.shuffle(seed=SUBSAMPLE_SEED).select(range(first, first + n)).flatten_indices()
    return tokenize(rows, task, tokenizer, data_params.max_length, first_row)


def _drawn(n: int | None, rows: int) -> int | None:
    """How many rows of the fixed shuffle `subsample` takes for `n` of `rows`; None: the whole split, not shuffled."""
    return None if n is None or n >= rows else n


def _tokenized(raw: datasets.DatasetDict, task: Task, tokenizer: PreTrainedTokenizerBase, data_params,
               train_samples: int | None) -> datasets.DatasetDict:
    out = {"train": subsample(raw["train"], train_samples)}
    for split in task.validation_splits:
        out[split] = subsample(raw[split], data_params.max_eval_samples)
    return datasets.DatasetDict({s: tokenize(d, task, tokenizer, data_params.max_length) for s, d in out.items()})


class Collator:
    """Dynamic padding, plus the cached teacher outputs of each example's row when a cache is given, and the cached
    logits of the teacher assistants (`assistants`, smallest first) as `assistant_logits` (K, B, C) with the rows
    themselves (`cache_row`: CES-KD picks each example's expert by it)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, cache=None, assistants=()):
        self.pad = DataCollatorWithPadding(tokenizer)
        self.cache = cache  # alpkd.cache.SplitCache or None
        self.assistants = list(assistants)  # alpkd.cache.SplitCache each

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.pad([{k: f[k] for k in MODEL_INPUTS if k in f} for f in features])
        batch["labels"] = torch.tensor([f["labels"] for f in features])
        if "labelled" in features[0]:  # a transfer set's rows mixed in: the task loss reads the labelled rows only
            batch["labelled"] = torch.tensor([bool(f["labelled"]) for f in features])
        if "cache_row" in features[0] and (self.cache is not None or self.assistants):
            rows = [f["cache_row"] for f in features]
            if self.cache is not None:
                batch["teacher_logits"], batch["teacher_states"] = self.cache.rows(rows)
            if self.assistants:
                batch["assistant_logits"] = torch.stack([a.rows(rows)[0] for a in self.assistants])
                batch["cache_row"] = torch.tensor(rows)
        return batch
