"""Issue 29: faults at run time (a damaged teacher, Ctrl-C and SIGTERM, a full disk, a truncated checkpoint, a
teacher folder that cannot work, validation examples in the training data): one clear line, and nothing damaged
taken for good.

Real files, real signals, a real file size limit (`RLIMIT_FSIZE`, as `ulimit -f` sets it, with SIGXFSZ ignored so
the write fails with EFBIG as on a full disk).
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from alpkd.paths import Layout, Run
from helpers import REPO, SMOKE, TASK, one_line_error, params_file, run_cli

SEED = "42"


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "alpkd", *args]


def _copy_root(teacher_root: Path, dest: Path) -> Path:
    shutil.copytree(teacher_root, dest)
    return dest


def _flip(path: Path, at: int, n: int = 16) -> None:
    """Change `n` bytes of a file in place (its size kept): what a bad disk or a stray write does."""
    body = bytearray(path.read_bytes())
    body[at:at + n] = bytes(b ^ 0xFF for b in body[at:at + n])
    path.write_bytes(bytes(body))


# --- 1. a damaged teacher is refused, never cached nor taught from ------------------------------------------------
def test_teacher_record_holds_its_weights_fingerprint(teacher_root):
    from alpkd import cache

    layout = Layout(teacher_root)
    record = json.loads(layout.teacher_metrics(TASK, 42).read_text())
    assert record["weights_fingerprint"] == cache.model_fingerprint(layout.teacher_model(TASK, 42))
    assert set(record["weights_sha256"]) == {"model.safetensors", "config.json"}


def test_damaged_teacher_is_refused_by_distill_cache_and_evaluate(teacher_root, tmp_path):
    root = _copy_root(teacher_root, tmp_path / "out")
    layout = Layout(root)
    shutil.rmtree(root / "models" / TASK / f"{TASK}-1", ignore_errors=True)  # students other tests trained there
    weights = layout.teacher_model(TASK, 42) / "model.safetensors"
    _flip(weights, weights.stat().st_size // 2)
    meta = layout.cache(TASK, 42) / "train" / "meta.json"
    before = meta.read_text()
    params = str(params_file(tmp_path / "p"))
    line = one_line_error(run_cli("--params", params, "--out", str(root), "cache", "--task", TASK, "--seed", SEED,
                                  cwd=tmp_path), 1)
    assert str(weights) in line and "not the ones it was trained with" in line and "teacher@rte" in line, line
    assert meta.read_text() == before  # the stale cache was not replaced by one of the damaged teacher
    line = one_line_error(run_cli("--params", params, "--out", str(root), "distill", "--task", TASK, "--depth", "1",
                                  "--method", "kd", "--seed", SEED, cwd=tmp_path), 1)
    assert str(weights) in line and f"--out {root} teacher --task rte --seed 42" in line, line
    assert not (layout.student_model(Run(TASK, 1, "kd", 42))).exists()
    line = one_line_error(run_cli("--params", params, "--out", str(root), "evaluate", "--task", TASK, "--model",
                                  str(layout.teacher_model(TASK, 42)), cwd=tmp_path), 1)
    assert str(weights) in line, line


def test_a_teacher_without_a_record_is_used_as_before(teacher_root, tmp_path, smoke_params):
    """A teacher folder put there by hand (no metrics record): nothing to check it against, so nothing is said."""
    from alpkd import teachers

    root = _copy_root(teacher_root, tmp_path / "out")
    Layout(root).teacher_metrics(TASK, 42).unlink()
    assert teachers.write_cache(smoke_params, TASK, root, 42).is_dir()


@pytest.mark.parametrize("value", [17, None])
def test_teacher_record_with_a_fingerprint_of_the_wrong_type(teacher_root, tmp_path, value):
    root = _copy_root(teacher_root, tmp_path / "out")
    path = Layout(root).teacher_metrics(TASK, 42)
    record = json.loads(path.read_text())
    record["weights_sha256"] = value
    path.write_text(json.dumps(record))
    line = one_line_error(run_cli("--params", str(params_file(tmp_path / "p")), "--out", str(root), "cache", "--task",
                                  TASK, "--seed", SEED, cwd=tmp_path), 1)
    assert str(path) in line and "damaged" in line, line


def test_teacher_record_that_is_not_a_record(teacher_root, tmp_path):
    from alpkd.evaluation import ModelError, verify_teacher

    root = _copy_root(teacher_root, tmp_path / "out")
    Layout(root).teacher_metrics(TASK, 42).write_text("[]")
    with pytest.raises(ModelError, match=r"s42\.json: damaged \(a JSON list, not a record\); re-run the teacher"):
        verify_teacher(Layout(root).teacher_model(TASK, 42), "re-run the teacher stage")


def test_unreadable_teacher_record_is_one_line(teacher_root, tmp_path):
    root = _copy_root(teacher_root, tmp_path / "out")
    path = Layout(root).teacher_metrics(TASK, 42)
    path.write_text(path.read_text()[:40])
    line = one_line_error(run_cli("--params", str(params_file(tmp_path / "p")), "--out", str(root), "distill",
                                  "--task", TASK, "--depth", "1", "--method", "kd", "--seed", SEED, cwd=tmp_path), 1)
    assert str(path) in line and "damaged (JSONDecodeError)" in line, line


# --- 2. Ctrl-C and SIGTERM: one line, exit 128 + signal, and the re-run resumes to the same weights --------------
def _long(tmp_path: Path, **runtime) -> Path:
    raw = yaml.safe_load(SMOKE.read_text())
    raw["teacher"]["epochs"] = 12  # 36 steps, a checkpoint every 2: time to interrupt it
    raw["distill"]["epochs"] = 12
    raw["runtime"].update(runtime)
    return params_file(tmp_path, raw)


def _complete_checkpoint(folder: Path, pattern: str) -> Path | None:
    for state in sorted(folder.glob(f"{pattern}/checkpoint-*/trainer_state.json")):
        try:
            json.loads(state.read_text())
            return state.parent
        except (OSError, ValueError):
            continue
    return None


def _stop_after_checkpoint(cmd: list[str], root: Path, pattern: str, signum: int) -> subprocess.CompletedProcess:
    # SIGINT back to its default in the child: a test run started in the background of a script (`pytest &`)
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt for it
    proc = subprocess.Popen(cmd, cwd=root.parent, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and _complete_checkpoint(root / "checkpoints", pattern) is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture(scope="module")
def long_teacher(tmp_path_factory) -> tuple[Path, Path]:
    """(params, output root) of an uninterrupted long teacher run of seed 42."""
    base = tmp_path_factory.mktemp("long")
    params = _long(base)
    root = base / "clean"
    done = subprocess.run(_cli("--params", str(params), "--out", str(root), "teacher", "--task", TASK, "--seed", SEED),
                          cwd=base, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return params, root


def _same_weights(a: Path, b: Path) -> None:
    from safetensors.numpy import load_file

    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert x.keys() == y.keys()
    for key in x:
        assert (x[key] == y[key]).all(), key


def _nothing_looks_finished(root: Path) -> None:
    layout = Layout(root)
    assert not layout.teacher_model(TASK, 42).exists()
    assert not layout.teacher_metrics(TASK, 42).exists()
    assert not list(root.rglob(".*.tmp-*")), list(root.rglob(".*.tmp-*"))


# SIGQUIT (Ctrl-\\) ends a step as SIGINT does; SIGPIPE (a reader that went away, e.g. `| head`) and SIGXCPU
# (`ulimit -t`) are installed by the same call (`__main__._interrupt_on`), so one training run each is not repeated here
# (two minutes each; tests/test_reading.py closes a step's pipe)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGQUIT])
def test_interrupted_teacher_is_one_line_and_resumes_to_the_same_weights(long_teacher, tmp_path, signum):
    params, clean = long_teacher
    root = tmp_path / "out"
    cmd = _cli("--params", str(params), "--out", str(root), "teacher", "--task", TASK, "--seed", SEED)
    result = _stop_after_checkpoint(cmd, root, f"teacher-{TASK}-s42-*", signum)
    line = one_line_error(result, 128 + signum)
    name = signal.Signals(signum).name
    assert f"teacher: interrupted by {name}" in line and "re-run the same command" in line.lower(), line
    assert "checkpoint-" in line, line
    _nothing_looks_finished(root)
    again = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    record = json.loads(again.stdout)
    assert record["resumed_from_step"] >= 2 and record["train_steps"] == 36
    _same_weights(Layout(root).teacher_model(TASK, 42), Layout(clean).teacher_model(TASK, 42))


def test_sigterm_during_distill_is_one_line_and_the_rerun_resumes(teacher_root, tmp_path):
    root = _copy_root(teacher_root, tmp_path / "out")
    params = _long(tmp_path / "p")
    cmd = _cli("--params", str(params), "--out", str(root), "distill", "--task", TASK, "--depth", "1", "--method",
               "alp", "--seed", SEED)
    result = _stop_after_checkpoint(cmd, root, f"{TASK}-1-alp-s42-*", signal.SIGTERM)
    line = one_line_error(result, 128 + signal.SIGTERM)
    assert "distill: interrupted by SIGTERM" in line and "checkpoint-" in line, line
    assert not Layout(root).student_metrics(Run(TASK, 1, "alp", 42)).exists()
    assert not list(root.rglob(".*.tmp-*"))
    again = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["alp"][0]["resumed_from_step"] >= 2


# --- 3. a full disk (a file size limit): one line naming the file, no temporary left ------------------------------
def _limited(limit: int):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def test_a_checkpoint_that_finds_no_room_is_one_line(teacher_root, tmp_path):
    """The Trainer's first checkpoint (its weights, 4 MB) is written past a 2 MB limit: SafetensorError before."""
    root = tmp_path / "out"
    shutil.copytree(teacher_root / "data", root / "data")
    params = _long(tmp_path / "p")
    cmd = _cli("--params", str(params), "--out", str(root), "teacher", "--task", TASK, "--seed", SEED)
    result = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600,
                            preexec_fn=_limited(2_000_000))
    line = one_line_error(result, 1)
    assert "file too large" in line and "re-run the same command" in line, line
    assert f"{root / 'checkpoints'}/teacher-{TASK}-s42-" in line and "/checkpoint-2/model.safetensors" in line, line
    _nothing_looks_finished(root)
    assert not list((root / "checkpoints").glob("*/checkpoint-*"))  # the one cut short is removed


