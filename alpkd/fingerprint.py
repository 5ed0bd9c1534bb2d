"""This machine's float32 arithmetic, per operation a run uses: will it reproduce a committed run bit for bit?

Two x86-64 CPUs with the same pinned numerics (`alpkd.numerics`) can still round differently: MKL picks code paths
per CPU vendor, and its CBWR branches change matrix products and vector math (docs/reproducibility.md). A
fingerprint is a short SHA-256 of the output bytes of each operation the training uses, at MiniLM-L6's shapes, on
inputs drawn from NumPy's PCG64 (the same bits on every machine). Two machines with equal fingerprints compute
those operations identically; where they differ, a run's weights part from the first steps on.

`measure(runtime)` computes it in a child process pinned as a run's process is (the variables only take effect
before torch loads, and this process may already have loaded it); `python -m alpkd.fingerprint` is that child and
computes under whatever environment it is given (the tests change one variable to see the fingerprint move).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from . import numerics
from .paths import replace_atomically

SEED = 20261207
# MiniLM-L6: hidden 384, feed-forward 1536, 12 heads; a batch of 16 sequences of 128 tokens keeps it to seconds
BATCH, SEQ, HIDDEN, FFN, HEADS, VOCAB = 16, 128, 384, 1536, 12, 30522


class FingerprintError(RuntimeError):
    """A fingerprint that cannot be read (missing, not JSON, no ops) or computed (the child process failed)."""


def measure(runtime) -> dict:
    """This machine's fingerprint, computed in a fresh process with the variables of `numerics.settings(runtime)`."""
    env = dict(os.environ, **numerics.settings(runtime))
    root = str(Path(__file__).resolve().parents[1])  # the package is importable in the child as it is here
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-m", "alpkd.fingerprint"], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise FingerprintError(f"the fingerprint process failed (exit {done.returncode}): {tail[0]}")
    return json.loads(done.stdout)


def compute() -> dict:
    """The fingerprint in this process, under the variables it was started with: {"machine", "ops", "digest"}."""
    import numpy as np
    import torch

    threads = os.environ.get("OMP_NUM_THREADS")
    if threads:  # as numerics.check does for a run: torch's own default would be the core count
        torch.set_num_threads(int(threads))
    ops = _ops(np, torch)
    return {"machine": _machine(np, torch), "ops": ops, "digest": digest(ops)}


def digest(ops: dict[str, str]) -> str:
    """One short hash over every operation's hash, in name order."""
    return _short(json.dumps(ops, sort_keys=True).encode())


def differing(mine: dict, committed: dict) -> list[str]:
    """The operations whose hashes differ (or that only one of the two fingerprints has), in name order."""
    a, b = mine["ops"], committed["ops"]
    return sorted(name for name in set(a) | set(b) if a.get(name) != b.get(name))


def verdict(mine: dict, committed: dict, shown: int = 4) -> str:
    """The one line a replicator reads before the run: bit for bit, or the same verdicts only."""
    diff = differing(mine, committed)
    if not diff:
        return "numerics: this machine's arithmetic matches the committed run's: expect every record bit for bit"
    names = ", ".join(diff[:shown]) + (", ..." if len(diff) > shown else "")
    return (f"numerics: this machine's arithmetic differs from the committed run's in {names} "
            f"({len(diff)} of {len(set(mine['ops']) | set(committed['ops']))} operations): expect the same verdicts and scores within about a "
            "sentence, not bit for bit (docs/reproducibility.md)")


