"""Issue 26: where a student starts (`student.init_from`) and how many examples the teacher and the students learn
from (`data.max_train_samples` against `distill.max_train_samples`), on the smoke profile's trained teachers."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from alpkd import cache, data, distill, students, teachers
from alpkd.paths import Layout
from helpers import TASK, TEACHER_SEED


def _params(smoke_params, **student):
    return smoke_params.model_copy(update={"student": smoke_params.student.model_copy(update=student)})


def test_pretrained_students_start_from_the_checkpoint_not_the_teacher(smoke_params, teacher_root):
    params = _params(smoke_params, init_from="pretrained")
    depth = params.student.depths[0]
    cell = distill.Cell(params, TASK, depth, "nokd", teacher_root, TEACHER_SEED)
    # the checkpoint the teacher was fine-tuned from, rebuilt independently
    checkpoint = students.load_pretrained(params.teacher, params.task(TASK).num_labels, TEACHER_SEED)
    tuned = cell.teacher
    student = students.build_student(cell.start, depth, params.student.init, 3, fresh_classifier=True)
    layers = students.init_layers(params.student.init, tuned.config.num_hidden_layers, depth)
    for i, j in enumerate(layers):
        got = student.bert.encoder.layer[i].state_dict()
        for key, value in checkpoint.bert.encoder.layer[j].state_dict().items():
            assert torch.equal(got[key], value), key
        assert any(not torch.equal(got[k], v) for k, v in tuned.bert.encoder.layer[j].state_dict().items())
    emb = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(student.state_dict()[emb], checkpoint.state_dict()[emb])
    assert not torch.equal(student.state_dict()[emb], tuned.state_dict()[emb])
    assert not torch.equal(student.classifier.weight, tuned.classifier.weight)
    # `teacher` (the default) is today's start: the fine-tuned teacher's tensors
    default = distill.Cell(smoke_params, TASK, depth, "nokd", teacher_root, TEACHER_SEED)
    assert default.start is default.teacher


def test_the_record_names_where_the_students_started(smoke_params, teacher_root, tmp_path):
    root = tmp_path / "out"
    seed = smoke_params.distill.seeds[0]
    records = {}
    for init_from in ("teacher", "pretrained"):
        params = _params(smoke_params, init_from=init_from)
        out = root / init_from
        for sub in ("data", "models", "cache"):
            out.mkdir(parents=True, exist_ok=True)
            (out / sub).symlink_to(teacher_root / sub)
        depth = params.student.depths[0]
        records[init_from] = distill.distill_group(params, TASK, depth, out, methods=["kd"], seeds=[seed])["kd"][0]
        saved = json.loads((Layout(out).student_metrics(distill.Run(TASK, depth, "kd", seed))).read_text())
        assert saved["init_from"] == init_from
    # different starts give different students (the pretrained one has not seen the task)
    assert records["teacher"]["metrics"] != records["pretrained"]["metrics"] or \
        records["teacher"]["train_loss"] != records["pretrained"]["train_loss"]


def test_students_learn_from_the_first_of_the_teachers_examples(smoke_params, teacher_root):
    """The students' n examples are the first n of the teacher's (the same fixed shuffle), so a teacher with more
    examples has seen them all, and they are the very examples of a teacher with n."""
    task = smoke_params.task(TASK)
    tokenizer = students.load_tokenizer(smoke_params.teacher.model)
    big = smoke_params.data.model_copy(update={"max_train_samples": 40})
    small = smoke_params.data.model_copy(update={"max_train_samples": 24})
    teacher_big = data.prepare(task, tokenizer, big, teacher_root, big.max_train_samples)["train"]
    students_of_big = data.prepare(task, tokenizer, big, teacher_root, 24)["train"]
    teacher_small = data.prepare(task, tokenizer, small, teacher_root, small.max_train_samples)["train"]
    assert len(teacher_big) == 40 and len(students_of_big) == 24
    assert students_of_big["input_ids"] == teacher_big["input_ids"][:24] == teacher_small["input_ids"]
    assert students_of_big["labels"] == teacher_small["labels"]
    assert students_of_big["cache_row"] == list(range(24))
    # the whole file for the teacher (not shuffled): the students' are still the first of the same fixed shuffle
    whole = smoke_params.data.model_copy(update={"max_train_samples": None})
    assert data.prepare(task, tokenizer, whole, teacher_root, 24)["train"]["input_ids"] == teacher_small["input_ids"]


def test_teacher_cache_covers_the_students_examples(smoke_params, teacher_root, tmp_path):
    """A teacher trained on more examples than its students caches the students' rows, and they are its outputs."""
    n_students = 20
    params = smoke_params.model_copy(update={"distill": smoke_params.distill.model_copy(
        update={"max_train_samples": n_students})})
    layout = Layout(teacher_root)
    folder = teachers.write_cache(params, TASK, teacher_root, TEACHER_SEED)
    try:
        depth = params.student.depths[0]
        cell = distill.Cell(params, TASK, depth, "kd", teacher_root, TEACHER_SEED)
        assert len(cell.train_ds) == n_students and cell.train_ds["cache_row"] == list(range(n_students))
        loaded = cache.load(folder, "train", cell.keys["train"])
        assert len(loaded.logits) == n_students
        teacher = cell.teacher.eval()
        batch = data.Collator(cell.tokenizer, loaded)([cell.train_ds[i] for i in range(n_students)])
        with torch.no_grad():
            out = teacher(**{k: batch[k] for k in data.MODEL_INPUTS if k in batch})
        np.testing.assert_allclose(batch["teacher_logits"].numpy(), out.logits.numpy(), rtol=1e-3, atol=1e-4)
        # this cache is refused to students of all 48 examples (a different key), never silently reused
        with pytest.raises(cache.CacheError, match="stale"):
            distill.Cell(smoke_params, TASK, depth, "kd", teacher_root, TEACHER_SEED)
    finally:
        teachers.write_cache(smoke_params, TASK, teacher_root, TEACHER_SEED)  # the shared fixture as it was
    assert layout.cache(TASK, TEACHER_SEED) == folder


