"""The training loop: `transformers.Trainer` with the distillation loss, its arguments, and resuming.

The Trainer owns the loop (AMP, DDP, checkpoints, logging); `DistillTrainer` only replaces the loss with
the method's objective (`alpkd.losses.distillation_loss`). Teacher outputs come from the cache
(`states: cls`) or from the teacher run online (`states: tokens`). `train` resumes a killed run from its
last complete checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices
from transformers.trainer_utils import get_last_checkpoint

from .paths import WriteError, disk_full, failed_file, warn
from .progress import ProgressCallback
from .model_files import SafetensorsHeaderError, read_safetensors_header
from .students import layer_states




def task_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Loss on gold labels: cross-entropy, or MSE for regression (one output)."""
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
    return F.cross_entropy(logits, labels)



class SeededLengthGroupedSampler(LengthGroupedSampler):
    """Length-grouped order drawn from (seed, epoch) instead of the global random state.

    The Trainer's own sampler draws from the global torch RNG, which a run resumed after its first epoch has
    not restored when the order is drawn: the resumed run would see other batches. This one replays.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:  # called by the Trainer (through accelerate) every epoch
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence([self.seed & 0xFFFFFFFF, self.epoch]).generate_state(1)[0]))
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


class DistillTrainer(Trainer):
    """A Trainer whose training loss is `objective(model, inputs, trainer) -> (loss, terms, outputs)` (the teacher's:
    the task loss; a student's: its method's, `alpkd.methods.objective`); evaluation uses the task loss."""

    def __init__(self, *args, objective=None, progress_label: str | None = None, label: str | None = None,
                 print_logs: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if not print_logs:  # the curves go to logs/<run>.csv, not as raw dicts into the executed notebooks (the CLI
            # prints them, to stderr)
            self.remove_callback(PrinterCallback)
        if progress_label:  # a short line on the run's terminal (alpkd.progress), never in a notebook
            self.add_callback(ProgressCallback(progress_label, every_s=60))
        self.objective, self.label = objective, label  # `label`: who, in a non-finite-loss error
        self._terms: dict[str, list[float]] = {}

    def _get_train_sampler(self, train_dataset=None):
        ds = train_dataset if train_dataset is not None else self.train_dataset
        if (self.args.train_sampling_strategy == "group_by_length" and ds is not None and self.args.length_column_name in getattr(ds, "column_names", [])):
            return SeededLengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                              list(ds[self.args.length_column_name]), self.args.data_seed)
        return super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset):
        # in the dataset's order (`evaluate` sorts by length first): transformers 5 would length-group the
        # evaluation in an order drawn from the run's seed, so each seed's predictions came in its own order
        if eval_dataset is None or self.args.world_size > 1:
            return None  # several processes: accelerate shards the dataloader in order and gathers in order
        return torch.utils.data.SequentialSampler(eval_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        if not model.training or self.objective is None:
            labels = inputs.pop("labels")
            for key in ("teacher_logits", "teacher_states", "assistant_logits", "cache_row"):  # what a student reads
                inputs.pop(key, None)
            outputs = model(**inputs)
            loss = task_loss(outputs.logits, labels)
            terms = {"ce": loss}
        else:
            loss, terms, outputs = self.objective(model, inputs, self)
        if model.training:
            self._record(terms)
            self._check_finite(loss, terms)
        return (loss, outputs) if return_outputs else loss

    def _check_finite(self, loss, terms):
        # stop at once: a NaN would otherwise be trained on silently and end as a meaningless score
        if not torch.isfinite(loss.detach()).all():
            values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
            who = self.label or "the run"
            raise FloatingPointError(f"{who}: the loss became {float(loss.detach()):.4g} at step "
                                     f"{self.state.global_step + 1} (terms: {values}); lower the learning rate "
                                     "or check the inputs")

    def _record(self, terms):
        for k, v in terms.items():
            self._terms.setdefault(k, []).append(float(v.detach()))

    def log(self, logs, *args, **kwargs):
        # each loss term, averaged since the last log, beside the Trainer's total `loss`
        if "loss" in logs and self._terms:
            logs.update({f"loss_{k}": float(np.mean(v)) for k, v in self._terms.items()})
            self._terms = {}
        super().log(logs, *args, **kwargs)


def training_args(train, runtime, out_dir: Path, seed: int) -> TrainingArguments:
    if runtime.precision == "fp16" and not torch.cuda.is_available():  # the Trainer would train in fp32, silently
        from .config import ConfigError

        raise ConfigError("runtime.precision = 'fp16': needs a CUDA GPU and none is available; allowed on this "
                          "machine: fp32, bf16")
    return TrainingArguments(
        output_dir=str(out_dir),
        learning_rate=train.learning_rate,
        num_train_epochs=train.epochs,
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=runtime.eval_batch_size,
        weight_decay=train.weight_decay,
        warmup_steps=float(train.warmup_ratio),  # a float in [0, 1) is a ratio of the total steps
        seed=seed,
        data_seed=seed,
        bf16=runtime.precision == "bf16",
        use_cpu=not torch.cuda.is_available(),  # the Trainer refuses bf16 without a GPU unless told it is on CPU
        fp16=runtime.precision == "fp16",
        train_sampling_strategy="group_by_length" if runtime.group_by_length else "random",
        length_column_name="length",
        remove_unused_columns=False,  # the collator picks the columns (and adds the cached teacher outputs)
        eval_strategy="no",
        save_strategy="steps",
        save_steps=runtime.save_steps,
        save_total_limit=1,
        logging_strategy="steps",
        logging_steps=runtime.logging_steps,
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=torch.cuda.is_available(),
        # torchrun on CPU: DDP over gloo (NCCL needs GPUs); a single process sets up no process group at all
        ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not torch.cuda.is_available() else None,
    )


class AttentionHistory(TrainerCallback):
    """ALP's attention map on a fixed batch of validation examples, `snapshots` times spread evenly over the run
    (`snapshot_steps`) and at step 0.

    A fixed number, not one every N steps: a snapshot costs about a forward pass on the batch, so at 564 steps
    one every 5 steps added a third to an ALP run's time, and the history's cost now does not grow with the
    run's length. The history travels inside each checkpoint, so a resumed run's history is whole.
    """

    FILE = "attention_history.json"

    def __init__(self, snapshots: int, compute):
        self.snapshots, self.compute, self.history = snapshots, compute, []
        self.steps: set[int] = set()

    def _snapshot(self, step: int) -> None:
        weights, entropy = self.compute()
        self.history.append({"step": step, "weights": weights.tolist(), "entropy_bits": entropy.tolist()})

    def on_train_begin(self, args, state, control, **kwargs):
        self.steps = set(snapshot_steps(state.max_steps, self.snapshots))
        if not self.history:
            self._snapshot(0)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in self.steps:
            self._snapshot(state.global_step)

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            (folder / self.FILE).write_text(json.dumps(self.history))

    def resume(self, checkpoint: str | None) -> None:
        saved = Path(checkpoint) / self.FILE if checkpoint else None
        self.history = json.loads(saved.read_text()) if saved and saved.exists() else []


def snapshot_steps(max_steps: int, snapshots: int) -> list[int]:
    """The steps after which the attention history is recorded: `snapshots` steps spread evenly over 1..max_steps,
    the last step among them (fewer when the run has fewer steps)."""
    return sorted({max(1, round(k * max_steps / snapshots)) for k in range(1, snapshots + 1)}) if max_steps else []


def run_hash(*parts) -> str:
    """Short digest of a run's settings: checkpoints are resumed only by the run they belong to."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def last_complete_checkpoint(folder: str | Path) -> str | None:
    """The newest checkpoint that was written to the end and is not damaged, removing the others.

    The Trainer writes `trainer_state.json` last, so a checkpoint without a readable one is incomplete
    (`get_last_checkpoint` would pick it by its step number and the resume would fail). One whose weights,
    optimizer or scheduler file is cut short (a full disk, a copy that stopped) is damaged: it is removed with a
    warning naming the file, and the previous checkpoint (or a fresh start) is used instead.
    """
    folder = Path(folder)
    while folder.is_dir() and (last := get_last_checkpoint(str(folder))):
        if not _state_written(Path(last)):
            shutil.rmtree(last)
            continue
        damaged = checkpoint_damage(Path(last))
        if damaged is None:
            return last
        shutil.rmtree(last)
        earlier = get_last_checkpoint(str(folder))
        warn(f"{damaged}; removed {last}, resuming from {earlier or 'the start (no earlier checkpoint)'}")
    return None


