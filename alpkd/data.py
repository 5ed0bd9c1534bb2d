"""GLUE data: loading (local folder or the hub), deterministic subsampling, tokenising, batching."""
from __future__ import annotations

import os
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from .tasks import Task

GLUE_HUB = "nyu-mll/glue"
GLUE_ENV = "ALPKD_GLUE_DIR"
SUBSAMPLE_SEED = 0  # fixed, so every run (and the teacher cache) sees the same subsample
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class DataError(RuntimeError):
    """Data that cannot be loaded or is not what the task expects."""


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
    if task.files:
        raw, where = _load_files(task)
    else:
        raw, where = _load_glue(task)
    for split, ds in raw.items():
        check_split(ds, task, where[split])
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
                            f"tasks found there: {found or 'none'}. Expected {task.name}/<split>-*.parquet")
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
            f"could not load GLUE task {task.name!r}: tried {tried}: {type(err).__name__}: {err}. "
            f"Set {GLUE_ENV} to a folder in the hub's layout (one folder per task, e.g. ../shared/glue) "
            f"or make the hub reachable."
        ) from None
    missing = [s for s in splits if s not in raw]
    if missing:
        raise DataError(f"GLUE task {task.name!r} from {source} has no split(s) {missing}; found {list(raw)}")
    where = {s: (f"{source}/{task.name}/{s}-*.parquet" if local else f"{GLUE_HUB}:{task.name}/{s}") for s in splits}
    return datasets.DatasetDict({s: raw[s] for s in splits}), where


_READERS = {".csv": ("csv", {}), ".tsv": ("csv", {"delimiter": "\t"}), ".jsonl": ("json", {}), ".json": ("json", {})}


def _load_files(task: Task) -> tuple[datasets.DatasetDict, dict[str, str]]:
    out = {}
    for split, path in task.files:
        suffix = Path(path).suffix.lower()
        if suffix not in _READERS:
            raise DataError(f"task {task.name!r}, {split} file {path}: unsupported type {suffix!r}; "
                            f"allowed: {', '.join(_READERS)}")
        if not Path(path).is_file():
            raise DataError(f"task {task.name!r}: {split} file {path} not found")
        builder, kwargs = _READERS[suffix]
        try:
            out[split] = datasets.load_dataset(builder, data_files=path, split="train", **kwargs)
        except Exception as err:  # noqa: BLE001
            raise DataError(f"task {task.name!r}: cannot read {split} file {path}: {type(err).__name__}: {err}") from None
    return datasets.DatasetDict(out), dict(task.files)


def check_split(ds: datasets.Dataset, task: Task, where: str) -> None:
    """Columns, labels and texts are what the task expects; else one `DataError` naming file, column, row."""
    expected = [*task.text_columns, task.label_column]
    missing = [c for c in expected if c not in ds.column_names]
    if missing:
        raise DataError(f"{where}: column(s) {missing} missing; task {task.name!r} expects {expected}, "
                        f"the file has {ds.column_names}")
    if len(ds) == 0:
        raise DataError(f"{where}: no rows")
    labels = np.asarray(ds[task.label_column], dtype=object)
    for row, value in enumerate(labels):
        if task.is_regression:
            ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and np.isfinite(value)
            allowed = "a finite number (regression)"
        else:
            ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < task.num_labels
            allowed = f"an integer in 0..{task.num_labels - 1}"
        if not ok:
            raise DataError(f"{where}: row {row}, column {task.label_column!r}: label {value!r}; expected {allowed}")
    for column in task.text_columns:
        for row, text in enumerate(ds[column]):
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{where}: row {row}, column {column!r}: empty or missing text ({text!r})")


def subsample(ds: datasets.Dataset, n: int | None) -> datasets.Dataset:
    """The first `n` examples of a fixed shuffle (seed 0): the same subset on every run and machine."""
    if n is None or n >= len(ds):
        return ds
    return ds.shuffle(seed=SUBSAMPLE_SEED).select(range(n)).flatten_indices()


def tokenize(ds: datasets.Dataset, task: Task, tokenizer: PreTrainedTokenizerBase, max_length: int) -> datasets.Dataset:
    """Token ids (unpadded: batches are padded dynamically), `labels`, `length` and `cache_row` (row number)."""

    def encode(batch, indices):
        texts = [batch[c] for c in task.text_columns]
        enc = tokenizer(*texts, truncation=True, max_length=max_length)
        enc["labels"] = batch[task.label_column]
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        enc["cache_row"] = indices
        return enc

    return ds.map(encode, batched=True, with_indices=True, remove_columns=ds.column_names,
                  desc=f"tokenizing {task.name}")


def prepare(task: Task, tokenizer: PreTrainedTokenizerBase, data_params) -> datasets.DatasetDict:
    """Load, subsample and tokenise the train and validation splits of `task`."""
    raw = load_task(task)
    out = {"train": subsample(raw["train"], data_params.max_train_samples)}
    for split in task.validation_splits:
        out[split] = subsample(raw[split], data_params.max_eval_samples)
    return datasets.DatasetDict({s: tokenize(d, task, tokenizer, data_params.max_length) for s, d in out.items()})


class Collator:
    """Dynamic padding, plus the cached teacher outputs of each example's row when a cache is given."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, cache=None):
        self.pad = DataCollatorWithPadding(tokenizer)
        self.cache = cache  # alpkd.cache.SplitCache or None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.pad([{k: f[k] for k in MODEL_INPUTS if k in f} for f in features])
        batch["labels"] = torch.tensor([f["labels"] for f in features])
        if self.cache is not None and "cache_row" in features[0]:
            rows = [f["cache_row"] for f in features]
            batch["teacher_logits"], batch["teacher_states"] = self.cache.rows(rows)
        return batch
