"""results.md, section by section: each a list of lines, ending with a blank one."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .comparisons import detectable_gaps, significance_table
from .tables import FLAG
from .. import methods as meth
from ..methods import label


METRIC_ABBREVIATIONS = {"accuracy": "acc", "f1": "F1", "matthews": "MCC", "pearson": "Pearson r",
                        "spearman": "Spearman", "accuracy_matched": "acc-m",
                        "accuracy_mismatched": "acc-mm"}


TEXT_COLUMNS = {"method", "comparison", "verdict", "task", "top teacher layer per student layer, per seed"}


def markdown_table(table: pd.DataFrame, headers: dict[str, str] | None = None) -> str:
    """`table` (cells as they are, columns renamed by `headers`) in Markdown: text columns left-aligned, the
    rest right-aligned. Cells are not padded (tabulate would pad them to the column's width), so each row
    reads `| 3 | KD | 78.7 ± 1.3 |`; the rule under the header is written here for the same reason."""
    header, _, *rows = (table.rename(columns=headers or {})
                        .to_markdown(index=False, stralign=None, numalign=None, disable_numparse=True).splitlines())
    rule = "|" + "|".join(":---" if c in TEXT_COLUMNS else "---:" for c in table.columns) + "|"
    return "\n".join([header, rule, *rows])


def _describe(values) -> str:
    values = sorted({str(v) for v in values if v is not None and not pd.isna(v)})
    return ", ".join(f"`{v}`" for v in values) if values else "unknown"


def _preamble(params, records: pd.DataFrame, skipped=()) -> list[str]:
    """The title, and what produced the results: profile, data, teacher, seeds, initialisation; how to read a cell.
    `skipped`: the (file, why) of records not counted (`collect`); those of another profile make the results stale."""
    teachers, students = records[records["role"] == "teacher"], records[records["role"] == "student"]
    teacher_models = [f"{m} ({int(n)} layers)" for m, n in
                      teachers[["model", "depth"]].drop_duplicates().itertuples(index=False)]
    profiles = set(records["profile"].dropna())
    other = sum(why.startswith("of profile") for _, why in skipped)
    return [
        "# ALP-KD replication: results",
        "",
        f"- Profile: {_describe(profiles or [params.profile])}"
        + (f" ({other} records of another profile not counted: params.yaml now says `{params.profile}`, these "
           "results are stale)" if other else ""),
        f"- Data: GLUE validation splits, from {_describe(records['data_source'])}",
        f"- Teacher: {', '.join(teacher_models) or 'none found'}",
        f"- Teacher seeds: {', '.join(str(s) for s in sorted(set(teachers['seed']))) or 'none'}"
        f" (configured: {', '.join(str(s) for s in params.teacher.seeds)}); student seeds: "
        f"{', '.join(str(s) for s in sorted(set(students['seed']))) or 'none'}"
        f" (configured: {', '.join(str(s) for s in params.distill.seeds)}); each student learns from one "
        f"teacher: {_pairing(params)}",
        f"- Computed on: {_machines(records)}",
        f"- Student initialisation: `{params.student.init}` layers {_start(params)}",
        f"- Training examples: {_examples(params)}",
        f"- ALP, ALP-NO, ALP-PO scores scaled by 1/sqrt(d): "
        f"{'yes' if params.distill.alp_scale else 'no (the paper)'}; ALP-scaled: always",
        "- Cells: the task's headline metric x100 on its validation split; `mean ± std` (sample std) over seeds "
        "when there are several (the teacher row: over the teachers; a student row: over every student, so its "
        "spread holds the teachers' too). `average`: the mean over tasks, per seed, then over seeds. `trivial`: the "
        "training set's majority class (regression: its mean label, whose correlation is undefined; counted "
        f"as 0 in the average). {FLAG}: at least one seed predicted the same value for every validation "
        "example (a constant predictor), or its metric is undefined (NaN, left out of the mean).",
        "",
    ]


def _pairing(params) -> str:
    """`seed 1 -> teacher 42, ...`: which teacher each configured student seed learns from."""
    return ", ".join(f"student {s} ← teacher {params.teacher_seed(s)}" for s in params.distill.seeds)


def _machines(records: pd.DataFrame) -> str:
    """The CPUs, kernel ISAs and numerics settings the records were computed with (`alpkd.numerics`)."""
    seen = records[["cpu", "cpu_capability", "numerics"]].drop_duplicates()
    parts = [f"{r.cpu or 'unknown CPU'} ({r.cpu_capability or '?'} kernels, numerics {r.numerics or 'not recorded'})"
             for r in seen.itertuples(index=False)]
    return "; ".join(parts) if parts else "unknown"


def _results_lines(table: pd.DataFrame, headline: dict[str, str], extra: list[str] = ()) -> list[str]:
    """The results table, a task's column headed with its metric (and a note on further validation splits)."""
    headers = {t: f"{t} ({METRIC_ABBREVIATIONS.get(h, h)})" for t, h in headline.items()}
    note = [f"{', '.join(f'`{c}`' for c in extra)}: the task's further validation set (MNLI: `mnli` is the matched "
            "set, `mnli-mm` the mismatched one, as GLUE reports them); `average` counts each task once, by its first "
            "validation set; the significance tests use the first set.", ""] if extra else []
    return [markdown_table(table, headers), "", *note]


def _duplicate_lines(dups: dict, methods: list[str]) -> list[str]:
    """The cells not run because their objective is another method's at that depth."""
    if not dups:
        return []
    by_pair = {}
    for (task, depth, method), rec in dups.items():
        by_pair.setdefault((depth, method, rec["same_as"]), []).append(task)
    return ["Not run twice (the same objective as another method at that depth, so shown once, under "
            "that method): " + "; ".join(
                f"{label(m)} at {d} layer(s) = {label(t)}"
                + ("" if t in methods else f" (not in distill.methods: add `{t}` to see it)")
                + meth.get(m).same_note
                for (d, m, t) in sorted(by_pair)), ""]


def _undefined_lines(undef: dict, params) -> list[str]:
    """The cells of methods not defined at a depth: the teacher-assistant methods at the largest depth."""
    if not undef:
        return []
    cells = sorted({(d, m) for (_, d, m) in undef})
    return ["Not defined (no teacher assistant: no student depth is deeper): " + "; ".join(
        f"{label(m)} at {d} layer(s)" for d, m in cells) + f". The assistants of the other depths are "
        f"the {label(params.distill.assistant)} students of the same seed at every deeper depth.", ""]


def _significance_lines(sig: pd.DataFrame) -> list[str]:
    if not len(sig):
        return []
    lines = [
        "## Is the gap more than noise?",
        "",
        "Each layer-mapping method against the baselines, ALP-scaled against ALP, the baselines among themselves, "
        "the matching controls (reverse, all-to-one) against KD, PKD and ALP, and the teacher-assistant methods "
        "against KD and each other: the gap in the headline "
        "metric x100, averaged over tasks (each method's seeds averaged per task), with a 95% interval and a "
        "two-sided p-value from a model of the run's design with each source of variance counted once: teachers, "
        "the students of each teacher and the validation sentences all random, students crossed with sentences "
        "(expected mean squares, a t reference with Satterthwaite's degrees of freedom, `df`; seed k of one "
        "method paired with seed k of the other: same teacher, initialisation and data order; "
        "`alpkd.significance`), so a verdict holds for other teachers, students and sentences of the same kind. "
        "`p (BH)`: "
        f"adjusted for the {len(sig)} comparisons of this table (Benjamini-Hochberg, "
        "`scipy.stats.false_discovery_control`); the verdict reads the adjusted p.",
        "",
        markdown_table(significance_table(sig)),
        "",
        f"{int((sig['p_adjusted'] >= 0.05).sum())} of {len(sig)} gaps are within noise after adjustment "
        f"({int((sig['p_value'] >= 0.05).sum())} before); a gap within noise is no evidence that one method is "
        "better than the other.",
        "",
    ]
    gaps = detectable_gaps(sig)
    if len(gaps):
        lines += [
            "**The smallest gap this run can see.** Half-width of the 95% interval of the ALP − KD gap on the "
            "average over tasks, per depth: a true gap smaller than this is within this run's noise "
            "(teachers, students and validation sentences; the power table of docs/statistics.md says what a "
            "design with more teachers would see).",
            "",
            markdown_table(pd.DataFrame({"layers": gaps["layers"], "ALP − KD": [f"{g:+.1f}" for g in gaps["gap"]],
                                         "95% half-width": [f"{h:.1f}" for h in gaps["half_width"]]})),
            "",
        ]
    return lines


def _interval_lines(intervals: pd.DataFrame) -> list[str]:
    shown = intervals.dropna(subset=["low"])
    if not len(shown):
        return []
    return [
        "## Where another run's cell means should land",
        "",
        "Each student cell's mean and a 95% t interval of it over its teachers (each teacher's students averaged "
        "first, T - 1 degrees of freedom; the validation sentences fixed): a re-run on another "
        "machine that draws other teachers and students of the same kind should find each mean inside, 19 times "
        "in 20 (`report/intervals.csv`).",
        "",
        markdown_table(pd.DataFrame({
            "layers": shown["layers"], "method": [label(m) for m in shown["method"]], "task": shown["task"],
            "mean": [f"{v:.1f}" for v in shown["mean"]],
            "95% interval": [f"[{lo:.1f}, {hi:.1f}]" for lo, hi in zip(shown["low"], shown["high"])],
            "teachers": shown["n_teachers"], "seeds": shown["n_seeds"]})),
        "",
    ]


def _attention_table(att: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "task": att["task"], "layers": att["layers"], "method": [label(m) for m in att["method"]],
        "score": [f"{v:.1f}" for v in att["score"]],
        "entropy (bits)": [f"{e:.2f}" + ("" if pd.isna(sd) else f" ± {sd:.2f}")
                           for e, sd in zip(att["entropy_bits"], att["entropy_std"])],
        "max": [f"{np.log2(n):.2f}" for n in att["teacher_layers"]],
        "top teacher layer per student layer, per seed": att["top_layers"],
        "same layers in every seed": ["yes" if v else "**no**" for v in att["same_across_seeds"]],
    })


