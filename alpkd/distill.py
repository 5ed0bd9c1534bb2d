"""The distill stage: `distill_group` (every method and seed of one (task, depth), with data, teacher and cache loaded
once in a `Cell`) and `assist_group` (the methods that learn from teacher assistants), and `explain_batch`, the
notebook's look inside one batch.

The teacher stage is `alpkd.teachers`, the training loop `alpkd.trainer`, evaluation `alpkd.evaluation`, the files
a run writes `alpkd.records`.
"""
from __future__ import annotations

import copy
import math
import shutil
import time
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, set_seed

from . import cache as cache_lib
from . import data, executor, numerics
from .config import ConfigError, Params
from . import methods as meth
from .evaluation import check_model_fits, evaluate, length_order, load_saved, teacher_again, verify_teacher
from .losses import alp_attention, alp_loss, example_difficulty
from .paths import Layout, Run, remove_stale_temporaries
from .preflight import check_writable
from .records import run_record, save_model, write_json, write_log
from .students import build_student, layer_states
from .teachers import cache_keys, pretrained_start
from .trainer import AttentionHistory, DistillTrainer, run_hash, train, training_args

# re-exported: the CLI, notebooks, tests and benchmarks reach these as `distill.X` (the teacher stage is
# `teachers.train_teachers`, imported from there: a stage's dependencies are its notebook's import closure)
from .evaluation import evaluate_saved, headline_key  # noqa: F401
from .trainer import SeededLengthGroupedSampler  # noqa: F401


