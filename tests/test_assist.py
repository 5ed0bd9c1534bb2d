"""Teacher assistants in the pipeline: the deeper students' cached logits (keyed by their weights), the `assist`
stage that trains TAKD, DGKD and CES-KD from them, its markers at the largest depth, and the DAG: a changed deeper
student re-runs the assist stage and the report, and nothing else (checked with `dvc status`).

The losses themselves are checked against plain loops in test_losses.py; here, the wiring, against independent
computations (a fresh forward of the saved assistant, the cache's own files, hand-counted shares).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from helpers import REPO, SMOKE, TASK, changed_stages, make_repo, pipeline_env, ran_stages, sh

ASSISTED = ["takd", "dgkd", "ceskd"]


def _params(methods=("kd", *ASSISTED), **distill):
    from alpkd import methods as declared

    raw = yaml.safe_load(SMOKE.read_text())
    raw["student"]["depths"] = [2, 1]
    raw["distill"]["methods"] = list(methods)
    raw["distill"].update(distill)
    return declared.validate(raw)


@pytest.fixture(scope="module")
def grid(teacher_root, tmp_path_factory):
    """A root with the smoke teachers, the 2-layer KD students (the assistants) and the assist stage's runs."""
    from alpkd import distill

    root = tmp_path_factory.mktemp("assist")
    for part in ("models", "cache", "data"):
        if (teacher_root / part).exists():
            shutil.copytree(teacher_root / part, root / part)
    params = _params(keep_models="all")
    distill.distill_group(params, TASK, 2, root)
    distill.distill_group(params, TASK, 1, root, ["kd"])
    records = distill.assist_group(params, TASK, root)
    return params, root, records


