"""A kill loses nothing: a killed distillation resumes from its last checkpoint and ends where an
uninterrupted run ends; it never leaves an output that looks finished. Plus 2-process DDP on CPU."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import SMOKE, TASK

from alpkd.paths import Layout, Run

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _root_with_teacher(teacher_root: Path, dest: Path) -> Path:
    for part in ("models", "cache"):
        shutil.copytree(teacher_root / part, dest / part)
    return dest


def _long_params(tmp_path: Path, group_by_length: bool = False) -> Path:
    """The smoke profile trained for more steps (a checkpoint every 2), so there is time to kill it."""
    raw = yaml.safe_load(SMOKE.read_text())
    raw["distill"]["epochs"] = 12  # 36 steps
    raw["runtime"]["save_steps"] = 2
    # the length-grouped order is drawn from (data seed, epoch), so a resume after the first epoch replays it
    raw["runtime"]["group_by_length"] = group_by_length
    raw["student"]["depths"] = [1, 2]  # RAIL-KD needs two student layers to pair one (and TAKD an assistant)
    raw["distill"]["methods"] += ["takd", "dgkd", "ceskd"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


CELL = f"{TASK}-1/alp"


def _cmd(params: Path, root: Path, *extra: str, method: str = "alp", depth: int = 1) -> list[str]:
    return [sys.executable, "-m", "alpkd", "--params", str(params), "--out", str(root), *extra,
            "distill", "--task", TASK, "--depth", str(depth), "--method", method, "--seed", "42"]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _complete(state_file: Path) -> bool:
    """trainer_state.json is written last: a checkpoint counts once that file is whole (parses)."""
    try:
        json.loads(state_file.read_text())
        return True
    except (OSError, ValueError):
        return False


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]


def test_killed_run_resumes_and_matches_uninterrupted(teacher_root, tmp_path):
    params = _long_params(tmp_path)
    killed = _root_with_teacher(teacher_root, tmp_path / "killed")
    clean = _root_with_teacher(teacher_root, tmp_path / "clean")
    run = f"{TASK}-1-alp-s42"

    proc = subprocess.Popen(_cmd(params, killed), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    ckpt = None
    while time.time() < deadline and proc.poll() is None:
        done = [f for f in (killed / "checkpoints").glob(f"{run}-*/checkpoint-*/trainer_state.json") if _complete(f)]
        if done:
            ckpt = sorted(done)[0].parent
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt is not None, "the run finished or failed before writing a checkpoint"
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"

    # a kill in the middle of writing a checkpoint leaves one without trainer_state.json (written last)
    (ckpt.parent / "checkpoint-35").mkdir(exist_ok=True)
    (ckpt.parent / "checkpoint-35" / "config.json").write_text("{}")

    # nothing that looks finished
    assert not (killed / "metrics" / "students" / CELL / "s42.json").exists()
    assert not (killed / "models" / TASK / f"{TASK}-1" / "alp" / "s42").exists()

    _run(_cmd(params, killed))
    _run(_cmd(params, clean))
    resumed = json.loads((killed / "metrics" / "students" / CELL / "s42.json").read_text())
    fresh = json.loads((clean / "metrics" / "students" / CELL / "s42.json").read_text())

    assert 2 <= resumed["resumed_from_step"] < 35  # resumed from a complete checkpoint, not restarted
    assert fresh["resumed_from_step"] == 0
    assert resumed["train_steps"] == fresh["train_steps"] == 36
    assert resumed["metrics"] == fresh["metrics"]
    # the final weights match too, not only the (coarse) accuracy
    from safetensors.numpy import load_file

    a = load_file(killed / "models" / TASK / f"{TASK}-1" / "alp" / "s42" / "model.safetensors")
    b = load_file(clean / "models" / TASK / f"{TASK}-1" / "alp" / "s42" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] == b[key]).all(), key
    assert not list((killed / "checkpoints").glob(f"{run}-*")), "checkpoints are removed once the run is complete"


def test_checkpoints_of_other_settings_are_not_resumed(teacher_root, tmp_path):
    """A checkpoint left by a run with other parameters belongs to another run: it is not resumed."""
    params = _long_params(tmp_path)
    root = _root_with_teacher(teacher_root, tmp_path / "root")
    stray = root / "checkpoints" / f"{TASK}-1-alp-s42-000000000000" / "checkpoint-30"
    stray.mkdir(parents=True)
    (stray / "trainer_state.json").write_text("{}")
    _run(_cmd(params, root))
    record = json.loads((root / "metrics" / "students" / CELL / "s42.json").read_text())
    assert record["resumed_from_step"] == 0


def test_ddp_two_processes_on_cpu(teacher_root, tmp_path):
    root = _root_with_teacher(teacher_root, tmp_path / "ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "alpkd", "--params", str(SMOKE), "--out", str(root), "distill", "--task", TASK, "--depth", "1",
           "--method", "alp", "--seed", "42"]
    done = subprocess.run(cmd, cwd=ROOT, env={**_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    files = list((root / "metrics" / "students").rglob("*.json"))
    assert [f.name for f in files] == ["s42.json"]  # one metrics file: rank 0 writes
    record = json.loads(files[0].read_text())
    assert 0.0 <= record["score"] <= 1.0
    # each process saw half of each global batch: 48 examples, 16 per device and step, 2 devices
    assert record["train_steps"] == 2
    assert not list(root.rglob("*.tmp-*"))


_KILL_AT = """
import os, signal, sys
from transformers import TrainerCallback
from alpkd import __main__ as cli, distill

