"""What the rehearsal of the paper profile (tests/test_paper_rehearsal.py) found, each fix with its test."""
from __future__ import annotations

import types

import helpers  # noqa: F401 - the checkout importable, offline


def test_log_of_a_run_shorter_than_logging_steps(tmp_path):
    """A run of fewer steps than `runtime.logging_steps` (50 in the paper profile) logs no step. Its log was a
    file holding one newline, which pandas cannot read (EmptyDataError failed the teacher stage's curve, and the
    report's reading of the logs); now it is the header alone, and the curve of it an empty figure saying so."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from alpkd import plots, records

    trainer = types.SimpleNamespace(state=types.SimpleNamespace(log_history=[{"train_loss": 0.7, "step": 2}]))
    log = tmp_path / "s42.csv"
    records.write_log(trainer, log)
    frame = pd.read_csv(log)
    assert frame.empty and list(frame.columns) == ["step", "loss"]
    fig = plots.training_curve(log, title="teacher")
    assert [t.get_text() for t in fig.axes[0].texts] == ["no step logged\n(fewer steps than runtime.logging_steps)"]
    assert not fig.axes[0].lines
    plt.close(fig)
