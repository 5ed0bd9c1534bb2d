"""What the rehearsal of the paper profile (tests/test_paper_rehearsal.py) found, each fix with its test."""
from __future__ import annotations

import helpers  # noqa: F401 - the checkout importable, offline


def test_training_curve_of_a_run_shorter_than_logging_steps(tmp_path):
    """A run of fewer steps than `runtime.logging_steps` (50 in the paper profile) logs no step, and its log file
    is empty (`records.write_log`): the teacher and distill notebooks' curve of it is an empty figure that says
    so (it was pandas' EmptyDataError, which failed the teacher stage)."""
    import matplotlib.pyplot as plt

    from alpkd import plots

    log = tmp_path / "s42.csv"
    log.write_text("")
    fig = plots.training_curve(log, title="teacher")
    assert [t.get_text() for t in fig.axes[0].texts] == ["no step logged\n(fewer steps than runtime.logging_steps)"]
    assert not fig.axes[0].lines
    plt.close(fig)
