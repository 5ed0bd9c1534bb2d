"""`runtime.executor: ray`: the students of a stage as Ray tasks (alpkd/executor.py), nothing lost, nothing different.

The fast tests check the parameters and the errors before any model loads. The slow ones start a real two-node Ray
cluster on this machine (two `ray start`, each node with its own temp dir and a custom resource), run the smoke
pipeline's `dvc repro` on it, and compare every student's files with a local run's: the same bytes, but for the
timings in the metrics records. Then a student that fails (the others finish and keep their checkpoints; the re-run
resumes them at their end) and a node lost in the middle of a stage (its students retried on the other node).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers import REPO, SMOKE, TASK, clone_teacher, make_repo, pipeline_env, ran_stages, sh

from alpkd import config, executor, numerics
from alpkd.config import ConfigError

SEEDS = (42, 43)
# what differs between two runs of the same student: how long it took, and whether it resumed
TIMING = {"train_time_s", "eval_time_s", "group_setup_time_s", "resumed_from_step"}


def _raw(**runtime) -> dict:
    raw = yaml.safe_load(SMOKE.read_text())
    raw["distill"]["methods"] = ["kd"]  # the smallest grid: one method, two seeds, one student per node
    raw["runtime"].update(runtime)
    return raw


# --- parameters and errors, before any model loads -----------------------------------------------------------

@pytest.mark.parametrize("key, value, allowed", [("executor", "slurm", "'local' or 'ray'"),
                                                 ("student_gpus", -1, "greater than or equal to 0"),
                                                 ("student_cpus", 0, "greater than 0")])
def test_bad_runtime_values_are_one_config_error(key, value, allowed):
    with pytest.raises(ConfigError) as err:
        config.validate(_raw(**{key: value}))
    assert f"runtime.{key} = {value!r}" in str(err.value) and allowed in str(err.value)


def test_local_is_the_default_and_params_need_no_new_keys():
    runtime = config.load(REPO / "params.yaml").runtime
    assert runtime.executor == "local" and runtime.ray_address is None


def test_ray_not_installed_is_named_before_any_model_loads(monkeypatch, tmp_path):
    from alpkd import distill

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    params = config.validate(_raw(executor="ray"))
    with pytest.raises(ConfigError) as err:  # no teacher in tmp_path: a model load would fail otherwise
        distill.distill_group(params, TASK, 1, tmp_path)
    assert "runtime.executor = 'ray'" in str(err.value) and 'pip install -e ".[ray]"' in str(err.value)


def test_workers_start_with_the_numerics_and_this_checkout():
    runtime = config.validate(_raw(executor="ray", threads=1)).runtime
    env = executor.worker_env(runtime)
    assert {k: env[k] for k in numerics.settings(runtime)} == numerics.settings(runtime)
    assert env["OMP_NUM_THREADS"] == "1" and env["PYTHONPATH"].split(os.pathsep)[0] == str(REPO)
    assert "ALPKD_PROGRESS_FILE" not in env


# --- a real cluster: two nodes on this machine ------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _ray_bin() -> str:
    return str(Path(sys.executable).parent / "ray")


class Cluster:
    """Two `ray start` nodes, each in its own session (so its process group can be killed) and temp dir."""

    def __init__(self, base: Path):
        self.env = dict(os.environ, RAY_AUTH_MODE="disabled")  # Ray 2.60 asks for a token by default
        self.dirs = {"a": Path(f"/tmp/alpkd-ray-{os.getpid()}-a"), "b": Path(f"/tmp/alpkd-ray-{os.getpid()}-b")}
        self.port = _free_port()
        self.address = None
        self.pgids: dict[str, int] = {}

    def start(self, node: str, *args: str) -> None:
        shutil.rmtree(self.dirs[node], ignore_errors=True)  # short paths: Ray's sockets live there (108 bytes)
        proc = subprocess.Popen([_ray_bin(), "start", "--num-cpus", "1", "--num-gpus", "0", "--resources",
                                 json.dumps({f"node_{node}": 1}), "--temp-dir", str(self.dirs[node]),
                                 "--disable-usage-stats", *args], env=self.env, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.pgids[node] = proc.pid  # its own session: raylet, GCS and workers share this process group
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]

    def up(self) -> "Cluster":
        self.start("a", "--head", "--port", str(self.port), "--include-dashboard=false",
                   "--dashboard-port", str(_free_port()))
        host = socket.gethostbyname(socket.gethostname())
        status = subprocess.run([_ray_bin(), "status", "--address", f"127.0.0.1:{self.port}"], env=self.env,
                                capture_output=True, text=True, timeout=300)
        self.address = f"127.0.0.1:{self.port}" if status.returncode == 0 else f"{host}:{self.port}"
        self.start("b", "--address", self.address, "--min-worker-port", "20000", "--max-worker-port", "29999")
        return self

    def processes(self, node: str | None = None) -> list[int]:
        """Our nodes' processes (by temp dir in their command lines), also those that left the process group."""
        nodes = [node] if node else list(self.dirs)
        out = subprocess.run(["pgrep", "-f", "|".join(str(self.dirs[n]) for n in nodes)], capture_output=True,
                             text=True).stdout
        return [int(p) for p in out.split() if int(p) != os.getpid()]

    def kill(self, node: str, only: str | None = None) -> None:
        """SIGKILL a node (its process group and every process of its temp dir), or only its `raylet`."""
        if only:
            for pid in self.processes(node):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] if Path(f"/proc/{pid}").exists() else b""
                if cmd.endswith(only.encode()):
                    os.kill(pid, signal.SIGKILL)
            return
        if node in self.pgids:
            try:
                os.killpg(self.pgids[node], signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in self.processes(node):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def ran(self, node: str) -> set[str]:
        """The students whose training lines a node's workers wrote (`kd  seed 42`): where each student ran."""
        found = set()
        for log in self.dirs[node].glob("session_*/logs/worker-*.err"):
            for line in log.read_text(errors="replace").splitlines():
                if " distill " in f" {line}" and "  step " in line:
                    found.add(line.split("distill ", 1)[1].split("  step ")[0].split("  ", 1)[1])
        return found

    def stop(self) -> None:
        for node in self.dirs:
            self.kill(node)
        deadline = time.time() + 30
        while self.processes() and time.time() < deadline:
            time.sleep(0.5)
        for d in self.dirs.values():
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if shutil.which(_ray_bin()) is None:
        pytest.skip('needs Ray (pip install -e ".[ray]")')
    began = time.perf_counter()
    nodes = Cluster(tmp_path_factory.mktemp("ray"))
    try:
        yield nodes.up()
    finally:
        nodes.stop()
        left = nodes.processes()
        print(f"\ncluster: {time.perf_counter() - began:.0f} s in all; processes left: {left}")
        assert not left, f"Ray processes of the test cluster still running: {left}"


@pytest.fixture(scope="module")
def env(cluster) -> dict:
    return dict(pipeline_env(), RAY_AUTH_MODE="disabled")


def _ray_params(cluster, **runtime) -> dict:
    # one CPU per student: a node of the test cluster has one
    return _raw(executor="ray", ray_address=cluster.address, student_cpus=1, **runtime)


@pytest.fixture(scope="module")
def ray_repo(cluster, env, tmp_path_factory) -> Path:
    repo = make_repo(tmp_path_factory.mktemp("ray_pipeline"), env, _ray_params(cluster))
    began = time.perf_counter()
    result = sh(["dvc", "repro"], repo, env, timeout=1800)
    print(f"\ndvc repro with executor: ray: {time.perf_counter() - began:.0f} s")
    assert {"teacher@rte", "distill@rte-1", "report"} <= ran_stages(result.stdout)
    return repo


def _local_run(teachers: Path, dest: Path, raw: dict) -> Path:
    """The same students trained here, one after another (executor: local), from the same teachers."""
    from alpkd import distill

    raw = json.loads(json.dumps(raw))
    raw["runtime"].update(executor="local", ray_address=None, student_cpus=None)
    clone_teacher(teachers, dest)
    distill.distill_group(config.validate(raw), TASK, 1, dest)
    return dest


def _assert_same_students(a: Path, b: Path, seeds=SEEDS, method: str = "kd") -> None:
    """Every file a student writes (a resumed one's training log too), the same bytes in both roots; metrics
    records the same but for the timings."""
    from alpkd.paths import Layout, Run

    for seed in seeds:
        run = Run(TASK, 1, method, seed)
        x = Layout(a)
        for get in (x.predictions, x.log, x.attention):
            rel = get(run).relative_to(a)
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
        model = x.student_model(run).relative_to(a) / "model.safetensors"
        assert (a / model).read_bytes() == (b / model).read_bytes(), model
        ra, rb = (json.loads((r / x.student_metrics(run).relative_to(a)).read_text()) for r in (a, b))
        assert {k: v for k, v in ra.items() if k not in TIMING} == {k: v for k, v in rb.items() if k not in TIMING}


@pytest.mark.slow
def test_repro_on_two_nodes_equals_the_local_run(cluster, ray_repo, env, tmp_path):
    began = time.perf_counter()
    assert cluster.ran("a") and cluster.ran("b"), (cluster.ran("a"), cluster.ran("b"))  # both nodes trained
    assert cluster.ran("a") | cluster.ran("b") == {f"kd  seed {s}" for s in SEEDS}
    assert json.loads(sh(["dvc", "status", "--json"], ray_repo, env).stdout or "{}") == {}
    assert not list(ray_repo.glob("checkpoints/rte-1-*")), "checkpoints removed once the stage has finished"
    _assert_same_students(ray_repo, _local_run(ray_repo, tmp_path / "local", _ray_params(cluster)))
    print(f"\ncomparison: {time.perf_counter() - began:.0f} s")


@pytest.mark.slow
def test_a_failing_student_fails_the_stage_after_the_others(cluster, ray_repo, tmp_path, monkeypatch):
    from alpkd import cache, distill

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # this process is the driver
    root = clone_teacher(ray_repo, tmp_path / "root")
    params = config.validate(_ray_params(cluster))
    damaged = next((root / "cache" / TASK / "teacher" / "s43").glob("train*"))  # seed 43's teacher cache
    saved = tmp_path / "saved"
    shutil.move(damaged, saved)
    with pytest.raises((cache.CacheError, FileNotFoundError)) as err:  # the student's own error, as a local run's
        distill.distill_group(params, TASK, 1, root)
    assert "\n" not in str(err.value).strip()
    first = json.loads((root / "metrics" / "students" / "rte-1" / "kd" / "s42.json").read_text())  # it finished
    assert list((root / "checkpoints").glob("rte-1-kd-s42-*")), "a finished student's checkpoint is kept"
    shutil.move(saved, damaged)
    records = distill.distill_group(params, TASK, 1, root)  # the re-run: seed 42 resumes at its end
    again = records["kd"][0]
    assert again["resumed_from_step"] == again["train_steps"] == first["train_steps"]
    assert {k: v for k, v in again.items() if k not in TIMING} == {k: v for k, v in first.items() if k not in TIMING}
    assert not list((root / "checkpoints").glob("rte-1-*")), "checkpoints removed once the stage has finished"
    _assert_same_students(root, ray_repo)


@pytest.mark.slow
def test_a_node_lost_mid_stage_loses_nothing(cluster, ray_repo, tmp_path):
    """Node b's raylet killed while both students train: the stage finishes on node a (Ray retries the task, the
    student resumes from its checkpoint) or fails in one line, and its re-run finishes; the records are a local
    run's. Runs last in this module: node b is gone after it."""
    raw = _ray_params(cluster)
    raw["distill"]["epochs"] = 12  # 36 steps, a checkpoint every 2: time to kill mid-run
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    root = clone_teacher(ray_repo, tmp_path / "root")  # its teachers: distill.epochs does not shape them
    cmd = [sys.executable, "-m", "alpkd", "--params", str(tmp_path / "params.yaml"), "--out", str(root), "distill",
           "--task", TASK, "--depth", "1"]
    run_env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, cwd=REPO, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:  # both students past their first checkpoint
        if len(list((root / "checkpoints").glob("rte-1-kd-s*/checkpoint-*"))) >= 2:  # one on each node
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the stage ended before node b could be killed"
    cluster.kill("b", only="raylet")
    out, errors = proc.communicate(timeout=900)
    if proc.returncode != 0:  # failed: one clear line, and a re-run finishes what is missing
        lines = [line for line in errors.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1 and "Traceback" not in errors, errors[-3000:]
        print(f"\nfirst run: {lines[0]}")
        again = subprocess.run(cmd, cwd=REPO, env=run_env, capture_output=True, text=True, timeout=900)
        assert again.returncode == 0, again.stderr[-3000:]
    _assert_same_students(root, _local_run(ray_repo, tmp_path / "local", raw))