def load(path: Path) -> dict:
    """A fingerprint file, or `FingerprintError` naming it."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FingerprintError(f"{path}: no such fingerprint file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FingerprintError(f"{path}: not a fingerprint file ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("ops"), dict) or not data["ops"]:
        raise FingerprintError(f"{path}: not a fingerprint file (no \"ops\" object)")
    return data


def dumps(fingerprint: dict) -> str:
    return json.dumps(fingerprint, indent=1, sort_keys=True) + "\n"


def write(path: Path, fingerprint: dict) -> None:
    """Atomically: a reader never sees half a file."""
    text = dumps(fingerprint)
    replace_atomically(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _short(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _machine(np, torch) -> dict:
    return {"cpu": numerics.cpu_model(), "isa_flags": _isa_flags(), "arch": platform.machine(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "numpy": np.__version__, "mkl": _mkl_version(torch),
            "variables": {k: os.environ.get(k) for k in numerics.VARIABLES}}


def _isa_flags() -> list[str]:
    """The vector-ISA flags that decide kernel and MKL code paths (AVX2, FMA, AVX-512, AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return sorted(flag for flag in line.split(":", 1)[1].split()
                                  if flag in ("avx2", "fma") or flag.startswith(("avx512", "amx")))
    except OSError:
        pass
    return []


def _mkl_version(torch) -> str | None:
    if not torch.backends.mkl.is_available():
        return None
    config = torch.__config__.show()
    for line in config.splitlines():
        if "Math Kernel Library" in line:
            return line.split("Library", 1)[1].strip(" :")
    return "available"


def _ops(np, torch) -> dict[str, str]:
    """Each operation the training uses, on PCG64 inputs, as a short hash of its output bytes."""
    import torch.nn.functional as F

    rng = np.random.Generator(np.random.PCG64(SEED))
    ops: dict[str, str] = {}

    def tensor(*shape, scale=1.0, grad=False):
        return torch.from_numpy((rng.standard_normal(shape) * scale).astype(np.float32)).requires_grad_(grad)

    def record(name, value):
        ops[name] = _short(value.detach().contiguous().numpy().tobytes())

    tokens, head = BATCH * SEQ, HIDDEN // HEADS
    x = tensor(tokens, HIDDEN, grad=True)
    record("input", x)  # the inputs themselves: equal on every machine, or the comparison means nothing
    for name, (d_in, d_out) in {"linear_384x384": (HIDDEN, HIDDEN), "linear_384x1536": (HIDDEN, FFN)}.items():
        w, b = tensor(d_out, d_in, scale=0.05, grad=True), tensor(d_out, scale=0.02, grad=True)
        y = F.linear(x, w, b)
        gx, gw, gb = torch.autograd.grad(y, (x, w, b), tensor(tokens, d_out))
        record(f"mm/{name}", y), record(f"mm/{name}/grad_input", gx), record(f"mm/{name}/grad_weight", gw)
        record(f"mm/{name}/grad_bias", gb)
    q, k, v = (tensor(BATCH * HEADS, SEQ, head) for _ in range(3))
    scores = torch.bmm(q, k.transpose(1, 2)) / head ** 0.5
    probs = scores.softmax(-1)
    record("bmm/qk", scores), record("softmax", probs), record("bmm/pv", torch.bmm(probs, v))
    weight, bias = (1 + tensor(HIDDEN, scale=0.1)).detach().requires_grad_(True), tensor(HIDDEN, scale=0.1, grad=True)
    y = F.layer_norm(x, (HIDDEN,), weight, bias, 1e-12)
    record("layer_norm", y)
    for name, g in zip(("input", "weight", "bias"), torch.autograd.grad(y, (x, weight, bias), tensor(tokens, HIDDEN))):
        record(f"layer_norm/grad_{name}", g)
    h = tensor(tokens, FFN, grad=True)
    y = F.gelu(h)
    record("gelu", y), record("gelu/grad", torch.autograd.grad(y, h, tensor(tokens, FFN))[0])
    plain = x.detach()
    record("exp", plain.exp()), record("erf", torch.erf(plain)), record("tanh", plain.tanh())
    record("sqrt", plain.abs().sqrt())
    record("sum/all", h.detach().sum()), record("sum/dim0", plain.sum(0)), record("mean/dim1", plain.mean(1))
    grads = [tensor(HIDDEN, HIDDEN), tensor(FFN, HIDDEN), tensor(HIDDEN), tensor(VOCAB, HIDDEN, scale=0.01)]
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g
    record("clip_grad_norm", torch.nn.utils.clip_grad_norm_(params, 1.0))  # the Trainer's clipping
    record("clip_grad_norm/clipped", torch.cat([p.grad.flatten() for p in params]))
    logits, teacher = tensor(BATCH, 3, grad=True), tensor(BATCH, 3)
    labels = torch.from_numpy(rng.integers(0, 3, BATCH))
    ce = F.cross_entropy(logits, labels)
    record("cross_entropy", ce), record("cross_entropy/grad", torch.autograd.grad(ce, logits)[0])
    kl = F.kl_div(F.log_softmax(logits / 2, -1), F.softmax(teacher / 2, -1), reduction="batchmean")
    record("kl_div", kl), record("kl_div/grad", torch.autograd.grad(kl, logits)[0])
    mse = F.mse_loss(x, tensor(tokens, HIDDEN))
    record("mse", mse), record("mse/grad", torch.autograd.grad(mse, x)[0])
    table = tensor(VOCAB, HIDDEN, scale=0.02, grad=True)
    ids = torch.from_numpy(rng.integers(0, VOCAB, (BATCH, SEQ)))
    record("embedding/grad", torch.autograd.grad(F.embedding(ids, table), table, tensor(BATCH, SEQ, HIDDEN))[0])
    optimized = [torch.nn.Parameter(tensor(HIDDEN, HIDDEN)), torch.nn.Parameter(tensor(HIDDEN))]
    adamw = torch.optim.AdamW(optimized, lr=5e-5, weight_decay=0.01)
    for step in (1, 2):  # the second step reads the moments the first wrote
        for p in optimized:
            p.grad = tensor(*p.shape)
        adamw.step()
        record(f"adamw/step{step}", torch.cat([p.detach().flatten() for p in optimized]))
    q, k, v = (tensor(BATCH, HEADS, SEQ, head, grad=True) for _ in range(3))
    mask = torch.ones(BATCH, 1, SEQ, SEQ, dtype=torch.bool)
    mask[BATCH // 2:, :, :, SEQ - 16:] = False  # padding, as a batch of shorter sentences has
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # transformers' default attention
    record("sdpa", out)
    for name, g in zip("qkv", torch.autograd.grad(out, (q, k, v), tensor(BATCH, HEADS, SEQ, head))):
        record(f"sdpa/grad_{name}", g)
    return ops


if __name__ == "__main__":
    # the child of `measure`: stdout is the JSON alone
    print(dumps(compute()), end="")
