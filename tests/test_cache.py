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
from helpers import TASK, glue_frame, subsample_rows, TEACHER_SEED

SPLITS = ("train", "validation")


def expected_key(params, teacher_dir, split: str, **data_changes):
    """The key a run with `params` (optionally with other data settings) would ask the cache for."""
    dp = params.data.model_copy(update=data_changes)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    root = Path(teacher_dir).parents[2]  # root/models/<task>/teacher
    ds = data.prepare(get_task(TASK), tokenizer, dp, root, dp.max_train_samples)[split]
    size = dp.max_train_samples if split == "train" else dp.max_eval_samples
    return cache.cache_key(teacher_dir, tokenizer, ds, split, dp.max_length, size)


@pytest.fixture(scope="module")
def layout(teacher_root) -> Layout:
    return Layout(teacher_root)


@pytest.fixture
def cache_copy(layout, tmp_path):
    """A copy of the RTE cache that a test may damage."""
    dst = tmp_path / "cache"
    shutil.copytree(layout.cache(TASK, TEACHER_SEED), dst)
    return dst


@pytest.fixture(scope="module")
def keys(layout, smoke_params):
    return {s: expected_key(smoke_params, layout.teacher_model(TASK, TEACHER_SEED), s) for s in SPLITS}


@pytest.mark.parametrize("split", SPLITS)
def test_cache_rows_are_fresh_teacher_outputs(layout, smoke_params, keys, split):
    loaded = cache.load(layout.cache(TASK, TEACHER_SEED), split, keys[split])
    frame = glue_frame(TASK, split)
    limit = smoke_params.data.max_train_samples if split == "train" else smoke_params.data.max_eval_samples
    rows = subsample_rows(len(frame), limit)
    assert len(loaded) == len(rows)
    teacher_dir = layout.teacher_model(TASK, TEACHER_SEED)
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
    model = AutoModelForSequenceClassification.from_pretrained(layout.teacher_model(TASK, TEACHER_SEED))
    with torch.no_grad():
        model.bert.encoder.layer[1].output.dense.bias.add_(1e-3)
    changed = tmp_path / "teacher"
    model.save_pretrained(changed)
    AutoTokenizer.from_pretrained(layout.teacher_model(TASK, TEACHER_SEED)).save_pretrained(changed)
    key = expected_key(smoke_params, changed, "train")
    with pytest.raises(cache.CacheError, match="stale.*teacher"):
        cache.load(layout.cache(TASK, TEACHER_SEED), "train", key)


@pytest.mark.parametrize("change", [{"max_length": 32}, {"max_train_samples": 40}, {"max_train_samples": None}])
def test_stale_data_settings(layout, smoke_params, change):
    key = expected_key(smoke_params, layout.teacher_model(TASK, TEACHER_SEED), "train", **change)
    with pytest.raises(cache.CacheError, match="stale") as err:
        cache.load(layout.cache(TASK, TEACHER_SEED), "train", key)
    assert next(iter(change)).replace("max_train_samples", "subsample") in str(err.value)


def test_wrong_split_is_stale(layout, keys):
    with pytest.raises(cache.CacheError, match="stale"):
        cache.load(layout.cache(TASK, TEACHER_SEED), "train", keys["validation"])


@pytest.mark.parametrize("verify", ["full", "none"])
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
    loaded = cache.load(layout.cache(TASK, TEACHER_SEED), "train", keys["train"])
    teacher_dir = layout.teacher_model(TASK, TEACHER_SEED)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    full = data.prepare(get_task(TASK), tokenizer, smoke_params.data, layout.root,
                        smoke_params.data.max_train_samples)["train"]
    part = data.subsample(full, 16)
    assert len(part) == 16 and sorted(part["cache_row"]) != list(range(16))  # a shuffled subset, not a prefix
    batch = data.Collator(tokenizer, loaded)([part[i] for i in range(len(part))])
    model = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    with torch.no_grad():
        out = model(**{k: batch[k] for k in data.MODEL_INPUTS if k in batch}, output_hidden_states=True)
    cls = torch.stack(out.hidden_states[1:], dim=1)[:, :, 0]
    np.testing.assert_allclose(batch["teacher_states"].numpy(), cls.numpy(), rtol=3e-3, atol=3e-3)
    np.testing.assert_allclose(batch["teacher_logits"].numpy(), out.logits.numpy(), rtol=1e-3, atol=1e-4)


