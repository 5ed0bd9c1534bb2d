"""The GLUE tasks of the paper: text columns, labels, validation splits and metrics."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    name: str
    text_columns: tuple[str, ...]
    num_labels: int  # 1 means regression (STS-B)
    metrics: tuple[str, ...]  # names understood by alpkd.metrics.compute
    headline: str  # the metric reported in tables
    validation_splits: tuple[str, ...] = ("validation",)
    label_column: str = "label"
    files: tuple[tuple[str, str], ...] = ()  # (split, path) of a user's own task; empty for GLUE

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1


GLUE_TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("cola", ("sentence",), 2, ("matthews",), "matthews"),
        Task("sst2", ("sentence",), 2, ("accuracy",), "accuracy"),
        Task("mrpc", ("sentence1", "sentence2"), 2, ("f1", "accuracy"), "f1"),
        Task("stsb", ("sentence1", "sentence2"), 1, ("pearson", "spearman"), "pearson"),
        Task("qqp", ("question1", "question2"), 2, ("f1", "accuracy"), "f1"),
        Task("mnli", ("premise", "hypothesis"), 3, ("accuracy",), "accuracy",
             validation_splits=("validation_matched", "validation_mismatched")),
        Task("qnli", ("question", "sentence"), 2, ("accuracy",), "accuracy"),
        Task("rte", ("sentence1", "sentence2"), 2, ("accuracy",), "accuracy"),
    ]
}


def get_task(name: str, custom: dict[str, Task] | None = None) -> Task:
    """A GLUE task, or one of the user's own tasks (`custom_tasks` in params.yaml)."""
    known = {**GLUE_TASKS, **(custom or {})}
    try:
        return known[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; allowed: {', '.join(known)}") from None
