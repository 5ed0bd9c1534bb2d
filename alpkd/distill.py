"""Training: teacher fine-tuning and student distillation on `transformers.Trainer`.

The Trainer owns the loop (AMP, DDP, checkpoints, logging); `DistillTrainer` only replaces the loss with
the method's objective (`alpkd.losses.distillation_loss`). Teacher outputs come from the cache
(`states: cls`) or from the teacher run online (`states: tokens`).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from . import cache as cache_lib
from . import data, metrics
from .config import Params
from .losses import ALP_METHODS, LAYER_METHODS, alp_allowed, alp_attention, distillation_loss, task_loss
from .paths import Layout, remove_stale_temporaries, run_name
from .students import build_student, load_pretrained, load_tokenizer
from .tasks import Task


class DistillTrainer(Trainer):
    """A Trainer whose loss is the distillation objective of `method` (evaluation uses the task loss)."""

    def __init__(self, *args, method: str = "nokd", distill_params=None, teacher=None, states: str = "cls", **kwargs):
        super().__init__(*args, **kwargs)
        self.method, self.distill_params, self.states = method, distill_params, states
        self.teacher = teacher.to(self.args.device).eval() if teacher is not None else None
        self._terms: dict[str, list[float]] = {}

    def _teacher_forward(self, inputs):
        with torch.no_grad():
            out = self.teacher(**inputs, output_hidden_states=True)
        states = torch.stack(out.hidden_states[1:], dim=-2)  # (B, T, n, d)
        return out.logits, states if self.states == "tokens" else states[:, 0]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        teacher_logits = inputs.pop("teacher_logits", None)
        teacher_states = inputs.pop("teacher_states", None)
        labels = inputs.pop("labels")
        if not model.training or self.method == "nokd":
            outputs = model(**inputs)
            loss = task_loss(outputs.logits, labels)
            if model.training:
                self._record({"ce": loss})
                self._check_finite(loss, {"ce": loss})
            return (loss, outputs) if return_outputs else loss
        need_states = self.method in LAYER_METHODS
        outputs = model(**inputs, output_hidden_states=need_states)
        if teacher_logits is None:
            if self.teacher is None:
                raise RuntimeError(f"method {self.method!r} needs teacher outputs: pass a cache or a teacher")
            teacher_logits, teacher_states = self._teacher_forward(inputs)
        student_states = mask = None
        if need_states:
            student_states = torch.stack(outputs.hidden_states[1:], dim=-2)  # (B, T, m, d)
            if self.states == "tokens":
                mask = inputs["attention_mask"]
            else:
                student_states = student_states[:, 0]
        loss, terms = distillation_loss(self.method, self.distill_params, outputs.logits, labels,
                                        student_states, teacher_logits, teacher_states, mask)
        self._record(terms)
        self._check_finite(loss, terms)
        return (loss, outputs) if return_outputs else loss

    def _check_finite(self, loss, terms):
        # stop at once: a NaN would otherwise be trained on silently and end as a meaningless score
        if not torch.isfinite(loss.detach()).all():
            values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
            raise FloatingPointError(f"{self.method}: the loss became {float(loss.detach()):.4g} at step "
                                     f"{self.state.global_step + 1} (terms: {values}); lower the learning rate "
                                     "or check the inputs")

    def _record(self, terms):
        for k, v in terms.items():
            self._terms.setdefault(k, []).append(float(v.detach()))

    def log(self, logs, *args, **kwargs):
        # each loss term, averaged since the last log, beside the Trainer's total `loss`
        if "loss" in logs and self._terms:
            logs.update({f"loss_{k}": float(np.mean(v)) for k, v in self._terms.items()})
            self._terms = {}
        super().log(logs, *args, **kwargs)


# --- helpers -------------------------------------------------------------------------------------------
def training_args(train, runtime, out_dir: Path, seed: int) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(out_dir),
        learning_rate=train.learning_rate,
        num_train_epochs=train.epochs,
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=runtime.eval_batch_size,
        weight_decay=train.weight_decay,
        warmup_steps=float(train.warmup_ratio),  # a float in [0, 1) is a ratio of the total steps
        seed=seed,
        data_seed=seed,
        bf16=runtime.precision == "bf16",
        fp16=runtime.precision == "fp16",
        train_sampling_strategy="group_by_length" if runtime.group_by_length else "random",
        length_column_name="length",
        remove_unused_columns=False,  # the collator picks the columns (and adds the cached teacher outputs)
        eval_strategy="no",
        save_strategy="steps",
        save_steps=runtime.save_steps,
        save_total_limit=1,
        logging_strategy="steps",
        logging_steps=runtime.logging_steps,
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=torch.cuda.is_available(),
        # torchrun on CPU: DDP over gloo (NCCL needs GPUs); a single process sets up no process group at all
        ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not torch.cuda.is_available() else None,
    )


def run_hash(*parts) -> str:
    """Short digest of a run's settings: checkpoints are resumed only by the run they belong to."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def last_complete_checkpoint(folder: str | Path) -> str | None:
    """The newest checkpoint that was written to the end, removing any that a kill cut short.

    The Trainer writes `trainer_state.json` last, so a checkpoint without a readable one is incomplete
    (`get_last_checkpoint` would pick it by its step number and the resume would fail).
    """
    folder = Path(folder)
    while folder.is_dir() and (last := get_last_checkpoint(str(folder))):
        try:
            json.loads((Path(last) / "trainer_state.json").read_text())
            return last
        except (OSError, ValueError):
            shutil.rmtree(last)
    return None


