"""Teacher-output cache: logits and the [CLS] state of every teacher layer, computed once per task.

A teacher in eval mode is deterministic, so every student, method and seed can reuse its outputs. The
cache of a split is a folder of `.npy` files (memory-mapped on load: MNLI with bert-base fits) and a
`meta.json` manifest holding its key (teacher weights, tokenizer, maximum length, split, subsample and a
fingerprint of the token ids) and, per file, its size, shape, dtype, full SHA-256 (computed once, when the
cache is written) and the SHA-256 of a fixed sample of rows. `load` refuses a cache whose key differs from
the one expected or whose files are damaged; it never silently reuses one. Every load checks sizes, shapes,
dtypes, the manifest's own hash and the sampled rows (cheap: a few MB read whatever the size); `verify="full"`
and `python -m alpkd verify-cache --task <task>` re-hash every byte. The cheap check cannot see a change to a
row outside the sample that keeps the file's size: that is what the full check is for.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import torch

from .paths import remove_stale_temporaries, replace_atomically

FORMAT = 1  # of the key (what the cached outputs depend on); unchanged by the manifest's version
MANIFEST = 2  # of meta.json: 2 added file sizes, dtypes, sample hashes and the manifest's own hash
SAMPLE_ROWS = 64  # rows hashed by the cheap check, spread evenly, first and last included
FILES = ("logits.npy", "states.npy")
VERIFY_LEVELS = ("cheap", "full", "none")


class CacheError(RuntimeError):
    """The cache is missing, stale (built for something else) or damaged."""


def sha256_file(path: str | Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def model_files_sha256(model_dir: str | Path) -> dict[str, str]:
    """SHA-256 of each of a saved model's weight files and of its config, in the order `model_fingerprint` hashes."""
    model_dir = Path(model_dir)
    files = sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin")) + [model_dir / "config.json"]
    return {f.name: sha256_file(f) for f in files}


def model_fingerprint(model_dir: str | Path, files: dict[str, str] | None = None) -> str:
    """SHA-256 over a saved model's weight files and config (what the teacher's outputs depend on); `files`:
    their `model_files_sha256` when already known."""
    h = hashlib.sha256()
    for name, digest in (files if files is not None else model_files_sha256(model_dir)).items():
        h.update(name.encode())
        h.update(digest.encode())
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), separators=(",", ":"))
    settings = json.dumps({"class": type(tokenizer).__name__, "lower": getattr(tokenizer, "do_lower_case", None)})
    return hashlib.sha256((vocab + settings).encode()).hexdigest()


def data_fingerprint(ds) -> str:
    """SHA-256 over the token ids of every row, in order: changes with data, subsample, tokenizer, length."""
    h = hashlib.sha256()
    for ids in ds["input_ids"]:
        h.update(np.asarray(ids, dtype=np.int32).tobytes())
        h.update(b"|")
    return h.hexdigest()


def cache_key(teacher_dir, tokenizer, ds, split: str, max_length: int, subsample: int | None,
              teacher_fingerprint: str | None = None) -> dict:
    """The key of one split's cache; pass `teacher_fingerprint` when it is already known (hashing is I/O)."""
    return {
        "format": FORMAT,
        "teacher": teacher_fingerprint or model_fingerprint(teacher_dir),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "max_length": max_length,
        "split": split,
        "subsample": subsample,
        "rows": len(ds),
        "data": data_fingerprint(ds),
    }


