"""The teacher cache: its rows are the teacher's own outputs, and a stale or damaged cache is refused."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from alpkd import cache, data
from alpkd.paths import Layout
from alpkd.tasks import get_task
from helpers import TASK, glue_frame, subsample_rows

SPLITS = ("train", "validation")


def expected_key(params, teacher_dir, split: str, **data_changes):
    """The key a run with `params` (optionally with other data settings) would ask the cache for."""
    dp = params.data.model_copy(update=data_changes)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    ds = data.prepare(get_task(TASK), tokenizer, dp, Path(teacher_dir).parents[2])[split]  # root/models/<task>/teacher
    size = dp.max_train_samples if split == "train" else dp.max_eval_samples
    return cache.cache_key(teacher_dir, tokenizer, ds, split, dp.max_length, size)


@pytest.fixture(scope="module")
def layout(teacher_root) -> Layout:
    return Layout(teacher_root)


@pytest.fixture
def cache_copy(layout, tmp_path):
    """A copy of the RTE cache that a test may damage."""
    dst = tmp_path / "cache"
    shutil.copytree(layout.cache(TASK), dst)
    return dst


@pytest.fixture(scope="module")
def keys(layout, smoke_params):
    return {s: expected_key(smoke_params, layout.teacher_model(TASK), s) for s in SPLITS}


@pytest.mark.parametrize("split", SPLITS)
def test_cache_rows_are_fresh_teacher_outputs(layout, smoke_params, keys, split):
    loaded = cache.load(layout.cache(TASK), split, keys[split])
    frame = glue_frame(TASK, split)
    limit = smoke_params.data.max_train_samples if split == "train" else smoke_params.data.max_eval_samples
    rows = subsample_rows(len(frame), limit)
    assert len(loaded) == len(rows)
    teacher_dir = layout.teacher_model(TASK)
    model = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    n, d = model.config.num_hidden_layers, model.config.hidden_size
    assert loaded.states.shape == (len(rows), n, d) and loaded.states.dtype == np.float16
    assert loaded.logits.shape == (len(rows), 2)
    for r in sorted({0, 1, 5, len(rows) // 2, len(rows) - 1}):
        example = frame.iloc[int(rows[r])]
        enc = tokenizer(example["sentence1"], example["sentence2"], truncation=True,
                        max_length=smoke_params.data.max_length, return_tensors="pt")
        with torch.no_grad():
            out = model(**enc, output_hidden_states=True)
        cls = np.stack([out.hidden_states[j + 1][0, 0].numpy() for j in range(n)])  # layers 1..n, no embeddings
        np.testing.assert_allclose(loaded.states[r].astype(np.float32), cls, rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(loaded.logits[r], out.logits[0].numpy(), rtol=1e-4, atol=1e-5)
        logits, states = loaded.rows([r])
        assert logits.shape == (1, 2) and states.shape == (1, n, d) and states.dtype == torch.float32
        np.testing.assert_allclose(states[0].numpy(), cls, rtol=2e-3, atol=2e-3)


def test_stale_teacher_weights(layout, smoke_params, tmp_path):
    model = AutoModelForSequenceClassification.from_pretrained(layout.teacher_model(TASK))
    with torch.no_grad():
        model.bert.encoder.layer[1].output.dense.bias.add_(1e-3)
    changed = tmp_path / "teacher"
    model.save_pretrained(changed)
    AutoTokenizer.from_pretrained(layout.teacher_model(TASK)).save_pretrained(changed)
    key = expected_key(smoke_params, changed, "train")
    with pytest.raises(cache.CacheError, match="stale.*teacher"):
        cache.load(layout.cache(TASK), "train", key)


@pytest.mark.parametrize("change", [{"max_length": 32}, {"max_train_samples": 40}, {"max_train_samples": None}])
def test_stale_data_settings(layout, smoke_params, change):
    key = expected_key(smoke_params, layout.teacher_model(TASK), "train", **change)
    with pytest.raises(cache.CacheError, match="stale") as err:
        cache.load(layout.cache(TASK), "train", key)
    assert next(iter(change)).replace("max_train_samples", "subsample") in str(err.value)


def test_wrong_split_is_stale(layout, keys):
    with pytest.raises(cache.CacheError, match="stale"):
        cache.load(layout.cache(TASK), "train", keys["validation"])


@pytest.mark.parametrize("verify", [True, False])
@pytest.mark.parametrize("name", ["states.npy", "logits.npy"])
def test_truncated_file_is_damaged(cache_copy, keys, name, verify):
    path = cache_copy / "train" / name
    content = path.read_bytes()
    path.write_bytes(content[: len(content) - 64])
    with pytest.raises(cache.CacheError, match="damaged"):
        cache.load(cache_copy, "train", keys["train"], verify=verify)


@pytest.mark.parametrize("name", ["states.npy", "logits.npy"])
def test_flipped_byte_fails_checksum(cache_copy, keys, name):
    path = cache_copy / "train" / name
    content = bytearray(path.read_bytes())
    content[-3] ^= 0x10
    path.write_bytes(bytes(content))
    with pytest.raises(cache.CacheError, match="checksum"):
        cache.load(cache_copy, "train", keys["train"])


def test_missing_cache_and_files(cache_copy, keys, tmp_path):
    with pytest.raises(cache.CacheError, match="no teacher cache"):
        cache.load(tmp_path / "elsewhere", "train", keys["train"])
    (cache_copy / "train" / "logits.npy").unlink()
    with pytest.raises(cache.CacheError, match="missing"):
        cache.load(cache_copy, "train", keys["train"])
    (cache_copy / "validation" / "meta.json").write_text("{not json")
    with pytest.raises(cache.CacheError, match="meta.json"):
        cache.load(cache_copy, "validation", keys["validation"])


def test_write_is_atomic_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    logits, states = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(5, 4, 8)).astype(np.float16)
    key = {"format": cache.FORMAT, "teacher": "t", "split": "train"}
    cache.write(tmp_path, "train", key, logits, states)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]  # no temporary folder left
    loaded = cache.load(tmp_path, "train", key)
    got_logits, got_states = loaded.rows([4, 0, 2])
    np.testing.assert_array_equal(got_logits.numpy(), logits[[4, 0, 2]])
    np.testing.assert_array_equal(got_states.numpy(), states[[4, 0, 2]].astype(np.float32))


def test_student_subsample_reads_its_own_rows(layout, smoke_params, keys):
    """`distill.max_train_samples`: the student's subsample still meets each example's own teacher outputs."""
    loaded = cache.load(layout.cache(TASK), "train", keys["train"])
    teacher_dir = layout.teacher_model(TASK)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    full = data.prepare(get_task(TASK), tokenizer, smoke_params.data, layout.root)["train"]
    part = data.subsample(full, 16)
    assert len(part) == 16 and sorted(part["cache_row"]) != list(range(16))  # a shuffled subset, not a prefix
    batch = data.Collator(tokenizer, loaded)([part[i] for i in range(len(part))])
    model = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    with torch.no_grad():
        out = model(**{k: batch[k] for k in data.MODEL_INPUTS if k in batch}, output_hidden_states=True)
    cls = torch.stack(out.hidden_states[1:], dim=1)[:, :, 0]
    np.testing.assert_allclose(batch["teacher_states"].numpy(), cls.numpy(), rtol=3e-3, atol=3e-3)
    np.testing.assert_allclose(batch["teacher_logits"].numpy(), out.logits.numpy(), rtol=1e-3, atol=1e-4)