def train(trainer: Trainer) -> dict:
    """Train, resuming from the last checkpoint of this exact run if a killed attempt left one."""
    last = last_complete_checkpoint(trainer.args.output_dir) if trainer.is_world_process_zero() else None
    if trainer.args.world_size > 1:  # every rank resumes from what rank 0 found
        import torch.distributed as dist

        found = [last]
        dist.broadcast_object_list(found, src=0)
        last = found[0]
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=last)
    resumed = int(Path(last).name.split("-")[-1]) if last else 0
    return {"train_time_s": round(time.perf_counter() - start, 2), "resumed_from_step": resumed,
            "train_steps": trainer.state.global_step}


def evaluate(trainer: Trainer, task: Task, dsets, predictions: dict | None = None) -> dict[str, float]:
    """GLUE metrics on every validation split (MNLI: suffixed `_matched` and `_mismatched`).

    If `predictions` is a dict, each split's per-example predictions and labels are stored in it (for the
    report's paired significance tests).
    """
    out = {}
    for split in task.validation_splits:
        pred = trainer.predict(dsets[split].remove_columns("cache_row"))
        suffix = "" if split == "validation" else "_" + split.removeprefix("validation_")
        out.update({k + suffix: v for k, v in metrics.compute(task, pred.predictions, pred.label_ids).items()})
        if predictions is not None:
            predictions[split] = {"predictions": metrics.predictions(task, pred.predictions).tolist(),
                                  "labels": np.asarray(pred.label_ids).tolist()}
    return out


def headline_key(task: Task) -> str:
    split = task.validation_splits[0]
    return task.headline + ("" if split == "validation" else "_" + split.removeprefix("validation_"))


def environment() -> dict:
    import datasets
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "datasets": datasets.__version__, "numpy": np.__version__,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "torch_threads": torch.get_num_threads()}


