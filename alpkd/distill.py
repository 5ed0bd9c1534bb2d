"""Training: teacher fine-tuning and student distillation on `transformers.Trainer`.

The Trainer owns the loop (AMP, DDP, checkpoints, logging); `DistillTrainer` only replaces the loss with
the method's objective (`alpkd.losses.distillation_loss`). Teacher outputs come from the cache
(`states: cls`) or from the teacher run online (`states: tokens`).
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainerCallback,
                          TrainingArguments, set_seed)
from transformers.trainer_callback import PrinterCallback
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices
from transformers.trainer_utils import get_last_checkpoint

from . import cache as cache_lib
from . import data, metrics
from .config import Params
from .losses import (ALP_METHODS, LAYER_METHODS, alp_allowed, alp_attention, alp_scaled, distillation_loss,
                     pkd_layers, rail_layers, same_objective, task_loss)
from .paths import Layout, Run, remove_stale_temporaries, replace_atomically
from .students import build_student, layer_states, load_pretrained, load_tokenizer
from .tasks import Task


PRINT_LOGS = False  # the CLI turns the Trainer's printed logs on (to stderr); notebooks keep them out


class SeededLengthGroupedSampler(LengthGroupedSampler):
    """Length-grouped order drawn from (seed, epoch) instead of the global random state.

    The Trainer's own sampler draws from the global torch RNG, which a run resumed after its first epoch has
    not restored when the order is drawn: the resumed run would see other batches. This one replays.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:  # called by the Trainer (through accelerate) every epoch
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence([self.seed & 0xFFFFFFFF, self.epoch]).generate_state(1)[0]))
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


class DistillTrainer(Trainer):
    """A Trainer whose loss is the distillation objective of `method` (evaluation uses the task loss)."""

    def __init__(self, *args, method: str = "nokd", distill_params=None, teacher=None, states: str = "cls", **kwargs):
        super().__init__(*args, **kwargs)
        if not PRINT_LOGS:  # the curves go to logs/<run>.csv, not as raw dicts into the executed notebooks
            self.remove_callback(PrinterCallback)
        self.method, self.distill_params, self.states = method, distill_params, states
        self.teacher = teacher.to(self.args.device).eval() if teacher is not None else None
        self._terms: dict[str, list[float]] = {}

    def _get_train_sampler(self, train_dataset=None):
        ds = train_dataset if train_dataset is not None else self.train_dataset
        if (self.args.train_sampling_strategy == "group_by_length" and ds is not None and self.args.length_column_name in getattr(ds, "column_names", [])):
            return SeededLengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                              list(ds[self.args.length_column_name]), self.args.data_seed)
        return super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset):
        # in the dataset's order (`evaluate` sorts by length first): transformers 5 would length-group the
        # evaluation in an order drawn from the run's seed, so each seed's predictions came in its own order
        if eval_dataset is None or self.args.world_size > 1:
            return None  # several processes: accelerate shards the dataloader in order and gathers in order
        return torch.utils.data.SequentialSampler(eval_dataset)

    def rail_pairs(self, n: int, m: int) -> list[int]:
        """RAIL-KD's teacher layers for the current epoch (a function of the run's seed and the epoch)."""
        return rail_layers(n, m, self.args.seed, math.floor(self.state.epoch or 0))

    def _teacher_forward(self, inputs):
        with torch.no_grad():
            out = self.teacher(**inputs, output_hidden_states=True)
        states = layer_states(out)  # (B, T, n, d)
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
            student_states = layer_states(outputs)  # (B, T, m, d)
            if self.states == "tokens":
                mask = inputs["attention_mask"]
            else:
                student_states = student_states[:, 0]
        pairs = None
        if self.method == "rail":
            pairs = self.rail_pairs(teacher_states.shape[-2], student_states.shape[-2])
        loss, terms = distillation_loss(self.method, self.distill_params, outputs.logits, labels,
                                        student_states, teacher_logits, teacher_states, mask, pairs)
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
        use_cpu=not torch.cuda.is_available(),  # the Trainer refuses bf16 without a GPU unless told it is on CPU
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
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, AttentionHistory):
            callback.resume(last)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=last)
    resumed = int(Path(last).name.split("-")[-1]) if last else 0
    return {"train_time_s": round(time.perf_counter() - start, 2), "resumed_from_step": resumed,
            "train_steps": trainer.state.global_step}


