"""The pipeline's steps: the teacher stage (`train_teacher`, `write_cache`) and the distill stage
(`distill_group`: every method and seed of one (task, depth), with data, teacher and cache loaded once in a
`Cell`), and `explain_batch`, the notebook's look inside one batch.

The training loop is `alpkd.trainer`, evaluation `alpkd.evaluation`, the files a run writes `alpkd.records`.
"""
from __future__ import annotations

import copy
import math
import shutil
import time
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, set_seed

from . import cache as cache_lib
from . import data, metrics
from .config import Params
from .evaluation import (attention_map, check_model_fits, entropy_bits, evaluate, load_saved, split_suffix,
                         teacher_again)
from .losses import ALP_METHODS, alp_allowed, alp_scaled, distillation_loss, pkd_layers, rail_layers, same_objective
from .paths import Layout, Run, remove_stale_temporaries
from .preflight import check_writable
from .records import nulls, run_record, save_model, write_json, write_log
from .students import build_student, layer_states, load_pretrained, load_tokenizer
from .tasks import Task
from .trainer import AttentionHistory, DistillTrainer, run_hash, train, training_args

# re-exported: the CLI, notebooks, tests and benchmarks reach these as `distill.X`
from .evaluation import evaluate_saved, headline_key  # noqa: F401
from .trainer import SeededLengthGroupedSampler  # noqa: F401


def _cache_keys(layout: Layout, task: Task, tokenizer, dsets, params: Params,
                teacher_fingerprint: str | None = None) -> dict[str, dict]:
    """Each split's cache key: what its cached teacher outputs depend on (`cache.cache_key`)."""
    teacher_dir = layout.teacher_model(task.name)
    teacher_fingerprint = teacher_fingerprint or cache_lib.model_fingerprint(teacher_dir)  # hashed once
    sizes = {"train": params.data.max_train_samples}
    return {split: cache_lib.cache_key(teacher_dir, tokenizer, ds, split, params.data.max_length,
                                       sizes.get(split, params.data.max_eval_samples), teacher_fingerprint)
            for split, ds in dsets.items()}


def train_teacher(params: Params, task_name: str, root: str | Path = ".") -> dict:
    """Fine-tune and evaluate the teacher of one task, then write its cache; returns its metrics."""
    layout, task, tp = Layout(Path(root)), params.task(task_name), params.teacher
    # before minutes of training: a folder it cannot write would fail after the model is saved
    check_writable([p.parent for p in layout.teacher_outputs(task.name)] + [layout.checkpoints(".").parent])
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
    trainer.label = "teacher"  # named in a non-finite-loss error (its objective is `nokd`'s)
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
        trivial.update({k + split_suffix(split): v for k, v in
                        metrics.trivial_scores(task, dsets["train"]["labels"], dsets[split]["labels"]).items()})
    record = run_record(params, task, "teacher", scores, timing, root, method="teacher", depth=model.config.num_hidden_layers,
                     seed=tp.seed, model=tp.model, train_examples=len(dsets["train"]),
                     trivial=nulls(trivial),
                     constant_predictions=any(p["constant"] for p in preds.values()))
    write_json(layout.teacher_metrics(task.name), record)
    shutil.rmtree(ckpt, ignore_errors=True)
    return record


def write_cache(params: Params, task_name: str, root: str | Path = ".", tokenizer=None, dsets=None) -> Path:
    """(Re)build the teacher cache of a task from its saved teacher."""
    layout, task = Layout(Path(root)), params.task(task_name)
    teacher_dir = layout.teacher_model(task.name)
    saved_tokenizer, teacher = load_saved(teacher_dir, teacher_again(task.name, root))  # a damaged file, named
    check_model_fits(teacher, task, teacher_dir, teacher_again(task.name, root))  # e.g. num_labels edited since
    tokenizer = tokenizer or saved_tokenizer
    dsets = dsets or data.prepare(task, tokenizer, params.data, root)
    teacher.to("cuda" if torch.cuda.is_available() else "cpu")
    collator = data.Collator(tokenizer)
    for split, key in _cache_keys(layout, task, tokenizer, dsets, params).items():
        logits, states = cache_lib.teacher_outputs(teacher, dsets[split], collator, params.runtime.eval_batch_size)
        cache_lib.write(layout.cache(task.name), split, key, logits, states)
    return layout.cache(task.name)


class Cell:
    """What every run of one (task, depth, method) shares: data, teacher, its cache. A group (task, depth)
    loads them once and hands them from method to method (`with_method`)."""

    def __init__(self, params: Params, task_name: str, depth: int, method: str, root: str | Path = "."):
        self.params, self.layout, self.task = params, Layout(Path(root)), params.task(task_name)
        self.depth, self.method, dp = depth, method, params.distill
        start = time.perf_counter()
        teacher_dir = self.layout.teacher_model(self.task.name)
        if not (teacher_dir / "config.json").exists():
            raise FileNotFoundError(f"no teacher for {self.task.name!r} at {teacher_dir}: run the teacher stage first "
                                    f"(`dvc repro teacher@{self.task.name}`, or `python -m alpkd --out {root} teacher "
                                    f"--task {self.task.name}`)")
        self.tokenizer, self.teacher = load_saved(teacher_dir, teacher_again(self.task.name, root))
        check_model_fits(self.teacher, self.task, teacher_dir, teacher_again(self.task.name, root))
        self.dsets = data.prepare(self.task, self.tokenizer, params.data, root)
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
        check_writable([p.parent for p in layout.student_outputs(run)] + [layout.checkpoints(".").parent])
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
        record = run_record(params, task, "student", scores, timing, self.layout.root, method=method, depth=self.depth, seed=seed,
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
        detail["entropy_bits"] = entropy_bits(weights).mean(0).numpy()
    return detail