@torch.inference_mode()
def teacher_outputs(model, ds, collator, batch_size: int, device=None):
    """Logits (N, C) and per-layer [CLS] states (N, n, d) of `model` for every row of `ds`, in row order.

    Rows are batched in order of length (less padding) and written back to their own positions.
    """
    device = device or next(model.parameters()).device
    model.eval()
    n, d = model.config.num_hidden_layers, model.config.hidden_size
    logits = np.zeros((len(ds), model.config.num_labels), dtype=np.float32)
    states = np.zeros((len(ds), n, d), dtype=np.float16)
    order = np.argsort(np.asarray(ds["length"]), kind="stable")
    from .students import layer_states  # here, not on top: `verify-cache` imports this module without transformers

    for start in range(0, len(ds), batch_size):
        rows = order[start : start + batch_size]
        batch = collator([ds[int(r)] for r in rows])
        inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        out = model(**inputs, output_hidden_states=True)
        logits[rows] = out.logits.float().cpu().numpy()
        states[rows] = layer_states(out)[:, 0].float().cpu().numpy()
    return logits, states


def sample_rows(n: int, k: int = SAMPLE_ROWS) -> list[int]:
    """`k` row indices spread evenly over `n` rows, the first and the last included (every row when n <= k)."""
    if n <= 0:
        return []
    return sorted({int(r) for r in np.linspace(0, n - 1, min(k, n)).round()})


def sample_sha256(array: np.ndarray, rows: list[int]) -> str:
    """SHA-256 over the indices and the bytes of the given rows (reads only those rows of a memory map)."""
    h = hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode())
    for r in rows:
        h.update(np.ascontiguousarray(array[r]).tobytes())
    return h.hexdigest()


def _canonical_sha256(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _manifest_sha256(meta: dict) -> str:
    """The hash of the manifest itself (key, sizes, shapes, dtypes, sample and file hashes)."""
    return _canonical_sha256({k: v for k, v in meta.items() if k != "manifest_sha256"})


def write(cache_dir: str | Path, split: str, key: dict, logits: np.ndarray, states: np.ndarray) -> Path:
    """Write one split's cache atomically: a temporary folder, renamed once complete.

    The manifest (`meta.json`) records, per file, its size, shape, dtype, full SHA-256 (hashed once, here) and
    the SHA-256 of a fixed sample of rows; and the hash of the key and of the manifest itself.
    """
    rows = sample_rows(len(logits))

    def write_split(tmp: Path) -> None:
        tmp.mkdir()
        np.save(tmp / "logits.npy", logits.astype(np.float32))
        np.save(tmp / "states.npy", states.astype(np.float16))
        files = {}
        for name in FILES:
            array = np.load(tmp / name, mmap_mode="r")  # hashed as written, the way `load` will read it
            files[name] = {"bytes": (tmp / name).stat().st_size, "shape": list(array.shape),
                           "dtype": array.dtype.str, "sha256": sha256_file(tmp / name),
                           "sample_sha256": sample_sha256(array, rows)}
            del array
        meta = {
            "manifest": MANIFEST,
            "key": key,
            "key_sha256": _canonical_sha256(key),
            "sample_rows": rows,
            "files": files,
            # `sha256` is what the checks go through; `shapes` repeats `files` (kept: meta.json written as before)
            "shapes": {"logits": list(logits.shape), "states": list(states.shape)},
            "sha256": {name: files[name]["sha256"] for name in FILES},
        }
        meta["manifest_sha256"] = _manifest_sha256(meta)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))

    # what a killed writer of this split left (`python -m alpkd cache` runs no teacher stage that would clean)
    remove_stale_temporaries([Path(cache_dir) / split])
    return replace_atomically(Path(cache_dir) / split, write_split)