def evaluate(trainer: Trainer, task: Task, dsets, predictions: dict | None = None) -> dict[str, float]:
    """GLUE metrics on every validation split (MNLI: suffixed `_matched` and `_mismatched`).

    If `predictions` is a dict, each split's per-example predictions and labels are stored in it (for the
    report's paired significance tests), with `constant: true` when every prediction is the same.
    """
    out = {}
    for split in task.validation_splits:
        ds = dsets[split].remove_columns("cache_row")
        # shortest first, so each batch pads little; the predictions are put back in the split's order
        order = np.argsort(ds["length"], kind="stable")
        pred = trainer.predict(ds.select(order))
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        logits, label_ids = pred.predictions[back], np.asarray(pred.label_ids)[back]
        suffix = "" if split == "validation" else "_" + split.removeprefix("validation_")
        out.update({k + suffix: v for k, v in metrics.compute(task, logits, label_ids).items()})
        if predictions is not None:
            values = metrics.predictions(task, logits)
            predictions[split] = {"predictions": values.tolist(), "labels": label_ids.tolist(),
                                  "constant": metrics.is_constant(values)}
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
    replace_atomically(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2) + "\n"))


def save_model(model, tokenizer, dest: Path) -> None:
    """Atomic save: written beside `dest`, then renamed over it."""
    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    replace_atomically(dest, write)


def write_log(trainer: Trainer, path: Path) -> None:
    import pandas as pd

    rows = [r for r in trainer.state.log_history if "loss" in r]
    replace_atomically(path, lambda tmp: pd.DataFrame(rows).to_csv(tmp, index=False))


def _record(params: Params, task: Task, role: str, scores: dict, timing: dict, root: str | Path, **extra) -> dict:
    key = headline_key(task)
    scores = {k: (None if np.isnan(v) else v) for k, v in scores.items()}  # undefined (constant input): null
    return {"task": task.name, "role": role, **extra, "headline": key, "score": scores[key], "metrics": scores,
            **timing, "profile": params.profile, "data_source": data.stored_source(task.name, root), "environment": environment()}


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
    dsets = data.prepare(task, tokenizer, params.data, root)
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
    write_json(layout.teacher_predictions(task.name), {"task": task.name, "method": "teacher", **preds})
    write_cache(params, task.name, root, tokenizer=tokenizer, dsets=dsets)
    write_log(trainer, layout.teacher_log(task.name))
    trivial = {}
    for split in task.validation_splits:  # keyed like the scores (MNLI: `_matched`, `_mismatched`)
        suffix = "" if split == "validation" else "_" + split.removeprefix("validation_")
        trivial.update({k + suffix: v for k, v in
                        metrics.trivial_scores(task, dsets["train"]["labels"], dsets[split]["labels"]).items()})
    record = _record(params, task, "teacher", scores, timing, root, method="teacher", depth=model.config.num_hidden_layers,
                     seed=tp.seed, model=tp.model, train_examples=len(dsets["train"]),
                     trivial={k: (None if np.isnan(v) else v) for k, v in trivial.items()},
                     constant_predictions=any(p["constant"] for p in preds.values()))
    write_json(layout.teacher_metrics(task.name), record)
    shutil.rmtree(ckpt, ignore_errors=True)
    return record


def write_cache(params: Params, task_name: str, root: str | Path = ".", tokenizer=None, dsets=None) -> Path:
    """(Re)build the teacher cache of a task from its saved teacher."""
    layout, task = Layout(Path(root)), params.task(task_name)
    teacher_dir = layout.teacher_model(task.name)
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(teacher_dir)
    dsets = dsets or data.prepare(task, tokenizer, params.data, root)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    teacher.to("cuda" if torch.cuda.is_available() else "cpu")
    collator = data.Collator(tokenizer)
    for split, key in _cache_keys(layout, task, tokenizer, dsets, params).items():
        logits, states = cache_lib.teacher_outputs(teacher, dsets[split], collator, params.runtime.eval_batch_size)
        cache_lib.write(layout.cache(task.name), split, key, logits, states)
    return layout.cache(task.name)


