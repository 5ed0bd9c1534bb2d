"""Evaluation: GLUE metrics on the validation splits."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

from . import data, metrics
from .config import Params
from .model_files import WEIGHT_FILES, model_folder_problem
from .paths import Layout, remove_stale_temporaries
from .students import layer_states
from .tasks import Task


class ModelError(RuntimeError):
    """A saved model folder that cannot be used: not a model, no weights, damaged, or made for another task."""


def load_saved(folder: str | Path, again: str):
    """(tokenizer, model) of a saved classification model folder, or one `ModelError` naming the folder or file
    and `again` (how to write it anew)."""
    from transformers import AutoConfig

    folder = Path(folder)
    problem = model_folder_problem(folder)  # a link loop, a FIFO, ... named before transformers opens it
    if problem:
        raise ModelError(f"{problem}; {again}")
    try:
        AutoConfig.from_pretrained(folder)
    except Exception as err:  # noqa: BLE001 - not JSON, or JSON that is no model's config
        raise ModelError(f"{folder}/config.json: not a model's config ({type(err).__name__}: "
                         f"{' '.join(str(err).split())[:200]}); {again}") from None
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise ModelError(f"{folder}: no weights (none of {', '.join(WEIGHT_FILES)}); {again}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as err:  # noqa: BLE001
        raise ModelError(f"{folder}: cannot read its tokenizer ({type(err).__name__}); {again}") from None
    try:
        model = AutoModelForSequenceClassification.from_pretrained(folder)
    except Exception as err:  # noqa: BLE001 - a truncated or overwritten weights file, most likely
        weights = next(name for name in WEIGHT_FILES if (folder / name).is_file())
        raise ModelError(f"{folder}/{weights}: cannot be loaded (truncated or damaged? {type(err).__name__}: "
                         f"{' '.join(str(err).split())[:200]}); {again}") from None  # one line
    return tokenizer, model


def teacher_record(folder: str | Path) -> Path | None:
    """The metrics record of the teacher saved at `folder` when it is a teacher's folder of an output root
    (`<root>/models/<task>/teacher/s<seed>`: `<root>/metrics/teacher/<task>/s<seed>.json`), else None."""
    folder = Path(folder).absolute()
    if not (re.fullmatch(r"s\d+", folder.name) and folder.parent.name == "teacher" and len(folder.parents) > 3
            and folder.parents[2].name == "models"):
        return None
    return Layout(folder.parents[3]).teacher_metrics(folder.parents[1].name, int(folder.name[1:]))


def verify_teacher(folder: str | Path, again: str, fingerprint: str | None = None) -> None:
    """The teacher's weights at `folder` are the ones it was trained with (the SHA-256 its metrics record holds), or
    one `ModelError` naming the file that changed and `again`. A changed teacher is never used, nor cached: the
    students would learn from the damage. Nothing is checked without a record (a folder made by hand) or in a
    record written before fingerprints were recorded."""
    from .cache import model_files_sha256, model_fingerprint

    folder, record_path = Path(folder), teacher_record(folder)
    if record_path is None or not record_path.is_file():
        return
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ModelError(f"{record_path}: damaged ({type(err).__name__}); it vouches for the teacher's weights at "
                         f"{folder}; {again}") from None
    if not isinstance(record, dict):
        raise ModelError(f"{record_path}: damaged (a JSON {type(record).__name__}, not a record); {again}")
    expected, files = record.get("weights_fingerprint"), record.get("weights_sha256")
    if expected is None and files is None:  # written before the weights were recorded
        return
    if not isinstance(expected, str) or not isinstance(files, dict):
        raise ModelError(f"{record_path}: damaged (weights_fingerprint {expected!r}, weights_sha256 of type "
                         f"{type(files).__name__}: not what the teacher step writes); {again}")
    if fingerprint is None or fingerprint != expected:
        now = model_files_sha256(folder)
        fingerprint = model_fingerprint(folder, now)
    if fingerprint == expected:
        return
    changed = [name for name in sorted({*files, *now}) if files.get(name) != now.get(name)] or ["(its files)"]
    raise ModelError(f"{folder}/{changed[0]}: the teacher's weights are not the ones it was trained with (SHA-256 "
                     f"differs from {record_path}): changed or damaged since; a cache built from it would carry the "
                     f"damage to every student; {again}")


def teacher_again(task: str, root: str | Path, seed: int | None = None) -> str:
    """How to write a task's teacher (of one seed) anew (the hint of a teacher that cannot be loaded)."""
    one = f" --seed {seed}" if seed is not None else ""
    return (f"re-run the teacher stage (`dvc repro teacher@{task}`, or `python -m alpkd --out {root} teacher "
            f"--task {task}{one}`)")