def _attention_lines(attention: pd.DataFrame) -> list[str]:
    if not len(attention):
        return []
    return [
        "## ALP's attention: how spread, and is it the same in every seed?",
        "",
        "Mean entropy (bits) of each student layer's attention over the teacher layers, on the validation "
        "set (0: one-hot; `max`: uniform over all teacher layers), and the teacher layer each student "
        "layer attends to most, per seed. A one-hot map makes ALP a learnt one-to-one layer mapping; "
        "where the seeds pick different layers, last-bit differences between machines can do the same "
        "(the run differs across machines; the seeds' spread covers it).",
        "",
        markdown_table(_attention_table(attention)),
        "",
    ]


def _skipped_lines(skipped: list[tuple[str, str]]) -> list[str]:
    """The metrics files not counted, each with why (`collect`): a file is counted only where its content matches
    its place, so no cell counts a run twice."""
    if not skipped:
        return []
    return [f"Not counted ({len(skipped)} file{'s' if len(skipped) > 1 else ''}): " + "; ".join(f"`{f}`: {why}" for f, why in skipped), ""]


def _missing_lines(missing: list[str]) -> list[str]:
    if not missing:
        return []
    return [f"Missing runs ({len(missing)}, shown as –): " + ", ".join(f"`{m}`" for m in missing), ""]


