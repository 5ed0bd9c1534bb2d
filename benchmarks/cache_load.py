"""Load time of one teacher-cache split with cheap, full and no verification, at MNLI's shape scaled down.

    python benchmarks/cache_load.py                 # MNLI train / 4, writes a section of docs/PERFORMANCE.md
    python benchmarks/cache_load.py --scale 8 --runs 5 --no-write

A synthetic cache is written with the real writer (`alpkd.cache.write`: float32 logits, float16 [CLS] states
of every layer, the manifest with the full SHA-256 of each file) at MNLI's training-set shape for a bert-base
teacher (392,702 rows x 12 layers x 768) with the row count divided by `--scale`, then loaded `--runs` times
at each verification level, both with the files in the page cache ("warm") and after evicting them from it
with `posix_fadvise(DONTNEED)` ("cold"; residency checked with mincore). The synthetic cache is deleted at
the end. Times for the full MNLI split are extrapolated, not measured: full verification linearly in bytes,
cheap verification as measured (it reads the manifest and 64 rows per file whatever the row count).
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import mmap
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from alpkd import cache  # noqa: E402

MNLI_TRAIN, LAYERS, WIDTH, LABELS = 392_702, 12, 768, 3
LEVELS = ("none", "cheap", "full")
MARKER = "<!-- bench:cache-load -->"


def synthetic_arrays(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((rows, LABELS), dtype=np.float32)
    states = np.empty((rows, LAYERS, WIDTH), dtype=np.float16)
    for start in range(0, rows, 8192):  # in chunks: no float32 copy of the whole array
        stop = min(rows, start + 8192)
        states[start:stop] = rng.standard_normal((stop - start, LAYERS, WIDTH), dtype=np.float32)
    return logits, states


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]


def resident_fraction(path: Path) -> float:
    """The fraction of the file's pages in the page cache (mincore on a fresh read-only map; reads nothing)."""
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        ptr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    finally:
        os.close(fd)
    if ptr in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), f"mmap of {path} failed")
    try:
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vec = (ctypes.c_ubyte * pages)()
        if _libc.mincore(ptr, size, vec) != 0:
            raise OSError(ctypes.get_errno(), "mincore failed")
        return sum(1 for v in bytes(vec) if v & 1) / pages
    finally:
        _libc.munmap(ptr, size)


def evict(folder: Path) -> None:
    for path in folder.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


