"""The methods, each declared once: its name, label, family, look, what it needs, its layer mapping, its loss terms
(the total loss is their weighted sum, in the order declared), the simpler method it equals at some depths, and the
methods the report compares it with. Everything else (the config's allowed names, the trainer's loss, the records'
mapping field, the report's labels, colours, families and comparisons, the notebook's look inside a batch) is derived
from these declarations; no other module branches on a method's name.

A user declares a method the same way in `custom/methods/<name>.py` (a module-level `METHOD = Method(...)`) and lists
`<name>` in `distill.methods` (docs/your-own-method.md); `check` refuses a bad one before anything trains.
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import losses, paths
from .losses import (all_to_one_layers, alp_loss, buckets_mask, ceskd_loss, ces_experts, dgkd_keep, dgkd_loss,
                     kd_loss, layer_buckets, pkd_layers, pkd_loss, rail_layers, rail_loss, reverse_layers, task_loss)
from .params_file import ConfigError, repo_root
from .students import layer_states

FAMILIES = ("baseline", "alp", "layer", "control", "assisted")


@dataclass
class Batch:
    """What a loss term reads of one training batch: the student's and the teacher's (cached or online) outputs,
    the assistants' logits, and where the run is (seed, epoch, step) for the terms that draw."""

    logits: torch.Tensor
    labels: torch.Tensor
    student_states: torch.Tensor | None = None  # (B, m, d), or (B, T, m, d) for `states: tokens`
    teacher_logits: torch.Tensor | None = None
    teacher_states: torch.Tensor | None = None  # (B, n, d), or (B, T, n, d)
    mask: torch.Tensor | None = None  # (B, T): the real tokens, for `states: tokens`
    assistant_logits: torch.Tensor | None = None  # (K, B, C), by size ascending
    pairs: list[int] | None = None  # a drawn mapping (RAIL-KD: this epoch's teacher layers)
    kept: list[bool] | None = None  # DGKD's guides kept this step (else drawn from seed and step)
    experts: torch.Tensor | None = None  # CES-KD's expert of each example (else from the difficulty and epoch)
    seed: int = 0
    epoch: int = 0
    step: int = 0
    epochs: int = 1
    rows: torch.Tensor | None = None  # the examples' rows in the training set (the teacher cache's)
    labelled: torch.Tensor | None = None  # (B,) bool where a transfer set is mixed in: the rows that have a label
    difficulty: object = None  # CES-KD: each training row's difficulty (`losses.example_difficulty`)
    memo: dict = field(default_factory=dict)  # what a term computes once per epoch (CES-KD's experts)

    @property
    def n(self) -> int:
        return self.teacher_states.shape[-2]

    @property
    def m(self) -> int:
        return self.student_states.shape[-2]


@dataclass(frozen=True)
class Term:
    key: str  # its name in the logs (`loss_<key>`) and in the terms returned
    fn: Callable  # (batch, p) -> a scalar tensor, or None where it matches nothing at this depth
    weight: Callable | None = None  # p -> its weight in the total; None: the term as it is


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    family: str  # one of FAMILIES: how the report groups and draws it
    terms: tuple[Term, ...]
    style: dict = field(default_factory=dict)  # matplotlib line style (colour, line, marker)
    states: bool = False  # reads the layers' [CLS] states
    teacher: bool = True  # reads the teacher's outputs (its cache, or the teacher run online)
    difficulty: bool = False  # reads each training example's difficulty (`losses.example_difficulty`)
    guidance: Callable | None = None  # who taught, for the records: (dp, seed, steps, epochs, guides, difficulty, rows)
    assistants: bool = False  # learns from teacher assistants (the `assist` stage)
    mapping: Callable | None = None  # (n, m, p, seed, epoch) -> the teacher layer (0-based) of each student layer
    draws: bool = False  # the mapping is drawn anew each epoch
    attention: Callable | None = None  # (n, m, p) -> (allowed mask or None, scale): attention over teacher layers
    same_as: Callable | None = None  # (n, m, p) -> the simpler method with the same objective there, or None
    same_note: str = ""  # why, in the report
    compared_with: tuple[str, ...] = ()
    source: str = "alpkd/methods.py"


# --- the terms -----------------------------------------------------------------------------------------
def _a(p):
    return p.kd_alpha


def _not_a(p):
    return 1 - p.kd_alpha


def _cls(states: torch.Tensor) -> torch.Tensor:
    # `states: tokens` is an ALP option; the pair-matching methods read the [CLS] vectors
    return states[:, 0] if states.dim() == 4 else states


