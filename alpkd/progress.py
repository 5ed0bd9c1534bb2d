"""Progress lines: one short line per event, on the terminal that started the run, never in stdout or a notebook.

    09:12:03 teacher sst2 s42  step 120/564  loss 0.41  62 s  ETA 3 min
    09:12:17 distill sst2-3  alp  seed 2  [13/24]  14.8 s  acc 77.9  stage ETA 3 min

`log(msg)` writes such a line; `ProgressCallback` is a `transformers.TrainerCallback` that calls it during
training; `unit_done` reports one finished run of a stage. On by default; `ALPKD_PROGRESS=0` turns them off.
`ALPKD_PROGRESS_FILE=<path>` appends them to that file instead.

Where the lines go, and why. stdout is the CLI's JSON record, so never stdout. Under papermill (every stage of
`dvc.yaml`) the code runs in an ipykernel child process, and the executed notebook must stay free of these lines.
Measured with papermill 2.7, nbclient 0.11, jupyter_client 8.10, ipykernel 7.4 (a notebook writing one line
each way, `papermill t.ipynb out.ipynb 2>err`):

- `sys.stderr`, `sys.__stderr__`, `os.write(2, ...)` and `open('/dev/stderr')` all land in the notebook's
  outputs: ipykernel captures file descriptor 2 itself (`dup2` of a pipe onto fd 2, read by a thread that
  forwards to the notebook and echoes to the original stream). They also reach papermill's stderr through that
  echo, but not only there.
- `/dev/tty` does not exist when there is no terminal (CI, `dvc queue` workers): not an option.
- `os.write(sys.stderr.fileno(), ...)` reaches papermill's stderr and *not* the notebook: ipykernel's
  `OutStream.fileno()` returns its `dup` of the original fd 2, made before the capture, which the capture
  thread only writes to. In a plain process (the CLI, pytest) `sys.stderr.fileno()` is 2 itself.

- ipykernel skips that capture when `PYTEST_CURRENT_TEST` is set (nbval): there fd 2 is not captured and
  `sys.stderr.fileno()` raises.

So `log` writes to `sys.stderr.fileno()`; where a stream has no file descriptor (a kernel that does not
capture fds, pytest's `capsys`) it falls back to `sys.__stderr__`, the process's own stderr, which in such a
kernel is not captured either. `tests/test_progress.py` checks both papermill cases on a small notebook.
"""
from __future__ import annotations

import io
import os
import sys
import time
from typing import Callable

from transformers import TrainerCallback


def enabled() -> bool:
    return os.environ.get("ALPKD_PROGRESS", "1").strip() != "0"


def duration(seconds: float) -> str:
    """Short and readable at every scale: `4.2 s`, `62 s`, `3 min`, `1.6 h`."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def eta(done: float, total: float | None, elapsed: float) -> float | None:
    """Seconds left by linear extrapolation of `elapsed` over `done` of `total`; None when it cannot be told."""
    if not total or total <= 0 or done <= 0 or elapsed < 0:  # TrainerState.max_steps is 0 until training starts
        return None
    return max(0.0, elapsed / done * (total - done))


def training_line(label: str, step: int, max_steps: int | None, loss: float | None, elapsed: float) -> str:
    known = bool(max_steps and max_steps > 0)
    parts = [label, f"step {step}/{max_steps}" if known else f"step {step}"]
    if loss is not None:
        parts.append(f"loss {loss:.2f}")
    parts.append(duration(elapsed))
    left = eta(step, max_steps, elapsed)
    if left is not None and known and step < max_steps:
        parts.append(f"ETA {duration(left)}")
    return "  ".join(parts)


def _score(score) -> str | None:
    # a (name, value) pair is a GLUE metric as the records hold it (a fraction) and is shown x100, as the report
    if score is None:
        return None
    if isinstance(score, str):
        return score
    name, value = score
    return f"{name} {100 * value:.1f}"


def unit_line(stage: str, k: int, n: int, label: str, seconds: float, score=None,
              elapsed_stage: float | None = None) -> str:
    """`distill sst2-3  alp  seed 2  [13/24]  14.8 s  acc 77.9  stage ETA 3 min` (k of n units are done)."""
    parts = [stage, label, f"[{k}/{n}]", duration(seconds)]
    if (text := _score(score)) is not None:
        parts.append(text)
    if elapsed_stage is not None:
        if k >= n:
            parts.append(f"stage done in {duration(elapsed_stage)}")
        elif (left := eta(k, n, elapsed_stage)) is not None:
            parts.append(f"stage ETA {duration(left)}")
    return "  ".join(p for p in parts if p)


def _write(text: str) -> None:
    path = os.environ.get("ALPKD_PROGRESS_FILE")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
        return
    data = text.encode("utf-8", errors="replace")
    try:
        fd = sys.stderr.fileno()  # in an ipykernel: the original fd 2, before its capture (see the docstring)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        stream = sys.__stderr__ or sys.stderr
        stream.write(text)
        stream.flush()
        return
    while data:  # os.write may write less than asked
        data = data[os.write(fd, data):]


def log(msg: str) -> None:
    """One line, prefixed with the local time, on the run's stderr (see the module docstring); off if disabled."""
    if not enabled():
        return
    try:
        _write(f"{time.strftime('%H:%M:%S')} {msg}\n")
    except (OSError, ValueError):  # a closed or broken stderr must not stop a training run over a progress line
        pass


def last_loss(log_history: list[dict]) -> float | None:
    for entry in reversed(log_history or []):
        if "loss" in entry:
            return float(entry["loss"])
    return None


class ProgressCallback(TrainerCallback):
    """A progress line at most every `every_s` seconds, and one at the end of each epoch.

    Only the main process prints (under DDP every rank runs the callbacks). `clock` is injectable for tests.
    """

    def __init__(self, label: str, every_s: float = 30, clock: Callable[[], float] = time.monotonic):
        self.label, self.every_s, self.clock = label, every_s, clock
        self.start = self.last = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = self.last = self.clock()

    def _line(self, state) -> None:
        now = self.clock()
        if self.start is None:  # a callback added after training began
            self.start = now
        self.last = now
        if state.is_world_process_zero:
            log(training_line(self.label, state.global_step, state.max_steps, last_loss(state.log_history),
                              now - self.start))

    def on_step_end(self, args, state, control, **kwargs):
        if self.last is None or self.clock() - self.last >= self.every_s:
            self._line(state)

    def on_epoch_end(self, args, state, control, **kwargs):
        self._line(state)


def unit_done(stage: str, k: int, n: int, label: str, seconds: float, score=None,
              elapsed_stage: float | None = None) -> None:
    """Report the k-th of n runs of a stage as finished (`score`: a string, or a (name, fraction) pair)."""
    log(unit_line(stage, k, n, label, seconds, score, elapsed_stage))


def headline(record: dict):
    """(metric, score) of a run's record for `unit_done`, or None where there is no score."""
    score = record.get("score")
    return None if score is None else (record.get("headline", "score"), score)
