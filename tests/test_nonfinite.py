"""A loss that becomes NaN or infinite stops the run, naming the step and the loss terms."""
from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from alpkd import methods
from alpkd.distill import DistillTrainer, training_args
from helpers import distill_params


def _trainer(tmp_path, smoke_params, method):
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32, num_labels=2))
    args = training_args(smoke_params.distill, smoke_params.runtime, tmp_path, seed=0)
    objective = methods.objective(method, distill_params())
    return model, DistillTrainer(model=model, args=args, objective=objective, label=method)


def _inputs(teacher_logits):
    return {"input_ids": torch.randint(5, 50, (4, 6)), "attention_mask": torch.ones(4, 6, dtype=torch.long),
            "labels": torch.tensor([0, 1, 0, 1]), "teacher_logits": teacher_logits,
            "teacher_states": torch.randn(4, 2, 16)}


def test_nan_teacher_logits_stop_with_step_and_terms(tmp_path, smoke_params):
    model, trainer = _trainer(tmp_path, smoke_params, "kd")
    model.train()
    bad = torch.tensor([[0.0, 1.0], [float("nan"), 0.0], [1.0, 0.0], [0.0, 0.0]])
    with pytest.raises(FloatingPointError, match=r"kd: the loss became nan at step 1 \(terms: ce=[0-9.]+, kd=nan\)"):
        trainer.compute_loss(model, _inputs(bad))


def test_infinite_loss_is_caught_for_alp(tmp_path, smoke_params):
    model, trainer = _trainer(tmp_path, smoke_params, "alp")
    model.train()
    trainer.state.global_step = 6
    inputs = _inputs(torch.zeros(4, 2))
    inputs["teacher_states"] = torch.full((4, 2, 16), float("inf"))
    with pytest.raises(FloatingPointError, match=r"alp: the loss became nan at step 7 \(terms: .*alp=nan"):
        trainer.compute_loss(model, inputs)


def test_finite_loss_passes(tmp_path, smoke_params):
    model, trainer = _trainer(tmp_path, smoke_params, "alp")
    model.train()
    loss = trainer.compute_loss(model, _inputs(torch.zeros(4, 2)))
    assert torch.isfinite(loss)
