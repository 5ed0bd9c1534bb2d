"""The methods' declarations (alpkd/methods.py): the one place that names a method, what the report derives from them,
and a user's own method in custom/methods/<name>.py: refused with one `error:` line when bad, run end to end when good."""
from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
import yaml

from helpers import REPO, SMOKE, one_line_error, run_cli

from alpkd import methods


def test_no_method_name_outside_the_declarations():
    """No module of alpkd/ but methods.py holds a method's name as a string (a branch on a name), but for the
    config's default `distill.assistant`."""
    found = []
    for path in sorted((REPO / "alpkd").rglob("*.py")):
        if path.name == "methods.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in methods.BUILT_IN:
                found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value!r}")
    assert [f.split(":")[0] + " " + f.split(" ")[1] for f in found] == ["alpkd/config.py 'kd'"], found


def test_declarations_are_whole():
    for m in methods.BUILT_IN.values():
        assert m.label and m.family in methods.FAMILIES and m.terms and m.style, m.name
        assert all(b in methods.BUILT_IN and b != m.name for b in m.compared_with), m.name
        assert all(callable(term.fn) for term in m.terms), m.name


def test_comparisons_in_the_reports_order():
    """The pairs the report tested before the declarations, in the same order (significance.csv's rows)."""
    every = list(methods.BUILT_IN)
    before = [(a, b) for a in ("alp", "alp_no", "alp_po", "alp_scaled", "rail") for b in ("nokd", "kd", "pkd")]
    before += [("alp_scaled", "alp"), ("kd", "nokd"), ("pkd", "nokd"), ("pkd", "kd"), ("reverse", "kd"),
               ("all_to_one", "kd"), ("pkd", "reverse"), ("alp", "reverse"), ("alp", "all_to_one"), ("takd", "kd"),
               ("dgkd", "kd"), ("ceskd", "kd"), ("dgkd", "takd"), ("ceskd", "takd"), ("ceskd", "dgkd")]
    assert methods.comparisons(every) == before
    assert methods.comparisons(["kd", "alp", "pkd"]) == [("alp", "kd"), ("alp", "pkd"), ("pkd", "kd")]


# --- a user's method ---------------------------------------------------------------------------------------
def _user_root(tmp_path: Path, files: dict[str, str], listed: list[str]) -> Path:
    raw = yaml.safe_load(SMOKE.read_text())
    raw["distill"]["methods"] = ["kd", *listed]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (tmp_path / "custom" / "methods").mkdir(parents=True)
    for name, text in files.items():
        (tmp_path / "custom" / "methods" / name).write_text(text)
    return tmp_path


GOOD_TERM = "lambda b, p: (b.student_states - b.teacher_states[:, :2]).pow(2).mean()"
HEAD = "from alpkd.methods import CE, KD, Method, Term\n"


def _declared(name: str, term: str = GOOD_TERM, **fields) -> str:
    args = dict(name=repr(name), label=repr("Mine"), family=repr("layer"), states="True",
                terms=f"(CE, KD, Term('mine', {term}, lambda p: 1.0))")
    args.update(fields)
    return HEAD + "METHOD = Method(" + ", ".join(f"{k}={v}" for k, v in args.items()) + ")\n"


BAD = {  # case: (files under custom/, listed in distill.methods, what the error line says)
    "clash_in_file": ({"mine.py": _declared("kd")}, ["mine"], "custom/methods/mine.py: METHOD.name = 'kd': the name of a built-in"),
    "clash_file_name": ({"alp.py": _declared("alp")}, ["alp"], "custom/methods/alp.py: the name of a built-in method"),
    "raises": ({"mine.py": _declared("mine", "lambda b, p: 1 / 0")}, ["mine"],
               "custom/methods/mine.py: term 'mine' raised ZeroDivisionError"),
    "not_scalar": ({"mine.py": _declared("mine", "lambda b, p: b.student_states.sum(-1)")}, ["mine"],
                   "custom/methods/mine.py: term 'mine' returned (4, 2), not a scalar tensor"),
    "nan": ({"mine.py": _declared("mine", "lambda b, p: b.logits.sum() * float('nan')")}, ["mine"],
            "custom/methods/mine.py: term 'mine' returned nan"),
    "missing_field": ({"mine.py": HEAD + "METHOD = Method(name='mine', label='Mine', family='layer')\n"}, ["mine"],
                      "custom/methods/mine.py: cannot be imported (TypeError"),
    "empty_label": ({"mine.py": _declared("mine", label="''")}, ["mine"], "custom/methods/mine.py: METHOD.label is missing"),
    "no_method": ({"mine.py": "X = 1\n"}, ["mine"], "custom/methods/mine.py: declares no method"),
    "no_file": ({}, ["mine"], "distill.methods.1 = 'mine': unknown method 'mine'"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_user_method_is_one_error_line(tmp_path, case):
    files, listed, expected = BAD[case]
    root = _user_root(tmp_path, files, listed)
    error = one_line_error(run_cli("check", cwd=root), 2)
    assert expected in error, error


def test_good_user_method_passes_check(tmp_path):
    root = _user_root(tmp_path, {"cls_cosine.py": (REPO / "custom" / "methods" / "cls_cosine.py").read_text()}, ["cls_cosine"])
    result = run_cli("check", cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.slow
def test_user_method_end_to_end(tmp_path, monkeypatch):
    """custom/methods/cls_cosine.py through the smoke pipeline's steps (teachers, students, report): trained with the same
    teachers and seeds, in the results table and in the adjusted comparisons beside the built-in methods."""
    root = _user_root(tmp_path, {"cls_cosine.py": (REPO / "custom" / "methods" / "cls_cosine.py").read_text()}, ["cls_cosine"])
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["distill"]["methods"] = ["nokd", "kd", "cls_cosine"]
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    for step in (["teacher", "--task", "rte"], ["distill", "--task", "rte", "--depth", "1"]):
        result = run_cli("--out", ".", *step, cwd=root, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
    for seed, teacher in ((42, 42), (43, 43)):
        rec = json.loads((root / "metrics/students/rte-1/cls_cosine" / f"s{seed}.json").read_text())
        assert (rec["method"], rec["teacher_seed"]) == ("cls_cosine", teacher)
    assert json.loads((root / "attention/rte-1/cls_cosine/s42.json").read_text())["pairs"] == [3]
    assert "loss_cos" in (root / "logs/rte-1/cls_cosine/s42.csv").read_text().splitlines()[0]
    result = run_cli("significance", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1,cls_cosine,nokd," in result.stdout and "1,cls_cosine,kd," in result.stdout, result.stdout
    monkeypatch.chdir(root)  # custom/ is the repository's (the folder holding params.yaml)
    from alpkd import config
    from alpkd.report import write_report

    write_report(config.load(root / "params.yaml"), root)
    md = (root / "report" / "results.md").read_text()
    assert "| 1 | CLS-cosine |" in md and "CLS-cosine − KD" in md, md
    shutil.rmtree(root / "models", ignore_errors=True)
