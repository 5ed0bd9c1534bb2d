"""GLUE data: loading (local folder or the hub), deterministic subsampling, tokenising, batching."""
from __future__ import annotations

import os

import datasets
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


def load_task(task: Task) -> datasets.DatasetDict:
    """The train and validation splits of a GLUE task, from `glue_source()`."""
    source = glue_source()
    try:
        raw = datasets.load_dataset(source, task.name)
    except Exception as err:  # noqa: BLE001 - any failure becomes one actionable message
        tried = f"the local folder {source} ({GLUE_ENV})" if source != GLUE_HUB else f"the hub dataset {GLUE_HUB}"
        raise DataError(
            f"could not load GLUE task {task.name!r}: tried {tried}: {type(err).__name__}: {err}. "
            f"Set {GLUE_ENV} to a folder in the hub's layout (one folder per task, e.g. ../shared/glue) "
            f"or make the hub reachable."
        ) from None
    splits = ("train", *task.validation_splits)
    missing = [s for s in splits if s not in raw]
    if missing:
        raise DataError(f"GLUE task {task.name!r} from {source} has no split(s) {missing}; found {list(raw)}")
    return datasets.DatasetDict({s: raw[s] for s in splits})


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
