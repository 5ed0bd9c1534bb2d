"""The distillation objectives as pure functions of tensors.

Every distillation term (KD, PKD and its matching controls, ALP, RAIL, TAKD, DGKD, CES-KD) is computed in
float32 whatever the autocast setting: under bf16, ALP's unscaled scores (about 100 on MiniLM states) would be
rounded by up to 0.5 before the softmax.

Shapes: `logits` are (B, C) (C = 1 for STS-B regression). Layer states are (..., m, d) for the student and
(..., n, d) for the teacher: the leading dimensions are the batch (B,) for `states: cls`, or (B, T) for
`states: tokens`, in which case `mask` (B, T) marks the real (non-padding) tokens. Teacher assistants' logits
are (K, B, C), the K assistants ordered by size ascending (index 0 = the smallest, nearest the student). Teacher
and assistant tensors are detached here, so no gradient can reach them whatever the caller passes.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .paths import ASSISTED


def _fp32(x: torch.Tensor) -> torch.Tensor:
    """At least float32: half-precision tensors are upcast, float32 and float64 kept as they are."""
    return x.float() if x.element_size() < 4 else x


def _pair(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Student at least float32; the teacher (a constant: detached) in the student's dtype."""
    student = _fp32(student)
    return student, teacher.detach().to(student.dtype)


def float32_terms(fn):
    """Run a loss with autocast off, so its matrix products stay in float32 (inputs are cast by the loss)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
        with torch.autocast(device_type=device, enabled=False):
            return fn(*args, **kwargs)

    return wrapper


# --- output-level losses -------------------------------------------------------------------------------
def task_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Loss on gold labels: cross-entropy, or MSE for regression (one output)."""
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
    return F.cross_entropy(logits, labels)