def _state_written(checkpoint: Path) -> bool:
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
        return True
    except (OSError, ValueError):
        return False


def checkpoint_damage(checkpoint: Path) -> str | None:
    """What is cut short or unreadable among a checkpoint's files (checked from their headers and sizes, without
    reading the tensors; the JSON files parsed), or None when each is whole."""
    for path in sorted(checkpoint.iterdir()):
        if path.suffix == ".json":  # trainer_state.json, attention_history.json, config.json
            why = _json_damage(path)
        elif path.suffix == ".safetensors":
            why = safetensors_damage(path)
        elif path.suffix in (".pt", ".pth", ".bin"):
            why = _zip_damage(path)
        else:
            continue
        if why:
            return f"{path}: damaged ({why})"
    return None


def safetensors_damage(path: Path) -> str | None:
    """Why a .safetensors file cannot be whole (its header, or fewer bytes than the header's tensors need)."""
    try:
        size = path.stat().st_size
        header, start = read_safetensors_header(path)
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except SafetensorsHeaderError as err:
        return str(err)
    except (OSError, ValueError, TypeError, KeyError, IndexError) as err:
        return f"unreadable header: {type(err).__name__}"
    need = start + max(ends, default=0)
    return None if size >= need else f"truncated: {size} bytes of {need}"


