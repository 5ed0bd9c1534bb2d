"""Step time of every method at every depth, teacher cached and online, against the student alone (NO-KD).

    python benchmarks/bench_distill.py                      # mini shapes (MiniLM-L6), writes docs/PERFORMANCE.md
    python benchmarks/bench_distill.py --shapes paper       # bert-base shapes (random weights), for a GPU

Every configuration runs the real training step (`DistillTrainer.training_step` + the optimizer), on one
fixed batch (speed does not depend on the values). Rounds are interleaved (round r times every
configuration once) so that a drifting machine affects all of them alike; the median over rounds is
reported, and ratios to NO-KD at the same depth are taken within this one run.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from alpkd import config as cfg  # noqa: E402
from alpkd import methods  # noqa: E402
from alpkd.distill import DistillTrainer, training_args  # noqa: E402
from alpkd.students import build_student, layer_states, load_pretrained  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def make_teacher(shapes: str):
    if shapes == "mini":
        params = cfg.load(ROOT / "profiles" / "mini.yaml")
        return load_pretrained(params.teacher, 2), params
    params = cfg.validate({**_raw("paper"), "teacher": {**_raw("paper")["teacher"], "model": "tiny",
                                                        "tiny": {"num_layers": 12}}})
    return BertForSequenceClassification(BertConfig(num_labels=2)), params  # bert-base shapes, random weights


def _raw(profile: str) -> dict:
    from alpkd.params_file import read_yaml  # as the library and DVC read it (YAML 1.2)

    return read_yaml(ROOT / "profiles" / f"{profile}.yaml")


def batch(batch_size: int, length: int, vocab: int, device) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "input_ids": torch.randint(1000, vocab, (batch_size, length), generator=g).to(device),
        "attention_mask": torch.ones(batch_size, length, dtype=torch.long, device=device),
        "token_type_ids": torch.zeros(batch_size, length, dtype=torch.long, device=device),
        "labels": torch.randint(0, 2, (batch_size,), generator=g).to(device),
    }


class Config:
    def __init__(self, teacher, params, depth, method, cached, inputs, tmp):
        self.name = (depth, method, "cached" if cached else "online")
        dp = params.distill
        self.student = build_student(teacher, depth, "skip")
        args = training_args(dp, params.runtime, tmp, seed=0)
        online = None if (cached or not methods.get(method).teacher) else teacher
        self.trainer = DistillTrainer(model=self.student, args=args, label=method,
                                      objective=methods.objective(method, dp, online, "cls"))
        self.trainer.create_optimizer()
        self.trainer.current_gradient_accumulation_steps = 1  # set by train() in a real run
        self.inputs = dict(inputs)
        if cached and method != "nokd":
            with torch.inference_mode():
                out = teacher(**{k: v for k, v in inputs.items() if k != "labels"}, output_hidden_states=True)
            self.inputs["teacher_logits"] = out.logits.clone()
            self.inputs["teacher_states"] = layer_states(out)[:, 0].half().float().clone()
        self.student.to(args.device).train()
        self.precision = params.runtime.precision
        self.times: list[float] = []

    def flops(self, teacher, tokens: int) -> float:
        """Approximate FLOPs of one step: 6 N T for the student's forward and backward (N: parameters outside
        the embeddings), plus 2 N T for an online teacher's forward."""
        def n(model):
            return sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name)

        online = self.trainer.teacher is not None
        return 6 * n(self.student) * tokens + (2 * n(teacher) * tokens if online else 0)

    def step(self, sync) -> None:
        start = time.perf_counter()
        with torch.autocast(self.student.device.type, dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16,
                            enabled=self.precision != "fp32"):
            self.trainer.training_step(self.student, dict(self.inputs))
        self.trainer.optimizer.step()
        self.trainer.optimizer.zero_grad()
        sync()
        self.times.append(time.perf_counter() - start)