class Kill(TrainerCallback):  # SIGKILL right after the step that follows checkpoint N
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == int(os.environ["KILL_AFTER"]) + 1:
            os.kill(os.getpid(), signal.SIGKILL)

init = distill.DistillTrainer.__init__
def patched(self, *a, **k):
    init(self, *a, **k)
    self.add_callback(Kill())
distill.DistillTrainer.__init__ = patched
sys.exit(cli.main(sys.argv[1:]))
"""


# RAIL-KD: the resumed epochs must draw the same layers; DGKD the same guides at each step; CES-KD the same experts
@pytest.mark.parametrize("method", ["alp", "rail", "takd", "dgkd", "ceskd"])
def test_resume_after_first_epoch_with_length_grouping(teacher_root, tmp_path, method):
    params = _long_params(tmp_path, group_by_length=True)
    depth = 2 if method == "rail" else 1  # a one-layer RAIL-KD student has no intermediate layer: it is KD
    killed = _root_with_teacher(teacher_root, tmp_path / "killed")
    clean = _root_with_teacher(teacher_root, tmp_path / "clean")
    if method in ("takd", "dgkd", "ceskd"):  # their assistant first: the 2-layer KD student, its logits cached
        _run(_cmd(params, killed, method="kd", depth=2))
        shutil.copytree(killed / "cache" / TASK / f"{TASK}-2", clean / "cache" / TASK / f"{TASK}-2")
    args = _cmd(params, killed, method=method, depth=depth)[3:]
    done = subprocess.run([sys.executable, "-c", _KILL_AT, *args], cwd=ROOT, env={**_env(), "KILL_AFTER": "4"},
                          capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    _run(_cmd(params, killed, method=method, depth=depth))
    _run(_cmd(params, clean, method=method, depth=depth))
    cell = f"{TASK}-{depth}/{method}"
    run = Run(TASK, depth, method, 42)
    resumed = json.loads(Layout(killed).student_metrics(run).read_text())
    assert resumed["resumed_from_step"] == 4
    from safetensors.numpy import load_file

    a = load_file(Layout(killed).student_model(run) / "model.safetensors")
    b = load_file(Layout(clean).student_model(run) / "model.safetensors")
    assert all((a[key] == b[key]).all() for key in a)
    if method == "rail":  # twelve epochs, more than one distinct draw (1 of 3 layers): the resumed run replayed them
        draws = json.loads((killed / "attention" / cell / "s42.json").read_text())["draws"]
        assert len(draws) == 12 and len({tuple(d) for d in draws}) > 1
    if method == "ceskd":  # the curriculum moved during the run: the killed run was resumed in a later pace
        shares = json.loads(Layout(killed).attention(Run(TASK, depth, method, 42)).read_text())["share_by_epoch"]
        assert shares[0] == [1.0, 0.0] and shares[-1] == [0.5, 0.5]


def test_length_grouped_order_depends_on_seed_and_epoch_only():
    """The order a resumed run replays: drawn from (data seed, epoch), not from the global random state."""
    import torch

    from alpkd.distill import SeededLengthGroupedSampler

    lengths = list(np.random.default_rng(0).integers(5, 60, 200))

    def order(seed, epoch, global_seed):
        torch.manual_seed(global_seed)  # what a resume fails to restore at the moment the order is drawn
        sampler = SeededLengthGroupedSampler(16, lengths, seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    first = order(3, 1, global_seed=0)
    assert sorted(first) == list(range(200))  # a permutation of the rows
    assert first == order(3, 1, global_seed=99)
    assert first != order(3, 2, global_seed=0) and first != order(4, 1, global_seed=0)
    # grouped by length: batches of 16 are far more uniform in length than random batches
    spread = lambda idx: np.mean([np.ptp([lengths[i] for i in idx[k:k + 16]]) for k in range(0, 192, 16)])  # noqa: E731
    assert spread(first) < 0.5 * spread(list(np.random.default_rng(1).permutation(200)))
