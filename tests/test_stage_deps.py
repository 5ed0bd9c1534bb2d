"""Each notebook stage's code dependencies in dvc.yaml are the import closure of its notebook within alpkd/ (DESIGN:
Library layout): the notebook's code cells' `import alpkd...` / `from alpkd...` statements, followed through alpkd's
modules, imports inside functions included (they run). A subpackage (alpkd/report) may be listed as one folder
dependency covering its modules. A missing dependency (a change that does not re-run the stage) and an extra one (a
change that re-runs it for nothing) both fail."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "alpkd"
# the stages that run a notebook: stage name -> notebook
NOTEBOOK_STAGES = {"teacher": "notebooks/01_teacher.ipynb", "distill": "notebooks/02_distill.ipynb",
                   "assist": "notebooks/02b_assist.ipynb", "report": "notebooks/03_report.ipynb"}


def _module_file(name: str) -> Path | None:
    """The file of module `name` (dotted, e.g. `alpkd.report.tables`), or None outside alpkd/."""
    if name != "alpkd" and not name.startswith("alpkd."):
        return None
    path = ROOT.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def _module_name(file: Path) -> str:
    parts = file.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(tree: ast.AST, module: str | None, is_package: bool) -> set[str]:
    """The alpkd modules a syntax tree imports (every import statement, at any depth). `module`: the dotted name
    of the module the tree is (for relative imports); None for a notebook."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:  # `import alpkd.x.y` imports alpkd, alpkd.x and alpkd.x.y
                parts = alias.name.split(".")
                found.update(".".join(parts[:k]) for k in range(1, len(parts) + 1))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                assert module is not None, "a relative import outside the package"
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            parts = target.split(".")
            found.update(".".join(parts[:k]) for k in range(1, len(parts) + 1))  # parents run first
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from alpkd import distill`
    return {name for name in found if _module_file(name) is not None}


def closure(notebook: str) -> set[Path]:
    """The files under alpkd/ that running the notebook's code cells imports, transitively."""
    cells = json.loads((ROOT / notebook).read_text())["cells"]
    source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]  # IPython magics
    todo, seen = _imported(ast.parse("\n".join(lines)), None, False), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        file = _module_file(name)
        todo |= _imported(ast.parse(file.read_text()), name, file.name == "__init__.py") - seen
    return {_module_file(name).relative_to(ROOT) for name in seen}


def stage_deps(stage: str) -> set[Path]:
    """The stage's dependencies under alpkd/, a folder expanded to its modules."""
    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    deps = deps.get("do", deps)["deps"]
    files = set()
    for dep in deps:
        path = Path(dep)
        if path.parts[0] != "alpkd":
            continue
        if (ROOT / path).is_dir():
            files.update(f.relative_to(ROOT) for f in (ROOT / path).rglob("*.py"))
        else:
            files.add(path)
    return files


@pytest.mark.parametrize("stage", NOTEBOOK_STAGES)
def test_stage_deps_are_the_notebook_import_closure(stage):
    wanted, listed = closure(NOTEBOOK_STAGES[stage]), stage_deps(stage)
    missing, extra = sorted(map(str, wanted - listed)), sorted(map(str, listed - wanted))
    assert not missing and not extra, (f"dvc.yaml stage {stage!r} ({NOTEBOOK_STAGES[stage]}): missing deps {missing} "
                                       f"(imported, not listed); extra deps {extra} (listed, not imported)")


def test_closure_follows_function_level_and_relative_imports():
    # alpkd/report/__init__.py imports `progress` inside a function, relatively (`from .. import progress`)
    assert Path("alpkd/progress.py") in closure(NOTEBOOK_STAGES["report"])
    # the teacher notebook reaches the teacher stage directly, not through the students' module
    assert Path("alpkd/distill.py") not in closure(NOTEBOOK_STAGES["teacher"])
    assert Path("alpkd/executor.py") not in closure(NOTEBOOK_STAGES["teacher"])


def _chain(notebook: str, target: str) -> str:
    """How the notebook reaches `target` (a module name): the first import path found, for a failure message."""
    cells = json.loads((ROOT / notebook).read_text())["cells"]
    source = "\n".join(line for c in cells if c["cell_type"] == "code" for line in "".join(c["source"]).splitlines()
                       if not line.lstrip().startswith(("%", "!")))
    start = sorted(_imported(ast.parse(source), None, False))
    paths, seen = [[name] for name in start], set(start)
    while paths:
        path = paths.pop(0)
        if path[-1] == target:
            return " -> ".join(path)
        file = _module_file(path[-1])
        for name in sorted(_imported(ast.parse(file.read_text()), path[-1], file.name == "__init__.py") - seen):
            seen.add(name)
            paths.append(path + [name])
    return "(not reached)"


@pytest.mark.parametrize("stage", ["data", "teacher"])
def test_distillation_code_is_no_dependency_of_data_or_teacher(stage):
    """A change to a loss or to a method's declaration re-runs the students and the report, never a teacher: the
    teacher trains with the task loss (trainer.py), and its notebook's import closure reaches neither module."""
    deps = stage_deps(stage)
    for module in ("losses", "methods"):
        how = _chain(NOTEBOOK_STAGES[stage], f"alpkd.{module}") if stage in NOTEBOOK_STAGES else ""
        assert Path(f"alpkd/{module}.py") not in deps, f"stage {stage!r} depends on alpkd/{module}.py ({how})"
    for other in ("distill", "assist", "report"):  # those that run them depend on both, and on a user's methods
        assert {Path("alpkd/losses.py"), Path("alpkd/methods.py")} <= stage_deps(other), other
        deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][other]
        assert "custom/methods" in [d.split()[0] for d in deps.get("do", deps)["deps"]], other