class AttentionHistory(TrainerCallback):
    """ALP's attention map on a fixed batch of validation examples, every `every` steps (and at step 0).

    The map is cheap to compute (one student forward pass on the batch, the teacher's states cached); the
    history travels inside each checkpoint, so a resumed run's history is whole.
    """

    FILE = "attention_history.json"

    def __init__(self, every: int, compute):
        self.every, self.compute, self.history = every, compute, []

    def _snapshot(self, step: int) -> None:
        weights, entropy = self.compute()
        self.history.append({"step": step, "weights": weights.tolist(), "entropy_bits": entropy.tolist()})

    def on_train_begin(self, args, state, control, **kwargs):
        if not self.history:
            self._snapshot(0)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self._snapshot(state.global_step)

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            (folder / self.FILE).write_text(json.dumps(self.history))

    def resume(self, checkpoint: str | None) -> None:
        saved = Path(checkpoint) / self.FILE if checkpoint else None
        self.history = json.loads(saved.read_text()) if saved and saved.exists() else []


class Cell:
    """What every run of one (task, depth, method) shares: data, teacher, its cache. A group (task, depth)
    loads them once and hands them from method to method (`with_method`)."""

    def __init__(self, params: Params, task_name: str, depth: int, method: str, root: str | Path = "."):
        self.params, self.layout, self.task = params, Layout(Path(root)), params.task(task_name)
        self.depth, self.method, dp = depth, method, params.distill
        start = time.perf_counter()
        teacher_dir = self.layout.teacher_model(self.task.name)
        if not (teacher_dir / "config.json").exists():
            raise FileNotFoundError(f"no teacher for {self.task.name!r} at {teacher_dir}: run the teacher stage first")
        self.tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
        self.dsets = data.prepare(self.task, self.tokenizer, params.data, root)
        self.teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
        self.n = self.teacher.config.num_hidden_layers
        self.teacher_fingerprint = cache_lib.model_fingerprint(teacher_dir)
        self.use_cache = dp.states == "cls" and dp.teacher_cache
        self.caches = {}
        if self.use_cache:  # train split for the loss, validation split for ALP's attention map
            keys = _cache_keys(self.layout, self.task, self.tokenizer, self.dsets, params, self.teacher_fingerprint)
            self.caches = {s: cache_lib.load(self.layout.cache(self.task.name), s, k) for s, k in keys.items()}
        # a subsample of the teacher's training rows; `cache_row` still points at each row's cached outputs
        self.train_ds = data.subsample(self.dsets["train"], dp.max_train_samples)
        self.data_fingerprint = data.fingerprint(self.dsets["train"])
        self.setup_time_s = round(time.perf_counter() - start, 2)

    def with_method(self, method: str) -> "Cell":
        """The same loaded inputs for another method of the group (nothing is loaded again)."""
        other = copy.copy(self)
        other.method = method
        return other

    def attention(self, model, ds, with_entropy: bool = False):
        split = self.task.validation_splits[0]
        return attention_map(model, ds, self.tokenizer, self.caches.get(split), self.method, self.params.distill,
                             self.params.runtime.eval_batch_size, teacher=None if self.caches else self.teacher,
                             with_entropy=with_entropy)

    def mapping(self, seed: int, epochs: int) -> dict:
        """The layer pairs of PKD and RAIL-KD (RAIL-KD: one draw per epoch), for the run's records."""
        if self.method == "pkd":
            return {"pairs": pkd_layers(self.n, self.depth, self.params.distill.pkd_exclude_last)}
        if self.method == "rail":
            return {"draws": [rail_layers(self.n, self.depth, seed, e) for e in range(epochs)]}
        return {}

    def train_seed(self, seed: int) -> dict:
        """Distil, evaluate and save the student of one seed; returns its metrics record."""
        params, dp, layout, task, method = self.params, self.params.distill, self.layout, self.task, self.method
        run = Run(task.name, self.depth, method, seed)
        remove_stale_temporaries(layout.student_outputs(run))
        student = build_student(self.teacher, self.depth, params.student.init, seed)
        # resumed only by the same settings on the same data (its content) and the same task declaration
        key = run_hash(dp, params.data, params.student, self.teacher_fingerprint,
                       params.custom_tasks.get(task.name), self.data_fingerprint)
        ckpt = layout.checkpoints(f"{run.name}-{key}")
        set_seed(seed)
        callbacks = []
        split = task.validation_splits[0]
        if method in ALP_METHODS:  # a fixed batch: the first examples of the validation split
            probe = self.dsets[split].select(range(min(64, len(self.dsets[split]))))
            callbacks.append(AttentionHistory(dp.attention_every, lambda: self.attention(trainer.model, probe, True)))
        trainer = DistillTrainer(
            model=student, args=training_args(dp, params.runtime, ckpt, seed), train_dataset=self.train_ds,
            data_collator=data.Collator(self.tokenizer, self.caches.get("train") if method != "nokd" else None),
            callbacks=callbacks,
            method=method, distill_params=dp, teacher=None if (method == "nokd" or self.use_cache) else self.teacher,
            states=dp.states,
        )
        timing = train(trainer)
        start = time.perf_counter()
        scores = evaluate(trainer, task, self.dsets, preds := {})
        timing["eval_time_s"] = round(time.perf_counter() - start, 2)
        if not trainer.is_world_process_zero():
            return scores
        save_model(trainer.model, self.tokenizer, layout.student_model(run))
        write_json(layout.predictions(run), {"task": task.name, "method": method, "depth": self.depth, "seed": seed,
                                             **preds})
        write_log(trainer, layout.log(run))
        mapping = self.mapping(seed, math.ceil(dp.epochs))
        extra = {}
        if method in ALP_METHODS:
            weights, entropy = self.attention(trainer.model, self.dsets[split], with_entropy=True)
            extra = {"attention_entropy_bits": float(entropy.mean()),
                     "attention_top_layers": [int(j) + 1 for j in weights.argmax(-1)]}
            mapping = {"split": split, "scale": alp_scaled(method, dp), "weights": weights.tolist(),
                       "entropy_bits": entropy.tolist(), "history": callbacks[0].history}
        if "weights" not in mapping:  # no attention: PKD's fixed pairs, RAIL-KD's draws, or no layer term
            mapping = {"weights": None, **mapping, "note": f"{method}: no attention map"}
        write_json(layout.attention(run), {"task": task.name, "depth": self.depth, "method": method, "seed": seed,
                                           **mapping})
        record = _record(params, task, "student", scores, timing, self.layout.root, method=method, depth=self.depth, seed=seed,
                         teacher_layers=self.n, init=params.student.init,
                         init_layers=student.config.alpkd_init_layers, train_examples=len(self.train_ds),
                         teacher_cached=self.use_cache and method != "nokd", group_setup_time_s=self.setup_time_s,
                         constant_predictions=any(p["constant"] for p in preds.values()), **extra)
        write_json(layout.student_metrics(run), record)
        shutil.rmtree(ckpt, ignore_errors=True)
        return record


