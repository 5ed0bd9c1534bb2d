"""A synthetic GLUE in the layout of the hub dataset `nyu-mll/glue`, and a 12-layer BERT folder saved as
`bert-base-uncased` is, both built at test time (nothing downloaded, nothing committed as data).

`build_glue(folder)` writes, for each of the eight GLUE tasks, `<folder>/<task>/<split>-00000-of-00001.parquet`
with the hub's split names (MNLI: train, validation_matched, validation_mismatched, test_matched,
test_mismatched), column names, dtypes and label names (HF `ClassLabel` features stored in the parquet schema,
as the hub's own files carry them); test splits have the hub's label -1. Texts are random words of the uncased
WordPiece vocabulary; labels cycle through every class, so each occurs in every split. Read through
`ALPKD_GLUE_DIR=<folder>`, exactly as ../shared/glue is. `tests/test_paper_rehearsal.py` checks it against
the real local copy where they overlap (cola, sst2, mrpc, stsb, rte).

`build_bert_folder(folder, ...)`: a randomly initialised `BertForPreTraining` (the architecture
bert-base-uncased's config names) with the given depth and a tiny width, saved with `save_pretrained`
(config.json, model.safetensors) and the uncased WordPiece tokenizer (vocab.txt, tokenizer.json,
tokenizer_config.json): `teacher.model: <folder>` takes the "folder or hub id" path of the library.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

# nyu-mll/glue: the text columns and label names of each task (None: STS-B's float score); every split has `idx`
GLUE_LAYOUT: dict[str, tuple[tuple[str, ...], list[str] | None]] = {
    "cola": (("sentence",), ["unacceptable", "acceptable"]),
    "sst2": (("sentence",), ["negative", "positive"]),
    "mrpc": (("sentence1", "sentence2"), ["not_equivalent", "equivalent"]),
    "stsb": (("sentence1", "sentence2"), None),
    "qqp": (("question1", "question2"), ["not_duplicate", "duplicate"]),
    "mnli": (("premise", "hypothesis"), ["entailment", "neutral", "contradiction"]),
    "qnli": (("question", "sentence"), ["entailment", "not_entailment"]),
    "rte": (("sentence1", "sentence2"), ["entailment", "not_entailment"]),
}
HUB_SPLITS = {"mnli": ("train", "validation_matched", "validation_mismatched", "test_matched", "test_mismatched")}
DEFAULT_SPLITS = ("train", "validation", "test")


def splits(task: str) -> tuple[str, ...]:
    return HUB_SPLITS.get(task, DEFAULT_SPLITS)


def vocabulary() -> list[str]:
    """Whole words of the uncased WordPiece vocabulary (bert-base-uncased's, shipped with MiniLM)."""
    from alpkd.model_files import teacher_path

    words = (Path(teacher_path("minilm")) / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return [w for w in words if w.isalpha() and w.isascii() and len(w) > 2]


def _features(task: str):
    import datasets

    columns, names = GLUE_LAYOUT[task]
    label = datasets.Value("float32") if names is None else datasets.ClassLabel(names=names)
    return datasets.Features({**{c: datasets.Value("string") for c in columns}, "label": label,
                              "idx": datasets.Value("int32")})


def build_glue(folder: Path, rows: int = 32, seed: int = 0, tasks: tuple[str, ...] = tuple(GLUE_LAYOUT)) -> Path:
    """The synthetic GLUE under `folder` (see the module's docstring); `rows` per split."""
    import datasets

    rng = np.random.default_rng(seed)
    words = vocabulary()
    for task in tasks:
        columns, names = GLUE_LAYOUT[task]
        (folder / task).mkdir(parents=True, exist_ok=True)
        for split in splits(task):
            texts = {c: [" ".join(rng.choice(words, size=rng.integers(4, 12))) for _ in range(rows)] for c in columns}
            if split.startswith("test"):
                label = [-1.0 if names is None else -1] * rows
            elif names is None:
                label = [float(np.float32(v)) for v in rng.uniform(0, 5, size=rows)]
            else:  # every class in every split, in a shuffled order
                label = [int(v) for v in rng.permutation(np.arange(rows) % len(names))]
            ds = datasets.Dataset.from_dict({**texts, "label": label, "idx": list(range(rows))},
                                            features=_features(task))
            ds.to_parquet(str(folder / task / f"{split}-00000-of-00001.parquet"))
    return folder


def build_bert_folder(folder: Path, num_layers: int = 12, hidden_size: int = 16, num_heads: int = 2,
                      intermediate_size: int = 32, seed: int = 0) -> Path:
    """A random BERT of `num_layers` layers saved in the form of bert-base-uncased (see the module's docstring)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForPreTraining

    from alpkd.model_files import teacher_path

    tokenizer = AutoTokenizer.from_pretrained(teacher_path("minilm"))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
                        num_attention_heads=num_heads, intermediate_size=intermediate_size,
                        max_position_embeddings=512, architectures=["BertForPreTraining"])
    torch.manual_seed(seed)
    BertForPreTraining(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    shutil.copy2(Path(teacher_path("minilm")) / "vocab.txt", folder / "vocab.txt")  # as the hub folder has it
    return folder