class SplitCache:
    """Read-only, memory-mapped teacher outputs of one split."""

    def __init__(self, folder: Path):
        self.logits = np.load(folder / "logits.npy", mmap_mode="r")
        self.states = np.load(folder / "states.npy", mmap_mode="r")

    def __len__(self) -> int:
        return len(self.logits)

    def rows(self, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.asarray(rows)
        return torch.from_numpy(np.ascontiguousarray(self.logits[idx])), torch.from_numpy(
            self.states[idx].astype(np.float32)
        )


class Extended:
    """A split's cache followed by further rows held in memory (a transfer set's teacher outputs: `logits` float32,
    `states` float16, as `teacher_outputs` gives them): row `len(base) + i` is the i-th further row."""

    def __init__(self, base: SplitCache, logits: np.ndarray, states: np.ndarray):
        self.base, self.more = base, SplitCache.__new__(SplitCache)
        self.more.logits, self.more.states = logits, states

    def __len__(self) -> int:
        return len(self.base) + len(self.more)

    def rows(self, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx, first = np.asarray(rows), len(self.base)
        logits = torch.empty((len(idx), *self.more.logits.shape[1:]), dtype=torch.float32)
        states = torch.empty((len(idx), *self.more.states.shape[1:]), dtype=torch.float32)
        for part, cache, offset in ((idx < first, self.base, 0), (idx >= first, self.more, first)):
            if part.any():
                logits[torch.from_numpy(part)], states[torch.from_numpy(part)] = cache.rows(idx[part] - offset)
        return logits, states


def hint(task_dir: str | Path) -> str:
    """How to rebuild the cache at `<root>/cache/<task>/teacher/s<seed>` (one teacher's): that task's name, that seed
    and that output root, spelled out (a bare `python -m alpkd cache` would write under the default --out). A
    teacher assistant's cache (`cache/<task>/<task>-<depth>/<method>/s<seed>`) is rebuilt by its distill stage."""
    task_dir = Path(task_dir)
    seed = ""
    if re.fullmatch(r"s\d+", task_dir.name):
        seed, task_dir = f" --seed {task_dir.name[1:]}", task_dir.parent
    if task_dir.name != "teacher" and re.fullmatch(r".+-\d+", task_dir.parent.name):
        group, method = task_dir.parent.name, task_dir.name
        return (f"rebuild it with its students' stage (`dvc repro distill@{group}` in the pipeline) or `python -m "
                f"alpkd --out {task_dir.parents[3]} distill --task {task_dir.parents[1].name} --depth "
                f"{group.rsplit('-', 1)[1]} --method {method}{seed}`")
    if task_dir.name == "teacher":
        task_dir = task_dir.parent
    task, root = task_dir.name, task_dir.parent.parent
    return (f"rebuild it with the teacher stage (`dvc repro teacher@{task}` in the pipeline) or "
            f"`python -m alpkd --out {root} cache --task {task}{seed}`")


def read_key(cache_dir: str | Path, split: str) -> dict:
    """The key a split's cache was written with (`load` checks it against the one expected)."""
    return _read_meta(Path(cache_dir) / split)["key"]


def _read_meta(folder: Path) -> dict:
    meta_file = folder / "meta.json"
    if not meta_file.exists():
        raise CacheError(f"no teacher cache at {folder}; {hint(folder.parent)}")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as err:
        raise CacheError(f"teacher cache {folder} has a damaged meta.json ({err}); {hint(folder.parent)}") from None
    if not isinstance(meta, dict) or "key" not in meta or "sha256" not in meta:
        raise CacheError(f"teacher cache {folder} has a damaged meta.json (no key or checksums); {hint(folder.parent)}")
    if meta.get("manifest") != MANIFEST:  # e.g. the format-1 manifest (key, shapes and checksums only)
        raise CacheError(f"teacher cache {folder} has a meta.json of another version ({meta.get('manifest')!r}, this "
                         f"version reads {MANIFEST}); {hint(folder.parent)}")
    # fields of the wrong type (a hand edit, a bad merge) would end in a traceback deep inside the checks
    files = meta.get("files")
    if not (isinstance(meta["key"], dict) and isinstance(meta["sha256"], dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in meta["sha256"].items())
            and isinstance(files, dict) and all(isinstance(files.get(n), dict) for n in meta["sha256"])
            and isinstance(meta.get("shapes", {}), dict)):
        raise CacheError(f"teacher cache {folder} has a damaged meta.json (a field of the wrong type); "
                         f"{hint(folder.parent)}")
    return meta


def _level(verify) -> str:
    if not isinstance(verify, str) or verify not in VERIFY_LEVELS:
        raise ValueError(f"verify={verify!r}: expected one of {VERIFY_LEVELS}")
    return verify


def _check(folder: Path, meta: dict, level: str) -> SplitCache:
    """The integrity checks of `level` on one split's files; the opened cache, or `CacheError`."""
    def damaged(why: str) -> CacheError:
        return CacheError(f"teacher cache {folder} is damaged: {why}; {hint(folder.parent)}")

    if meta.get("manifest_sha256") != _manifest_sha256(meta):
        raise damaged("meta.json does not match its own checksum (edited or corrupted)")
    if meta.get("key_sha256") != _canonical_sha256(meta["key"]):
        raise damaged("the key in meta.json does not match its checksum")
    for name in meta["sha256"]:
        path = folder / name
        if not path.exists():
            raise damaged(f"{name} is missing")
        if path.stat().st_size != meta["files"][name]["bytes"]:
            raise damaged(f"{name} has {path.stat().st_size} bytes, meta.json records {meta['files'][name]['bytes']} "
                          "(truncated or overwritten)")
    if level == "full":
        for name, digest in meta["sha256"].items():
            if sha256_file(folder / name) != digest:
                raise damaged(f"{name} does not match its checksum (full SHA-256)")
    try:
        cache = SplitCache(folder)
    except ValueError as err:  # truncated .npy
        raise damaged(str(err)) from None
    arrays = {"logits.npy": cache.logits, "states.npy": cache.states}
    for name, entry in meta["files"].items():
        array = arrays[name]
        if list(array.shape) != entry["shape"] or array.dtype.str != entry["dtype"]:
            raise damaged(f"{name} is {array.dtype.str} {list(array.shape)}, meta.json records "
                          f"{entry['dtype']} {entry['shape']}")
        if level == "cheap" and sample_sha256(array, meta["sample_rows"]) != entry["sample_sha256"]:
            raise damaged(f"{name} does not match its sample checksum ({len(meta['sample_rows'])} rows)")
    return cache


def load(cache_dir: str | Path, split: str, expected_key: dict, verify: str = "cheap") -> SplitCache:
    """The cache of `split`, after checking its key and its files; `CacheError` if it cannot be used.

    `verify`: "cheap" (default) checks the manifest's own hash and its key's, file sizes, shapes, dtypes and the
    SHA-256 of a fixed sample of rows (reads a few MB whatever the cache's size); "full" also re-hashes every
    byte against the SHA-256 recorded at write time; "none" skips both hashes (key, sizes, shapes still
    checked). A meta.json of another version (the format-1 manifest, without sizes and sample hashes) is refused.
    """
    level = _level(verify)
    folder = Path(cache_dir) / split
    meta = _read_meta(folder)
    stale = {k: (meta["key"].get(k), v) for k, v in expected_key.items() if meta["key"].get(k) != v}
    if stale:
        what = ", ".join(f"{k} (cached {a!r}, now {b!r})" for k, (a, b) in stale.items())
        raise CacheError(f"teacher cache {folder} is stale: it was built for a different {what}; {hint(folder.parent)}")
    return _check(folder, meta, level)


def verify_task(cache_dir: str | Path, level: str = "full") -> dict:
    """Check every split cached under `cache_dir` (one task's cache) at `level`; a summary, or `CacheError`.

    Integrity only: whether the cache still matches the current teacher and data (its key) is checked by every
    `load`, which knows the key it expects.
    """
    cache_dir = Path(cache_dir)
    splits = sorted(p.name for p in cache_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if cache_dir.is_dir() else []
    if not splits:
        raise CacheError(f"no teacher cache at {cache_dir}; {hint(cache_dir)}")
    level = _level(level)
    size = 0
    for split in splits:
        folder = cache_dir / split
        meta = _read_meta(folder)
        _check(folder, meta, level)
        size += sum((folder / name).stat().st_size for name in meta["sha256"])
    return {"cache": str(cache_dir), "verify": level, "ok": True, "splits": splits, "bytes": size}