def duplicate_of(params: Params, depth: int, method: str) -> str | None:
    """The method this cell would only repeat (same objective at this depth), or None. It does not depend on
    `distill.methods`, so adding a method never re-runs the others; the report says when the method repeated
    is not in the grid."""
    from .config import teacher_num_layers

    same = same_objective(method, teacher_num_layers(params.teacher), depth, params.distill)
    return same if same != method else None


def distill_group(params: Params, task_name: str, depth: int, root: str | Path = ".",
                  methods: list[str] | None = None, seeds: list[int] | None = None) -> dict[str, list[dict]]:
    """Distil every method (default `distill.methods`) and seed (default `distill.seeds`) of one (task, depth),
    loading data, teacher and cache once. Returns the records by method.

    A method whose objective is another's at this depth (`duplicate_of`) is not trained: its metrics folder
    gets a `same_as.json` marker naming that method and why, and the report shows the cell once.
    """
    layout = Layout(Path(root))
    methods = list(params.distill.methods if methods is None else methods)
    seeds = list(params.distill.seeds if seeds is None else seeds)
    for folder in layout.group_dirs(task_name, depth).values():
        folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for method in methods:
        twin = duplicate_of(params, depth, method)
        if twin is not None:
            for folder in layout.cell_dirs(task_name, depth, method).values():
                shutil.rmtree(folder, ignore_errors=True)
            marker = {"task": task_name, "depth": depth, "method": method, "same_as": twin, "seeds": seeds,
                      "why": f"at {depth} student layer(s), {method} optimises the same objective as {twin}; "
                             f"it is trained once, as {twin}"}
            write_json(layout.same_as(task_name, depth, method), marker)
            out[method] = [marker]
            continue
        layout.same_as(task_name, depth, method).unlink(missing_ok=True)
        cell = _cell(params, task_name, depth, method, root)
        out[method] = [cell.train_seed(seed) for seed in seeds]
    return out


_LAST: dict = {}