def _json_damage(path: Path) -> str | None:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return f"not readable JSON: {type(err).__name__}"
    expected = list if path.name == AttentionHistory.FILE else dict
    if not isinstance(content, expected):
        return f"a JSON {type(content).__name__}, not a{'' if expected is list else 'n'} {expected.__name__}"
    if path.name == "trainer_state.json" and not isinstance(content.get("global_step"), int):
        return f"global_step is {content.get('global_step')!r}, not a step number"
    return None


def _zip_damage(path: Path) -> str | None:
    # torch.save writes a zip archive whose directory is at its end: a file cut short has none
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            size = path.stat().st_size
            if any(i.header_offset + i.compress_size > size for i in z.infolist()):
                return "truncated"
    except (OSError, zipfile.BadZipFile) as err:
        return f"truncated or not a torch file: {err}"
    return None


_OUTPUT_DIRS: list[str] = []  # the checkpoint folders of the runs `train` started in this process, newest last


def last_checkpoint_written() -> str | None:
    """The newest complete checkpoint of the newest run this process trained that still has one (what an
    interrupted step resumes from), without removing anything."""
    for folder in reversed(_OUTPUT_DIRS):
        if Path(folder).is_dir():
            for ckpt in sorted(Path(folder).glob("checkpoint-*"), key=lambda p: -int(p.name.split("-")[-1])
                               if p.name.split("-")[-1].isdigit() else 0):
                if _state_written(ckpt):
                    return str(ckpt)
    return None


def train(trainer: Trainer) -> dict:
    """Train, resuming from the last checkpoint of this exact run if a killed attempt left one."""
    last = last_complete_checkpoint(trainer.args.output_dir) if trainer.is_world_process_zero() else None
    if trainer.args.world_size > 1:  # every rank resumes from what rank 0 found
        import torch.distributed as dist

        found = [last]
        dist.broadcast_object_list(found, src=0)
        last = found[0]
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, AttentionHistory):
            callback.resume(last)
    _OUTPUT_DIRS.append(trainer.args.output_dir)
    start = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=last)
    except BaseException as err:
        # a checkpoint the failure (a full disk, an interrupt) cut short is not left to look complete
        cause = disk_full(err) if isinstance(err, Exception) else None
        written = failed_file(Path(trainer.args.output_dir), err) if cause else None  # what it was writing
        if trainer.is_world_process_zero():
            _remove_incomplete(Path(trainer.args.output_dir))
        if cause:
            raise WriteError(f"{written or trainer.args.output_dir}: cannot be written ({cause}); its checkpoint was "
                             "removed. Free space (or raise the file size limit, `ulimit -f`) and re-run the same "
                             "command: it resumes from the last complete checkpoint") from None
        raise
    resumed = int(Path(last).name.split("-")[-1]) if last else 0
    return {"train_time_s": round(time.perf_counter() - start, 2), "resumed_from_step": resumed,
            "train_steps": trainer.state.global_step}


def _remove_incomplete(folder: Path) -> None:
    for ckpt in folder.glob("checkpoint-*") if folder.is_dir() else []:
        if not _state_written(ckpt) or checkpoint_damage(ckpt) is not None:
            shutil.rmtree(ckpt, ignore_errors=True)