def _ce(b, p):
    """The task loss on the labelled rows alone: a transfer row's `labels` is no label (mean over the batch's labelled
    rows; no term in a batch without one)."""
    if b.labelled is None:
        return task_loss(b.logits, b.labels)
    return task_loss(b.logits[b.labelled], b.labels[b.labelled]) if bool(b.labelled.any()) else None


CE = Term("ce", _ce, _not_a)
KD = Term("kd", lambda b, p: kd_loss(b.logits, b.teacher_logits, p.temperature), _a)


def _pairs_term(key: str, mapping) -> Term:
    """PKD's loss on the pairs of `mapping` (no term where it pairs nothing)."""
    def fn(b, p):
        layers = mapping(b.n, b.m, p)
        return pkd_loss(_cls(b.student_states), _cls(b.teacher_states), layers) if layers else None
    return Term(key, fn, lambda p: p.pkd_beta)


def _rail(b, p):
    if len(b.pairs) != b.m - 1:
        raise ValueError(f"RAIL-KD pairs the {b.m - 1} intermediate student layers: got {len(b.pairs)} teacher layers "
                         "(pairs = rail_layers(n, m, ...))")
    return rail_loss(_cls(b.student_states), _cls(b.teacher_states), b.pairs) if b.pairs else None


def _alp_term(attention) -> Term:
    def fn(b, p):
        allowed, scale = attention(b.n, b.m, p)
        return alp_loss(b.student_states, b.teacher_states, allowed, scale, b.mask)[0]
    return Term("alp", fn, lambda p: p.alp_lambda)


def _guides(b) -> torch.Tensor:
    """[*assistants, teacher] (K+1, B, C): the teacher last."""
    assistants = b.assistant_logits
    dtype = torch.promote_types(assistants[0].dtype, b.teacher_logits.dtype)
    return torch.stack([*assistants, b.teacher_logits]).detach().to(dtype)


def _dgkd(b, p):
    guides = _guides(b)
    kept = b.kept if b.kept is not None else dgkd_keep(len(guides), b.seed, b.step, p.dgkd_drop)
    if len(kept) != len(guides):
        raise ValueError(f"DGKD has {len(guides)} guides ({len(guides) - 1} assistants and the teacher): got "
                         f"{len(kept)} entries in kept (dgkd_keep(guides={len(guides)}, ...))")
    return dgkd_loss(b.logits, guides, kept, p.temperature)


def _ceskd(b, p):
    guides, experts = _guides(b), b.experts
    if experts is None:  # each row's expert, drawn once per epoch
        if b.memo.get("epoch") != b.epoch:
            b.memo.update(epoch=b.epoch, experts=ces_experts(b.difficulty, len(guides), b.epoch, b.epochs,
                                                             p.ces_curriculum))
        experts = torch.from_numpy(b.memo["experts"][b.rows.cpu().numpy()]).to(b.logits.device)
    return ceskd_loss(b.logits, guides, experts, p.temperature)


def _dgkd_shares(dp, seed, steps, epochs, names, difficulty, rows) -> dict:
    """DGKD's share of steps each guide was kept."""
    kept = np.array([dgkd_keep(len(names), seed, step, dp.dgkd_drop) for step in range(steps)], dtype=float)
    return {"guides": names, "kept_share": kept.mean(0).round(4).tolist() if steps else []}


def _ces_shares(dp, seed, steps, epochs, names, difficulty, rows) -> dict:
    """CES-KD's share of the student's training rows given to each expert in each epoch."""
    rows = np.asarray(rows)
    shares = [np.bincount(ces_experts(difficulty, len(names), e, epochs, dp.ces_curriculum)[rows],
                          minlength=len(names)) / len(rows) for e in range(epochs)]
    return {"experts": names, "share_by_epoch": [np.round(x, 4).tolist() for x in shares]}


# --- the mappings --------------------------------------------------------------------------------------
def _pkd_map(n, m, p, seed=0, epoch=0):
    return pkd_layers(n, m, p.pkd_exclude_last)


def _reverse_map(n, m, p, seed=0, epoch=0):
    return reverse_layers(n, m, p.pkd_exclude_last)


def _all_to_one_map(n, m, p, seed=0, epoch=0):
    return all_to_one_layers(n, m, p.all_to_one_layer, p.pkd_exclude_last)


def _rail_map(n, m, p, seed=0, epoch=0):
    return rail_layers(n, m, seed, epoch)