@float32_terms
def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's soft loss `T^2 * KL(softmax(z_T/T) || softmax(z_S/T))`, averaged over the batch.

    For regression (one output) the soft term is the MSE between the two predictions (T is unused).
    """
    student_logits, teacher_logits = _pair(student_logits, teacher_logits)
    if student_logits.shape[-1] == 1:
        return F.mse_loss(student_logits, teacher_logits)
    t = temperature
    log_p_s = F.log_softmax(student_logits / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / t, dim=-1)
    return t * t * F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)


# --- layer mappings ------------------------------------------------------------------------------------
def skip_layers(n: int, m: int) -> list[int]:
    """Teacher layers (0-based) matched to student layers by PKD-skip: `g(i) = ceil(i*n/m)`, i = 1..m.

    For n divisible by m these are layers n/m, 2n/m, ..., n (1-based); the last is always layer n.
    """
    if not 1 <= m <= n:
        raise ValueError(f"need 1 <= m <= n, got m={m}, n={n}")
    return [math.ceil(i * n / m) - 1 for i in range(1, m + 1)]


def layer_buckets(n: int, m: int, overlap: int = 0) -> list[list[int]]:
    """The teacher layers (0-based) each student layer may attend to, for ALP-NO and ALP-PO.

    The n teacher layers are cut into m consecutive buckets of equal size (sizes differ by at most one when
    m does not divide n); `overlap` widens each bucket by that many layers on each side (ALP-PO uses 1),
    clipped at the first and last layer.
    """
    if not 1 <= m <= n:
        raise ValueError(f"need 1 <= m <= n, got m={m}, n={n}")
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    buckets = [b.tolist() for b in np.array_split(np.arange(n), m)]
    return [list(range(max(0, b[0] - overlap), min(n, b[-1] + 1 + overlap))) for b in buckets]


def buckets_mask(buckets: list[list[int]], n: int) -> torch.Tensor:
    """(m, n) boolean mask: True where student layer i may attend to teacher layer j."""
    mask = torch.zeros(len(buckets), n, dtype=torch.bool)
    for i, bucket in enumerate(buckets):
        mask[i, bucket] = True
    return mask


# --- PKD -----------------------------------------------------------------------------------------------
@float32_terms
def pkd_loss(student_states: torch.Tensor, teacher_states: torch.Tensor, layers: list[int]) -> torch.Tensor:
    """Patient KD: `sum_i || h_S^i/|h_S^i| - h_T^g(i)/|h_T^g(i)| ||^2`, averaged over examples.

    student_states (B, m', d), teacher_states (B, n, d); `layers[i]` is the teacher layer g(i) of student
    layer i, for the m' student layers taking part (the first m' ones).
    """
    student, teacher = _pair(student_states[:, : len(layers)], teacher_states[:, layers])
    diff = F.normalize(student, dim=-1) - F.normalize(teacher, dim=-1)
    return diff.pow(2).sum(dim=(-1, -2)).mean()


def reverse_layers(n: int, m: int, exclude_last: bool = True) -> list[int]:
    """The reverse control of PKD (Yu, Wen, Mou 2025): student layer i (1-based) matched to teacher layer
    g(m+1-i), PKD-skip's mapping read backwards, so the student's first layer learns from the teacher's last.

    0-based, indexed by student layer. With `exclude_last` (as PKD) the student's last layer is left to the
    logits: the pairs of student layers 1..m-1 only (so the teacher's first skip layer g(1) is never matched).
    """
    layers = skip_layers(n, m)
    return [layers[m - i] for i in range(1, _matched(m, exclude_last) + 1)]


def all_to_one_layers(n: int, m: int, layer: int | None = None, exclude_last: bool = True) -> list[int]:
    """The all-to-one control of PKD (Yu, Wen, Mou 2025): every student layer taking part (1..m-1 with
    `exclude_last`, as PKD; else 1..m) matched to the one teacher layer `layer` (1-based); 0-based list.

    The default, None, is the teacher's last layer n: its [CLS] state is the one the teacher's classifier reads,
    the most task-specific single layer, so all-to-one is the strongest one-layer control against ALP's premise
    that matching *different* teacher layers matters.
    """
    if not 1 <= m <= n:
        raise ValueError(f"need 1 <= m <= n, got m={m}, n={n}")
    layer = n if layer is None else layer
    if not 1 <= layer <= n:
        raise ValueError(f"all-to-one matches one teacher layer: allowed 1..{n} (1-based, the teacher has {n} "
                         f"layers; None = the last), got {layer}")
    return [layer - 1] * _matched(m, exclude_last)


def _matched(m: int, exclude_last: bool) -> int:
    """How many student layers a one-to-one mapping pairs: the first m-1 with `exclude_last`, else all m."""
    return m - 1 if exclude_last else m


# --- ALP -----------------------------------------------------------------------------------------------
@float32_terms
def alp_attention(
    student_states: torch.Tensor,
    teacher_states: torch.Tensor,
    allowed: torch.Tensor | None = None,
    scale: bool = False,
) -> torch.Tensor:
    """`alpha_ij = softmax_j(h_S^i . h_T^j)` over the allowed teacher layers; shape (..., m, n).

    `allowed` is an (m, n) boolean mask (ALP-NO/ALP-PO buckets; None = every layer, plain ALP). `scale`
    divides the scores by sqrt(d): the paper's formula is unscaled, and unscaled scores between states of
    norm ~10 make the softmax nearly one-hot.
    """
    student_states, teacher = _pair(student_states, teacher_states)
    scores = student_states @ teacher.transpose(-1, -2)
    if scale:
        scores = scores / math.sqrt(student_states.shape[-1])
    if allowed is not None:
        scores = scores.masked_fill(~allowed.to(scores.device), float("-inf"))
    return scores.softmax(dim=-1)


@float32_terms
def alp_loss(
    student_states: torch.Tensor,
    teacher_states: torch.Tensor,
    allowed: torch.Tensor | None = None,
    scale: bool = False,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ALP: `sum_i MSE(h_S^i, f_i)` with the fused teacher vector `f_i = sum_j alpha_ij h_T^j`.

    Returns the loss and the attention weights (..., m, n). The MSE averages over the d features and
    over the examples (or, for `states: tokens`, over the real tokens given by `mask`). The student's
    gradient flows both through the MSE and through the weights alpha (which depend on h_S): the paper
    gives the loss, not a stop-gradient, so none is added.
    """
    student_states, teacher_states = _pair(student_states, teacher_states)
    weights = alp_attention(student_states, teacher_states, allowed, scale)
    fused = weights @ teacher_states
    per_position = (student_states - fused).pow(2).mean(dim=-1).sum(dim=-1)  # (...,): sum over layers
    if mask is None:
        return per_position.mean(), weights
    mask = mask.to(per_position.dtype)
    return (per_position * mask).sum() / mask.sum(), weights


# --- RAIL-KD -------------------------------------------------------------------------------------------
def rail_layers(n: int, m: int, seed: int, epoch: int) -> list[int]:
    """RAIL-KD's draw for one epoch: m-1 of the teacher's intermediate layers (0-based 0..n-2), without
    replacement, sorted; the i-th is paired with student layer i, for the student's intermediate layers
    1..m-1. The last layer of each model is left to the logits (the KD term), as in PKD: RAIL-KD distils
    "into the intermediate layers of the student". With one student layer there is nothing to pair (KD).

    A pure function of (seed, epoch): a run is reproducible, and a resumed run draws the same layers.
    """
    if not 1 <= m <= n:
        raise ValueError(f"RAIL-KD pairs the m-1 intermediate student layers with m-1 of the n-1 intermediate "
                         f"teacher layers: need 1 <= m <= n, got m={m}, n={n}")
    rng = np.random.default_rng([seed & 0xFFFFFFFF, epoch])
    return sorted(int(j) for j in rng.choice(n - 1, size=m - 1, replace=False))


@float32_terms
def rail_loss(student_states: torch.Tensor, teacher_states: torch.Tensor, layers: list[int]) -> torch.Tensor:
    """RAIL-KD (layer-wise): `mean_i || h_S^i/|h_S^i| - h_T^l(i)/|h_T^l(i)| ||^2` over the pairs and examples.

    student_states (B, m, d), teacher_states (B, n, d); `layers[i]` is the teacher layer drawn for student
    layer i this epoch (`rail_layers`: the first m-1 student layers take part). Student and teacher share a width here (the student is the
    teacher's architecture), so RAIL-KD's projection for unequal widths is not needed.
    """
    student, teacher = _pair(student_states[:, : len(layers)], teacher_states[:, layers])
    student, teacher = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
    return (student - teacher).pow(2).sum(dim=-1).mean()


# --- teacher assistants: TAKD, DGKD, CES-KD -----------------------------------------------------------
@float32_terms
def dgkd_loss(student_logits: torch.Tensor, guide_logits: torch.Tensor, keep, temperature: float) -> torch.Tensor:
    """DGKD (Son et al. 2021): `T^2 sum_k KL(softmax(z_k/T) || softmax(z_S/T))`, summed over the guides kept.

    student_logits (B, C); guide_logits (G, B, C), the assistants by size ascending then the teacher (index G-1);
    `keep` (G,) booleans (a list or a bool tensor; `dgkd_keep`). Each term is `kd_loss` (so the MSE for
    regression), averaged over the batch; the terms are summed, not averaged, over the guides.
    """
    keep = [bool(k) for k in keep]
    if len(keep) != guide_logits.shape[0]:
        raise ValueError(f"keep has {len(keep)} entries for {guide_logits.shape[0]} guides")
    if not any(keep):
        raise ValueError("DGKD keeps at least one guide (dgkd_keep): every guide was dropped")
    return sum(kd_loss(student_logits, guide_logits[k], temperature) for k in range(len(keep)) if keep[k])


def dgkd_keep(guides: int, seed: int, step: int, drop: int = 1) -> list[bool]:
    """The guides DGKD keeps at optimisation step `step` (0-based global step): `min(drop, guides - 1)` of the
    `guides` dropped uniformly at random, so at least one is always kept (DGKD's code drops one by default).

    A pure function of (seed, step): a run is reproducible, and a resumed run draws the same guides.
    """
    if guides < 1:
        raise ValueError(f"DGKD needs at least one guide, got {guides}")
    if drop < 0:
        raise ValueError(f"drop must be >= 0, got {drop}")
    rng = np.random.default_rng([seed & 0xFFFFFFFF, step])
    dropped = {int(k) for k in rng.choice(guides, size=min(drop, guides - 1), replace=False)}
    return [k not in dropped for k in range(guides)]


def example_difficulty(teacher_logits, labels) -> np.ndarray:
    """CES-KD's difficulty of each training example (our choice): the teacher's task loss on it, the
    cross-entropy for classification, the squared error for regression (C = 1). Higher = harder.

    teacher_logits (N, C) and labels (N,), numpy arrays or tensors; returns float64 (N,).
    """
    z, y = _numpy(teacher_logits, np.float64), _numpy(labels)
    if z.shape[-1] == 1:
        return (z[:, 0] - y.astype(np.float64)) ** 2
    top = z.max(axis=-1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(z - top).sum(axis=-1))
    return log_norm - z[np.arange(len(z)), y.astype(np.int64)]


def ces_experts(difficulty, experts: int, epoch: int, epochs: int, curriculum: bool = True) -> np.ndarray:
    """CES-KD (Amara et al. 2022): the expert each example learns from at `epoch` (0-based) of `epochs`.

    The experts are ordered by size ascending: 0 = the smallest teacher assistant ... experts-1 = the teacher.
    The paper's abstract gives only "selecting a single teacher per input ... based on a curriculum driven by
    the difficulty"; the rule is ours: rank the examples by `difficulty` ascending (ties by index), quantile
    q_i = (rank_i + 0.5) / N, pace s = min(1, (epoch + 1) / epochs) (1 without `curriculum`), expert
    `min(experts - 1, floor(experts * q_i * s))`. At the last epoch the examples are split into equal shares
    by difficulty (easiest to the smallest assistant, hardest to the teacher); earlier epochs give more of them
    to the smaller experts. Computed in integers (exact at the share boundaries). A pure function of
    (difficulty, epoch): a resumed run assigns the same experts. Returns int64 (N,).
    """
    if experts < 1 or epochs < 1 or epoch < 0:
        raise ValueError(f"need experts >= 1, epochs >= 1, epoch >= 0; got {experts}, {epochs}, {epoch}")
    difficulty = _numpy(difficulty, np.float64)
    count = len(difficulty)
    rank = np.empty(count, dtype=np.int64)
    rank[np.argsort(difficulty, kind="stable")] = np.arange(count)
    pace, of = (min(epoch + 1, epochs), epochs) if curriculum else (1, 1)
    # floor(experts * (rank + 1/2) / N * pace / of), as one integer division
    return np.minimum(experts - 1, (experts * (2 * rank + 1) * pace) // (2 * count * of))


@float32_terms
def ceskd_loss(student_logits: torch.Tensor, expert_logits: torch.Tensor, expert: torch.Tensor,
               temperature: float) -> torch.Tensor:
    """CES-KD's per-example KD from that example's expert: `T^2 mean_b KL(softmax(z_{e_b,b}/T) || softmax(z_S,b/T))`,
    or `mean_b (s_b - z_{e_b,b})^2` for regression.

    student_logits (B, C); expert_logits (E, B, C), the experts by size ascending (the teacher last);
    expert (B,) long, the expert of each example (`ces_experts`).
    """
    if expert.shape != student_logits.shape[:1]:
        raise ValueError(f"expert must be (B,) = {tuple(student_logits.shape[:1])}, got {tuple(expert.shape)}")
    rows = torch.arange(student_logits.shape[0], device=expert_logits.device)
    return kd_loss(student_logits, expert_logits[expert.to(expert_logits.device), rows], temperature)


def _numpy(x, dtype=None) -> np.ndarray:
    """A numpy copy of an array or a tensor (any device, any dtype)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.double() if dtype == np.float64 else x
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


# --- the objective of each method ----------------------------------------------------------------------
MATCHING_CONTROLS = ("reverse", "all_to_one")  # PKD's loss with other mappings (Yu, Wen, Mou 2025)
LAYER_METHODS = ("pkd", "alp", "alp_no", "alp_po", "alp_scaled", "rail", *MATCHING_CONTROLS)
ALP_METHODS = ("alp", "alp_no", "alp_po", "alp_scaled")
ASSISTED_METHODS = ASSISTED  # learn from teacher assistants (students of deeper depths); one list, in alpkd.paths


def alp_allowed(method: str, n: int, m: int, overlap: int = 1) -> torch.Tensor | None:
    """Which teacher layers each student layer attends to: all (ALP), its bucket (ALP-NO, ALP-PO)."""
    if method in ("alp", "alp_scaled"):
        return None
    if method == "alp_no":
        return buckets_mask(layer_buckets(n, m), n)
    if method == "alp_po":
        return buckets_mask(layer_buckets(n, m, overlap), n)
    raise ValueError(f"{method!r} is not an ALP method; allowed: {', '.join(ALP_METHODS)}")


def alp_scaled(method: str, p) -> bool:
    """Whether `method` divides ALP's scores by sqrt(d): `alp_scaled` always; the others if `p.alp_scale`."""
    return method == "alp_scaled" or bool(p.alp_scale)


def same_objective(method: str, n: int, m: int, p) -> str:
    """The simplest method whose objective is identical to `method`'s for an n-layer teacher and an m-layer
    student (`method` itself when there is none). At one student layer PKD without the last layer matches
    no layer (it is KD), and ALP-NO/ALP-PO have one bucket holding every layer (they are ALP); with
    `alp_scale` on, ALP is already scaled (ALP-scaled is ALP); a one-layer student has no intermediate layer
    for RAIL-KD to pair (it is KD). PKD's matching controls are KD with no pair, PKD when their pairs are
    PKD's, and all-to-one is reverse when their pairs agree (one pair to the last layer: n=6, m=2). The methods
    learning from teacher assistants are themselves."""
    if method in ("pkd", *MATCHING_CONTROLS):
        layers = matched_layers(method, n, m, p)
        if not layers:
            return "kd"
        if method != "pkd" and layers == pkd_layers(n, m, p.pkd_exclude_last):
            return "pkd"
        if method == "all_to_one" and layers == reverse_layers(n, m, p.pkd_exclude_last):
            return "reverse"
    if method in ("alp_no", "alp_po") and bool(alp_allowed(method, n, m, p.alp_overlap).all()):
        return "alp"
    if method == "alp_scaled" and p.alp_scale:
        return "alp"
    if method == "rail" and m == 1:
        return "kd"
    return method


def pkd_layers(n: int, m: int, exclude_last: bool = True) -> list[int]:
    """Teacher layers g(i) for the student layers PKD matches (the last one dropped if `exclude_last`)."""
    layers = skip_layers(n, m)
    return layers[:-1] if exclude_last else layers


def matched_layers(method: str, n: int, m: int, p) -> list[int]:
    """The teacher layers (0-based) of the student layers PKD's loss matches, for PKD or one of its controls."""
    if method == "pkd":
        return pkd_layers(n, m, p.pkd_exclude_last)
    if method == "reverse":
        return reverse_layers(n, m, p.pkd_exclude_last)
    if method == "all_to_one":
        return all_to_one_layers(n, m, p.all_to_one_layer, p.pkd_exclude_last)
    raise ValueError(f"{method!r} is not PKD or one of its controls; allowed: pkd, {', '.join(MATCHING_CONTROLS)}")


def distillation_loss(
    method: str,
    p,
    logits: torch.Tensor,
    labels: torch.Tensor,
    student_states: torch.Tensor | None = None,
    teacher_logits: torch.Tensor | None = None,
    teacher_states: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    rail_pairs: list[int] | None = None,
    assistant_logits: torch.Tensor | None = None,
    guides_kept: list[bool] | None = None,
    experts: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The total loss of `method` and its terms; `p` holds the weights (an `alpkd.config.Distill`).

    nokd: CE.  kd: (1-a) CE + a KD.  pkd: kd + b PKD.  alp*: (1-a) CE + a KD + l ALP.
    rail: kd + r RAIL, with `rail_pairs` the teacher layers drawn for this epoch (`rail_layers`).
    reverse, all_to_one: kd + b PKD with their mappings (the term named after the method).
    With `assistant_logits` (K, B, C), the teacher assistants by size ascending:
    takd: (1-a) CE + a KD from the nearest assistant (index 0) only.
    dgkd: (1-a) CE + a DGKD over the guides [*assistants, teacher] kept this step (`guides_kept`, `dgkd_keep`).
    ceskd: (1-a) CE + a CES-KD, each example from its expert among [*assistants, teacher] (`experts`, `ces_experts`).
    """
    terms = {"ce": task_loss(logits, labels)}
    if method == "nokd":
        return terms["ce"], terms
    if method in ASSISTED_METHODS:
        name = "kd" if method == "takd" else method  # TAKD is KD, from the nearest assistant
        terms[name] = _assisted_term(method, p, logits, teacher_logits, assistant_logits, guides_kept, experts)
        return (1 - p.kd_alpha) * terms["ce"] + p.kd_alpha * terms[name], terms
    terms["kd"] = kd_loss(logits, teacher_logits, p.temperature)
    total = (1 - p.kd_alpha) * terms["ce"] + p.kd_alpha * terms["kd"]
    if method in LAYER_METHODS:
        n, m = teacher_states.shape[-2], student_states.shape[-2]
    if method in ("pkd", "rail", *MATCHING_CONTROLS) and student_states.dim() == 4:
        # `states: tokens` is an ALP option; PKD, its controls and RAIL-KD match the [CLS] vectors
        student_states, teacher_states = student_states[:, 0], teacher_states[:, 0]
    if method in ("pkd", *MATCHING_CONTROLS):
        layers = matched_layers(method, n, m, p)
        if layers:
            terms[method] = pkd_loss(student_states, teacher_states, layers)
            total = total + p.pkd_beta * terms[method]
    elif method == "rail":
        if rail_pairs is None:
            raise ValueError("method 'rail' needs the epoch's teacher layers (rail_pairs = rail_layers(...))")
        if len(rail_pairs) != m - 1:
            raise ValueError(f"RAIL-KD pairs the {m - 1} intermediate student layers: got {len(rail_pairs)} "
                             "teacher layers (rail_pairs = rail_layers(n, m, ...))")
        if rail_pairs:
            terms["rail"] = rail_loss(student_states, teacher_states, rail_pairs)
            total = total + p.rail_weight * terms["rail"]
    elif method in ALP_METHODS:
        allowed = alp_allowed(method, n, m, p.alp_overlap)
        terms["alp"], _ = alp_loss(student_states, teacher_states, allowed, alp_scaled(method, p), mask)
        total = total + p.alp_lambda * terms["alp"]
    elif method != "kd":
        raise ValueError(f"unknown method {method!r}")
    return total, terms


def _assisted_term(method: str, p, logits: torch.Tensor, teacher_logits: torch.Tensor,
                   assistant_logits: torch.Tensor | None, guides_kept: list[bool] | None,
                   experts: torch.Tensor | None) -> torch.Tensor:
    """The distillation term of TAKD, DGKD or CES-KD (weighted by `a` in the caller)."""
    if assistant_logits is None or len(assistant_logits) == 0:
        raise ValueError(f"method {method!r} needs at least one teacher assistant: a deeper student depth")
    if method == "takd":
        return kd_loss(logits, assistant_logits[0], p.temperature)
    dtype = torch.promote_types(assistant_logits[0].dtype, teacher_logits.dtype)
    guides = torch.stack([*assistant_logits, teacher_logits]).detach().to(dtype)  # (K+1, B, C): the teacher last
    if method == "dgkd":
        if guides_kept is None:
            raise ValueError("method 'dgkd' needs the guides kept this step (guides_kept = dgkd_keep(...))")
        if len(guides_kept) != len(guides):
            raise ValueError(f"DGKD has {len(guides)} guides ({len(guides) - 1} assistants and the teacher): got "
                             f"{len(guides_kept)} entries in guides_kept (dgkd_keep(guides={len(guides)}, ...))")
        return dgkd_loss(logits, guides, guides_kept, p.temperature)
    if experts is None:
        raise ValueError("method 'ceskd' needs each example's expert (experts = ces_experts(...) for the batch's rows)")
    return ceskd_loss(logits, guides, experts, p.temperature)