class Cell:
    """What the runs of one (task, depth, method) that learn from one teacher share: data, that teacher, its
    cache. A `Group` (task, depth) loads them once per teacher and hands them from method to method
    (`with_method`)."""

    print_logs = False  # the Trainer's logs printed too (the CLI's, to stderr); a Group's say

    def __init__(self, params: Params, task_name: str, depth: int, method: str, root: str | Path = ".",
                 teacher_seed: int | None = None, shared: "Cell | None" = None):
        self.params, self.layout, self.task = params, Layout(Path(root)), params.task(task_name)
        self.depth, self.method, dp = depth, method, params.distill
        self.teacher_seed = params.teacher.seeds[0] if teacher_seed is None else teacher_seed
        start = time.perf_counter()
        teacher_dir = self.layout.teacher_model(self.task.name, self.teacher_seed)
        if not (teacher_dir / "config.json").exists():
            raise FileNotFoundError(f"no teacher of seed {self.teacher_seed} for {self.task.name!r} at {teacher_dir}: "
                                    f"run the teacher stage first (`dvc repro teacher@{self.task.name}`, or "
                                    f"`python -m alpkd --out {root} teacher --task {self.task.name} --seed "
                                    f"{self.teacher_seed}`)")
        again = teacher_again(self.task.name, root, self.teacher_seed)
        self.tokenizer, self.teacher = load_saved(teacher_dir, again)
        self.teacher_fingerprint = cache_lib.model_fingerprint(teacher_dir)
        verify_teacher(teacher_dir, again, self.teacher_fingerprint)
        check_model_fits(self.teacher, self.task, teacher_dir, again)
        # another teacher of the group with the same tokenizer (the usual case): its tokenised data, not tokenised again
        same = shared is not None and cache_lib.tokenizer_fingerprint(shared.tokenizer) == \
            cache_lib.tokenizer_fingerprint(self.tokenizer)
        # the students' examples (`Params.student_train_samples`: the first of the teacher's, rows 0..n-1 of its cache)
        self.dsets = shared.dsets if same else data.prepare(self.task, self.tokenizer, params.data, root,
                                                            params.student_train_samples)
        self.n = self.teacher.config.num_hidden_layers
        self.use_cache = dp.states == "cls" and dp.teacher_cache
        self.caches, self.keys = {}, {}
        if self.use_cache:  # train split for the loss, validation split for ALP's attention map
            self.keys = cache_keys(self.layout, self.task, self.tokenizer, self.dsets, params, self.teacher_seed,
                                   self.teacher_fingerprint)
            self.caches = {s: cache_lib.load(self.layout.cache(self.task.name, self.teacher_seed), s, k)
                           for s, k in self.keys.items()}
        self.train_ds = self.dsets["train"]
        # a transfer set (`distill.transfer_samples`): the labelled rows, then rows the teacher alone labels, for
        # the methods that learn from the teacher; its outputs on them computed once here, in the cache's format
        self.transfer_ds, self.transfer_cache, self.transfer = None, None, None
        if dp.transfer_samples:
            transfer = shared.transfer if same else data.prepare_transfer(
                self.task, self.tokenizer, params.data, root, dp.transfer_samples, len(self.train_ds))
            self.transfer = transfer
            labelled = self.train_ds.add_column("labelled", [True] * len(self.train_ds))
            self.transfer_ds = datasets.concatenate_datasets(
                [labelled, transfer.add_column("labelled", [False] * len(transfer)).cast(labelled.features)])
            if self.use_cache:
                self.transfer_cache = cache_lib.Extended(self.caches["train"], *cache_lib.teacher_outputs(
                    self.teacher, transfer, data.Collator(self.tokenizer), params.runtime.eval_batch_size))
        # `pretrained`: students start from the checkpoint the teacher was fine-tuned from (loaded once per cell)
        self.start = self.teacher if params.student.init_from == "teacher" else \
            (shared.start if same and shared.teacher_seed == self.teacher_seed else
             pretrained_start(params, self.task, self.teacher_seed))
        self.data_fingerprint = shared.data_fingerprint if same else data.fingerprint(self.dsets["train"])
        self.setup_time_s = round(time.perf_counter() - start, 2)

    def with_method(self, method: str) -> "Cell":
        """The same loaded inputs for another method of the group (nothing is loaded again)."""
        other = copy.copy(self)
        other.method = method
        return other

    def attention(self, model, ds, with_entropy: bool = False):
        split = self.task.validation_splits[0]
        return attention_map(model, ds, self.tokenizer, self.caches.get(split), meth.get(self.method).attention,
                             self.params.distill,
                             self.params.runtime.eval_batch_size, teacher=None if self.caches else self.teacher,
                             with_entropy=with_entropy)

    def train_key(self) -> dict:
        """The key of the teacher's training-set cache (what a teacher assistant's cached logits must share but
        the weights)."""
        if "train" not in self.keys:  # hashes every row's token ids: once per teacher
            self.keys["train"] = cache_keys(self.layout, self.task, self.tokenizer, {"train": self.dsets["train"]},
                                            self.params, self.teacher_seed, self.teacher_fingerprint)["train"]
        return self.keys["train"]

    def assistants(self, seed: int) -> list[dict]:
        """The teacher assistants of a student of this depth and seed: the `distill.assistant` student of the same
        seed at each deeper depth, smallest first, with its cached training-set logits."""
        dp, depths = self.params.distill, self.params.assistant_depths(self.depth)
        if not depths:
            raise ConfigError(f"{self.method}: a {self.depth}-layer student has no teacher assistant (no deeper depth "
                              f"in student.depths {self.params.student.depths}); the method is not defined here")
        expected = {k: v for k, v in self.train_key().items() if k != "teacher"}  # "teacher": the assistant's weights
        out = []
        for d in depths:
            folder = self.layout.assistant_cache(self.task.name, d, dp.assistant, seed)
            split = cache_lib.load(folder, "train", expected)
            fingerprint = cache_lib.read_key(folder, "train").get("teacher")
            if not isinstance(fingerprint, str):  # what keys the student's checkpoints and names its assistant
                raise cache_lib.CacheError(f"teacher assistant cache {folder / 'train'} is damaged: its key has no "
                                           f"weights fingerprint ({fingerprint!r}); {cache_lib.hint(folder)}")
            out.append({"depth": d, "method": dp.assistant, "seed": seed, "cache": split, "fingerprint": fingerprint})
        return out

    def write_assistant_cache(self, model, seed: int) -> Path:
        """Cache this student's logits on the teacher's training rows, for the shallower students that learn from
        it (TAKD, DGKD, CES-KD), keyed like the teacher's cache with this student's weights in place of the
        teacher's. Written by every depth's stage (it cannot know which depths lie below it)."""
        folder = self.layout.assistant_cache(self.task.name, self.depth, self.method, seed)
        weights = self.layout.student_model(Run(self.task.name, self.depth, self.method, seed))
        logits, _ = cache_lib.teacher_outputs(model, self.dsets["train"], data.Collator(self.tokenizer),
                                              self.params.runtime.eval_batch_size)
        key = dict(self.train_key(), teacher=cache_lib.model_fingerprint(weights))
        return cache_lib.write(folder, "train", key, logits, np.zeros((len(logits), 0, 0), np.float16))

    def train_seed(self, seed: int, keep_checkpoint: bool = False) -> dict:
        """Distil and evaluate the student of one seed (saving its weights as `distill.keep_models` says);
        returns its metrics record; `keep_checkpoint` leaves its last checkpoint (`self.checkpoint`) to the caller."""
        params, dp, layout, task, method = self.params, self.params.distill, self.layout, self.task, self.method
        declared = meth.get(method)
        run = Run(task.name, self.depth, method, seed)
        check_writable([p.parent for p in layout.student_outputs(run)] + [layout.checkpoints(".").parent])
        remove_stale_temporaries(layout.student_outputs(run))
        student = build_student(self.start, self.depth, params.student.init, seed,
                                fresh_classifier=params.student.init_from == "pretrained")
        assistants = self.assistants(seed) if declared.assistants else []
        difficulty = None
        if declared.difficulty:  # CES-KD: the teacher's loss on each training row (its cache covers every row)
            teacher_train = self.caches.get("train")
            if teacher_train is None:  # `states: tokens` runs the teacher online; its cache is still there
                teacher_train = cache_lib.load(self.layout.cache(task.name, self.teacher_seed), "train", self.train_key())
            difficulty = example_difficulty(np.asarray(teacher_train.logits), np.asarray(self.dsets["train"]["labels"]))
        # resumed only by the same settings on the same data (its content), the same task declaration and the same
        # teacher assistants
        key = run_hash(dp, params.data, params.student, self.teacher_fingerprint,
                       params.custom_tasks.get(task.name), self.data_fingerprint, [a["fingerprint"] for a in assistants])
        ckpt = self.checkpoint = layout.checkpoints(f"{run.name}-{key}")
        set_seed(seed)
        callbacks = []
        split = task.validation_splits[0]
        if declared.attention:  # a fixed batch: the first examples of the validation split
            probe = self.dsets[split].select(range(min(64, len(self.dsets[split]))))
            callbacks.append(AttentionHistory(dp.attention_snapshots,
                                              lambda: self.attention(trainer.model, probe, True)))
        transfer = declared.teacher and self.transfer_ds is not None  # NO-KD has no teacher to label them
        train_ds = self.transfer_ds if transfer else self.train_ds
        cache = (self.transfer_cache if transfer else self.caches.get("train")) if declared.teacher else None
        trainer = DistillTrainer(
            model=student, args=training_args(dp, params.runtime, ckpt, seed), train_dataset=train_ds,
            data_collator=data.Collator(self.tokenizer, cache, [a["cache"] for a in assistants]),
            callbacks=callbacks, label=method, progress_label=f"distill {task.name}-{self.depth}  {method}  seed {seed}",
            print_logs=self.print_logs,
            objective=meth.objective(method, dp, None if (not declared.teacher or self.use_cache) else self.teacher,
                                        dp.states, difficulty),
        )
        timing = train(trainer)
        start = time.perf_counter()
        scores = evaluate(trainer, task, self.dsets, preds := {})
        timing["eval_time_s"] = round(time.perf_counter() - start, 2)
        if not trainer.is_world_process_zero():
            return scores
        serves = method == dp.assistant and bool(meth.assisted(dp.methods))
        if dp.keep_models == "all" or seed == dp.seeds[0] or serves:
            save_model(trainer.model, self.tokenizer, layout.student_model(run))
        if serves:  # a teacher assistant: its training-set logits, keyed by the weights just saved
            self.write_assistant_cache(trainer.model, seed)
        if not (dp.keep_models == "all" or seed == dp.seeds[0]):
            # only the first seed's weights are read later (the notebook's look inside a batch)
            shutil.rmtree(layout.student_model(run), ignore_errors=True)
        write_json(layout.predictions(run), {"task": task.name, "method": method, "depth": self.depth, "seed": seed,
                                             **preds})
        write_log(trainer, layout.log(run))
        mapping = meth.layer_mapping(method, self.n, self.depth, dp, seed, math.ceil(dp.epochs))
        extra = {}
        if declared.attention:
            weights, entropy = self.attention(trainer.model, self.dsets[split], with_entropy=True)
            extra = {"attention_entropy_bits": float(entropy.mean()),
                     "attention_top_layers": [int(j) + 1 for j in weights.argmax(-1)]}
            mapping = {"split": split, "scale": declared.attention(self.n, self.depth, dp)[1], "weights": weights.tolist(),
                       "entropy_bits": entropy.tolist(), "history": callbacks[0].history}
        if assistants:
            mapping["assistants"] = [{k: a[k] for k in ("depth", "method", "seed", "fingerprint")} for a in assistants]
            mapping.update(meth.guidance(method, dp, seed, trainer.state.max_steps, math.ceil(dp.epochs), assistants,
                                     difficulty, self.train_ds["cache_row"]))
        if "weights" not in mapping:  # no attention: PKD's fixed pairs, RAIL-KD's draws, or no layer term
            mapping = {"weights": None, **mapping, "note": f"{method}: no attention map"}
        write_json(layout.attention(run), {"task": task.name, "depth": self.depth, "method": method, "seed": seed,
                                           **mapping})
        record = run_record(params, task, "student", scores, timing, self.layout.root, method=method, depth=self.depth,
                            seed=seed, teacher_layers=self.n, teacher_seed=self.teacher_seed,
                            teacher_fingerprint=self.teacher_fingerprint, init=params.student.init,
                            init_from=params.student.init_from,
                            init_layers=student.config.alpkd_init_layers, train_examples=len(self.train_ds),
                            teacher_cached=self.use_cache and declared.teacher, group_setup_time_s=self.setup_time_s,
                            assistants=[f"{a['depth']}-layer {a['method']} s{a['seed']}" for a in assistants] or None,
                            constant_predictions=any(p["constant"] for p in preds.values()),
                            **({"transfer_examples": len(train_ds) - len(self.train_ds)} if transfer else {}), **extra)
        write_json(layout.student_metrics(run), record)
        if not keep_checkpoint:
            shutil.rmtree(ckpt, ignore_errors=True)
        return record


