"""Where each output of the pipeline lives, relative to an output root (the repository for `dvc repro`)."""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path


def run_name(task: str, depth: int, method: str, seed: int) -> str:
    return f"{task}-{depth}-{method}-s{seed}"


@dataclass(frozen=True)
class Layout:
    root: Path

    def teacher_model(self, task: str) -> Path:
        return self.root / "models" / task / "teacher"

    def student_model(self, task: str, run: str) -> Path:
        """`models/<task>/<run>`: the task is given, never parsed back out of the run name."""
        return self.root / "models" / task / run

    def cache(self, task: str) -> Path:
        return self.root / "cache" / task

    def teacher_metrics(self, task: str) -> Path:
        return self.root / "metrics" / "teacher" / f"{task}.json"

    def student_metrics(self, run: str) -> Path:
        return self.root / "metrics" / "students" / f"{run}.json"

    def attention(self, run: str) -> Path:
        return self.root / "attention" / f"{run}.json"

    def predictions(self, name: str) -> Path:
        """Per-example validation predictions and labels of a teacher (`teacher-<task>`) or student run."""
        return self.root / "predictions" / f"{name}.json"

    def log(self, name: str) -> Path:
        """Training curve (CSV) of a teacher (`teacher-<task>`) or a student run."""
        return self.root / "logs" / f"{name}.csv"

    def checkpoints(self, name: str) -> Path:
        """Trainer checkpoints of an unfinished run (git-ignored, not a pipeline output)."""
        return self.root / "checkpoints" / name

    def report(self) -> Path:
        return self.root / "report"

    def teacher_outputs(self, task: str) -> list[Path]:
        """What the teacher stage writes (the cache's split folders as `cache/<task>/*`)."""
        return [self.teacher_model(task), self.teacher_metrics(task), self.predictions(f"teacher-{task}"),
                self.log(f"teacher-{task}"), self.cache(task) / "*"]

    def student_outputs(self, task: str, run: str) -> list[Path]:
        return [self.student_model(task, run), self.student_metrics(run), self.predictions(run), self.log(run),
                self.attention(run)]


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
