"""Where each output of the pipeline lives, relative to an output root (the repository for `dvc repro`).

A student run is one (task, depth, method, seed); a *cell* is one (task, depth, method) with all its seeds;
a *group* is one (task, depth) with all its cells, and is what one pipeline stage trains (data, teacher and
cache load once per group). Each kind of output has a folder per group, a folder per method inside it and
one file (or model folder) per seed inside that: `metrics/students/<task>-<depth>/<method>/s<seed>.json`,
`models/<task>/<task>-<depth>/<method>/s<seed>/`. A stage's outputs are a handful of folders whatever the
number of methods and seeds. Paths are built from the run's fields, never parsed back out of a name.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

# the methods that learn from teacher assistants, whose outputs live in the `assist` stage's folders: filled from
# their declarations by alpkd.methods (the teacher stage, which imports this module, never asks about a student)
ASSISTED: set[str] = set()


class Run(NamedTuple):
    task: str
    depth: int
    method: str
    seed: int

    @property
    def cell(self) -> str:
        return cell_name(self.task, self.depth, self.method)

    @property
    def name(self) -> str:
        return run_name(self.task, self.depth, self.method, self.seed)


def cell_name(task: str, depth: int, method: str) -> str:
    return f"{task}-{depth}-{method}"


def group_name(task: str, depth: int) -> str:
    return f"{task}-{depth}"


def run_name(task: str, depth: int, method: str, seed: int) -> str:
    return f"{cell_name(task, depth, method)}-s{seed}"


@dataclass(frozen=True)
class Layout:
    root: Path

    # --- data: the task's splits as the `data` stage wrote them (what every later step reads)
    def data(self, task: str) -> Path:
        """`data/<task>/<split>.parquet` (DVC-cached: its hash in dvc.lock is the data's)."""
        return self.root / "data" / task

    def data_source(self, task: str) -> Path:
        """Where the data came from, rows and fingerprint per split (git-tracked; no stage depends on it)."""
        return self.root / "data" / f"{task}.source.json"

    # --- teachers: one per teacher seed, `<kind>/<task>.../s<seed>` like the students
    def teacher_model(self, task: str, seed: int) -> Path:
        return self.root / "models" / task / "teacher" / f"s{seed}"

    def teacher_metrics(self, task: str, seed: int) -> Path:
        return self.root / "metrics" / "teacher" / task / f"s{seed}.json"

    def teacher_predictions(self, task: str, seed: int) -> Path:
        return self.root / "predictions" / f"teacher-{task}" / f"s{seed}.json"

    def teacher_log(self, task: str, seed: int) -> Path:
        return self.root / "logs" / f"teacher-{task}" / f"s{seed}.csv"

    def cache(self, task: str, seed: int) -> Path:
        return self.root / "cache" / task / "teacher" / f"s{seed}"

    def assistant_cache(self, task: str, depth: int, method: str, seed: int) -> Path:
        """The training-set logits of one student that serves as a teacher assistant, beside the teacher's cache:
        `cache/<task>/<task>-<depth>/<method>/s<seed>` (written by its own distill stage)."""
        return self.assistant_group(task, depth) / method / f"s{seed}"

    # --- students: <kind>/<task>-<depth>/<method>/s<seed>
    def group_dirs(self, task: str, depth: int) -> dict[str, Path]:
        """The folders one group's stage writes (and declares as its outputs)."""
        group = group_name(task, depth)
        return {"models": self.root / "models" / task / group,
                "metrics": self.root / "metrics" / "students" / group,
                "predictions": self.root / "predictions" / group,
                "attention": self.root / "attention" / group,
                "logs": self.root / "logs" / group}

    def assisted_dirs(self, task: str) -> dict[str, Path]:
        """The folders of one task's `assist` stage (the students that learn from teacher assistants), one
        `<task>-<depth>` group inside each: `<kind>/<task>-assisted/<task>-<depth>/<method>/s<seed>`. Outside
        `models/<task>` and `cache/<task>`, which the stage reads."""
        folder = f"{task}-assisted"
        return {"models": self.root / "models" / folder, "metrics": self.root / "metrics" / "students" / folder,
                "predictions": self.root / "predictions" / folder, "attention": self.root / "attention" / folder,
                "logs": self.root / "logs" / folder}

    def cell_dirs(self, task: str, depth: int, method: str) -> dict[str, Path]:
        if not ASSISTED:  # else an assisted method's cell would silently be looked for in the distill stage's folders
            raise RuntimeError("a student's folders: import alpkd.methods first (its declarations say which methods "
                               "are the assist stage's)")
        if method in ASSISTED:
            return {kind: folder / group_name(task, depth) / method for kind, folder in self.assisted_dirs(task).items()}
        return {kind: folder / method for kind, folder in self.group_dirs(task, depth).items()}

    def _student(self, kind: str, run: Run, suffix: str) -> Path:
        return self.cell_dirs(run.task, run.depth, run.method)[kind] / f"s{run.seed}{suffix}"

    def student_model(self, run: Run) -> Path:
        return self._student("models", run, "")

    def student_metrics(self, run: Run) -> Path:
        return self._student("metrics", run, ".json")

    def predictions(self, run: Run) -> Path:
        """Per-example validation predictions and labels of a student run."""
        return self._student("predictions", run, ".json")

    def attention(self, run: Run) -> Path:
        """ALP attention maps (final, and during training) or RAIL-KD's layer draws of a student run."""
        return self._student("attention", run, ".json")

    def log(self, run: Run) -> Path:
        """Training curve (CSV) of a student run."""
        return self._student("logs", run, ".csv")

    def same_as(self, task: str, depth: int, method: str) -> Path:
        """Marker of a cell whose objective is another method's at this depth (not trained twice)."""
        return self.cell_dirs(task, depth, method)["metrics"] / "same_as.json"

    def not_defined(self, task: str, depth: int, method: str) -> Path:
        """Marker of a cell whose method is not defined at this depth (a teacher-assistant method at the largest)."""
        return self.cell_dirs(task, depth, method)["metrics"] / "not_defined.json"

    def assistant_group(self, task: str, depth: int) -> Path:
        """The folder of one (task, depth)'s teacher-assistant caches (an output of its distill stage)."""
        return self.root / "cache" / task / group_name(task, depth)

    def checkpoints(self, name: str) -> Path:
        """Trainer checkpoints of an unfinished run (git-ignored, not a pipeline output)."""
        return self.root / "checkpoints" / name

    def report(self) -> Path:
        return self.root / "report"

    def teacher_outputs(self, task: str, seed: int) -> list[Path]:
        """What the teacher stage writes for one teacher seed (the cache's split folders as `cache/.../*`)."""
        return [self.teacher_model(task, seed), self.teacher_metrics(task, seed),
                self.teacher_predictions(task, seed), self.teacher_log(task, seed), self.cache(task, seed) / "*"]

    def student_outputs(self, run: Run) -> list[Path]:
        return [self.student_model(run), self.student_metrics(run), self.predictions(run), self.log(run),
                self.attention(run)]


def replace_atomically(dest: Path, write: Callable[[Path], None]) -> Path:
    """`write(tmp)` makes a file or folder at `.<name>.tmp-<pid>` beside `dest`, which is then renamed over `dest`:
    a killed writer leaves a temporary (`remove_stale_temporaries` removes it), never half an output."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        write(tmp)
    except BaseException as err:  # a full disk, an interrupt: no temporary left behind, and a full disk said so
        written = failed_file(tmp, err)
        _remove(tmp)
        if isinstance(err, Exception) and (cause := disk_full(err)):
            where = dest / written.relative_to(tmp) if written is not None and written != tmp else dest
            raise WriteError(f"{where}: cannot be written ({cause}); nothing was kept of it. Free space (or raise "
                             "the file size limit, `ulimit -f`) and re-run the same command") from None
        raise
    if dest.is_dir() and not dest.is_symlink():  # os.replace cannot replace a folder that holds files
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest


class WriteError(OSError):
    """An output that could not be written for lack of room (a full disk, a quota, a file size limit)."""


_FULL = {errno.ENOSPC: "no space left on the device", errno.EFBIG: "file too large (a file size limit)",
         errno.EDQUOT: "disk quota exceeded"}
# what libraries that wrap the OS error in their own (safetensors, torch's zip writer) still say of it
_FULL_TEXT = re.compile(r"No space left on device|File too large|FileTooLarge|StorageFull|Disk quota exceeded|"
                        r"os error (28|27|122)|file write failed", re.IGNORECASE)


def _chain(err: BaseException | None) -> list[BaseException]:
    """`err` and the exceptions it was raised from (or while handling)."""
    seen = []
    while err is not None and err not in seen:
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def disk_full(err: BaseException) -> str | None:
    """What `err` (or an exception it was raised from) says of a write that found no room, in words; else None."""
    for err in _chain(err):
        if isinstance(err, OSError) and err.errno in _FULL:
            return f"{_FULL[err.errno]}: {err.strerror}"
        if (m := _FULL_TEXT.search(str(err))) is not None:
            text = m.group(0).lower()
            what = "file too large (a file size limit)" if "large" in text or "27" in text else \
                "disk quota exceeded" if "quota" in text or "122" in text else "no space left on the device"
            return f"{what}: {type(err).__name__}: {' '.join(str(err).split())[:160]}"
    return None


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)


def failed_file(path: Path, err: BaseException) -> Path | None:
    """The file of `path` (a file or a folder) that the failed write `err` was writing: the one written last, or
    beside it the weights file safetensors was writing (it removes what it could not finish)."""
    if path.is_file():
        return path
    try:
        files = [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else []
        newest = max(files, key=lambda f: f.stat().st_mtime_ns) if files else None
    except OSError:
        return None
    safetensors = any("Safetensor" in type(e).__name__ for e in _chain(err))
    if newest is not None and newest.suffix != ".safetensors" and safetensors:
        return newest.parent / "model.safetensors"  # the name transformers gives an unsharded model's weights
    return newest


def warn(message: str) -> None:
    """One `warning: ...` line on stderr (where the CLI's `error: ...` lines go)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


_TEMPORARY = re.compile(r"\.tmp-(\d+)$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():  # a stage cleans before it writes: a temporary with its own pid is an old one's
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(outputs: list[Path]) -> list[Path]:
    """Remove the `.<name>.tmp-<pid>` files and folders a killed writer left beside `outputs`.

    Every output is written under such a name and renamed when complete; one whose pid is no longer a live
    process (on this machine) can never be completed. Those of live processes are left alone.
    """
    removed = []
    for out in outputs:
        if not out.parent.is_dir():
            continue
        for tmp in out.parent.glob(f".{out.name}.tmp-*"):
            match = _TEMPORARY.search(tmp.name)
            if match and not _alive(int(match.group(1))):
                shutil.rmtree(tmp) if tmp.is_dir() and not tmp.is_symlink() else tmp.unlink()
                removed.append(tmp)
    return removed