def duplicate_of(params: Params, depth: int, method: str) -> str | None:
    """The method this cell would only repeat (same objective at this depth), or None. It does not depend on
    `distill.methods`, so adding a method never re-runs the others; the report says when the method repeated
    is not in the grid."""
    from .model_files import teacher_num_layers

    same = meth.same_objective(method, teacher_num_layers(params.teacher), depth, params.distill)
    return same if same != method else None


class Group:
    """The students of one (task, depth) and what they share: one `Cell` per teacher, loaded when a student of that
    teacher first asks for it and kept while the group lives (every method and seed of that teacher's students,
    and `explain_batch` after training), the first cell's data shared with the others (`Cell`'s `shared`)."""

    def __init__(self, params: Params, task_name: str, depth: int, root: str | Path = ".", print_logs: bool = False):
        self.params, self.task_name, self.depth, self.root, self.print_logs = params, task_name, depth, root, print_logs
        self.cells: dict[int, Cell] = {}

    def cell(self, method: str, teacher_seed: int) -> Cell:
        """The loaded inputs of the students of `teacher_seed`, for `method`."""
        if teacher_seed not in self.cells:
            shared = next(iter(self.cells.values()), None)
            cell = Cell(self.params, self.task_name, self.depth, method, self.root, teacher_seed, shared)
            cell.print_logs = self.print_logs
            self.cells[teacher_seed] = cell
        return self.cells[teacher_seed].with_method(method)

    def moved(self, root: str | Path) -> "Group":
        """The same students under `root` (the same folder, named another way), nothing loaded: what a Ray task is
        sent (a worker loads the cell its student needs)."""
        return Group(self.params, self.task_name, self.depth, root, self.print_logs)


