"""Who trains the students of a distill or assist stage: this process, one after another (`runtime.executor:
local`, the default), or Ray, side by side (`ray`).

Once a stage's teachers and their caches exist, its students (one (method, seed) each) are independent: this module
submits each as a Ray task, on the GPUs of one machine or on the nodes of a cluster, and the stage's notebook (its
process is Ray's driver) waits for them. Ray does the placing, the retries and the bookkeeping of who has which
GPU; DVC still runs the stages. What a Ray student writes (metrics, predictions, logs, attention, models) is what
`Cell.train_seed` writes in a local run, into the same repository folder: the nodes must share that filesystem.

Nothing lost, nothing different:
- Each worker starts with the driver's numerics variables (`alpkd.numerics.settings`) in its environment
  (`runtime_env={"env_vars": ...}`: Ray starts a fresh worker process for it, so they are set before torch is
  imported) and calls `numerics.check`, so a Ray student computes what a local one computes, bit for bit, with the
  same `runtime.threads`.
- A student that fails does not stop the others: when all have finished, the stage fails with the first failure's
  own exception (the one-line error of a local run). A worker or node that dies is retried (`MAX_RETRIES`) on
  whatever node is left, and the student resumes from its last checkpoint (`checkpoints/`, on the shared folder).
- The checkpoint of a finished student is kept until every student of the stage has finished (as the teacher
  stage keeps its teachers'), so a stage that failed re-runs its finished students from their last step: only
  their evaluation runs again, and their records are the same.
- Progress lines come from the driver as students finish (`progress.unit_done`, the lines of a local run); the
  workers' own lines (training steps) go to Ray's log files, not into the executed notebook (`log_to_driver`).
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from . import numerics, progress
from .config import ConfigError

INSTALL = 'pip install -e ".[ray]"'
# a worker or node that dies (a kill, a lost machine) is retried this many times; a Python exception is not
MAX_RETRIES = 3
# what a worker needs of the driver's environment: data and model sources, offline switches, quiet libraries
_FORWARD = ("ALPKD_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "TQDM_")
_NOT_FORWARDED = {"ALPKD_PROGRESS_FILE"}  # the driver's file: the workers' step lines go to Ray's logs


class ExecutorError(RuntimeError):
    """Ray could not run a student: no cluster at the address, or a worker or node lost more often than retried."""


def import_ray():
    """The `ray` module, or a `ConfigError` saying how to install it (before any model loads)."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"runtime.executor = 'ray': Ray is not installed in this environment; install it with "
                          f"{INSTALL}, or set runtime.executor: local") from None
    return ray


def worker_env(runtime) -> dict[str, str]:
    """The environment each Ray worker starts with: the numerics of `runtime` (before torch loads), the driver's
    data sources and offline switches, and this checkout first on PYTHONPATH (the same alpkd as the driver's)."""
    env = {k: v for k, v in os.environ.items()
           if (k.startswith(_FORWARD) or k in numerics.VARIABLES) and k not in _NOT_FORWARDED}
    env.update(numerics.settings(runtime))
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").exists():  # a checkout (editable or PYTHONPATH), not site-packages
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(checkout), os.environ.get("PYTHONPATH")]))
    return env


def connect(runtime):
    """Ray, started on this machine (`ray_address` empty) or joined (`auto`, `host:port`); returns the module and
    whether this call connected it (a Ray the caller had already started is used as it is, and left running)."""
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    address = runtime.ray_address or "local"  # "local": a Ray of its own, never one found by chance
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR, configure_logging=True,
                 **({"include_dashboard": False} if address == "local" else {}))
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise ExecutorError(f"runtime.ray_address = {runtime.ray_address!r}: no Ray cluster to join ({_first_line(err)});"
                            " allowed: empty (start Ray on this machine), 'auto' (the cluster this machine belongs "
                            "to) or the head's host:port") from None
    return ray, True


def resources(ray, runtime) -> tuple[float, float]:
    """(CPUs, GPUs) one student asks for, checked against the cluster's nodes: a request no node can meet would wait
    forever, so it is refused now."""
    cpus = runtime.student_cpus if runtime.student_cpus is not None else float(runtime.threads or 1)
    gpus = runtime.student_gpus
    if gpus is None:  # a GPU each where the cluster has GPUs, else none
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if not any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in nodes):
        largest = max(((r.get("CPU", 0), r.get("GPU", 0)) for r in nodes), default=(0, 0))
        raise ConfigError(f"runtime.student_cpus = {cpus:g}, runtime.student_gpus = {gpus:g}: no node of the Ray "
                          f"cluster has that much (the largest: {largest[0]:g} CPUs, {largest[1]:g} GPUs); allowed: "
                          "what one node has")
    return cpus, gpus


