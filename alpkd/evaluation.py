"""Evaluation: GLUE metrics on the validation splits, and ALP's attention map (student x teacher layers)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

from . import data, metrics
from .config import Params
from .losses import alp_allowed, alp_attention, alp_scaled
from .students import layer_states
from .tasks import Task


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
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    dsets = data.prepare(task, tokenizer, params.data, root)
    args = TrainingArguments(output_dir=str(Path(model_dir) / ".eval"), per_device_eval_batch_size=params.runtime.eval_batch_size,
                             remove_unused_columns=False, report_to="none", disable_tqdm=True)
    return evaluate(Trainer(model=model, args=args, data_collator=data.Collator(tokenizer)), task, dsets)


def entropy_bits(weights: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of each attention row (0 log 0 = 0): 0 for one-hot, log2(k) for uniform over k."""
    return -(weights * torch.log2(weights.clamp_min(1e-30))).sum(-1)


@torch.inference_mode()
def attention_map(model, ds, tokenizer, split_cache, method: str, dp, batch_size: int, teacher=None,
                  with_entropy: bool = False):
    """Mean ALP attention weights (student layer x teacher layer) over `ds` (over real tokens for `tokens`).

    With `with_entropy`, also the mean entropy (bits) of each student layer's attention row. The model's
    train/eval mode is restored afterwards, so this can run during training.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    collator = data.Collator(tokenizer, split_cache)
    total, entropy, count = None, None, 0.0
    order = length_order(ds)  # a mean does not depend on the order
    for start in range(0, len(ds), batch_size):
        batch = collator([ds[int(i)] for i in order[start:start + batch_size]])
        inputs = {k: v.to(device) for k, v in batch.items() if k in data.MODEL_INPUTS}
        hs = layer_states(model(**inputs, output_hidden_states=True))
        if teacher is not None:
            ts = layer_states(teacher.to(device).eval()(**inputs, output_hidden_states=True))
        else:
            ts = batch["teacher_states"].to(device)[:, None]  # cached [CLS] states: (B, 1, n, d)
        if dp.states == "cls" or teacher is None:
            hs, ts, mask = hs[:, :1], ts[:, :1], torch.ones(hs.shape[0], 1, device=device)
        else:
            mask = inputs["attention_mask"].float()
        allowed = alp_allowed(method, ts.shape[-2], hs.shape[-2], dp.alp_overlap)
        w = alp_attention(hs.float(), ts.float(), allowed, alp_scaled(method, dp))  # (B, T, m, n)
        e = (entropy_bits(w) * mask[..., None]).sum(dim=(0, 1))
        w = (w * mask[..., None, None]).sum(dim=(0, 1))
        total = w if total is None else total + w
        entropy = e if entropy is None else entropy + e
        count += float(mask.sum())
    model.train(was_training)
    mean = (total / count).cpu().numpy()
    return (mean, (entropy / count).cpu().numpy()) if with_entropy else mean
