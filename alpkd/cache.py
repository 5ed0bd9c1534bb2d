"""Teacher-output cache: logits and the [CLS] state of every teacher layer, computed once per task.

A teacher in eval mode is deterministic, so every student, method and seed can reuse its outputs. The
cache of a split is a folder of `.npy` files (memory-mapped on load: MNLI with bert-base fits) and a
`meta.json` holding its key (teacher weights, tokenizer, maximum length, split, subsample and a
fingerprint of the token ids) and the SHA-256 of each file. `load` refuses a cache whose key differs from
the one expected or whose files are damaged; it never silently reuses one.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

FORMAT = 1


class CacheError(RuntimeError):
    """The cache is missing, stale (built for something else) or damaged."""


def sha256_file(path: str | Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def model_fingerprint(model_dir: str | Path) -> str:
    """SHA-256 over a saved model's weight files and config (what the teacher's outputs depend on)."""
    model_dir = Path(model_dir)
    files = sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin")) + [model_dir / "config.json"]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(sha256_file(f).encode())
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
    for start in range(0, len(ds), batch_size):
        rows = order[start : start + batch_size]
        batch = collator([ds[int(r)] for r in rows])
        inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        out = model(**inputs, output_hidden_states=True)
        logits[rows] = out.logits.float().cpu().numpy()
        states[rows] = torch.stack(out.hidden_states[1:], dim=1)[:, :, 0].float().cpu().numpy()
    return logits, states


def write(cache_dir: str | Path, split: str, key: dict, logits: np.ndarray, states: np.ndarray) -> Path:
    """Write one split's cache atomically: a temporary folder, renamed once complete."""
    final = Path(cache_dir) / split
    tmp = final.with_name(f".{split}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.save(tmp / "logits.npy", logits.astype(np.float32))
    np.save(tmp / "states.npy", states.astype(np.float16))
    meta = {
        "key": key,
        "shapes": {"logits": list(logits.shape), "states": list(states.shape)},
        "sha256": {f: sha256_file(tmp / f) for f in ("logits.npy", "states.npy")},
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


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


def load(cache_dir: str | Path, split: str, expected_key: dict, verify: bool = True) -> SplitCache:
    """The cache of `split`, after checking its key and its files; `CacheError` if it cannot be used."""
    folder = Path(cache_dir) / split
    meta_file = folder / "meta.json"
    hint = "rebuild it with the teacher stage (dvc repro) or `python -m alpkd cache --task <task>`"
    if not meta_file.exists():
        raise CacheError(f"no teacher cache at {folder}; {hint}")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as err:
        raise CacheError(f"teacher cache {folder} has a damaged meta.json ({err}); {hint}") from None
    stale = {k: (meta["key"].get(k), v) for k, v in expected_key.items() if meta["key"].get(k) != v}
    if stale:
        what = ", ".join(f"{k} (cached {a!r}, now {b!r})" for k, (a, b) in stale.items())
        raise CacheError(f"teacher cache {folder} is stale: it was built for a different {what}; {hint}")
    for name, digest in meta["sha256"].items():
        path = folder / name
        if not path.exists():
            raise CacheError(f"teacher cache {folder} is damaged: {name} is missing; {hint}")
        if verify and sha256_file(path) != digest:
            raise CacheError(f"teacher cache {folder} is damaged: {name} does not match its checksum; {hint}")
    try:
        cache = SplitCache(folder)
    except ValueError as err:  # truncated .npy
        raise CacheError(f"teacher cache {folder} is damaged: {err}; {hint}") from None
    if list(cache.states.shape) != meta["shapes"]["states"] or list(cache.logits.shape) != meta["shapes"]["logits"]:
        raise CacheError(f"teacher cache {folder} is damaged: shapes differ from meta.json; {hint}")
    return cache