def check_model_fits(model, task: Task, folder: str | Path, again: str = "") -> None:
    """The model predicts what the task asks: as many outputs as labels, regression for a 1-label task."""
    kind = "regression" if task.is_regression else "classification"
    got = model.config.num_labels
    problem = getattr(model.config, "problem_type", None)
    model_kind = problem or ("regression" if got == 1 else "classification")
    model_kind = "regression" if model_kind == "regression" else "classification"
    if got != task.num_labels or model_kind != kind:
        raise ModelError(f"{folder}: a {model_kind} model with {got} output(s) (num_labels {got}, problem_type "
                         f"{problem!r}); task {task.name!r} is {kind} with {task.num_labels} label(s)"
                         + (f"; {again}" if again else ""))


def split_suffix(split: str) -> str:
    """What a metric of `split` is suffixed with: nothing for `validation`, `_matched` for `validation_matched`."""
    return "" if split == "validation" else "_" + split.removeprefix("validation_")


def headline_key(task: Task) -> str:
    """The key of the task's headline metric on its first validation split (MNLI: `..._matched`)."""
    return task.headline + split_suffix(task.validation_splits[0])


def length_order(ds) -> np.ndarray:
    """Row indices shortest first (stable), so each batch pads little; the rows' own order without `length`."""
    return np.argsort(ds["length"], kind="stable") if "length" in ds.column_names else np.arange(len(ds))


def evaluate(trainer: Trainer, task: Task, dsets, predictions: dict | None = None) -> dict[str, float]:
    """GLUE metrics on every validation split (MNLI: suffixed `_matched` and `_mismatched`).

    If `predictions` is a dict, each split's per-example predictions and labels are stored in it (for the
    report's paired significance tests), with `constant: true` when every prediction is the same.
    """
    out = {}
    for split in task.validation_splits:
        ds = dsets[split].remove_columns("cache_row")
        order = length_order(ds)  # the predictions are put back in the split's order
        pred = trainer.predict(ds.select(order))
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        logits, label_ids = pred.predictions[back], np.asarray(pred.label_ids)[back]
        out.update({k + split_suffix(split): v for k, v in metrics.compute(task, logits, label_ids).items()})
        if predictions is not None:
            values = metrics.predictions(task, logits)
            predictions[split] = {"predictions": values.tolist(), "labels": label_ids.tolist(),
                                  "constant": metrics.is_constant(values)}
    return out


def evaluate_saved(params: Params, task_name: str, model_dir: str | Path, root: str | Path) -> dict[str, float]:
    """GLUE metrics of a saved model on the task's validation split(s) (the data read from `<root>/data/`)."""
    task = params.task(task_name)
    tokenizer, model = load_saved(model_dir, "pass a folder written by the teacher or distill step")
    if (record := teacher_record(model_dir)) is not None:  # a teacher of an output root: its weights as trained
        seed = int(Path(model_dir).absolute().name[1:])
        verify_teacher(model_dir, teacher_again(record.parent.name, record.parents[3], seed))
    check_model_fits(model, task, model_dir)  # before the data is read: the cause is known now
    dsets = data.prepare(task, tokenizer, params.data, root, params.data.max_train_samples)
    # the Trainer's output_dir: under the output root's git-ignored checkpoints/, never inside the model folder
    # (it may be read-only, shared or pulled); named as a temporary, so what a killed evaluate left is removed
    target = Layout(Path(root)).checkpoints("eval")
    remove_stale_temporaries([target])
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        args = TrainingArguments(output_dir=str(tmp), per_device_eval_batch_size=params.runtime.eval_batch_size,
                                 remove_unused_columns=False, report_to="none", disable_tqdm=True)
        return evaluate(Trainer(model=model, args=args, data_collator=data.Collator(tokenizer)), task, dsets)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
