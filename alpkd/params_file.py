"""Finding and reading the params file: `repo_root` (the folder holding params.yaml), `read_yaml` (the one YAML
reader of the library: YAML 1.2 as DVC reads params.yaml, naming file and line of a fault, refusing a key given
twice), `path_problem` (what a path is when it is not a readable file: a link loop, a folder, a FIFO, ...), and
`ConfigError`, what a bad parameter raises.

Apart from `config` (the parameters' types and checks), which reads through it.
"""
from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path


class ConfigError(ValueError):
    """A bad parameter: the message names the key, the value and what is allowed."""


def _reader():
    """DVC's own reading of params.yaml (`dvc.utils.serialize._yaml.parse_yaml`): ruamel.yaml's safe loader, YAML 1.2
    (`042` is 42, `on`/`no` and `1:30` are texts, `1e-4` a float), a key given twice refused. Whatever else reads a
    params file or profile in the library reads it through `read_yaml`, so the run and DVC's tracked parameters
    never differ."""
    from ruamel.yaml import YAML

    return YAML(typ="safe")


def yaml11_reading(text: str):
    """What a YAML 1.1 reader (PyYAML, as papermill's `-f` uses) makes of a plain scalar `text`; `text` itself when
    it has no other reading or none could be made. For messages only: nothing is read this way."""
    try:
        import yaml  # PyYAML: the reader of the family of misreadings (issue 37)

        return yaml.safe_load(f"v: {text}\n")["v"] if "\n" not in text else text
    except Exception:  # noqa: BLE001 - a message's hint, never an error of its own
        return text


def yaml_value(text: str):
    """A value given on the command line (`-S key=value`) read as DVC reads it (YAML 1.2); a text that is no YAML
    stays the text."""
    from ruamel.yaml.error import YAMLError

    try:
        return _reader().load(text)
    except YAMLError:
        return text


def read_yaml(path: str | Path):
    """A YAML file's content, read as DVC reads it (`_reader`); a syntax error or a repeated key is a
    `ConfigError` naming file and line."""
    from ruamel.yaml.constructor import DuplicateKeyError
    from ruamel.yaml.error import YAMLError

    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = Path(path).read_bytes()[:err.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line} (byte {err.start}): not UTF-8 text ({err.reason}); "
                          "expected a YAML text file") from None
    except OSError as err:
        raise ConfigError(f"{path}: {file_problem(path, err, 'a YAML file such as params.yaml')}") from None
    try:
        return _reader().load(text)
    except DuplicateKeyError as err:
        key, first, second = _repeated_key(text, err)
        raise ConfigError(f"{path}: line {second}: key {key!r} appears twice, on line {first} and on line "
                          f"{second}; keep one") from None
    except YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = " ".join(filter(None, [getattr(err, "context", None), getattr(err, "problem", None)])) or str(err)
        raise ConfigError(f"{path}: {at}: not valid YAML ({problem}); lines and columns count from 1") from None


def _repeated_key(text: str, err) -> tuple[str, int, int]:
    """The key a `DuplicateKeyError` is about, with the lines (from 1) of its first and second appearance."""
    second = err.problem_mark.line + 1
    found = re.search(r'duplicate key "(.*)" with value', err.problem or "")
    key = found.group(1) if found else "?"
    nodes = [_reader().compose(text)]
    while nodes:  # the mapping holding the repeated key: the first of its keys with that text
        node = nodes.pop()
        if isinstance(node.value, list):
            pairs = [p for p in node.value if isinstance(p, tuple)]
            lines = [k.start_mark.line + 1 for k, _ in pairs if getattr(k, "value", None) == key]
            if second in lines and len(lines) > 1:
                return key, lines[0], second
            nodes.extend(x for p in node.value for x in (p if isinstance(p, tuple) else (p,)))
    return key, err.context_mark.line + 1 if err.context_mark else second, second


def path_problem(path: str | Path, expected: str, folder: bool = False) -> str | None:
    """What is wrong with `path` where `expected` (in words, "a CSV file") belongs, in one phrase naming what the
    path is: a symbolic link to itself, a link loop, a dangling link, a folder, a named pipe (FIFO), a socket or
    device, a file this user may not read, a name longer than the file system allows, or nothing there; None when
    it is a readable regular file (with `folder`: a folder whose entries can be read).

    Checked before anything opens the path: reading a FIFO would wait forever."""
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError as err:
        if err.errno == errno.ELOOP:
            if p.is_symlink() and Path(os.path.normpath(p.parent / os.readlink(p))) == Path(os.path.normpath(p)):
                return f"{p}: a symbolic link to itself; expected {expected}"
            return f"{p}: a symbolic link in a loop (links that lead back to each other); expected {expected}"
        if err.errno == errno.ENOENT and p.is_symlink():
            return (f"{p}: a dangling symbolic link (to {os.readlink(p)}, which does not exist); "
                    f"expected {expected}")
        if err.errno == errno.ENOENT:
            return f"{p}: not found; expected {expected}"
        if err.errno == errno.ENOTDIR:
            return f"{p}: a part of the path above it is a file, not a folder; expected {expected}"
        if err.errno == errno.EACCES:
            return f"{p}: cannot be reached (permission denied on a folder above it); expected {expected}"
        if err.errno == errno.ENAMETOOLONG:
            longest = max(len(part.encode()) for part in p.parts)
            if longest > _name_max(p):
                return (f"{p}: a name in the path is {longest} bytes, longer than the file system allows "
                        f"({_name_max(p)} bytes per name); expected {expected}")
            return (f"{p}: the path is {len(str(p.absolute()).encode())} bytes, longer than the file system allows "
                    f"({os.pathconf('/', 'PC_PATH_MAX')} bytes per path); expected {expected}")
        return f"{p}: cannot be opened ({err.strerror}); expected {expected}"
    kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a named pipe (FIFO)" if stat.S_ISFIFO(st.st_mode)
            else "a socket" if stat.S_ISSOCK(st.st_mode)
            else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a file")
    if folder and kind != "a folder":
        return f"{p}: {kind}, not a folder; expected {expected}"
    if folder and not os.access(p, os.R_OK | os.X_OK):
        return f"{p}: a folder this user may not read (permission denied); expected {expected} that can be read"
    if not folder and kind != "a file":
        return f"{p}: {kind}, not a regular file; expected {expected}"
    if not folder and not os.access(p, os.R_OK):
        return f"{p}: a file this user may not read (permission denied); expected {expected} that can be read"
    return None


def _name_max(path: Path) -> int:
    """The longest file name (bytes) of the file system holding `path`'s nearest existing folder (255 if unknown)."""
    for folder in path.absolute().parents:
        try:
            return os.pathconf(folder, "PC_NAME_MAX")
        except (OSError, ValueError):
            continue
    return 255


def file_problem(path: str | Path, err: OSError, expected: str) -> str:
    """`path_problem`'s phrase for a path whose reading failed with `err` (the error's own words if the path
    looks fine now), without the path itself."""
    found = path_problem(path, expected)
    prefix = f"{Path(path)}: "
    if found:
        return found[len(prefix):] if found.startswith(prefix) else found
    return f"cannot be read ({err.strerror or err}); expected {expected}"


def repo_root(start: str | Path | None = None) -> Path:
    """The nearest folder at or above `start` (default: the working directory) holding params.yaml.

    nbval starts kernels in notebooks/, papermill under DVC in the repository root: both resolve here.
    """
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params.yaml").exists():
            return folder
    raise ConfigError(f"no params.yaml found in {here} or any parent folder")
