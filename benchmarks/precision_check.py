"""Does `runtime.precision: bf16` change the students' scores on this CPU, and how much faster is it?

Students of 2 layers built from pretrained MiniLM-L6 (`skip` init), trained with NO-KD on a fixed subsample of
each task, for several seeds in float32 and under bf16 autocast (the Trainer's `bf16=True`; the distillation
loss terms stay float32 either way). Prints a Markdown table: score per seed, mean, and seconds per step.

    python benchmarks/precision_check.py --task sst2 stsb --train 1000 --epochs 2 --seeds 1 2 3
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import set_seed

from alpkd import config, data, distill, metrics
from alpkd.students import build_student, load_pretrained, load_tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--task", nargs="+", default=["sst2", "stsb"])
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--lr", type=float, default=None, help="default: distill.learning_rate")
    args = ap.parse_args()
    params = config.load(args.params)
    tokenizer = load_tokenizer("minilm")
    print("| task | precision | scores per seed (x100) | mean | s/step | threads |\n|---|---|---|---:|---:|---:|")
    for task_name in args.task:
        task = params.task(task_name)
        dsets = data.prepare(task, tokenizer, params.data, "scratch", params.data.max_train_samples)
        train = data.subsample(dsets["train"], args.train)
        teacher = load_pretrained(params.teacher.model_copy(update={"model": "minilm"}), task.num_labels, 0)
        for precision in args.precision:
            runtime = params.runtime.model_copy(update={"precision": precision})
            dp = params.distill.model_copy(update={"epochs": args.epochs,
                                                   "learning_rate": args.lr or params.distill.learning_rate})
            scores, per_step = [], []
            for seed in args.seeds:
                student = build_student(teacher, args.depth, "skip", seed)
                set_seed(seed)
                with tempfile.TemporaryDirectory() as tmp:
                    trainer = distill.DistillTrainer(model=student, args=distill.training_args(dp, runtime, Path(tmp), seed),
                                                     train_dataset=train, data_collator=data.Collator(tokenizer),
                                                     label="NO-KD")
                    trainer.args.save_strategy = "no"
                    start = time.perf_counter()
                    trainer.train()
                    per_step.append((time.perf_counter() - start) / trainer.state.global_step)
                    pred = trainer.predict(dsets["validation"].remove_columns("cache_row"))
                score = metrics.compute(task, pred.predictions, pred.label_ids)[task.headline]
                scores.append(100 * score)
            print(f"| {task_name} | {precision} | {', '.join(f'{s:.1f}' for s in scores)} | {np.mean(scores):.1f} | "
                  f"{np.mean(per_step):.3f} | {torch.get_num_threads()} |", flush=True)


if __name__ == "__main__":
    main()