def timed_load(cache_dir: Path, key: dict, level: str) -> float:
    start = time.perf_counter()
    loaded = cache.load(cache_dir, "train", key, verify=level)
    elapsed = time.perf_counter() - start
    del loaded
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=4, help="divide MNLI's training rows by this (default 4)")
    parser.add_argument("--runs", type=int, default=3, help="loads per level and state (median reported)")
    parser.add_argument("--dir", default=None, help="where to write the synthetic cache (default: a temp folder)")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave docs/PERFORMANCE.md alone")
    args = parser.parse_args()

    rows = -(-MNLI_TRAIN // args.scale)
    work = Path(tempfile.mkdtemp(prefix="alpkd-cache-bench-", dir=args.dir))
    try:
        logits, states = synthetic_arrays(rows)
        key = {"format": cache.FORMAT, "teacher": "0" * 64, "tokenizer": "1" * 64, "max_length": 128,
               "split": "train", "subsample": None, "rows": rows, "data": "2" * 64}
        start = time.perf_counter()
        cache.write(work, "train", key, logits, states)
        write_s = time.perf_counter() - start
        del logits, states
        folder = work / "train"
        size = sum(p.stat().st_size for p in folder.iterdir())
        full_size = size * MNLI_TRAIN / rows  # the header and meta.json are a few kB: linear is exact enough
        times = {(level, state): [] for level in LEVELS for state in ("warm", "cold")}
        resident = {"warm": [], "cold": []}
        for _ in range(args.runs):  # interleaved: round r times every configuration once
            for state in ("cold", "warm"):
                for level in LEVELS:
                    evict(folder) if state == "cold" else warm(folder)
                    resident[state].append(resident_fraction(folder / "states.npy"))
                    times[(level, state)].append(timed_load(work, key, level))
        median = {k: statistics.median(v) for k, v in times.items()}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    gb = 1e9
    lines = [
        MARKER,
        "## Teacher-cache load time: cheap against full verification",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
        f"numpy {np.__version__}; {time.strftime('%Y-%m-%d')}. Other sessions shared the CPU and the disk.",
        f"Synthetic cache written with `alpkd.cache.write` at MNLI's training shape for bert-base divided by "
        f"{args.scale}: {rows:,} rows x {LAYERS} layers x {WIDTH} (float16 [CLS] states) + {LABELS} float32 "
        f"logits = **{size / gb:.2f} GB** (full MNLI train: {MNLI_TRAIN:,} rows, {full_size / gb:.2f} GB; its two "
        "validation splits add about 5%). Writing it took "
        f"{write_s:.1f} s, including the one full SHA-256 of each file. Median of {args.runs} loads per cell, "
        "interleaved. `warm`: every page of the files in the page cache (mincore: "
        f"{min(resident['warm']):.0%}-{max(resident['warm']):.0%} resident before each load); `cold`: evicted "
        f"with `posix_fadvise(DONTNEED)` before each load ({min(resident['cold']):.0%}-"
        f"{max(resident['cold']):.0%} resident), so the bytes come from the disk (a virtual disk here).",
        f"Command: `python benchmarks/cache_load.py --scale {args.scale} --runs {args.runs}` (deletes its cache).",
        "",
        "| verify | checks | warm (s) | cold (s) | full MNLI train, warm (s) | full MNLI train, cold (s) |",
        "|---|---|---|---|---|---|",
    ]
    checks = {"none": "key, manifest hash, sizes, shapes, dtypes",
              "cheap": "the above + SHA-256 of 64 sampled rows per file (the default)",
              "full": "the above + SHA-256 of every byte (every load before this change)"}
    for level in LEVELS:
        w, c = median[(level, "warm")], median[(level, "cold")]
        factor = full_size / size if level == "full" else 1.0  # cheap and none read the same bytes at any size
        cells = [f"{t:.3f}" if t < 1 else f"{t:.1f}" for t in (w, c, w * factor, c * factor)]
        lines.append(f"| {level} | {checks[level]} | " + " | ".join(cells) + " |")
    raw = "; ".join(f"{level} {state} " + ", ".join(f"{t:.3f}" for t in times[(level, state)])
                    for state in ("warm", "cold") for level in LEVELS)
    lines += [
        "",
        f"Every load (s), in run order: {raw}.",
        "",
        "The last two columns are an **extrapolation**, not a measurement: full verification scaled linearly "
        f"in bytes (x{full_size / size:.2f}), cheap and none taken as measured (they read the manifest and 64 "
        "rows per file whatever the row count; a cold read of a bigger file is not otherwise slower). A full "
        "MNLI cache was not built here (disk and time). Every distill stage loads the cache once (the paper "
        "profile has 3 per task: depths 6, 4, 2; each `dvc exp run` of a grid adds more), and each such load "
        "paid the full column before this change. What the cheap check cannot see: a change to a row outside "
        "the sample that keeps the file's size (tests/test_cache.py shows it); training reads every row later "
        "anyway, but a damaged row there would go unnoticed. `python -m alpkd verify-cache "
        "--task <task>` runs the full check on request.",
        MARKER,
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        doc = ROOT / "docs" / "PERFORMANCE.md"
        old = doc.read_text()
        parts = old.split(MARKER)
        new = (parts[0] + text + parts[2].lstrip("\n")) if len(parts) == 3 else old.rstrip("\n") + "\n\n" + text
        doc.write_text(new)


if __name__ == "__main__":
    main()