def _same_pairs(mapping, *simpler):
    """KD where `mapping` pairs nothing, else the first simpler (name, mapping) whose pairs are the same."""
    def same(n, m, p):
        layers = mapping(n, m, p)
        return "kd" if not layers else next((name for name, other in simpler if layers == other(n, m, p)), None)
    return same


def _alp_view(buckets: Callable | None = None, scaled: bool = False):
    """ALP's attention: over every teacher layer, or each student layer over its bucket (`buckets(n, m, p)`)."""
    def view(n, m, p):
        allowed = None if buckets is None else buckets_mask(buckets(n, m, p), n)
        return allowed, scaled or bool(p.alp_scale)
    return view


def _one_bucket(view):
    return lambda n, m, p: "alp" if bool(view(n, m, p)[0].all()) else None


_NO = _alp_view(lambda n, m, p: layer_buckets(n, m))
_PO = _alp_view(lambda n, m, p: layer_buckets(n, m, p.alp_overlap))
_BASELINES = ("nokd", "kd", "pkd")


def _style(color, linestyle, marker):
    return dict(color=color, linestyle=linestyle, marker=marker)


# the ALP family solid, the baselines dashed, the matching controls dotted, the teacher-assistant methods dash-dotted
BUILT_IN = {m.name: m for m in (
    Method("nokd", "NO-KD", "baseline", (Term("ce", CE.fn),), _style("0.45", ":", "x"), teacher=False),
    Method("kd", "KD", "baseline", (CE, KD), _style("tab:blue", "--", "s"), compared_with=("nokd",)),
    Method("pkd", "PKD", "baseline", (CE, KD, _pairs_term("pkd", _pkd_map)), _style("tab:green", "--", "^"),
           states=True, mapping=_pkd_map, same_as=_same_pairs(_pkd_map),
           same_note=" (PKD without the last layer matches no layer)", compared_with=("nokd", "kd", "reverse")),
    Method("alp", "ALP", "alp", (CE, KD, _alp_term(_alp_view())), _style("tab:red", "-", "o"), states=True,
           attention=_alp_view(), compared_with=(*_BASELINES, "reverse", "all_to_one")),
    Method("alp_no", "ALP-NO", "alp", (CE, KD, _alp_term(_NO)), _style("tab:orange", "-", "D"), states=True,
           attention=_NO, same_as=_one_bucket(_NO), same_note=" (one bucket holding every teacher layer)",
           compared_with=_BASELINES),
    Method("alp_po", "ALP-PO", "alp", (CE, KD, _alp_term(_PO)), _style("tab:purple", "-", "v"), states=True,
           attention=_PO, same_as=_one_bucket(_PO), same_note=" (one bucket holding every teacher layer)",
           compared_with=_BASELINES),
    Method("alp_scaled", "ALP-scaled", "alp", (CE, KD, _alp_term(_alp_view(scaled=True))),
           _style("tab:brown", "-", "P"), states=True, attention=_alp_view(scaled=True),
           same_as=lambda n, m, p: "alp" if p.alp_scale else None, compared_with=(*_BASELINES, "alp")),
    Method("rail", "RAIL-KD", "layer", (CE, KD, Term("rail", _rail, lambda p: p.rail_weight)),
           _style("tab:cyan", "-.", "*"), states=True, mapping=_rail_map, draws=True,
           same_as=lambda n, m, p: "kd" if m == 1 else None, compared_with=_BASELINES),
    Method("reverse", "reverse", "control", (CE, KD, _pairs_term("reverse", _reverse_map)),
           _style("tab:olive", ":", "<"), states=True, mapping=_reverse_map,
           same_as=_same_pairs(_reverse_map, ("pkd", _pkd_map)), compared_with=("kd",)),
    Method("all_to_one", "all-to-one", "control", (CE, KD, _pairs_term("all_to_one", _all_to_one_map)),
           _style("tab:pink", ":", ">"), states=True, mapping=_all_to_one_map,
           same_as=_same_pairs(_all_to_one_map, ("pkd", _pkd_map), ("reverse", _reverse_map)), compared_with=("kd",)),
    # TAKD is KD from the nearest (smallest) assistant
    Method("takd", "TAKD", "assisted", (CE, Term("kd", lambda b, p: kd_loss(b.logits, b.assistant_logits[0], p.temperature),
                                                 _a)), _style("navy", "-.", "h"), assistants=True, compared_with=("kd",)),
    Method("dgkd", "DGKD", "assisted", (CE, Term("dgkd", _dgkd, _a)), _style("darkgreen", "-.", "X"), assistants=True,
           guidance=_dgkd_shares, compared_with=("kd", "takd")),
    Method("ceskd", "CES-KD", "assisted", (CE, Term("ceskd", _ceskd, _a)), _style("darkred", "-.", "d"),
           assistants=True, difficulty=True, guidance=_ces_shares, compared_with=("kd", "takd", "dgkd")),
)}
PAPER, PAPER_BASELINE = "alp", "kd"  # the report's headline comparison (the detectable gap)
paths.ASSISTED.update(m.name for m in BUILT_IN.values() if m.assistants)  # their outputs: the assist stage's folders
_CUSTOM: dict[Path, Method] = {}  # the users' methods, by file


