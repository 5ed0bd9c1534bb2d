"""The files a run writes: its metrics record, predictions, training log and saved model.

Each is written atomically (beside its destination, then renamed over it), so a killed run never leaves half
a file.
"""
from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer

from . import data, numerics
from .config import Params
from .evaluation import headline_key
from .paths import replace_atomically
from .tasks import Task


def environment(runtime=None) -> dict:
    """What a result may depend on beyond the code and the parameters: library versions, device, and where the
    arithmetic ran (`alpkd.numerics.describe`: the setting, CPU model, kernel ISA, threads)."""
    import datasets
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "datasets": datasets.__version__, "numpy": np.__version__,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "torch_threads": torch.get_num_threads(), "precision": getattr(runtime, "precision", None),
            **numerics.describe(runtime)}


def write_json(path: Path, obj) -> None:
    """Atomic: a temporary file renamed into place, so a killed run never leaves half a file."""
    replace_atomically(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2) + "\n"))


def save_model(model, tokenizer, dest: Path) -> None:
    """Atomic save: written beside `dest`, then renamed over it."""
    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    replace_atomically(dest, write)


def write_log(trainer: Trainer, path: Path) -> None:
    """The training curves: one CSV row per logging step (the loss and each of its terms). A run shorter than
    `runtime.logging_steps` logged none: its file is the header `step,loss` alone (readable as no rows)."""
    import pandas as pd

    rows = [r for r in trainer.state.log_history if "loss" in r]
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["step", "loss"])
    # one column order whatever the rows' key order: a resumed run's earlier rows come back from the Trainer's
    # state file with their keys sorted, and its log must equal the uninterrupted run's byte for byte
    frame = frame[sorted(frame.columns, key=log_column_rank)]
    replace_atomically(path, lambda tmp: frame.to_csv(tmp, index=False))


def log_column_rank(name: str) -> tuple:
    """step, epoch, loss, the loss's terms (loss_*), then the rest (grad_norm, learning_rate, ...), each by name."""
    first = ("step", "epoch", "loss")
    return (first.index(name), "") if name in first else (3 if name.startswith("loss_") else 4, name)


def nulls(scores: dict) -> dict:
    """Scores for JSON: an undefined one (NaN, e.g. a correlation of constant predictions) as null."""
    return {k: (None if np.isnan(v) else v) for k, v in scores.items()}


def run_record(params: Params, task: Task, role: str, scores: dict, timing: dict, root: str | Path, **extra) -> dict:
    """A run's metrics record: its scores and headline, timing, settings, data source and environment."""
    key = headline_key(task)
    scores = nulls(scores)
    return {"task": task.name, "role": role, **extra, "headline": key, "score": scores[key], "metrics": scores,
            **timing, "profile": params.profile, "data_source": data.stored_source(task.name, root),
            "environment": environment(params.runtime)}