_SAVE = """
import sys
from alpkd.evaluation import load_saved
from alpkd.records import save_model
from alpkd.paths import WriteError
tokenizer, model = load_saved(sys.argv[1], "")
try:
    save_model(model, tokenizer, sys.argv[2])
except WriteError as err:
    print(err)
"""


def test_a_saved_model_that_finds_no_room_names_its_file(teacher_root, tmp_path):
    """The atomic-write helper (every output but the Trainer's checkpoints): the file named, no temporary left."""
    dest = tmp_path / "models" / "s42"
    result = subprocess.run([sys.executable, "-c", _SAVE, str(Layout(teacher_root).teacher_model(TASK, 42)),
                             str(dest)], env=_env(), capture_output=True, text=True, timeout=300,
                            preexec_fn=_limited(2_000_000))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith(f"{dest}/model.safetensors: cannot be written (file too large"), result.stdout
    assert list(dest.parent.iterdir()) == []


def test_replace_atomically_removes_its_temporary_on_a_failed_write(tmp_path):
    from alpkd.paths import replace_atomically

    def write(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "weights").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replace_atomically(tmp_path / "model", write)
    assert list(tmp_path.iterdir()) == []


# --- 4. a truncated checkpoint: the re-run falls back, with a warning naming the file ------------------------------
@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt"])
def test_truncated_checkpoint_falls_back_with_a_warning(long_teacher, tmp_path, name):
    params, clean = long_teacher
    root = tmp_path / "out"
    cmd = _cli("--params", str(params), "--out", str(root), "teacher", "--task", TASK, "--seed", SEED)
    _stop_after_checkpoint(cmd, root, f"teacher-{TASK}-s42-*", signal.SIGKILL)
    ckpt = _complete_checkpoint(root / "checkpoints", f"teacher-{TASK}-s42-*")
    damaged = ckpt / name
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    again = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    warnings = [l for l in again.stderr.splitlines() if l.startswith("warning: ")]
    assert any(str(damaged) in l and "damaged" in l for l in warnings), again.stderr[-3000:]
    assert json.loads(again.stdout)["train_steps"] == 36
    _same_weights(Layout(root).teacher_model(TASK, 42), Layout(clean).teacher_model(TASK, 42))


