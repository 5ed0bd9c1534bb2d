"""Progress lines: their wording and ETA, stderr only, and out of the notebooks papermill executes."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO
from alpkd import progress

TIME = r"\d\d:\d\d:\d\d "  # the prefix of every line


@pytest.fixture(autouse=True)
def _progress_on(monkeypatch):
    monkeypatch.delenv("ALPKD_PROGRESS", raising=False)
    monkeypatch.delenv("ALPKD_PROGRESS_FILE", raising=False)


@pytest.mark.parametrize("seconds, text", [(4.24, "4.2 s"), (59.9, "59.9 s"), (62, "62 s"), (119, "119 s"),
                                           (180, "3 min"), (89 * 60, "89 min"), (5760, "1.6 h")])
def test_duration(seconds, text):
    assert progress.duration(seconds) == text


def test_eta_is_linear_and_unknown_before_the_first_step():
    assert progress.eta(120, 564, 62) == pytest.approx(62 / 120 * 444)
    assert progress.eta(564, 564, 300) == 0
    assert progress.eta(0, 564, 5) is None
    assert progress.eta(10, None, 5) is None


def test_training_line():
    line = progress.training_line("teacher sst2 s42", 120, 564, 0.4137, 62)
    assert line == "teacher sst2 s42  step 120/564  loss 0.41  62 s  ETA 4 min"  # 62/120*444 s = 229 s
    # nothing logged yet: no loss; last step: no ETA
    assert progress.training_line("t", 5, 10, None, 2.0) == "t  step 5/10  2.0 s  ETA 2.0 s"
    assert progress.training_line("t", 10, 10, 0.1, 4.0) == "t  step 10/10  loss 0.10  4.0 s"
    assert progress.training_line("t", 3, 0, None, 1.0) == "t  step 3  1.0 s"  # max_steps not known (yet)


def test_unit_line():
    line = progress.unit_line("distill sst2-3", 13, 24, "alp  seed 2", 14.8, ("acc", 0.779), 200)
    assert line == "distill sst2-3  alp  seed 2  [13/24]  14.8 s  acc 77.9  stage ETA 3 min"  # 200/13*11 s
    assert progress.unit_line("distill sst2-3", 24, 24, "kd  seed 3", 15, "acc 78.0", 400).endswith(
        "[24/24]  15.0 s  acc 78.0  stage done in 7 min")
    assert progress.unit_line("teacher sst2", 1, 3, "s42", 300) == "teacher sst2  s42  [1/3]  5 min"


def test_log_goes_to_stderr_only_and_can_be_turned_off(capfd, monkeypatch):
    progress.log("hello")
    out, err = capfd.readouterr()
    assert out == "" and re.fullmatch(TIME + "hello\n", err), (out, err)
    monkeypatch.setenv("ALPKD_PROGRESS", "0")
    progress.log("hidden")
    progress.unit_done("distill rte-1", 1, 1, "kd  seed 1", 1.0)
    assert capfd.readouterr() == ("", "")


def test_log_to_a_file(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("ALPKD_PROGRESS_FILE", str(tmp_path / "progress.log"))
    progress.log("one")
    progress.log("two")
    assert capfd.readouterr() == ("", "")
    lines = (tmp_path / "progress.log").read_text().splitlines()
    assert [line[9:] for line in lines] == ["one", "two"] and all(re.match(TIME, line) for line in lines)


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_callback_prints_at_most_every_every_s_and_at_each_epoch_end(capfd):
    from transformers import TrainerControl, TrainerState, TrainingArguments

    clock = _Clock()
    state = TrainerState(max_steps=100, num_train_epochs=2)
    args, control = TrainingArguments(output_dir="unused", report_to=[]), TrainerControl()
    callback = progress.ProgressCallback("teacher rte s42", every_s=30, clock=clock)
    callback.on_train_begin(args, state, control)
    for step in range(1, 101):
        clock.now += 1.0  # one second a step
        state.global_step = step
        if step % 10 == 0:
            state.log_history.append({"loss": 1.0 / step, "step": step})
        callback.on_step_end(args, state, control)
        if step == 50:
            callback.on_epoch_end(args, state, control)
    callback.on_epoch_end(args, state, control)
    out, err = capfd.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert all(re.match(TIME, line) for line in lines), lines
    steps = [int(re.search(r"step (\d+)/100", line).group(1)) for line in lines]
    assert steps == [30, 50, 80, 100]  # every 30 s, the epoch end at 50 restarting the interval
    assert lines[0].endswith("teacher rte s42  step 30/100  loss 0.03  30.0 s  ETA 70 s")  # loss of step 30
    assert lines[-1].endswith("step 100/100  loss 0.01  100 s")


@pytest.mark.parametrize("under_pytest", [False, True], ids=["as-dvc-runs-it", "as-nbval-runs-it"])
def test_papermill_keeps_progress_out_of_the_executed_notebook(tmp_path, under_pytest):
    """A line logged inside a papermill kernel reaches papermill's stderr and not the .ipynb it writes.

    ipykernel captures fd 2 into the notebook unless PYTEST_CURRENT_TEST is set (then it leaves fds alone):
    a papermill started by dvc must not see that variable, one started under pytest (nbval's case) does.
    """
    papermill = shutil.which("papermill", path=str(Path(sys.executable).parent))
    if papermill is None:
        pytest.skip("needs papermill (pip install -e '.[pipeline]')")
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    # the control line goes to fd 2 as any library's stderr does: it must be captured, or the check proves nothing;
    # the pause lets ipykernel's capture thread forward fd output while the cell still runs
    nb.cells = [nbformat.v4.new_code_cell("import os, time\nfrom alpkd import progress\n"
                                          "progress.log('marker-progress')\nos.write(2, b'marker-fd2\\n')\n"
                                          "print('marker-stdout')\ntime.sleep(1)"),
                nbformat.v4.new_code_cell("time.sleep(1)")]
    nbformat.write(nb, tmp_path / "in.ipynb")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if not under_pytest:
        env.pop("PYTEST_CURRENT_TEST", None)
    result = subprocess.run([papermill, "-k", "python3", str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb")],
                            env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = [o for c in nbformat.read(tmp_path / "out.ipynb", 4).cells for o in c.outputs]
    shown = "".join(o.get("text", "") for o in outputs)
    assert "marker-stdout" in shown  # the kernel's output is captured as usual ...
    assert ("marker-fd2" in shown) == (not under_pytest)  # (and fd 2, which is what makes the check bite)
    assert "marker-progress" not in shown  # ... but not the progress line,
    assert re.search(TIME + "marker-progress", result.stderr)  # which is on papermill's stderr
    assert "marker-progress" not in result.stdout


def test_a_broken_stderr_does_not_stop_the_run(monkeypatch, tmp_path):
    monkeypatch.setenv("ALPKD_PROGRESS_FILE", str(tmp_path / "no" / "such" / "folder" / "log"))
    progress.log("lost")  # no exception: the line is dropped