def test_assistant_cache_is_the_saved_assistants_logits(grid):
    """Every seed's 2-layer KD student (an assistant) has a cache holding that model's logits on every training row,
    keyed by its weights."""
    from transformers import AutoModelForSequenceClassification

    from alpkd import cache, data
    from alpkd.evaluation import load_saved
    from alpkd.paths import Layout, Run

    params, root, _ = grid
    layout = Layout(root)
    for seed in params.distill.seeds:
        weights = layout.student_model(Run(TASK, 2, "kd", seed))
        assert (weights / "config.json").exists()
        folder = layout.assistant_cache(TASK, 2, "kd", seed)
        assert cache.read_key(folder, "train")["teacher"] == cache.model_fingerprint(weights)
        logits = np.load(folder / "train" / "logits.npy")
        model = AutoModelForSequenceClassification.from_pretrained(weights).eval()
        tokenizer, _ = load_saved(weights, "")
        train = data.prepare(params.task(TASK), tokenizer, params.data, root, params.student_train_samples)["train"]
        assert len(logits) == len(train)
        for row in (0, len(train) // 2, len(train) - 1):  # one example at a time: no padding at all
            ids, types = torch.tensor([train[row]["input_ids"]]), torch.tensor([train[row]["token_type_ids"]])
            with torch.no_grad():
                expected = model(input_ids=ids, token_type_ids=types).logits[0].numpy()
            np.testing.assert_allclose(logits[train[row]["cache_row"]], expected, rtol=1e-4, atol=1e-5)
    manifest = json.loads((layout.assistant_group(TASK, 2) / "assistants.json").read_text())
    assert manifest["method"] == "kd" and manifest["seeds"] == list(params.distill.seeds)


@pytest.mark.parametrize("methods", [("kd", "takd"), ("kd",)])
def test_keep_models_first_keeps_the_assistants_logits_not_their_weights(teacher_root, tmp_path, methods):
    """`keep_models: first` removes the other seeds' weights, assistants' too (the assist stage reads their cached
    logits, which carry the weights' fingerprint); without an assisted method nothing is cached."""
    from alpkd import distill
    from alpkd.paths import Layout, Run

    for part in ("models", "cache"):
        shutil.copytree(teacher_root / part, tmp_path / part)
    params = _params(methods=methods, keep_models="first")
    distill.distill_group(params, TASK, 2, tmp_path)
    layout = Layout(tmp_path)
    first, second = params.distill.seeds
    assert (layout.student_model(Run(TASK, 2, "kd", first)) / "config.json").exists()
    assert not layout.student_model(Run(TASK, 2, "kd", second)).exists()
    manifest = json.loads((layout.assistant_group(TASK, 2) / "assistants.json").read_text())
    if "takd" in methods:
        assert all((layout.assistant_cache(TASK, 2, "kd", s) / "train" / "logits.npy").exists() for s in (first, second))
        assert manifest["method"] == "kd"
    else:
        assert not (layout.assistant_group(TASK, 2) / "kd").exists()
        assert manifest["method"] is None and "nothing cached" in manifest["why"]


def test_assisted_records_markers_and_shares(grid):
    from alpkd.paths import Layout, Run

    params, root, records = grid
    layout = Layout(root)
    assert set(records) == {2, 1} and all(records[2][m] == [] for m in ASSISTED)
    for method in ASSISTED:  # the largest depth has no assistant: a marker, no run
        marker = json.loads(layout.not_defined(TASK, 2, method).read_text())
        assert marker["not_defined"] and "deeper" in marker["why"]
        assert not layout.student_metrics(Run(TASK, 2, method, 42)).exists()
        for rec in records[1][method]:
            assert rec["assistants"] == [f"2-layer kd s{rec['seed']}"]
            assert layout.student_metrics(Run(TASK, 1, method, rec["seed"])).parent.parent.parent.name == \
                f"{TASK}-assisted"
    seed = params.distill.seeds[0]
    dgkd = json.loads(layout.attention(Run(TASK, 1, "dgkd", seed)).read_text())
    assert dgkd["guides"] == ["2-layer kd", "teacher"]
    assert sum(dgkd["kept_share"]) == pytest.approx(1.0)  # two guides, one dropped: exactly one kept each step
    ceskd = json.loads(layout.attention(Run(TASK, 1, "ceskd", seed)).read_text())
    # one epoch (the smoke schedule): the last epoch's equal split, the easier half to the assistant
    n = 48  # data.max_train_samples of the smoke profile
    assert ceskd["share_by_epoch"] == [[(n // 2) / n, (n // 2) / n]]


def test_stale_assistant_cache_is_refused(grid, tmp_path):
    from alpkd import cache, distill
    from alpkd.paths import Layout

    params, root, _ = grid
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    folder = Layout(copy).assistant_cache(TASK, 2, "kd", 42)
    key = dict(cache.read_key(folder, "train"), max_length=params.data.max_length + 1)  # built for other inputs
    cache.write(folder, "train", key, np.load(folder / "train" / "logits.npy"), np.zeros((48, 0, 0), np.float16))
    with pytest.raises(cache.CacheError, match="stale.*max_length"):
        distill.distill_student(params, TASK, 1, "takd", 42, copy)


def test_collator_stacks_assistants_smallest_first(tmp_path):
    from alpkd import data

    class Fake:
        def __init__(self, offset):
            self.offset = offset

        def rows(self, rows):
            return torch.tensor([[self.offset + r, -r] for r in rows], dtype=torch.float32), torch.zeros(len(rows), 0, 0)

    from transformers import BertTokenizerFast

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]))
    collate = data.Collator(BertTokenizerFast(str(vocab)), None, [Fake(100), Fake(200)])
    batch = collate([{"input_ids": [2, 5, 3], "attention_mask": [1, 1, 1], "labels": 1, "cache_row": 7},
                     {"input_ids": [2, 6, 6, 3], "attention_mask": [1, 1, 1, 1], "labels": 0, "cache_row": 3}])
    assert batch["assistant_logits"].shape == (2, 2, 2)
    assert batch["assistant_logits"][:, :, 0].tolist() == [[107, 103], [207, 203]]
    assert batch["cache_row"].tolist() == [7, 3] and "teacher_logits" not in batch


def test_config_refuses_assisted_methods_without_their_assistant():
    from alpkd import config

    with pytest.raises(config.ConfigError, match=r"distill.assistant = 'kd': not in distill.methods"):
        _params(methods=("nokd", "takd"))
    with pytest.raises(config.ConfigError, match=r"all_to_one_layer = 5: the teacher has 4 layers; allowed: 1..4"):
        _params(methods=("kd", "all_to_one"), all_to_one_layer=5)


def test_plot_templates_colour_every_method_as_the_figures_do():
    """The DVC plot templates' colours and labels are the matplotlib figures' (alpkd.methods), for every method."""
    from matplotlib.colors import to_hex

    from alpkd import methods

    METHODS = list(methods.BUILT_IN)
    METHOD_LABELS = {m: methods.label(m) for m in METHODS}
    METHOD_STYLES = {m: methods.get(m).style for m in METHODS}

    for name in ("methods.json", "methods_by_depth.json"):
        template = json.loads((REPO / ".dvc" / "plots" / name).read_text())
        color = template["encoding"]["color"]
        # no fixed domain: the legend lists the methods in the data; each one's colour computed from its name
        assert "domain" not in color["scale"] and color["scale"]["range"] == {"field": "colour"}
        [colour] = [t["calculate"] for t in template["transform"] if t.get("as") == "colour"]
        for m in METHODS:
            assert f"datum.field == '{m}' ? '{to_hex(METHOD_STYLES[m]['color'])}'" in colour
            assert f"datum.label == '{m}' ? '{METHOD_LABELS[m]}'" in color["legend"]["labelExpr"]
        # a title named from the file, not its path
        assert "'<DVC_METRIC_TITLE>'" in template["title"]["text"]["expr"]


# --- the pipeline: the assist stage in the DAG ------------------------------------------------------------------
@pytest.mark.slow
def test_assist_stage_in_the_dag(tmp_path):
    """`dvc repro` on a fresh clone with depths [2, 1]: the assist stage runs after both distill stages; then a changed
    2-layer student (its assistants' logits) leaves exactly the assist stage and the report to re-run (`dvc status`),
    and an assistant-only parameter exactly the assist stage."""
    env = pipeline_env()
    raw = yaml.safe_load(SMOKE.read_text())
    raw["student"]["depths"] = [2, 1]
    raw["distill"]["methods"] = ["kd", "reverse", *ASSISTED]
    repo = make_repo(tmp_path / "repo", env, raw)
    first = sh(["dvc", "repro"], repo, env)
    assert ran_stages(first.stdout) == {"data@rte", "teacher@rte", "distill@rte-2", "distill@rte-1", "assist@rte",
                                        "report"}
    assert changed_stages(repo, env) == {}
    results = (repo / "report" / "results.md").read_text()
    assert "| 2 | TAKD | not defined |" in results and "TAKD − KD" in results and "CES-KD − DGKD" in results
    # another 2-layer KD student (a higher learning rate), written where the pipeline's is
    other = dict(raw, distill=dict(raw["distill"], learning_rate=3e-3))
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    sh([sys.executable, "-m", "alpkd", "--params", str(tmp_path / "other.yaml"), "--out", ".", "distill", "--task",
        TASK, "--depth", "2", "--method", "kd"], repo, env)
    assert set(changed_stages(repo, env)) == {"distill@rte-2", "assist@rte", "report"}
    sh(["dvc", "repro"], repo, env)  # back to the pipeline's own students
    assert changed_stages(repo, env) == {}
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["distill"]["dgkd_drop"] = 0
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert set(changed_stages(repo, env)) == {"assist@rte"}



def test_a_group_tokenises_its_data_once(grid, monkeypatch):
    """The cells of one (task, depth) that learn from different teachers share one tokenised copy of the data (the
    teachers share a tokenizer): `data.prepare` runs once per group, not once per teacher."""
    from alpkd import data, distill

    params, root, _ = grid
    calls = []
    real = data.prepare
    monkeypatch.setattr(data, "prepare", lambda *a, **k: calls.append(a) or real(*a, **k))
    group = distill.Group(params, TASK, 1, root)
    cells = [group.cell("kd", t) for t in params.teacher.seeds]
    assert len(calls) == 1 and len(cells) == 2 and cells[0].dsets is cells[1].dsets
    assert cells[0].teacher_fingerprint != cells[1].teacher_fingerprint  # two teachers all the same