# --- verification levels: cheap (every load) and full (on request), on a synthetic cache written by `cache.write`

ROWS, LAYERS, WIDTH, LABELS = 1000, 4, 8, 3  # more rows than the cheap check samples


@pytest.fixture
def synthetic(tmp_path):
    """A cache of `ROWS` random rows under tmp_path/cache/<split>, with the key it was written with."""
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(ROWS, LABELS)).astype(np.float32)
    states = rng.normal(size=(ROWS, LAYERS, WIDTH)).astype(np.float16)
    key = {"format": cache.FORMAT, "teacher": "t" * 64, "split": "train", "rows": ROWS}
    cache.write(tmp_path / "cache", "train", key, logits, states)
    return tmp_path / "cache", key


def _flip_byte_in_row(folder, name: str, row: int, byte: int = 1) -> None:
    """Flip one bit of one byte inside `row` of `name` (offsets from the .npy header, not guessed)."""
    array = np.load(folder / name, mmap_mode="r")
    row_bytes = array.itemsize * int(np.prod(array.shape[1:]))
    offset = array.offset + row * row_bytes + byte
    del array
    with open(folder / name, "r+b") as f:
        f.seek(offset)
        value = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([value ^ 0x04]))


def test_sample_rows_spread_evenly_with_first_and_last():
    rows = cache.sample_rows(ROWS)
    assert len(rows) == cache.SAMPLE_ROWS and rows[0] == 0 and rows[-1] == ROWS - 1
    gaps = np.diff(rows)
    assert gaps.min() >= (ROWS - 1) // (cache.SAMPLE_ROWS - 1) and gaps.max() <= -(-(ROWS - 1) // (cache.SAMPLE_ROWS - 1))
    assert cache.sample_rows(5) == [0, 1, 2, 3, 4] and cache.sample_rows(1) == [0] and cache.sample_rows(0) == []


def test_manifest_records_sizes_shapes_dtypes_and_hashes(synthetic):
    import hashlib
    import json

    folder = synthetic[0] / "train"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["manifest"] == cache.MANIFEST and meta["sample_rows"] == cache.sample_rows(ROWS)
    for name, shape, dtype in [("logits.npy", [ROWS, LABELS], "<f4"), ("states.npy", [ROWS, LAYERS, WIDTH], "<f2")]:
        entry = meta["files"][name]
        assert entry["bytes"] == (folder / name).stat().st_size
        assert entry["shape"] == shape and entry["dtype"] == dtype
        assert entry["sha256"] == hashlib.sha256((folder / name).read_bytes()).hexdigest() == meta["sha256"][name]


@pytest.mark.parametrize("name", ["states.npy", "logits.npy"])
@pytest.mark.parametrize("which", [0, 1, -1])  # first, second and last sampled row
def test_cheap_check_catches_a_corrupted_sampled_row(synthetic, name, which):
    cache_dir, key = synthetic
    cache.load(cache_dir, "train", key)  # intact: loads
    _flip_byte_in_row(cache_dir / "train", name, cache.sample_rows(ROWS)[which])
    with pytest.raises(cache.CacheError, match=f"damaged: {name} does not match its sample checksum"):
        cache.load(cache_dir, "train", key)  # the default is the cheap check


@pytest.mark.parametrize("name", ["states.npy", "logits.npy"])
def test_row_outside_the_sample_is_missed_by_cheap_but_caught_by_full(synthetic, name):
    """The trade-off, documented: the cheap check reads only the sampled rows, so it misses this change."""
    cache_dir, key = synthetic
    sampled = cache.sample_rows(ROWS)
    row = next(r for r in range(ROWS) if r not in sampled)
    attr = name.removesuffix(".npy")
    before = np.array(getattr(cache.load(cache_dir, "train", key, verify="none"), attr)[row])
    _flip_byte_in_row(cache_dir / "train", name, row)
    loaded = cache.load(cache_dir, "train", key, verify="cheap")  # NOT caught
    assert not np.array_equal(np.array(getattr(loaded, attr)[row]), before)  # though the row did change
    with pytest.raises(cache.CacheError, match=f"{name} does not match its checksum \\(full SHA-256\\)"):
        cache.load(cache_dir, "train", key, verify="full")


