"""Where each output of the pipeline lives, relative to an output root (the repository for `dvc repro`)."""
from __future__ import annotations

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