# --- 5. `check` reads what it can of a teacher folder ---------------------------------------------------------------
def _folder_teacher(folder: Path, num_labels: int, weights: bool = True) -> Path:
    from transformers import AutoModelForSequenceClassification

    from alpkd.config import Tiny
    from alpkd.students import load_tokenizer, tiny_config

    tokenizer = load_tokenizer("tiny")
    AutoModelForSequenceClassification.from_config(tiny_config(Tiny(), num_labels, len(tokenizer))).save_pretrained(
        folder)
    tokenizer.save_pretrained(folder)
    if not weights:
        (folder / "model.safetensors").unlink()
    return folder


def _params_with_teacher(tmp_path: Path, folder: Path) -> Path:
    raw = yaml.safe_load(SMOKE.read_text())
    raw["teacher"]["model"] = str(folder)
    return params_file(tmp_path / "p", raw)


def test_check_refuses_a_teacher_folder_without_weights(tmp_path):
    folder = _folder_teacher(tmp_path / "teacher", 2, weights=False)
    params = _params_with_teacher(tmp_path, folder)
    line = one_line_error(run_cli("--params", str(params), "check", cwd=tmp_path), 2)
    assert f"teacher.model = '{folder}'" in line and "no weights file" in line and "model.safetensors" in line, line
    line = one_line_error(run_cli("--params", str(params), "--out", str(tmp_path / "out"), "teacher", "--task", TASK,
                                  cwd=tmp_path), 2)
    assert "no weights file" in line, line


