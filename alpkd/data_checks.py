"""Checks of a task's data before anything trains: a user's CSV, TSV or JSON Lines files read line by line first,
so a fault names the file's line (not a position inside a parser's chunk); columns, labels and texts against the
task's declaration (`check_split`); at least two classes; validation texts also in the training data (a warning).

Apart from `data` (loading, tokenising, batching), which runs them on every split it loads.
"""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import datasets
import numpy as np

from .params_file import file_problem, path_problem
from .paths import warn
from .tasks import Task


class DataError(RuntimeError):
    """Data that cannot be loaded or is not what the task expects."""



def overlap(train: datasets.Dataset, other: datasets.Dataset, task: Task) -> int:
    """How many rows of `other` have the very texts (every text column) of some training row."""
    seen = set(zip(*(train[c] for c in task.text_columns)))
    return sum(texts in seen for texts in zip(*(other[c] for c in task.text_columns)))


def warn_overlap(raw: datasets.DatasetDict, task: Task, where: dict[str, str]) -> None:
    # a warning, not an error: such data is the user's choice, but a score on it measures recall of the training set
    for split in task.validation_splits:
        count = overlap(raw["train"], raw[split], task)
        if count:
            warn(f"task {task.name!r}: {count} of {len(raw[split])} {split} examples also appear in the training "
                 f"data ({where['train']}) with the same text; their scores measure what was learnt by heart, not "
                 "generalisation")


def check_classes(ds: datasets.Dataset, task: Task, where: str) -> None:
    """A classification training set holds at least two classes: on one, training makes a constant predictor."""
    if task.is_regression:
        return
    classes = sorted(set(ds[task.label_column]))
    if len(classes) < 2:
        raise DataError(f"{where}: every training label is {classes[0]!r} (one class of the task's "
                        f"{task.num_labels}); a model trained on it predicts that class whatever the text. "
                        "The training file needs examples of at least two classes")


# TSV is read with quoting off (as GLUE's own TSV files are meant): a text starting with `"` stays one text
_READERS = {".csv": ("csv", {}), ".tsv": ("csv", {"delimiter": "\t", "quoting": csv.QUOTE_NONE}),
            ".jsonl": ("json", {}), ".json": ("json", {})}


def _reader_options(task: Task, builder: str) -> dict:
    """pandas' options for a CSV or TSV file: every text column and the label read as written, as strings (a
    text column of numbers stays texts: `007` is not 7; the label is typed by `_typed_labels`, line by line);
    no text is taken as missing (pandas' `NA`, `None`, `null`, `n/a` list applies to no column); the first column
    is never taken as an index (pandas does so when every row has one field more than the header)."""
    if builder != "csv":
        return {}
    return {"keep_default_na": False, "index_col": False,
            "converters": {c: str for c in (*task.text_columns, task.label_column)}}


_HEADER_NOTE = "lines count from 1; line 1 is the header"


def causes(err: BaseException) -> str:
    """The innermost cause of `err` (datasets wraps the parser's own message, which names line or byte)."""
    seen = [err]
    while (nxt := seen[-1].__cause__ or seen[-1].__context__) is not None and nxt not in seen:
        seen.append(nxt)
    return "; caused by ".join(f"{type(e).__name__}: {str(e).strip()}" for e in seen)


def load_files(task: Task) -> tuple[datasets.DatasetDict, dict[str, str], dict[str, tuple[list[int], str]]]:
    out, lines = {}, {}
    for split, path in task.files:
        suffix = Path(path).suffix.lower()
        if suffix not in _READERS:
            raise DataError(f"task {task.name!r}, {split} file {path}: unsupported type {suffix!r}; "
                            f"allowed: {', '.join(_READERS)}")
        problem = path_problem(path, f"a {', '.join(_READERS)} file")
        if problem:
            raise DataError(f"task {task.name!r}, {split} file {problem}")
        builder, kwargs = _READERS[suffix]
        # read line by line first: an error names the file's line, not a position inside a parser's chunk
        lines[split] = _record_lines(Path(path), suffix)
        if not lines[split][0]:
            raise DataError(f"task {task.name!r}: {split} file {path}: no examples (an empty file, or a header "
                            "line alone)")
        try:
            out[split] = datasets.load_dataset(builder, data_files=path, split="train", **kwargs,
                                               **_reader_options(task, builder))
        except DataError:
            raise
        except Exception as err:  # noqa: BLE001 - any failure becomes one message with its cause
            raise DataError(f"task {task.name!r}: cannot read {split} file {path}: {causes(err)}") from None
        _check_count(out[split], task, path, *lines[split])
        if builder == "csv":
            out[split] = _typed_labels(out[split], task, path, lines[split])
    return datasets.DatasetDict(out), dict(task.files), lines