# --- looking methods up ------------------------------------------------------------------------------
def get(name: str) -> Method:
    """The declaration of `name`: a built-in method, or a user's from custom/methods/<name>.py (checked when loaded)."""
    if name in BUILT_IN:
        return BUILT_IN[name]
    path = _custom_file(name)
    if path not in _CUSTOM:  # loaded and checked once per file
        if not path.is_file():
            raise ValueError(f"unknown method {name!r}; allowed: {', '.join(BUILT_IN)} (or your own, declared in "
                             f"custom/methods/{name}.py: docs/your-own-method.md)")
        _CUSTOM[path] = _load(name, path)
        paths.ASSISTED.update([name] if _CUSTOM[path].assistants else [])
    return _CUSTOM[path]


def _custom_file(name: str) -> Path:
    """custom/methods/<name>.py of the repository (the folder holding params.yaml, as for custom tasks' files)."""
    try:
        return repo_root() / "custom" / "methods" / f"{name}.py"
    except ConfigError:  # no repository here: no user's method either
        return Path("custom") / "methods" / f"{name}.py"


def declared(names=()) -> list[Method]:
    """The built-in methods, then the user's among `names`, in that order."""
    return [*BUILT_IN.values(), *(get(n) for n in names if n not in BUILT_IN)]


def reference() -> str:
    """The method the figures measure gaps from: the built-in one without a teacher (NO-KD)."""
    return next(m.name for m in BUILT_IN.values() if not m.teacher)


def label(name: str) -> str:
    try:
        return get(name).label
    except ValueError:
        return name


def looks(names=()) -> dict[str, dict]:
    """Each method's legend label and line style (what `alpkd.plots` draws with)."""
    return {m.name: {"label": m.label, **m.style} for m in declared(names)}


def of_family(family: str, names=()) -> tuple[str, ...]:
    return tuple(m.name for m in declared(names) if m.family == family)


def assisted(names) -> list[str]:
    return [n for n in names if get(n).assistants]


def same_objective(name: str, n: int, m: int, p) -> str:
    """The simplest method whose objective is `name`'s for an n-layer teacher and an m-layer student (`name` itself
    when there is none): e.g. PKD without the last layer at one student layer matches no layer (it is KD)."""
    same = get(name).same_as
    return (same(n, m, p) if same else None) or name


def guidance(name: str, dp, seed: int, steps: int, epochs: int, assistants: list[dict], difficulty, rows) -> dict:
    """Who taught, for the records: the guides or experts (smallest first, the teacher last) and their shares, or
    the one assistant."""
    names = [f"{a['depth']}-layer {a['method']}" for a in assistants] + ["teacher"]
    shares = get(name).guidance
    return shares(dp, seed, steps, epochs, names, difficulty, rows) if shares else {"assistant": names[0]}


def layer_mapping(name: str, n: int, m: int, p, seed: int, epochs: int) -> dict:
    """The records' mapping field: the fixed layer pairs, or one draw per epoch, or nothing."""
    method = get(name)
    if method.mapping is None:
        return {}
    if method.draws:
        return {"draws": [method.mapping(n, m, p, seed, e) for e in range(epochs)]}
    return {"pairs": method.mapping(n, m, p)}


def comparisons(names: list[str]) -> list[tuple[str, str]]:
    """(A, B) pairs the report tests, among `names`: each method against those it is declared to be compared with,
    in the report's reading order: layer-mapping methods against the baselines, ALP variants against ALP, the
    baselines among themselves, the matching controls, the teacher-assistant methods against KD, then each other."""
    family = {m.name: m.family for m in declared(names)}

    def order(pair):
        a, b = family[pair[0]], family[pair[1]]
        if "control" in (a, b):
            return 3 if a == "control" else 4
        if a == "assisted":
            return 6 if b == "assisted" else 5
        return (2 if a == "baseline" else 0) if b == "baseline" else 1

    pairs = [(m.name, b) for m in declared(names) if m.name in names for b in m.compared_with if b in names]
    return sorted(pairs, key=order)