def test_check_refuses_a_teacher_folder_whose_classifier_has_other_labels(tmp_path):
    folder = _folder_teacher(tmp_path / "teacher", 3)
    line = one_line_error(run_cli("--params", str(_params_with_teacher(tmp_path, folder)), "check", cwd=tmp_path), 2)
    assert "classifier of 3 output(s)" in line and "task 'rte' has 2 label(s)" in line, line


def test_check_accepts_a_teacher_folder_with_the_tasks_labels(tmp_path):
    folder = _folder_teacher(tmp_path / "teacher", 2)
    result = run_cli("--params", str(_params_with_teacher(tmp_path, folder)), "check", cwd=tmp_path)
    assert result.returncode == 0 and "valid" in result.stdout, result.stderr


def test_check_refuses_a_teacher_folder_without_a_tokenizer(tmp_path):
    folder = _folder_teacher(tmp_path / "teacher", 2)
    for name in ("tokenizer.json", "vocab.txt"):
        (folder / name).unlink(missing_ok=True)
    line = one_line_error(run_cli("--params", str(_params_with_teacher(tmp_path, folder)), "check", cwd=tmp_path), 2)
    assert "no tokenizer" in line, line


# --- 6. validation examples that are also training examples: a warning with the count ------------------------------
def test_validation_examples_in_the_training_file_are_counted_in_a_warning(tmp_path):
    (tmp_path / "custom").mkdir()
    train = "".join(f"review number {i},{i % 2}\n" for i in range(10))
    dev = "".join(f"review number {i},{i % 2}\n" for i in range(7, 13))  # 7, 8, 9 are training examples
    (tmp_path / "custom" / "train.csv").write_text("text,label\n" + train)
    (tmp_path / "custom" / "dev.csv").write_text("text,label\n" + dev)
    raw = yaml.safe_load(SMOKE.read_text())
    raw["custom_tasks"] = {"reviews": {"train": "custom/train.csv", "validation": "custom/dev.csv",
                                       "text_columns": ["text"], "num_labels": 2, "metrics": ["accuracy"]}}
    raw["data"]["tasks"] = ["reviews"]
    params = params_file(tmp_path, raw)
    for args in (["check"], ["--out", str(tmp_path), "data", "--task", "reviews"]):
        result = run_cli("--params", str(params), *args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        warnings = [l for l in result.stderr.splitlines() if l.startswith("warning: ")]
        assert len(warnings) == 1 and "3 of 6 validation examples also appear in the training data" in warnings[0], \
            result.stderr[-3000:]


# --- 7. the same families elsewhere ------------------------------------------------------------------------------
def _checkpoint(folder: Path, step: int) -> Path:
    import numpy as np
    from safetensors.numpy import save_file

    ckpt = folder / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    save_file({"w": np.arange(1000, dtype=np.float32)}, ckpt / "model.safetensors")
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return ckpt


@pytest.mark.parametrize("damage", ["truncated weights", "state not a dict", "attention history cut"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys, damage):
    from alpkd.trainer import last_complete_checkpoint

    older = _checkpoint(tmp_path, 2)
    newer = _checkpoint(tmp_path, 4)
    if damage == "truncated weights":
        damaged = newer / "model.safetensors"
        damaged.write_bytes(damaged.read_bytes()[:2000])
    elif damage == "state not a dict":
        damaged = newer / "trainer_state.json"
        damaged.write_text("[]")
    else:
        damaged = newer / "attention_history.json"
        damaged.write_text('[{"step": 0, "weights"')
    assert last_complete_checkpoint(tmp_path) == str(older)
    assert not newer.exists()
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {damaged}: damaged") and f"resuming from {older}" in err, err


@pytest.mark.parametrize("field, value", [("key", ["a"]), ("sha256", "x"), ("files", None)])
def test_cache_manifest_field_of_the_wrong_type_is_a_cache_error(tmp_path, field, value):
    import numpy as np

    from alpkd import cache

    folder = Layout(tmp_path).cache(TASK, 42)
    cache.write(folder, "train", {"k": 1}, np.zeros((3, 2)), np.zeros((3, 2, 4)))
    meta = json.loads((folder / "train" / "meta.json").read_text())
    meta[field] = value
    meta["key_sha256"] = cache._canonical_sha256(meta["key"])
    meta["manifest_sha256"] = cache._manifest_sha256(meta)  # a manifest consistent with itself: its checksum passes
    (folder / "train" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(cache.CacheError, match=r"damaged meta\.json \(a field of the wrong type\); rebuild it"):
        cache.load(folder, "train", {"k": 1})