def train(group, units: list[tuple[str, int]], teachers: dict[int, int], label: str) -> dict[tuple[str, int], dict]:
    """Train every (method, seed) of `units` (each from `teachers[seed]`) as `runtime.executor` says; returns the
    records by unit, and writes a progress line as each finishes. `group`: the stage's students and their loaded
    inputs (an `alpkd.distill.Group`, passed in: this module imports none of the students' code, so the two do not
    import each other); `group.cell(method, teacher_seed)` is a student's."""
    if group.params.runtime.executor == "ray" and units:
        return train_on_ray(group, units, teachers, label)
    records, start = {}, time.perf_counter()
    for k, (method, seed) in enumerate(units, 1):  # one after another, in this process
        began = time.perf_counter()
        cell = group.cell(method, teachers[seed])
        record = records[(method, seed)] = cell.train_seed(seed)
        progress.unit_done(label, k, len(units), f"{method}  seed {seed}", time.perf_counter() - began,
                           progress.headline(record), time.perf_counter() - start)
    return records


def train_on_ray(group, units: list[tuple[str, int]], teachers: dict[int, int],
                 label: str) -> dict[tuple[str, int], dict]:
    """Each unit as a Ray task (the group sent without its loaded cells: each worker loads what its student needs).
    When all have finished, the first failure (in `units` order) is raised."""
    params = group.params
    ray, ours = connect(params.runtime)
    remote, refs, pending = ray.remote(_train_student), {}, []
    try:
        cpus, gpus = resources(ray, params.runtime)
        options = {"num_cpus": cpus, "num_gpus": gpus, "max_retries": MAX_RETRIES, "retry_exceptions": False,
                   "runtime_env": {"env_vars": worker_env(params.runtime)}}
        group = group.moved(Path(group.root).resolve())  # absolute: a worker may start in another folder
        refs = {remote.options(**options).remote(group, m, s, teachers[s], os.getcwd()): (m, s) for m, s in units}
        records, failures, checkpoints, start, pending = {}, {}, [], time.perf_counter(), list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            method, seed = unit = refs[ready[0]]
            try:
                done = ray.get(ready[0])
            except Exception as err:  # noqa: BLE001 (kept, raised once the others have finished)
                failures[unit] = _cause(err, label, unit)
                progress.log(f"{label}  {method}  seed {seed}  failed: {_first_line(failures[unit])}")
                continue
            records[unit] = done["record"]
            checkpoints.append(done["checkpoint"])
            progress.unit_done(label, len(records) + len(failures), len(units), f"{method}  seed {seed}",
                               done["seconds"], progress.headline(done["record"]), time.perf_counter() - start)
    finally:
        for ref in pending:  # the driver was interrupted: nothing is left running on the cluster
            ray.cancel(ref, force=True)
        if ours:
            ray.shutdown()
    if failures:  # finished students keep their checkpoints: a re-run resumes them at their end
        raise next(failures[u] for u in units if u in failures)
    for ckpt in checkpoints:
        shutil.rmtree(ckpt, ignore_errors=True)
    return records


class _Worker:
    """What a Ray worker process has loaded: the last group it trained students of (Ray reuses a worker for
    further tasks, so the students of one teacher after the first load nothing again, as in a local run)."""

    group = None

    @classmethod
    def group_for(cls, group):
        key = (group.params, group.task_name, group.depth, str(group.root))
        if cls.group is None or (cls.group.params, cls.group.task_name, cls.group.depth, str(cls.group.root)) != key:
            cls.group = group
        return cls.group


def _train_student(group, method: str, seed: int, teacher_seed: int, cwd: str) -> dict:
    """One student, in a Ray worker: what the local loop of `train` does for one unit."""
    os.chdir(cwd)  # custom tasks' files are relative to the repository root
    group = _Worker.group_for(group)
    numerics.check(group.params.runtime)  # the variables came with the worker (runtime_env); the thread count is set here
    began = time.perf_counter()
    cell = group.cell(method, teacher_seed)
    record = cell.train_seed(seed, keep_checkpoint=True)
    return {"record": record, "checkpoint": str(cell.checkpoint), "seconds": time.perf_counter() - began}


def _cause(err: Exception, label: str, unit: tuple[str, int]) -> Exception:
    """The student's own exception (its one-line message, as a local run raises it), else what Ray says, in one line."""
    cause = getattr(err, "cause", None)  # a RayTaskError carries the exception the task raised
    if isinstance(cause, Exception):
        return cause
    method, seed = unit
    return ExecutorError(f"{label}: {method} seed {seed}: Ray lost the worker running it after {MAX_RETRIES} retries "
                         f"({_first_line(err)}); the students that finished are kept: re-run the stage to train "
                         "the rest")


def _first_line(err) -> str:
    text = str(err).strip()
    return next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)