@pytest.mark.parametrize("teacher_n, students_n", [(40, 24), (None, 24), (10**6, 24), (40, 40), (None, None),
                                                   (24, 40)])
def test_the_teacher_stage_reads_its_students_data_once(smoke_params, teacher_root, monkeypatch, teacher_n,
                                                        students_n):
    """`data.prepare_teacher` (one read for the teacher and its cache) gives each side what `data.prepare` gives it
    alone, column by column: the students' rows taken from the teacher's where they are its first rows, else drawn
    apart (a teacher with the whole split has it in its own order; 10**6 is more rows than RTE has)."""
    task = smoke_params.task(TASK)
    tokenizer = students.load_tokenizer(smoke_params.teacher.model)
    dp = smoke_params.data.model_copy(update={"max_train_samples": teacher_n})
    reads = []
    real = data.read_task_data
    monkeypatch.setattr(data, "read_task_data", lambda *a: reads.append(a) or real(*a))
    teacher, students_ = data.prepare_teacher(task, tokenizer, dp, teacher_root, students_n)
    assert len(reads) == 1
    monkeypatch.setattr(data, "read_task_data", real)
    for got, n in ((teacher, teacher_n), (students_, students_n)):
        alone = data.prepare(task, tokenizer, dp, teacher_root, n)
        assert list(got) == list(alone)
        for split in alone:
            assert got[split].features == alone[split].features
            assert got[split].to_dict() == alone[split].to_dict(), (split, n)


def test_the_cache_from_the_teacher_stages_data_is_the_cache_from_a_fresh_read(smoke_params, teacher_root, tmp_path):
    """`write_cache` on the students' rows taken from the teacher's data writes, byte for byte, the cache it writes
    when it reads and tokenises the students' data itself (`python -m alpkd cache`)."""
    params = smoke_params.model_copy(update={"distill": smoke_params.distill.model_copy(
        update={"max_train_samples": 20})})
    task = params.task(TASK)
    tokenizer = students.load_tokenizer(params.teacher.model)
    _, student_dsets = data.prepare_teacher(task, tokenizer, params.data, teacher_root, params.student_train_samples)
    assert len(student_dsets["train"]) == 20
    folder = Layout(teacher_root).cache(TASK, TEACHER_SEED)
    try:
        teachers.write_cache(params, TASK, teacher_root, TEACHER_SEED, tokenizer=tokenizer, student_dsets=student_dsets)
        shared = {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        teachers.write_cache(params, TASK, teacher_root, TEACHER_SEED)  # reads and tokenises apart
        fresh = {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    finally:
        teachers.write_cache(smoke_params, TASK, teacher_root, TEACHER_SEED)  # the shared fixture as it was
    assert shared.keys() == fresh.keys() and any(p.name == "logits.npy" for p in shared)
    assert all(shared[p] == fresh[p] for p in shared), [p for p in shared if shared[p] != fresh[p]]
    assert json.loads(shared[Path("train") / "meta.json"])["key"]["rows"] == 20