def distill_group(params: Params, task_name: str, depth: int, root: str | Path = ".",
                  methods: list[str] | None = None, seeds: list[int] | None = None, print_logs: bool = False,
                  group: Group | None = None) -> dict[str, list[dict]]:
    """Distil every method (default `distill.methods`, but those that learn from teacher assistants: the `assist`
    stage's) and seed (default `distill.seeds`) of one (task, depth), each seed from its teacher
    (`Params.teacher_seed`), loading data, each teacher and its cache once. Returns the records by method.

    A method whose objective is another's at this depth (`duplicate_of`) is not trained: its metrics folder
    gets a `same_as.json` marker naming that method and why, and the report shows the cell once. `group`: the
    loaded inputs to use and keep (e.g. for `explain_batch` afterwards); `print_logs`: the Trainer's logs printed.
    """
    numerics.check(params.runtime)
    meth.check(params)
    layout = Layout(Path(root))
    methods = [m for m in params.distill.methods if not meth.get(m).assistants] if methods is None else list(methods)
    seeds = list(params.distill.seeds if seeds is None else seeds)
    for folder in [*layout.group_dirs(task_name, depth).values(), layout.assistant_group(task_name, depth)]:
        folder.mkdir(parents=True, exist_ok=True)
    group = group or Group(params, task_name, depth, root, print_logs)
    out = _train_cells(group, methods, seeds, f"distill {task_name}-{depth}")
    _write_assistant_manifest(params, task_name, depth, root)
    return out