def _record_lines(path: Path, suffix: str) -> tuple[list[int], str]:
    """The line (from 1) on which each example of a file starts, read independently of `datasets`.

    Also the faults a parser would report by a position inside its chunk, or not at all: a byte that is not
    UTF-8 (line and byte offset), a repeated column name, a row with more or fewer fields than the header,
    a JSON Lines record that is not JSON (its line).
    """
    try:
        raw = path.read_bytes()
    except OSError as err:  # no read permission, most likely
        raise DataError(f"{path}: {file_problem(path, err, 'a data file the data stage can read')}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(f"{path}: line {line} (byte offset {err.start}): byte {raw[err.start]:#04x} is not UTF-8 "
                        f"({err.reason}); save the file as UTF-8 (lines count from 1, bytes from 0)") from None
    if suffix in (".csv", ".tsv"):
        return _csv_record_lines(path, text, suffix == ".tsv")
    if text.lstrip().startswith("["):  # one JSON array: records count from 1
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: line {err.lineno}, column {err.colno}: not valid JSON ({err.msg}) "
                            "(lines count from 1)") from None
        return list(range(1, len(records) + 1)), "records of the JSON array count from 1"
    starts = []
    for k, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            record = json.loads(line, object_pairs_hook=lambda pairs: _unique_keys(pairs, path, k + 1))
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: line {k + 1}, column {err.colno}: not a JSON record ({err.msg}); one JSON "
                            "object per line (lines count from 1)") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {k + 1}: a JSON {type(record).__name__}, not an object with the task's "
                            "columns (lines count from 1)")
        starts.append(k + 1)
    return starts, "lines count from 1"


def _csv_record_lines(path: Path, text: str, tsv: bool) -> tuple[list[int], str]:
    # Python's csv module refuses a field longer than `csv.field_size_limit()` (131072 characters by default),
    # pandas does not: raised for this read to the file's length, so a long text is read whole, then put back
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, len(text) + 1))
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if tsv else ",",
                            quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
        starts, end, header = [], 0, None
        for record in reader:
            start, end = end + 1, reader.line_num
            if end > start:  # a quoted field ran over line breaks: almost always an unclosed quote
                raise DataError(f"{path}: line {start}: a quoted field runs on to line {end} (an unclosed "
                                f"quote?); each example must be on one line ({_HEADER_NOTE})")
            if not (len(record) > 1 or (record and record[0].strip())):  # blank lines are skipped, as pandas does
                continue
            if header is None:
                header = record
                repeated = next((c for c in record if record.count(c) > 1), None)
                if repeated is not None:  # pandas would rename the second one `label.1`, silently
                    raise DataError(f"{path}: line {start} (the header): column {repeated!r} appears more than "
                                    f"once in {record}; each column name may appear once")
            elif len(record) != len(header):  # pandas would shift the fields, or take the first as an index
                raise DataError(f"{path}: line {start}: {len(record)} fields, the header (line 1) has "
                                f"{len(header)} ({header}); quote a field that holds the delimiter "
                                f"({_HEADER_NOTE})")
            starts.append(start)
        return starts[1:], _HEADER_NOTE
    finally:
        csv.field_size_limit(limit)


def _unique_keys(pairs: list[tuple], path: Path, line: int) -> dict:
    """A JSON object's pairs as a dict; a key given twice is an error (json keeps the last one, silently)."""
    keys = [k for k, _ in pairs]
    repeated = next((k for k in keys if keys.count(k) > 1), None)
    if repeated is not None:
        raise DataError(f"{path}: line {line}: key {repeated!r} appears more than once in one record; each column "
                        "may appear once (lines count from 1)")
    return dict(pairs)


def _check_count(ds: datasets.Dataset, task: Task, path: str, starts: list[int], note: str) -> None:
    """As many examples as data lines (records): a parser that merged or dropped lines loses nothing silently."""
    if len(ds) == len(starts):
        return
    raw = Path(path).read_text(encoding="utf-8").splitlines()
    column = task.text_columns[0]
    texts = ds[column][:len(starts)] if column in ds.column_names and note == _HEADER_NOTE else []
    k = next((k for k, text in enumerate(texts) if str(text) not in raw[starts[k] - 1].replace('""', '"')),
             min(len(ds), len(starts)))
    where = f"line {starts[k]}" if k < len(starts) else "the end of the file"
    raise DataError(f"{path}: {len(starts)} data lines (records) but {len(ds)} examples read; the first that "
                    f"disagrees is example {k + 1} at {where} ({note}): fix the line (quotes, delimiters)")