@pytest.mark.parametrize("verify", ["cheap", "none", "full"])
@pytest.mark.parametrize("change", ["truncate", "append"])
def test_size_check_catches_truncated_or_grown_file(synthetic, verify, change):
    cache_dir, key = synthetic
    path = cache_dir / "train" / "states.npy"
    content = path.read_bytes()
    path.write_bytes(content[:-1] if change == "truncate" else content + b"\0")
    with pytest.raises(cache.CacheError, match="states.npy has \\d+ bytes, meta.json records \\d+"):
        cache.load(cache_dir, "train", key, verify=verify)


def test_wrong_key_is_stale(synthetic):
    cache_dir, key = synthetic
    for change in ({"teacher": "u" * 64}, {"rows": ROWS - 1}, {"split": "validation"}):
        with pytest.raises(cache.CacheError, match=f"stale.*{next(iter(change))}"):
            cache.load(cache_dir, "train", {**key, **change})


def test_edited_manifest_is_caught(synthetic):
    """A key or a recorded hash edited in meta.json (so that a stale cache would pass) is refused."""
    import json

    cache_dir, key = synthetic
    meta_file = cache_dir / "train" / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["key"]["teacher"] = "u" * 64
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(cache.CacheError, match="meta.json does not match its own checksum"):
        cache.load(cache_dir, "train", {**key, "teacher": "u" * 64}, verify="none")


@pytest.mark.parametrize("verify", ["fast", True, False])
def test_unknown_verify_level(synthetic, verify):
    with pytest.raises(ValueError, match=f"verify={verify!r}"):
        cache.load(synthetic[0], "train", synthetic[1], verify=verify)


def test_older_manifest_is_refused(synthetic):
    """A cache written before sizes and sample hashes were in meta.json (the format-1 manifest) is not read: its
    rebuild is named."""
    import json

    cache_dir, key = synthetic
    meta_file = cache_dir / "train" / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({k: meta[k] for k in ("key", "shapes", "sha256")}))  # the format-1 manifest
    for verify in cache.VERIFY_LEVELS:
        with pytest.raises(cache.CacheError, match="meta.json of another version.*rebuild it"):
            cache.load(cache_dir, "train", key, verify=verify)


def test_verify_cache_cli(tmp_path, synthetic):
    import json

    from alpkd.paths import Layout
    from helpers import SMOKE, run_cli

    params = tmp_path / "params.yaml"
    params.write_text(SMOKE.read_text())
    root = tmp_path / "out"
    for seed in (42, 43):  # the smoke profile's two teachers: every one is verified
        shutil.copytree(synthetic[0], Layout(root).cache(TASK, seed))
    args = ("--params", str(params), "--out", str(root), "verify-cache", "--task", TASK)
    good = run_cli(*args, cwd=tmp_path)
    assert good.returncode == 0, good.stderr[-3000:]
    assert len(good.stdout.splitlines()) == 1
    record = json.loads(good.stdout)
    assert set(record) == {"s42", "s43", "seconds"}
    for seed in ("s42", "s43"):
        assert record[seed]["ok"] and record[seed]["verify"] == "full" and record[seed]["splits"] == ["train"]
    one = json.loads(run_cli(*args, "--seed", "43", cwd=tmp_path).stdout)
    assert set(one) == {"s43", "seconds"}
    # a change the cheap check cannot see (a row outside the sample) is what this command is for
    row = next(r for r in range(ROWS) if r not in cache.sample_rows(ROWS))
    _flip_byte_in_row(Layout(root).cache(TASK, TEACHER_SEED) / "train", "states.npy", row)
    bad = run_cli(*args, cwd=tmp_path)
    assert bad.returncode == 1 and bad.stdout == "", (bad.returncode, bad.stdout)
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "states.npy does not match its checksum" in errors[0], bad.stderr[-3000:]
    missing = run_cli("--params", str(params), "--out", str(tmp_path / "none"), "verify-cache", "--task", TASK,
                      cwd=tmp_path)
    assert missing.returncode == 1 and "no teacher cache" in missing.stderr