def _write_assistant_manifest(params: Params, task_name: str, depth: int, root) -> None:
    # the stage's cache folder always holds a file (DVC restores no empty folder), and says what is cached
    dp, layout = params.distill, Layout(Path(root))
    serves = dp.assistant in dp.methods and bool(meth.assisted(dp.methods))
    write_json(layout.assistant_group(task_name, depth) / "assistants.json",
               {"task": task_name, "depth": depth, "method": dp.assistant if serves else None,
                "seeds": list(dp.seeds) if serves else [],
                "why": f"the {depth}-layer {dp.assistant} students' training-set logits, for the shallower students "
                       "that learn from teacher assistants" if serves else
                       "no method of distill.methods learns from teacher assistants: nothing cached"})


def assist_group(params: Params, task_name: str, root: str | Path = ".", methods: list[str] | None = None,
                 seeds: list[int] | None = None, print_logs: bool = False) -> dict[int, dict[str, list[dict]]]:
    """The `assist` stage of one task: every method that learns from teacher assistants (TAKD, DGKD, CES-KD) at
    every depth with a deeper one in `student.depths`, every seed. At the largest depth there is no assistant:
    each method's metrics folder there gets a `not_defined.json` marker instead (the report says so). Returns
    the records by depth and method."""
    numerics.check(params.runtime)
    meth.check(params)
    layout = Layout(Path(root))
    methods = meth.assisted(params.distill.methods) if methods is None else list(methods)
    seeds = list(params.distill.seeds if seeds is None else seeds)
    summary = {"task": task_name, "methods": methods, "seeds": seeds, "assistant": params.distill.assistant,
               "assistants": {d: params.assistant_depths(d) for d in params.student.depths if params.assistant_depths(d)}}
    for folder in layout.assisted_dirs(task_name).values():  # a file in each: DVC restores no empty folder
        write_json(folder / "assist.json", summary)
    out = {}
    for depth in sorted(params.student.depths, reverse=True):
        if not params.assistant_depths(depth):
            for method in methods:
                _mark(layout.not_defined(task_name, depth, method), layout, task_name, depth, method, seeds,
                      not_defined=True, why=f"no teacher assistant: no student depth of {params.student.depths} is "
                                            f"deeper than {depth}")
            out[depth] = {m: [] for m in methods}
            continue
        out[depth] = _train_cells(Group(params, task_name, depth, root, print_logs), methods, seeds,
                                  f"assist {task_name}-{depth}")
    return out


def _train_cells(group: Group, methods: list[str], seeds: list[int], label: str) -> dict[str, list[dict]]:
    """Train every (method, seed) of one (task, depth) (`alpkd.executor`), a `same_as.json` marker for each duplicate."""
    params, task_name, depth, layout = group.params, group.task_name, group.depth, Layout(Path(group.root))
    teachers = {seed: params.teacher_seed(seed) for seed in seeds}  # refuses a seed outside distill.seeds
    out = {}
    units = [(m, s) for m in methods if duplicate_of(params, depth, m) is None for s in seeds]
    for method in methods:
        twin = duplicate_of(params, depth, method)
        if twin is not None:
            why = f"at {depth} student layer(s), {method} optimises the same objective as {twin}; it is trained once, as {twin}"
            out[method] = [_mark(layout.same_as(task_name, depth, method), layout, task_name, depth, method, seeds,
                                 same_as=twin, why=why)]
            continue
        layout.same_as(task_name, depth, method).unlink(missing_ok=True)
        layout.not_defined(task_name, depth, method).unlink(missing_ok=True)
        out[method] = []
    records = executor.train(group, units, teachers, label)
    for method, seed in units:
        out[method].append(records[(method, seed)])
    return out


