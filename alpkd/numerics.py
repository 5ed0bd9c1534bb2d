"""CPU arithmetic that does not depend on the machine: `pin` it before torch loads, `check` it after.

The same commit and seed drew a different STS-B teacher on two 2-core x86-64 machines (an AMD EPYC and an
Intel Xeon, both with AVX-512), and with it other students and verdicts. Three things make float32 CPU results
machine-dependent, and `runtime.numerics: portable` fixes each before torch is imported:

- torch's own kernels (softmax, layer norm, GELU, reductions, the optimizer) are compiled for several vector
  ISAs and dispatch to the widest the CPU has; a wider vector sums in another order. `ATEN_CPU_CAPABILITY=avx2`
  makes every x86-64 CPU with AVX2 (Intel since 2013, AMD since 2015) run the AVX2 kernels.
- MKL, which does torch's float32 matrix products on x86-64, picks a code path per CPU model (and another on
  AMD than on Intel). Conditional Numerical Reproducibility, `MKL_CBWR=AVX2,STRICT`, makes it take the AVX2
  path everywhere, bit for bit whatever the memory alignment. oneDNN is capped the same way
  (`ONEDNN_MAX_CPU_ISA=AVX2`; float32 training does not use it, bf16 does).
- A parallel sum is split by thread count: `runtime.threads` (default 2) threads on every machine, whatever
  its core count (OMP_NUM_THREADS, MKL_NUM_THREADS and `torch.set_num_threads`).

What it cannot cover: GPUs (other kernels altogether), CPUs without AVX2 (refused by `check`), and other
versions of torch, MKL or the other libraries (`constraints.txt` pins them; every record names them). Whether
it makes two different CPUs agree bit for bit is a measurement, not a promise: `docs/reproducibility.md` says
which machines were compared. The cost on this project's 2-core machine is in `docs/PERFORMANCE.md`.

Every metrics record carries `describe()`: the setting, the CPU model, the ISA torch dispatched to, the thread
count and the variables above, so two results can be told apart by where they were computed.
"""
from __future__ import annotations

import os
import platform
import sys

PORTABLE = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT", "ONEDNN_MAX_CPU_ISA": "AVX2"}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
# Pace, not arithmetic: a thread that reaches OpenMP's barrier first sleeps instead of spinning. Spinning burns
# the time slice its partner needs when another process holds a core (a step beside one busy process: about 2.4-3x
# as long as alone by default, about 1.6x with this); every bit computed is the same (benchmarks/load_pace.py).
# Set unless the user set it; recorded with the variables above.
PACE = {"OMP_WAIT_POLICY": "PASSIVE"}
VARIABLES = (*PORTABLE, *THREAD_VARIABLES, *PACE)


class NumericsError(RuntimeError):
    """The arithmetic asked for cannot be had in this process (torch already loaded otherwise, no AVX2)."""


def settings(runtime) -> dict[str, str]:
    """The environment `runtime` (a `config.Runtime`) asks for; empty for `native` without a thread count."""
    env = dict(PORTABLE) if runtime.numerics == "portable" else {}
    if runtime.threads is not None:
        env.update({k: str(runtime.threads) for k in THREAD_VARIABLES})
    return env


def pin(runtime) -> dict[str, str]:
    """Set the variables of `settings(runtime)` in this process (and so in every child it starts).

    They take effect only if torch has not been imported yet; if it has, they must already be in place (a
    child of a pinned process inherits them), or this raises `NumericsError` instead of running otherwise.
    """
    env = settings(runtime)
    if "torch" in sys.modules:
        wrong = {k: v for k, v in env.items() if os.environ.get(k) != v}
        if wrong:
            raise NumericsError(
                f"runtime.numerics = {runtime.numerics!r} needs {_assignments(wrong)} before torch is imported, "
                "and torch is already loaded in this process; call alpkd.numerics.pin before importing torch "
                "(the CLI and the notebooks do), or set the variables in the environment")
    os.environ.update(env)
    if "torch" not in sys.modules:  # OpenMP reads it when torch loads
        for k, v in PACE.items():
            os.environ.setdefault(k, v)
    return env


def check(runtime) -> dict:
    """After torch is loaded: fix the thread count and make sure the kernels are the ones asked for.

    Returns `describe()`. Raises `NumericsError` when `portable` is asked and cannot be had here.
    """
    import torch

    if runtime.threads is not None and torch.get_num_threads() != runtime.threads:
        torch.set_num_threads(runtime.threads)
    if runtime.numerics == "portable":
        wrong = {k: v for k, v in settings(runtime).items() if os.environ.get(k) != v}
        if wrong:
            raise NumericsError(f"runtime.numerics = 'portable' but {_assignments(wrong)} are not set in this "
                                "process; call alpkd.numerics.pin(params.runtime) before importing torch")
        isa = torch.backends.cpu.get_cpu_capability()
        if isa != "AVX2":
            raise NumericsError(f"runtime.numerics = 'portable' runs torch's AVX2 kernels, but torch dispatches to "
                                f"{isa} here (a CPU without AVX2, or torch loaded before the setting); allowed on "
                                "this machine: runtime.numerics 'native'")
    return describe(runtime)


def describe(runtime=None) -> dict:
    """Where a result was computed: setting, CPU model, the ISA torch's kernels use, threads, variables."""
    import torch

    return {"numerics": getattr(runtime, "numerics", None), "cpu": cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
            "variables": {k: os.environ.get(k) for k in VARIABLES}}


def cpu_model() -> str:
    """The CPU's model name (`/proc/cpuinfo` on Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _assignments(env: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in env.items())
