"""alpkd.numerics: CPU arithmetic pinned before torch loads, checked after, recorded; and the teacher pairing."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import REPO, SMOKE, TASK, run_cli

from alpkd import numerics

PINNED = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT", "ONEDNN_MAX_CPU_ISA": "AVX2",
          "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
RECORDED = {**PINNED, "OMP_WAIT_POLICY": "PASSIVE"}  # what a record names: the pinned variables and the pace one


def _runtime(**kw):
    from alpkd.config import Runtime

    return Runtime(**kw)


def _clean_env() -> dict:
    """This process's environment without the numerics variables (conftest pinned them for the tests)."""
    env = {k: v for k, v in os.environ.items() if k not in numerics.VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def test_settings_name_every_variable():
    assert numerics.settings(_runtime(numerics="portable", threads=2)) == PINNED
    assert numerics.settings(_runtime(numerics="native", threads=3)) == {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3"}
    assert numerics.settings(_runtime(numerics="native", threads=None)) == {}


def test_portable_needs_a_thread_count(smoke_raw):
    from alpkd import config

    smoke_raw["runtime"]["threads"] = None
    with pytest.raises(config.ConfigError, match="runtime.threads = None: numerics 'portable' needs a fixed"):
        config.validate(smoke_raw)
    smoke_raw["runtime"]["numerics"] = "fast"
    with pytest.raises(config.ConfigError, match="runtime.numerics = 'fast'"):
        config.validate(smoke_raw)


def test_pin_refuses_when_torch_is_already_loaded_otherwise(monkeypatch):
    import torch  # noqa: F401 - loaded, as in this test process

    monkeypatch.delenv("MKL_CBWR")
    with pytest.raises(numerics.NumericsError, match="MKL_CBWR=AVX2,STRICT before torch is imported"):
        numerics.pin(_runtime())
    with pytest.raises(numerics.NumericsError, match="MKL_CBWR=AVX2,STRICT are not set in this process"):
        numerics.check(_runtime())
    monkeypatch.setenv("MKL_CBWR", "AVX2,STRICT")
    assert numerics.pin(_runtime()) == PINNED  # already in place (as for a child of a pinned process): fine


def test_pin_before_torch_takes_effect_in_a_fresh_process():
    code = ("from alpkd import config, numerics; p = config.load(%r); numerics.pin(p.runtime); import torch; "
            "import json; print(json.dumps(numerics.check(p.runtime)))" % str(SMOKE))
    out = subprocess.run([sys.executable, "-c", code], env=_clean_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    described = json.loads(out.stdout)
    assert (described["numerics"], described["cpu_capability"], described["threads"]) == ("portable", "AVX2", 2)
    assert described["variables"] == RECORDED and described["cpu"]
    # the variable is what changes the kernels: another value gives another ISA in a fresh process
    env = _clean_env() | {"ATEN_CPU_CAPABILITY": "default"}
    other = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert other.stdout.strip() == "DEFAULT"


@pytest.mark.slow
def test_a_cli_step_pins_its_own_process(tmp_path):
    # started without the variables: the step sets them from the params file before torch loads
    env = _clean_env()
    result = subprocess.run([sys.executable, "-m", "alpkd", "--params", str(SMOKE), "--out", str(tmp_path),
                             "teacher", "--task", TASK, "--seed", "43"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(result.stdout)
    assert record["seed"] == 43
    env_rec = record["environment"]
    assert (env_rec["numerics"], env_rec["cpu_capability"], env_rec["threads"]) == ("portable", "AVX2", 2)
    assert env_rec["variables"] == RECORDED
    on_disk = json.loads((tmp_path / "metrics" / "teacher" / TASK / "s43.json").read_text())
    assert on_disk["environment"] == env_rec
    assert not (tmp_path / "metrics" / "teacher" / TASK / "s42.json").exists()  # --seed: that teacher only


_TRAIN_TINY = r"""
import hashlib, os, sys
from types import SimpleNamespace
from alpkd import numerics
runtime = SimpleNamespace(numerics="portable", threads=2)
numerics.pin(runtime)
import torch
from transformers import BertConfig, BertForSequenceClassification
numerics.check(runtime)
torch.manual_seed(0)
model = BertForSequenceClassification(BertConfig(vocab_size=500, hidden_size=128, num_hidden_layers=2,
                                                 num_attention_heads=2, intermediate_size=512))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
g = torch.Generator().manual_seed(0)
for _ in range(3):
    ids = torch.randint(5, 500, (16, 32), generator=g)
    model(input_ids=ids, labels=torch.randint(0, 2, (16,), generator=g)).loss.backward()
    opt.step()
    opt.zero_grad()
print(os.environ["OMP_WAIT_POLICY"], hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest())
"""


def test_the_wait_policy_is_set_unless_the_user_chose_one_and_changes_no_bit():
    # how a waiting OpenMP thread passes its time (sleep or spin) is pace, not arithmetic: the same weights
    runs = {}
    for chosen in (None, "ACTIVE"):
        env = _clean_env() | ({"OMP_WAIT_POLICY": chosen} if chosen else {})
        out = subprocess.run([sys.executable, "-c", _TRAIN_TINY], env=env, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        policy, digest = out.stdout.split()
        runs[policy] = digest
    assert set(runs) == {"PASSIVE", "ACTIVE"} and runs["PASSIVE"] == runs["ACTIVE"]


def test_teacher_pairing_is_balanced_and_named(smoke_raw):
    from alpkd import config

    smoke_raw["teacher"]["seeds"] = [42, 43, 44]
    smoke_raw["distill"]["seeds"] = [1, 2, 3, 4, 5, 6]
    params = config.validate(smoke_raw)
    assert [params.teacher_seed(s) for s in (1, 2, 3, 4, 5, 6)] == [42, 43, 44, 42, 43, 44]
    with pytest.raises(config.ConfigError, match="student seed 7 is not in distill.seeds"):
        params.teacher_seed(7)
    smoke_raw["distill"]["seeds"] = [1, 2, 3, 4]
    with pytest.raises(config.ConfigError, match=r"distill.seeds = \[1, 2, 3, 4\]: 4 student seeds cannot be shared "
                                                 r"equally by the 3 teachers"):
        config.validate(smoke_raw)
    smoke_raw["distill"]["seeds"] = [1, 2, 3]
    smoke_raw["teacher"]["seeds"] = [42, 42, 44]
    with pytest.raises(config.ConfigError, match="teacher.seeds = \\[42, 42, 44\\]: 42 is listed twice"):
        config.validate(smoke_raw)
    smoke_raw["teacher"]["seeds"] = [-1, 2**32, 44]
    with pytest.raises(config.ConfigError, match="teacher.seeds.0 = -1"):
        config.validate(smoke_raw)


def test_cli_refuses_seeds_outside_the_lists(tmp_path):
    result = run_cli("--params", str(SMOKE), "--out", str(tmp_path), "teacher", "--task", TASK, "--seed", "7")
    assert result.returncode == 2 and "--seed 7 is not in teacher.seeds [42, 43]" in result.stderr
    result = run_cli("--params", str(SMOKE), "--out", str(tmp_path), "distill", "--task", TASK, "--depth", "1",
                     "--seed", "7")
    assert result.returncode == 2 and "--seed 7 is not in distill.seeds [42, 43]" in result.stderr


def test_attention_snapshots_are_a_fixed_number_whatever_the_length():
    from types import SimpleNamespace

    from alpkd.trainer import AttentionHistory, snapshot_steps

    assert snapshot_steps(3, 20) == [1, 2, 3]
    assert snapshot_steps(564, 20)[-1] == 564 and len(snapshot_steps(564, 20)) == 20
    assert snapshot_steps(0, 5) == []
    for max_steps in (50, 564, 5000):  # the number of forward passes on the probe batch does not grow
        calls = []
        history = AttentionHistory(20, lambda: calls.append(1) or (_Array(), _Array()))
        state = SimpleNamespace(max_steps=max_steps, global_step=0)
        history.on_train_begin(None, state, None)
        for step in range(1, max_steps + 1):
            state.global_step = step
            history.on_step_end(None, state, None)
        assert len(calls) == 21
        assert [h["step"] for h in history.history] == [0, *snapshot_steps(max_steps, 20)]


class _Array:
    def tolist(self):
        return []


@pytest.mark.parametrize("profile", ["params.yaml", "profiles/mini-all-methods.yaml", "profiles/smoke.yaml"])
def test_validating_a_profile_imports_no_torch(profile):
    # the CLI validates params.yaml, then pins the numerics, then imports torch: validation must not load it
    # (reading MiniLM's config once did, through alpkd.students, and the default run's first stage refused to run)
    code = ("import sys; from alpkd import config; config.load(%r); "
            "print('torch' in sys.modules, 'transformers' in sys.modules)" % profile)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_clean_env(), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False"]


def test_the_default_profile_data_step_pins_and_runs(tmp_path):
    env = _clean_env()
    result = subprocess.run([sys.executable, "-m", "alpkd", "--params", "params.yaml", "--out", str(tmp_path), "data",
                             "--task", "sst2"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["task"] == "sst2"
