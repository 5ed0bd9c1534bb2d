"""The teacher stage: fine-tune, evaluate and save one teacher per seed of `teacher.seeds` (`train_teachers`), and
cache its logits and per-layer [CLS] states on the students' examples (`write_cache`), which every student then
reads instead of running the teacher. Also what the students' side takes from the teacher: the cache's keys
(`cache_keys`) and the checkpoint a teacher was fine-tuned from (`pretrained_start`).

The students are `alpkd.distill`; the training loop `alpkd.trainer`; the files a run writes `alpkd.records`.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch
from transformers import set_seed

from . import cache as cache_lib
from . import data, metrics, numerics, progress
from .config import ConfigError, Params
from .evaluation import check_model_fits, evaluate, load_saved, split_suffix, teacher_again, verify_teacher
from .paths import Layout, remove_stale_temporaries
from .preflight import check_writable
from .records import nulls, run_record, save_model, write_json, write_log
from .students import load_pretrained, load_tokenizer
from .tasks import Task
from .trainer import DistillTrainer, run_hash, train, training_args


def cache_keys(layout: Layout, task: Task, tokenizer, dsets, params: Params, teacher_seed: int,
               teacher_fingerprint: str | None = None) -> dict[str, dict]:
    """Each split's cache key: what its cached teacher outputs depend on (`cache.cache_key`)."""
    teacher_dir = layout.teacher_model(task.name, teacher_seed)
    teacher_fingerprint = teacher_fingerprint or cache_lib.model_fingerprint(teacher_dir)  # hashed once
    sizes = {"train": params.student_train_samples}  # the cache covers the students' examples
    return {split: cache_lib.cache_key(teacher_dir, tokenizer, ds, split, params.data.max_length,
                                       sizes.get(split, params.data.max_eval_samples), teacher_fingerprint)
            for split, ds in dsets.items()}


def train_teachers(params: Params, task_name: str, root: str | Path = ".", seeds: list[int] | None = None,
                   print_logs: bool = False) -> list[dict]:
    """Fine-tune, evaluate and cache one teacher per seed (default: every seed of `teacher.seeds`: the teacher
    stage); returns their records. Each teacher's last checkpoint is kept until every teacher is done, so a stage
    killed at its third teacher resumes the first two at their end (DVC removes a stage's outputs before
    re-running it). `print_logs`: the Trainer's logs printed too (the CLI's, to stderr)."""
    numerics.check(params.runtime)
    task = params.task(task_name)
    seeds = list(params.teacher.seeds if seeds is None else seeds)
    for seed in seeds:
        if seed not in params.teacher.seeds:
            raise ConfigError(f"teacher seed {seed} is not in teacher.seeds {params.teacher.seeds}")
    _check_teacher_writable(Layout(Path(root)), task.name, seeds)
    tokenizer = load_tokenizer(params.teacher.model)
    # the teacher's examples, and the students' (its cache covers them): read and tokenised once for every seed
    dsets, student_dsets = data.prepare_teacher(task, tokenizer, params.data, root, params.student_train_samples)
    records, done, start = [], [], time.perf_counter()
    for k, seed in enumerate(seeds, 1):
        began = time.perf_counter()
        record, ckpt = _train_teacher(params, task, seed, root, tokenizer, dsets, student_dsets, print_logs)
        records.append(record)
        done.append(ckpt)
        progress.unit_done(f"teacher {task.name}", k, len(seeds), f"seed {seed}",
                           time.perf_counter() - began, progress.headline(record), time.perf_counter() - start)
    for ckpt in done:
        shutil.rmtree(ckpt, ignore_errors=True)
    return records


def train_teacher(params: Params, task_name: str, root: str | Path = ".", seed: int | None = None,
                  print_logs: bool = False) -> dict:
    """Fine-tune, evaluate and cache the teacher of one task and seed (default: the first of `teacher.seeds`)."""
    return train_teachers(params, task_name, root, [params.teacher.seeds[0] if seed is None else seed], print_logs)[0]


def _check_teacher_writable(layout: Layout, task: str, seeds) -> None:
    # before minutes of training: a folder it cannot write would fail after the model is saved
    check_writable([p.parent for s in seeds for p in layout.teacher_outputs(task, s)] + [layout.checkpoints(".").parent])