def _figure_lines(figures: list[Path]) -> list[str]:
    return ["## Figures", ""] + [f"![{p.stem}](figures/{p.name})" for p in figures] + [""] if figures else []


def _start(params) -> str:
    """Where the students' tensors come from (`student.init_from`)."""
    if params.student.init_from == "pretrained":
        return ("of the pre-trained checkpoint the teacher was fine-tuned from, with its embeddings and pooler and a "
                "fresh classifier (`student.init_from: pretrained`: the students do not start with the teacher's task "
                "knowledge)")
    return ("of the fine-tuned teacher, with its embeddings, pooler and classifier (`student.init_from: teacher`: the "
            "students start with the teacher's task knowledge)")


def _examples(params) -> str:
    """How many training examples the teacher and the students learn from."""
    t, n = params.data.max_train_samples, params.student_train_samples
    teacher = "the whole training file" if t is None else f"{t:,} (a fixed subsample)"
    text = f"teacher and students {teacher}" if n == t else f"teacher {teacher}, students the first {n:,} of the teacher's"
    k = params.distill.transfer_samples
    if k:
        text += (f"; a transfer set of {k:,} further sentences (the next of the same shuffle, labels withheld): every "
                 "method with a teacher learns from its outputs on them too, NO-KD does not; the task loss is on "
                 "the labelled rows alone (`transfer_examples` in each record)")
    return text


def results_markdown(params, records, skipped, table, headline, extra, dups, undef, sig, intervals, attention, missing,
                     figures) -> str:
    """The text of report/results.md, section after section."""
    sections = [_preamble(params, records, skipped), _skipped_lines(skipped), _results_lines(table, headline, extra),
                _duplicate_lines(dups, list(params.distill.methods)), _undefined_lines(undef, params),
                _significance_lines(sig), _interval_lines(intervals), _attention_lines(attention), _missing_lines(missing),
                _figure_lines(figures)]
    return "\n".join(line for lines in sections for line in lines)