# --- the objective -------------------------------------------------------------------------------------
def distillation_loss(name: str, p, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The total loss of method `name` and its terms: the weighted sum of its declared terms, in order. `p` holds the
    weights (an `alpkd.config.Distill`)."""
    method, terms, total = get(name), {}, None
    if method.assistants and (batch.assistant_logits is None or len(batch.assistant_logits) == 0):
        raise ValueError(f"method {name!r} needs at least one teacher assistant: a deeper student depth")
    if method.draws and batch.pairs is None:
        raise ValueError(f"method {name!r} needs this epoch's draw of its layers (pairs; the trainer's: "
                         "rail_pairs = rail_layers(n, m, seed, epoch) for RAIL-KD)")
    for term in method.terms:
        value = term.fn(batch, p)
        if value is None:
            continue
        terms[term.key] = value
        part = value if term.weight is None else term.weight(p) * value
        total = part if total is None else total + part
    return total, terms


def objective(name: str, p, teacher=None, states: str = "cls", difficulty=None):
    """The training loss of a student of method `name` for `alpkd.trainer.DistillTrainer`: `(model, inputs, trainer)
    -> (loss, terms, outputs)`. Teacher outputs come from the batch (the cache) or from `teacher` run online."""
    method, memo = get(name), {}

    def compute(model, inputs, trainer):
        teacher_logits, teacher_states = inputs.pop("teacher_logits", None), inputs.pop("teacher_states", None)
        assistant_logits, rows = inputs.pop("assistant_logits", None), inputs.pop("cache_row", None)
        labels, labelled = inputs.pop("labels"), inputs.pop("labelled", None)
        outputs = model(**inputs, output_hidden_states=method.states)
        if method.teacher and teacher_logits is None:
            if teacher is None:
                raise RuntimeError(f"method {name!r} needs teacher outputs: pass a cache or a teacher")
            with torch.no_grad():
                out = teacher.to(trainer.args.device).eval()(**inputs, output_hidden_states=True)
            teacher_logits, teacher_states = out.logits, layer_states(out)  # (B, T, n, d)
            teacher_states = teacher_states if states == "tokens" else teacher_states[:, 0]
        student_states = mask = None
        if method.states:
            student_states = layer_states(outputs)  # (B, T, m, d)
            if states == "tokens":
                mask = inputs["attention_mask"]
            else:
                student_states = student_states[:, 0]
        if method.assistants and assistant_logits is None:
            raise RuntimeError(f"method {name!r} needs the teacher assistants' logits (the collator's assistants)")
        batch = Batch(outputs.logits, labels, student_states, teacher_logits, teacher_states, mask, assistant_logits,
                      seed=trainer.args.seed, epoch=math.floor(trainer.state.epoch or 0), step=trainer.state.global_step,
                      epochs=math.ceil(trainer.args.num_train_epochs), rows=rows, labelled=labelled,
                      difficulty=difficulty, memo=memo)
        if method.draws:  # e.g. RAIL-KD's layers: a function of the run's seed and the epoch (resumes exactly)
            batch.pairs = method.mapping(batch.n, batch.m, p, batch.seed, batch.epoch)
        loss, terms = distillation_loss(name, p, batch)
        return loss, terms, outputs

    return compute


# --- a user's method -----------------------------------------------------------------------------------
def _load(name: str, path: Path) -> Method:
    """custom/methods/<name>.py's `METHOD`, checked: one ConfigError naming the file and what is wrong."""
    where = path.relative_to(repo_root()) if path.is_relative_to(repo_root()) else path
    try:
        spec = importlib.util.spec_from_file_location(f"alpkd_custom_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 - the user's file, whatever it raises
        raise ConfigError(f"{where}: cannot be imported ({type(err).__name__}: {err})") from None
    method = getattr(module, "METHOD", None)
    if not isinstance(method, Method):
        raise ConfigError(f"{where}: declares no method (a module-level `METHOD = Method(...)` from alpkd.methods)")
    method = replace(method, source=str(where))
    problem = _problem(name, method)
    if problem:
        raise ConfigError(f"{where}: {problem}")
    return method


def _problem(name: str, method: Method) -> str | None:
    """What is wrong with a user's declaration, or None: its fields, then each term called once on a tiny random
    batch (a 4-layer teacher, a 2-layer student, two assistants)."""
    if method.name in BUILT_IN:
        return f"METHOD.name = {method.name!r}: the name of a built-in method; choose another name"
    if method.name != name:
        return f"METHOD.name = {method.name!r}: must be the file's name, {name!r}"
    for key in ("label", "family"):
        if not isinstance(getattr(method, key), str) or not getattr(method, key):
            return f"METHOD.{key} is missing (a non-empty string)"
    if method.family not in FAMILIES:
        return f"METHOD.family = {method.family!r}: allowed: {', '.join(FAMILIES)}"
    if not method.terms or not all(isinstance(t, Term) for t in method.terms):
        return "METHOD.terms is missing: a tuple of Term(key, fn, weight)"
    unknown = [b for b in method.compared_with if b not in BUILT_IN]
    if unknown:
        return f"METHOD.compared_with names {unknown[0]!r}: not a built-in method; allowed: {', '.join(BUILT_IN)}"
    gen = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
    batch = Batch(rand(4, 2), torch.tensor([0, 1, 1, 0]), rand(4, 2, 8), rand(4, 2), rand(4, 4, 8),
                  assistant_logits=rand(2, 4, 2), kept=[True, True, True], experts=torch.tensor([0, 1, 2, 0]))
    p = _CheckParams()
    for term in method.terms:
        try:
            value = term.fn(batch, p)
            weight = 1.0 if term.weight is None else float(term.weight(p))
        except Exception as err:  # noqa: BLE001
            return f"term {term.key!r} raised {type(err).__name__}: {err} (called on a random batch of 4 examples)"
        if value is None:
            continue
        if not isinstance(value, torch.Tensor) or value.dim() != 0:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            return f"term {term.key!r} returned {shape}, not a scalar tensor"
        if not (torch.isfinite(value) and math.isfinite(weight)):
            return f"term {term.key!r} returned {float(value)} (weight {weight}) on a random batch: not finite"
    return None


class _CheckParams:
    """The weights a term may read, at the config's defaults, for the check on a random batch."""

    temperature, kd_alpha, pkd_beta, pkd_exclude_last, alp_lambda, alp_scale = 5.0, 0.5, 100.0, True, 1.0, False
    alp_overlap, rail_weight, all_to_one_layer, dgkd_drop, ces_curriculum = 1, 100.0, None, 1, True


# --- parameters ----------------------------------------------------------------------------------------
def check(params):
    """`params` unchanged, or one ConfigError: an unknown method in distill.methods, a bad user method, an
    assistant that itself learns from assistants or is not trained."""
    dp = params.distill
    for k, name in enumerate(dp.methods):
        if name in BUILT_IN and _custom_file(name).is_file():
            raise ConfigError(f"custom/methods/{name}.py: the name of a built-in method (distill.methods.{k} = {name!r} runs "
                              "the built-in one); choose another name for yours")
        try:
            get(name)
        except ValueError as err:
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(f"distill.methods.{k} = {name!r}: {err}") from None
    try:
        helper = get(dp.assistant)
    except ValueError:
        helper = None
    if helper is None or helper.assistants:
        allowed = ", ".join(m.name for m in declared(dp.methods) if not m.assistants)
        raise ConfigError(f"distill.assistant = {dp.assistant!r}: not a method that can be a teacher assistant; "
                          f"allowed: {allowed}")
    needing = assisted(dp.methods)
    if needing and dp.assistant not in dp.methods:
        raise ConfigError(f"distill.assistant = {dp.assistant!r}: not in distill.methods {dp.methods}, so no "
                          f"assistant would be trained for {', '.join(needing)}; allowed: one of the methods "
                          "listed (add it) or remove the assisted methods")
    if dp.transfer_samples:  # their assistants' caches and CES-KD's difficulties cover the labelled rows alone
        bad = [n for n in dp.methods if get(n).assistants or get(n).difficulty]
        if bad:
            raise ConfigError(f"distill.transfer_samples = {dp.transfer_samples} with {', '.join(bad)}: a transfer "
                              "set is for the methods that learn from the teacher alone; remove them from "
                              "distill.methods or set transfer_samples: 0")
    return params


def validate(raw: dict, source: str = "params"):
    """`alpkd.preflight.validate` (the file's checks, then its teacher's) and the methods' check."""
    from .preflight import validate as validate_params

    return check(validate_params(raw, source))
