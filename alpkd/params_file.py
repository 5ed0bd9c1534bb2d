"""Finding and reading the params file: `repo_root` (the folder holding params.yaml), `read_yaml` (a YAML reader
that names file and line of a fault and refuses a key given twice), and `ConfigError`, what a bad parameter raises.

Apart from `config` (the parameters' types and checks), which reads through it.
"""
from __future__ import annotations

from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A bad parameter: the message names the key, the value and what is allowed."""


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key, first: int, second: int):
        super().__init__(f"key {key!r} appears twice, on line {first} and on line {second}; keep one")
        self.line = second


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key repeated in one mapping (plain YAML keeps the last, silently)."""

    def construct_mapping(self, node, deep=False):
        lines = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in lines:
                    raise _DuplicateKey(key, lines[key], key_node.start_mark.line + 1)
                lines[key] = key_node.start_mark.line + 1
            except TypeError:  # an unhashable key: the constructor below reports it
                pass
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path):
    """A YAML file's content; a syntax error or a repeated key is a `ConfigError` naming file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = Path(path).read_bytes()[:err.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line} (byte {err.start}): not UTF-8 text ({err.reason}); "
                          "expected a YAML text file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read it ({err.strerror})") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as err:
        raise ConfigError(f"{path}: line {err.line}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = " ".join(filter(None, [getattr(err, "context", None), getattr(err, "problem", None)])) or str(err)
        raise ConfigError(f"{path}: {at}: not valid YAML ({problem}); lines and columns count from 1") from None


def repo_root(start: str | Path | None = None) -> Path:
    """The nearest folder at or above `start` (default: the working directory) holding params.yaml.

    nbval starts kernels in notebooks/, papermill under DVC in the repository root: both resolve here.
    """
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params.yaml").exists():
            return folder
    raise ConfigError(f"no params.yaml found in {here} or any parent folder")