def check_split(ds: datasets.Dataset, task: Task, where: str, lines: tuple[list[int], str] | None = None) -> None:
    """Columns, labels and texts are what the task expects; else one `DataError` naming file, column, row.

    `lines` (a file's data lines, as `_record_lines` gives them) makes messages name the file's line; without
    it a message names the row of the table (counting from 0, no header).
    """
    expected = [*task.text_columns, task.label_column]
    missing = [c for c in expected if c not in ds.column_names]
    if missing:
        raise DataError(f"{where}: column(s) {missing} missing; task {task.name!r} expects {expected}, "
                        f"the file has {ds.column_names}")
    if len(ds) == 0:
        raise DataError(f"{where}: no rows")

    def fail(row: int, column: str, what: str):
        _fail(where, lines, row, column, what)

    labels = np.asarray(ds[task.label_column], dtype=object)
    if task.is_regression:
        allowed = "a finite number (regression)"
        for row, value in enumerate(labels):
            if _is_number(value) and not np.isfinite(value):
                fail(row, task.label_column, f"label {_shown(value)} is not a finite number; expected {allowed}")
            if not _is_number(value):
                fail(row, task.label_column, f"label {_shown(value)}; expected {allowed}")
    else:
        allowed = f"an integer in 0..{task.num_labels - 1}"
        # first a value that is wrong whatever its type: one fractional or blank label makes a whole CSV
        # column floats, and the row to name is that one, not row 0 with its `1.0`
        for row, value in enumerate(labels):
            if not (_is_number(value) and np.isfinite(value) and float(value).is_integer()
                    and 0 <= value < task.num_labels):
                fail(row, task.label_column, f"label {_shown(value)}; expected {allowed}")
        for row, value in enumerate(labels):
            if not isinstance(value, (int, np.integer)):
                fail(row, task.label_column, f"label {_shown(value)} is written as a decimal; expected {allowed}")
    for column in task.text_columns:
        for row, text in enumerate(ds[column]):
            if text is not None and not isinstance(text, str):  # JSON: a number, a list, true/false
                fail(row, column, f"not a text: {text!r}, a JSON {type(text).__name__}; write it as a string in "
                                  "quotes")
            if not isinstance(text, str) or not text.strip():
                fail(row, column, f"empty or missing text ({text!r})")


def _fail(where: str, lines: tuple[list[int], str] | None, row: int, column: str, what: str):
    at, note = (f"line {lines[0][row]}", lines[1]) if lines else (f"row {row}", "rows count from 0, no header row")
    raise DataError(f"{where}: {at}, column {column!r}: {what} [{note}]")


# a number as a CSV or TSV label is written: digits, an optional sign, point and exponent (what `float` also
# takes, such as `1_000` or ` 1`, is not a number written here); `nan` and `inf` are named as not finite
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_NON_FINITE = re.compile(r"[+-]?(nan|inf|infinity)", re.IGNORECASE)


def _typed_labels(ds: datasets.Dataset, task: Task, path: str, lines: tuple[list[int], str]) -> datasets.Dataset:
    """A CSV or TSV file's labels, read as texts, as the task's label set says: integers for a classification
    task (`1.0` refused as a decimal), floats for a regression task (`nan`, `inf` refused as not finite); each
    fault named at its line. `check_split` then checks the numbers (range, at least two classes)."""
    column, regression = task.label_column, task.is_regression
    if column not in ds.column_names:
        return ds  # check_split names the missing column
    allowed = "a finite number (regression)" if regression else f"an integer in 0..{task.num_labels - 1}"
    typed = []
    for row, text in enumerate(ds[column]):
        written = text.strip()
        if not written:
            _fail(path, lines, row, column, f"label (blank); expected {allowed}")
        if _NON_FINITE.fullmatch(written):
            _fail(path, lines, row, column, f"label {written!r} is not a finite number; expected {allowed}")
        if not _DECIMAL.fullmatch(written):
            _fail(path, lines, row, column, f"label {written!r}; expected {allowed}")
        number = float(written)
        if regression:
            typed.append(number)
        elif not number.is_integer() or not 0 <= number < task.num_labels:
            _fail(path, lines, row, column, f"label {written}; expected {allowed}")
        elif not re.fullmatch(r"[+-]?\d+", written):
            _fail(path, lines, row, column, f"label {written} is written as a decimal; expected {allowed}")
        else:
            typed.append(int(number))
    features = ds.features.copy()
    features[column] = datasets.Value("float64" if regression else "int64")
    return datasets.Dataset.from_dict({c: typed if c == column else ds[c] for c in ds.column_names},
                                      features=features)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))


def _shown(value) -> str:
    return "(blank)" if value is None else repr(value)