def _cell(params: Params, task_name: str, depth: int, method: str, root) -> Cell:
    """The loaded inputs, reused when the same notebook asks again (e.g. `explain_batch` after training)."""
    key = (params, task_name, depth, str(Path(root).resolve()))
    if _LAST.get("key") != key:
        _LAST.update(key=key, cell=Cell(params, task_name, depth, method, root))
    return _LAST["cell"].with_method(method)


def distill_student(params: Params, task_name: str, depth: int, method: str, seed: int, root: str | Path = ".") -> dict:
    """Distil one student (task, depth, method, seed) from the saved teacher; returns its metrics."""
    return Cell(params, task_name, depth, method, root).train_seed(seed)


def _entropy_bits(weights: torch.Tensor) -> torch.Tensor:
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
    # shortest first, so each batch pads little (a mean does not depend on the order)
    order = [int(i) for i in np.argsort(ds["length"], kind="stable")] if "length" in ds.column_names else list(range(len(ds)))
    for start in range(0, len(ds), batch_size):
        batch = collator([ds[i] for i in order[start:start + batch_size]])
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
        e = (_entropy_bits(w) * mask[..., None]).sum(dim=(0, 1))
        w = (w * mask[..., None, None]).sum(dim=(0, 1))
        total = w if total is None else total + w
        entropy = e if entropy is None else entropy + e
        count += float(mask.sum())
    model.train(was_training)
    mean = (total / count).cpu().numpy()
    return (mean, (entropy / count).cpu().numpy()) if with_entropy else mean


@torch.inference_mode()
def explain_batch(params: Params, task_name: str, depth: int, method: str, seed: int, root: str | Path = ".",
                  size: int = 8) -> dict:
    """One real validation batch through a trained student: each loss term, and the layer pairs or attention
    weights behind it (the notebook's look inside `distillation_loss`)."""
    from .losses import alp_loss

    cell = _cell(params, task_name, depth, method, root)
    run = Run(cell.task.name, depth, method, seed)
    model = AutoModelForSequenceClassification.from_pretrained(cell.layout.student_model(run)).eval()
    split = cell.task.validation_splits[0]
    rows = cell.dsets[split].select(range(min(size, len(cell.dsets[split]))))
    batch = data.Collator(cell.tokenizer)([rows[i] for i in range(len(rows))])
    inputs = {k: v for k, v in batch.items() if k in data.MODEL_INPUTS}
    out = model(**inputs, output_hidden_states=True)
    teacher_out = cell.teacher.eval()(**inputs, output_hidden_states=True)
    s_states = layer_states(out)[:, 0]
    t_states = layer_states(teacher_out)[:, 0]
    dp = params.distill
    pairs = rail_layers(cell.n, depth, seed, 0) if method == "rail" else None
    total, terms = distillation_loss(method, dp, out.logits, batch["labels"], s_states, teacher_out.logits,
                                     t_states, None, pairs)
    detail = {"method": method, "examples": len(rows), "total": float(total),
              "terms": {k: float(v) for k, v in terms.items()}}
    if method == "pkd":
        detail["pairs"] = [(i + 1, j + 1) for i, j in enumerate(pkd_layers(cell.n, depth, dp.pkd_exclude_last))]
    elif method == "rail":
        detail["pairs"] = [(i + 1, j + 1) for i, j in enumerate(pairs)]
        detail["note"] = "the epoch-0 draw; each epoch draws again"
    elif method in ALP_METHODS:
        _, weights = alp_loss(s_states, t_states, alp_allowed(method, cell.n, depth, dp.alp_overlap),
                              alp_scaled(method, dp))
        detail["weights"] = weights.mean(0).numpy()  # (m, n), mean over the batch
        detail["entropy_bits"] = _entropy_bits(weights).mean(0).numpy()
    return detail


def evaluate_saved(params: Params, task_name: str, model_dir: str | Path, root: str | Path) -> dict[str, float]:
    """GLUE metrics of a saved model on the task's validation split(s) (the data read from `<root>/data/`)."""
    task = params.task(task_name)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    dsets = data.prepare(task, tokenizer, params.data, root)
    args = TrainingArguments(output_dir=str(Path(model_dir) / ".eval"), per_device_eval_batch_size=params.runtime.eval_batch_size,
                             remove_unused_columns=False, report_to="none", disable_tqdm=True)
    return evaluate(Trainer(model=model, args=args, data_collator=data.Collator(tokenizer)), task, dsets)