def write_json(path: Path, obj) -> None:
    """Atomic: a temporary file renamed into place, so a killed run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def save_model(model, tokenizer, dest: Path) -> None:
    """Atomic save: written beside `dest`, then renamed over it."""
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, dest)


def write_log(trainer: Trainer, path: Path) -> None:
    import pandas as pd

    rows = [r for r in trainer.state.log_history if "loss" in r]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pd.DataFrame(rows).to_csv(tmp, index=False)
    os.replace(tmp, path)


def _record(params: Params, task: Task, role: str, scores: dict, timing: dict, **extra) -> dict:
    key = headline_key(task)
    return {"task": task.name, "role": role, **extra, "headline": key, "score": scores[key], "metrics": scores,
            **timing, "profile": params.profile, "data_source": data.glue_source(), "environment": environment()}


def _cache_keys(layout: Layout, task: Task, tokenizer, dsets, params: Params,
                teacher_fingerprint: str | None = None) -> dict[str, dict]:
    teacher_dir = layout.teacher_model(task.name)
    teacher_fingerprint = teacher_fingerprint or cache_lib.model_fingerprint(teacher_dir)  # hashed once
    sizes = {"train": params.data.max_train_samples}
    return {split: cache_lib.cache_key(teacher_dir, tokenizer, ds, split, params.data.max_length,
                                       sizes.get(split, params.data.max_eval_samples), teacher_fingerprint)
            for split, ds in dsets.items()}


# --- the two steps -------------------------------------------------------------------------------------
def train_teacher(params: Params, task_name: str, root: str | Path = ".") -> dict:
    """Fine-tune and evaluate the teacher of one task, then write its cache; returns its metrics."""
    layout, task, tp = Layout(Path(root)), params.task(task_name), params.teacher
    remove_stale_temporaries(layout.teacher_outputs(task.name))  # what a kill during a save left
    tokenizer = load_tokenizer(tp.model)
    dsets = data.prepare(task, tokenizer, params.data)
    set_seed(tp.seed)
    model = load_pretrained(tp, task.num_labels, tp.seed)
    # resumed only by the same settings on the same data (its content) and the same task declaration
    key = run_hash(params.teacher, params.data, params.custom_tasks.get(task.name), data.fingerprint(dsets["train"]))
    ckpt = layout.checkpoints(f"teacher-{task.name}-{key}")
    trainer = DistillTrainer(model=model, args=training_args(tp, params.runtime, ckpt, tp.seed),
                             train_dataset=dsets["train"], data_collator=data.Collator(tokenizer))
    timing = train(trainer)
    scores = evaluate(trainer, task, dsets, preds := {})
    if not trainer.is_world_process_zero():
        return scores
    save_model(trainer.model, tokenizer, layout.teacher_model(task.name))
    write_json(layout.predictions(f"teacher-{task.name}"), {"task": task.name, "method": "teacher", **preds})
    write_cache(params, task.name, root, tokenizer=tokenizer, dsets=dsets)
    write_log(trainer, layout.log(f"teacher-{task.name}"))
    record = _record(params, task, "teacher", scores, timing, method="teacher", depth=model.config.num_hidden_layers,
                     seed=tp.seed, model=tp.model, train_examples=len(dsets["train"]))
    write_json(layout.teacher_metrics(task.name), record)
    shutil.rmtree(ckpt, ignore_errors=True)
    return record


def write_cache(params: Params, task_name: str, root: str | Path = ".", tokenizer=None, dsets=None) -> Path:
    """(Re)build the teacher cache of a task from its saved teacher."""
    layout, task = Layout(Path(root)), params.task(task_name)
    teacher_dir = layout.teacher_model(task.name)
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(teacher_dir)
    dsets = dsets or data.prepare(task, tokenizer, params.data)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    teacher.to("cuda" if torch.cuda.is_available() else "cpu")
    collator = data.Collator(tokenizer)
    for split, key in _cache_keys(layout, task, tokenizer, dsets, params).items():
        logits, states = cache_lib.teacher_outputs(teacher, dsets[split], collator, params.runtime.eval_batch_size)
        cache_lib.write(layout.cache(task.name), split, key, logits, states)
    return layout.cache(task.name)


def distill_student(params: Params, task_name: str, depth: int, method: str, seed: int, root: str | Path = ".") -> dict:
    """Distil one student (task, depth, method, seed) from the saved teacher; returns its metrics."""
    layout, task, dp = Layout(Path(root)), params.task(task_name), params.distill
    run = run_name(task.name, depth, method, seed)
    remove_stale_temporaries(layout.student_outputs(task.name, run))
    teacher_dir = layout.teacher_model(task.name)
    if not (teacher_dir / "config.json").exists():
        raise FileNotFoundError(f"no teacher for {task.name!r} at {teacher_dir}: run the teacher stage first")
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    dsets = data.prepare(task, tokenizer, params.data)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    n = teacher.config.num_hidden_layers
    teacher_fingerprint = cache_lib.model_fingerprint(teacher_dir)
    use_cache = method != "nokd" and dp.states == "cls" and dp.teacher_cache
    caches = {}
    if use_cache:  # train split for the loss, validation split for ALP's attention map
        keys = _cache_keys(layout, task, tokenizer, dsets, params, teacher_fingerprint)
        caches = {s: cache_lib.load(layout.cache(task.name), s, k) for s, k in keys.items()}
    student = build_student(teacher, depth, params.student.init, seed)
    online = teacher if (method != "nokd" and not use_cache) else None
    key = run_hash(params.distill, params.data, params.student, teacher_fingerprint,
                   params.custom_tasks.get(task.name), data.fingerprint(dsets["train"]))
    ckpt = layout.checkpoints(f"{run}-{key}")
    # a subsample of the teacher's training rows; `cache_row` still points at each row's cached outputs
    train_ds = data.subsample(dsets["train"], dp.max_train_samples)
    set_seed(seed)
    trainer = DistillTrainer(
        model=student, args=training_args(dp, params.runtime, ckpt, seed), train_dataset=train_ds,
        data_collator=data.Collator(tokenizer, caches.get("train") if use_cache else None),
        method=method, distill_params=dp, teacher=online, states=dp.states,
    )
    timing = train(trainer)
    scores = evaluate(trainer, task, dsets, preds := {})
    if not trainer.is_world_process_zero():
        return scores
    save_model(trainer.model, tokenizer, layout.student_model(task.name, run))
    write_json(layout.predictions(run), {"task": task.name, "method": method, "depth": depth, "seed": seed, **preds})
    write_log(trainer, layout.log(run))
    if method in ALP_METHODS:
        split = task.validation_splits[0]
        weights = attention_map(trainer.model, dsets[split], tokenizer, caches.get(split), method, dp,
                                params.runtime.eval_batch_size, teacher=None if caches else teacher)
        write_json(layout.attention(run), {"task": task.name, "depth": depth, "method": method, "seed": seed,
                                           "split": split, "scale": dp.alp_scale, "weights": weights.tolist()})
    record = _record(params, task, "student", scores, timing, method=method, depth=depth, seed=seed,
                     teacher_layers=n, init=params.student.init, init_layers=student.config.alpkd_init_layers,
                     train_examples=len(train_ds), teacher_cached=use_cache)
    write_json(layout.student_metrics(run), record)
    shutil.rmtree(ckpt, ignore_errors=True)
    return record


@torch.inference_mode()
def attention_map(model, ds, tokenizer, split_cache, method: str, dp, batch_size: int, teacher=None) -> np.ndarray:
    """Mean ALP attention weights (student layer x teacher layer) over `ds` (over real tokens for `tokens`)."""
    device = next(model.parameters()).device
    model.eval()
    collator = data.Collator(tokenizer, split_cache)
    total, count = None, 0.0
    for start in range(0, len(ds), batch_size):
        batch = collator([ds[i] for i in range(start, min(start + batch_size, len(ds)))])
        inputs = {k: v.to(device) for k, v in batch.items() if k in data.MODEL_INPUTS}
        hs = torch.stack(model(**inputs, output_hidden_states=True).hidden_states[1:], dim=-2)
        if teacher is not None:
            ts = torch.stack(teacher.to(device).eval()(**inputs, output_hidden_states=True).hidden_states[1:], dim=-2)
        else:
            ts = batch["teacher_states"].to(device)[:, None]  # cached [CLS] states: (B, 1, n, d)
        if dp.states == "cls" or teacher is None:
            hs, ts, mask = hs[:, :1], ts[:, :1], torch.ones(hs.shape[0], 1, device=device)
        else:
            mask = inputs["attention_mask"].float()
        allowed = alp_allowed(method, ts.shape[-2], hs.shape[-2], dp.alp_overlap)
        w = alp_attention(hs.float(), ts.float(), allowed, dp.alp_scale)  # (B, T, m, n)
        w = (w * mask[..., None, None]).sum(dim=(0, 1))
        total = w if total is None else total + w
        count += float(mask.sum())
    return (total / count).cpu().numpy()


def evaluate_saved(params: Params, task_name: str, model_dir: str | Path) -> dict[str, float]:
    """GLUE metrics of a saved model on the task's validation split(s)."""
    task = params.task(task_name)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    dsets = data.prepare(task, tokenizer, params.data)
    args = TrainingArguments(output_dir=str(Path(model_dir) / ".eval"), per_device_eval_batch_size=params.runtime.eval_batch_size,
                             remove_unused_columns=False, report_to="none", disable_tqdm=True)
    return evaluate(Trainer(model=model, args=args, data_collator=data.Collator(tokenizer)), task, dsets)
