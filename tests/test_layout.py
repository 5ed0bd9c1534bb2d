"""Boundaries the layout shows (DESIGN: Library layout): no import circle among alpkd's modules, no private name
(a leading underscore) of one module used by another, and parameter validation that reads only the params file
(what a model folder, the data source or the hub says is `alpkd.preflight`'s). Read from the source, imports inside
functions included (they run), so an import moved into a function to dodge a circle is still one."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
           for p in sorted((ROOT / "alpkd").rglob("*.py"))}


def _imports(name: str) -> list[tuple[str, str | None, str | None]]:
    """(imported alpkd module, the name taken from it or None, the local name bound to the module or None) for each
    import in module `name`; `from .x import y` where alpkd.x.y is a module counts as that module."""
    path = MODULES[name]
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, None, a.asname) for a in node.names if a.name in MODULES]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for a in node.names:
                if f"{target}.{a.name}" in MODULES:
                    found.append((f"{target}.{a.name}", None, a.asname or a.name))
                elif target in MODULES:
                    found.append((target, a.name, None))
    return found


def _edges(name: str) -> set[str]:
    """The alpkd modules `name` imports, but its own packages (a package's `__init__` running first is no circle)."""
    return {t for t, _, _ in _imports(name) if t != name and not name.startswith(t + ".")}


def _closure(name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        for t in _edges(todo.pop()) - seen:
            seen.add(t)
            todo.append(t)
    return seen


def test_no_import_circle():
    circles = sorted(f"{a} -> {b} -> ... -> {a}" for a in MODULES for b in _edges(a) if a in _closure(b))
    assert not circles, "import circles among alpkd's modules:\n" + "\n".join(circles)


def test_no_private_name_from_another_module():
    used = []
    for name in MODULES:
        aliases = {}  # a local name bound to another alpkd module -> that module
        for target, taken, bound in _imports(name):
            if taken is not None and taken.startswith("_") and not taken.startswith("__") and target != name:
                used.append(f"{name}: from {target} import {taken}")
            if bound is not None:
                aliases[bound] = target
        for node in ast.walk(ast.parse(MODULES[name].read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases \
                    and node.attr.startswith("_") and not node.attr.startswith("__") \
                    and aliases[node.value.id] != name:
                used.append(f"{name}: {node.value.id}.{node.attr} ({aliases[node.value.id]})")
    assert not used, "private names used across alpkd's modules:\n" + "\n".join(sorted(set(used)))


def test_parameter_validation_reads_only_the_params_file():
    # params_file finds and reads the file; tasks is the registry of task declarations (no file read)
    assert _closure("alpkd.config") == {"alpkd.params_file", "alpkd.tasks"}, _closure("alpkd.config")
    assert "alpkd.model_files" in _closure("alpkd.preflight")  # the teacher's folder is read there