@torch.inference_mode()
def eval_throughput(model, inputs, rounds: int, sync) -> float:
    model.eval()
    x = {k: v for k, v in inputs.items() if k != "labels"}
    model(**x)
    sync()
    start = time.perf_counter()
    for _ in range(rounds):
        model(**x)
    sync()
    return rounds * len(x["input_ids"]) / (time.perf_counter() - start)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", choices=["mini", "paper"], default="mini")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=10, help="timed rounds (after 2 warm-up rounds)")
    ap.add_argument("--depths", type=int, nargs="*")
    ap.add_argument("--out", default=str(ROOT / "docs" / "PERFORMANCE.md"))
    ap.add_argument("--peak-tflops", type=float, help="the device's peak TFLOP/s at this precision (e.g. 989 "
                    "for an H100 SXM in bf16, dense), to report the fraction reached")
    args = ap.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    teacher, params = make_teacher(args.shapes)
    teacher.to(device).eval()
    depths = args.depths or params.student.depths
    inputs = batch(args.batch_size, args.length, teacher.config.vocab_size, device)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "alpkd-bench"
    configs = [Config(teacher, params, d, m, cached, inputs, tmp)
               for d in depths for m in cfg.METHODS for cached in ((True,) if m == "nokd" else (True, False))]
    for r in range(args.rounds + 2):
        for c in configs:
            c.step(sync)
        print(f"round {r + 1}/{args.rounds + 2}", file=sys.stderr)
    median = {c.name: statistics.median(c.times[2:]) for c in configs}

    rows = []
    tokens = args.batch_size * args.length
    for c in configs:
        d, m, mode = c.name
        base = median[(d, "nokd", "cached")]
        tflops = c.flops(teacher, tokens) / median[c.name] / 1e12
        peak = f" {100 * tflops / args.peak_tflops:.1f}% |" if args.peak_tflops else ""
        rows.append(f"| {d} | {m} | {mode if m != 'nokd' else '(no teacher)'} | {1000 * median[c.name]:.0f} | "
                    f"{median[c.name] / base:.3f} | {args.batch_size / median[c.name]:.0f} | {tflops:.2f} |{peak}")
    eval_rows = [f"| teacher ({teacher.config.num_hidden_layers} layers) | "
                 f"{eval_throughput(teacher, inputs, args.rounds, sync):.0f} |"]
    for d in depths:
        student = next(c.student for c in configs if c.name == (d, "nokd", "cached"))
        eval_rows.append(f"| student ({d} layers) | {eval_throughput(student, inputs, args.rounds, sync):.0f} |")
    peak = (f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB (CUDA, max allocated)" if device.type == "cuda"
            else f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB (process peak RSS, all configurations)")
    machine = (torch.cuda.get_device_name() if device.type == "cuda"
               else f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads")
    cmd = "python benchmarks/bench_distill.py" + (f" --shapes {args.shapes}" if args.shapes != "mini" else "")
    text = f"""## Step time: `{args.shapes}` shapes on {device.type}

Machine: {machine}; torch {torch.__version__}; precision {params.runtime.precision}; batch {args.batch_size} x length {args.length}
(fixed, no padding); teacher: {teacher.config.num_hidden_layers} layers, d={teacher.config.hidden_size}.
Median of {args.rounds} interleaved rounds after 2 warm-up rounds. `ratio` is the step time over the
NO-KD (student alone) step at the same depth, in this same run. Command: `{cmd}`.

`TFLOP/s`: approximate model FLOPs (6 N T student + 2 N T online teacher, N without embeddings) per second.

| depth | method | teacher | step (ms) | ratio to NO-KD | train examples/s | TFLOP/s |{" of peak |" if args.peak_tflops else ""}
|---|---|---|---|---|---|---|{"---|" if args.peak_tflops else ""}
""" + "\n".join(rows) + f"""

Evaluation (inference_mode, batch {args.batch_size} x {args.length}):

| model | examples/s |
|---|---|
""" + "\n".join(eval_rows) + f"""

Peak memory: {peak}.
"""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    marker = f"<!-- bench:{args.shapes}:{device.type} -->"
    old = out.read_text() if out.exists() else "# Performance\n\nTables written by the benchmarks; each names its command.\n"
    parts = old.split(marker)
    new = parts[0] + marker + "\n" + text + marker + (parts[2] if len(parts) == 3 else "\n")
    out.write_text(new)
    print(text)


if __name__ == "__main__":
    main()