def _train_teacher(params: Params, task: Task, seed: int, root, tokenizer, dsets,
                   student_dsets, print_logs: bool = False) -> tuple[dict, Path]:
    layout, tp = Layout(Path(root)), params.teacher
    remove_stale_temporaries(layout.teacher_outputs(task.name, seed))  # what a kill during a save left
    set_seed(seed)
    model = load_pretrained(tp, task.num_labels, seed)
    # resumed only by the same settings and seed on the same data (its content) and the same task declaration
    key = run_hash(tp.model_dump(exclude={"seeds"}), seed, params.data, params.custom_tasks.get(task.name),
                   data.fingerprint(dsets["train"]))
    ckpt = layout.checkpoints(f"teacher-{task.name}-s{seed}-{key}")
    trainer = DistillTrainer(model=model, args=training_args(tp, params.runtime, ckpt, seed),
                             train_dataset=dsets["train"], data_collator=data.Collator(tokenizer),
                             progress_label=f"teacher {task.name}  seed {seed}", label="teacher", print_logs=print_logs)
    timing = train(trainer)
    scores = evaluate(trainer, task, dsets, preds := {})
    if not trainer.is_world_process_zero():
        return scores, ckpt
    save_model(trainer.model, tokenizer, layout.teacher_model(task.name, seed))
    # the weights as saved, in the record: every later use checks them (`verify_teacher`), so a teacher damaged
    # since is refused, never cached and taught from
    weights = cache_lib.model_files_sha256(layout.teacher_model(task.name, seed))
    fingerprint = cache_lib.model_fingerprint(layout.teacher_model(task.name, seed), weights)
    write_json(layout.teacher_predictions(task.name, seed), {"task": task.name, "method": "teacher", "seed": seed,
                                                             **preds})
    write_cache(params, task.name, root, seed, tokenizer=tokenizer, student_dsets=student_dsets,
                fingerprint=fingerprint)
    write_log(trainer, layout.teacher_log(task.name, seed))
    trivial = {}
    for split in task.validation_splits:  # keyed like the scores (MNLI: `_matched`, `_mismatched`)
        trivial.update({k + split_suffix(split): v for k, v in
                        metrics.trivial_scores(task, dsets["train"]["labels"], dsets[split]["labels"]).items()})
    record = run_record(params, task, "teacher", scores, timing, root, method="teacher",
                        depth=model.config.num_hidden_layers, seed=seed, model=tp.model,
                        train_examples=len(dsets["train"]), trivial=nulls(trivial),
                        constant_predictions=any(p["constant"] for p in preds.values()),
                        weights_fingerprint=fingerprint, weights_sha256=weights)
    write_json(layout.teacher_metrics(task.name, seed), record)
    return record, ckpt


def pretrained_start(params: Params, task: Task, teacher_seed: int):
    """What the teacher of `teacher_seed` was fine-tuned from (`load_pretrained`), the start of `init_from: pretrained`
    students (its classifier is replaced per student)."""
    return load_pretrained(params.teacher, task.num_labels, teacher_seed)


def write_cache(params: Params, task_name: str, root: str | Path = ".", seed: int | None = None, tokenizer=None,
                student_dsets=None, fingerprint: str | None = None) -> Path:
    """(Re)build the cache of the teacher of a task and seed (default: the first of `teacher.seeds`) on the students'
    examples: `student_dsets` (the teacher step's, `data.prepare_teacher`), else read and tokenised here. `fingerprint`:
    that of the weights the teacher step has just saved (the record there may still be the previous teacher's);
    otherwise the weights are checked against the teacher's record first (`verify_teacher`)."""
    layout, task = Layout(Path(root)), params.task(task_name)
    seed = params.teacher.seeds[0] if seed is None else seed
    teacher_dir = layout.teacher_model(task.name, seed)
    again = teacher_again(task.name, root, seed)
    saved_tokenizer, teacher = load_saved(teacher_dir, again)  # a damaged file, named
    if fingerprint is None:
        fingerprint = cache_lib.model_fingerprint(teacher_dir)
        verify_teacher(teacher_dir, again, fingerprint)  # a damaged teacher is not made good by a fresh cache
    check_model_fits(teacher, task, teacher_dir, again)  # e.g. num_labels edited since
    tokenizer = tokenizer or saved_tokenizer
    # the students' examples (the first of the teacher's), not all the teacher learnt from
    dsets = student_dsets if student_dsets is not None else \
        data.prepare(task, tokenizer, params.data, root, params.student_train_samples)
    teacher.to("cuda" if torch.cuda.is_available() else "cpu")
    collator = data.Collator(tokenizer)
    for split, key in cache_keys(layout, task, tokenizer, dsets, params, seed, fingerprint).items():
        logits, states = cache_lib.teacher_outputs(teacher, dsets[split], collator, params.runtime.eval_batch_size)
        cache_lib.write(layout.cache(task.name, seed), split, key, logits, states)
    return layout.cache(task.name, seed)
