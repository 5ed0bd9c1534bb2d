"""Teachers and students: loading a BERT-family teacher, building an m-layer student from it."""
from __future__ import annotations

import math

import copy
import random

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from .model_files import teacher_path


def load_tokenizer(model: str) -> PreTrainedTokenizerBase:
    # the tiny random teacher borrows MiniLM's uncased WordPiece vocabulary: no download needed
    return AutoTokenizer.from_pretrained(teacher_path("minilm" if model == "tiny" else model))


def tiny_config(tiny, num_labels: int, vocab_size: int) -> BertConfig:
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=tiny.hidden_size,
        num_hidden_layers=tiny.num_layers,
        num_attention_heads=tiny.num_heads,
        intermediate_size=tiny.intermediate_size,
        max_position_embeddings=512,
        num_labels=num_labels,
    )


def load_pretrained(teacher, num_labels: int, seed: int = 0) -> PreTrainedModel:
    """A teacher to fine-tune: pretrained weights with a new classifier, or the tiny random BERT."""
    problem = "regression" if num_labels == 1 else "single_label_classification"
    if teacher.model == "tiny":
        torch.manual_seed(seed)
        vocab = len(load_tokenizer("tiny"))
        config = tiny_config(teacher.tiny, num_labels, vocab)
        config.problem_type = problem
        return AutoModelForSequenceClassification.from_config(config)
    return AutoModelForSequenceClassification.from_pretrained(
        teacher_path(teacher.model), num_labels=num_labels, problem_type=problem
    )


def _layers(model: PreTrainedModel) -> torch.nn.ModuleList:
    return model.base_model.encoder.layer


def skip_layers(n: int, m: int) -> list[int]:
    """Teacher layers (0-based) matched to student layers by PKD-skip: `g(i) = ceil(i*n/m)`, i = 1..m.

    For n divisible by m these are layers n/m, 2n/m, ..., n (1-based); the last is always layer n.
    """
    if not 1 <= m <= n:
        raise ValueError(f"need 1 <= m <= n, got m={m}, n={n}")
    return [math.ceil(i * n / m) - 1 for i in range(1, m + 1)]


def layer_states(output) -> torch.Tensor:
    """Each layer's token states, (B, T, layers, d), of an `output_hidden_states=True` output; the embedding output dropped."""
    return torch.stack(output.hidden_states[1:], dim=-2)


def init_layers(init: str, n: int, m: int) -> list[int] | None:
    """Teacher layers (0-based) whose weights initialise student layers 1..m; None for `random`."""
    if init == "skip":
        return skip_layers(n, m)
    if init == "first":
        return list(range(m))
    if init == "random":
        return None
    raise ValueError(f"unknown student.init {init!r}; allowed: skip, first, random")


def build_student(teacher: PreTrainedModel, depth: int, init: str = "skip", seed: int = 0,
                  fresh_classifier: bool = False) -> PreTrainedModel:
    """The architecture of `teacher` (the fine-tuned teacher, or the checkpoint it was fine-tuned from) with
    `depth` layers.

    Embeddings, pooler and classifier are copied from `teacher`; layer i copies its layer `init_layers(init)[i]`,
    or keeps its fresh random initialisation (seeded) for `random`. `fresh_classifier` (the `init_from:
    pretrained` start) keeps the student's own seeded classifier instead: the checkpoint's has learnt nothing.
    """
    n = teacher.config.num_hidden_layers
    if not 1 <= depth < n:
        raise ValueError(f"student depth must be >= 1 and < the teacher's {n} layers, got {depth}")
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = depth
    random.seed(seed)
    torch.manual_seed(seed)
    student = type(teacher)(config)
    chosen = init_layers(init, n, depth)
    state = {}
    for key, value in teacher.state_dict().items():
        if ".encoder.layer." not in key and not (fresh_classifier and key.startswith("classifier.")):
            state[key] = value
    if chosen is not None:
        prefix = f"{teacher.base_model_prefix}.encoder.layer."
        for i, j in enumerate(chosen):
            for key, value in _layers(teacher)[j].state_dict().items():
                state[f"{prefix}{i}.{key}"] = value
    missing, unexpected = student.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (fresh_classifier and k.startswith("classifier."))]
    if unexpected or (chosen is not None and missing):
        raise RuntimeError(f"student initialisation mismatch: missing {missing}, unexpected {unexpected}")
    student.config.alpkd_init_layers = chosen  # recorded in the student's config.json
    return student