def _mark(path: Path, layout: Layout, task: str, depth: int, method: str, seeds: list[int], **why) -> dict:
    """A cell that is not trained: its folders emptied, and a marker at `path` saying why (the report reads it)."""
    for folder in layout.cell_dirs(task, depth, method).values():
        shutil.rmtree(folder, ignore_errors=True)
    marker = {"task": task, "depth": depth, "method": method, **why, "seeds": seeds}
    write_json(path, marker)
    return marker


def distill_student(params: Params, task_name: str, depth: int, method: str, seed: int, root: str | Path = ".") -> dict:
    """Distil one student (task, depth, method, seed) from its teacher (`Params.teacher_seed`); returns its metrics."""
    numerics.check(params.runtime)
    return Cell(params, task_name, depth, method, root, params.teacher_seed(seed)).train_seed(seed)


@torch.inference_mode()
def explain_batch(params: Params, task_name: str, depth: int, method: str, seed: int, root: str | Path = ".",
                  size: int = 8, group: Group | None = None) -> dict:
    """One real validation batch through a trained student: each loss term, and the layer pairs or attention
    weights behind it (the notebook's look inside `methods.distillation_loss`); `group`: the loaded inputs of the
    students of (task, depth) that trained it, else loaded here."""
    group = group or Group(params, task_name, depth, root)
    cell = group.cell(method, params.teacher_seed(seed))
    declared, dp = meth.get(method), params.distill
    run = Run(cell.task.name, depth, method, seed)
    model = AutoModelForSequenceClassification.from_pretrained(cell.layout.student_model(run)).eval()
    split = cell.task.validation_splits[0]
    rows = cell.dsets[split].select(range(min(size, len(cell.dsets[split]))))
    batch = data.Collator(cell.tokenizer)([rows[i] for i in range(len(rows))])
    inputs = {k: v for k, v in batch.items() if k in data.MODEL_INPUTS}
    out = model(**inputs, output_hidden_states=True)
    teacher_out = cell.teacher.eval()(**inputs, output_hidden_states=True)
    s_states, t_states = layer_states(out)[:, 0], layer_states(teacher_out)[:, 0]
    pairs = declared.mapping(cell.n, depth, dp, seed, 0) if declared.mapping else None
    total, terms = meth.distillation_loss(method, dp, meth.Batch(
        out.logits, batch["labels"], s_states, teacher_out.logits, t_states, pairs=pairs if declared.draws else None,
        seed=seed))
    detail = {"method": method, "examples": len(rows), "total": float(total),
              "terms": {k: float(v) for k, v in terms.items()}}
    if pairs is not None:
        detail["pairs"] = [(i + 1, j + 1) for i, j in enumerate(pairs)]
        if declared.draws:
            detail["note"] = "the epoch-0 draw; each epoch draws again"
    if declared.attention:
        _, weights = alp_loss(s_states, t_states, *declared.attention(cell.n, depth, dp))
        detail["weights"] = weights.mean(0).numpy()  # (m, n), mean over the batch
        detail["entropy_bits"] = entropy_bits(weights).mean(0).numpy()
    return detail


def entropy_bits(weights: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of each attention row (0 log 0 = 0): 0 for one-hot, log2(k) for uniform over k."""
    return -(weights * torch.log2(weights.clamp_min(1e-30))).sum(-1)


@torch.inference_mode()
def attention_map(model, ds, tokenizer, split_cache, view, dp, batch_size: int, teacher=None,
                  with_entropy: bool = False):
    """Mean ALP attention weights (student layer x teacher layer) over `ds` (over real tokens for `tokens`);
    `view(n, m, dp)` -> (allowed mask or None, scale): the method's declared attention (`alpkd.methods`).

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
        allowed, scale = view(ts.shape[-2], hs.shape[-2], dp)
        w = alp_attention(hs.float(), ts.float(), allowed, scale)  # (B, T, m, n)
        e = (entropy_bits(w) * mask[..., None]).sum(dim=(0, 1))
        w = (w * mask[..., None, None]).sum(dim=(0, 1))
        total = w if total is None else total + w
        entropy = e if entropy is None else entropy + e
        count += float(mask.sum())
    model.train(was_training)
    mean = (total / count).cpu().numpy()
    return (mean, (entropy / count).cpu().numpy()) if with_entropy else mean
