"""The distillation objectives as pure functions of tensors.

Every distillation term (KD, PKD, ALP, RAIL) is computed in float32 whatever the autocast setting: under
bf16, ALP's unscaled scores (about 100 on MiniLM states) would be rounded by up to 0.5 before the softmax.

Shapes: `logits` are (B, C) (C = 1 for STS-B regression). Layer states are (..., m, d) for the student and
(..., n, d) for the teacher: the leading dimensions are the batch (B,) for `states: cls`, or (B, T) for
`states: tokens`, in which case `mask` (B, T) marks the real (non-padding) tokens. Teacher tensors are
detached here, so no gradient can reach the teacher whatever the caller passes.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


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


# --- the objective of each method ----------------------------------------------------------------------
LAYER_METHODS = ("pkd", "alp", "alp_no", "alp_po", "alp_scaled", "rail")
ALP_METHODS = ("alp", "alp_no", "alp_po", "alp_scaled")


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
    for RAIL-KD to pair (it is KD)."""
    if method == "pkd" and not pkd_layers(n, m, p.pkd_exclude_last):
        return "kd"
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
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The total loss of `method` and its terms; `p` holds the weights (an `alpkd.config.Distill`).

    nokd: CE.  kd: (1-a) CE + a KD.  pkd: kd + b PKD.  alp*: (1-a) CE + a KD + l ALP.
    rail: kd + r RAIL, with `rail_pairs` the teacher layers drawn for this epoch (`rail_layers`).
    """
    terms = {"ce": task_loss(logits, labels)}
    if method == "nokd":
        return terms["ce"], terms
    terms["kd"] = kd_loss(logits, teacher_logits, p.temperature)
    total = (1 - p.kd_alpha) * terms["ce"] + p.kd_alpha * terms["kd"]
    if method in LAYER_METHODS:
        n, m = teacher_states.shape[-2], student_states.shape[-2]
    if method in ("pkd", "rail") and student_states.dim() == 4:
        # `states: tokens` is an ALP option; PKD and RAIL-KD match the [CLS] vectors
        student_states, teacher_states = student_states[:, 0], teacher_states[:, 0]
    if method == "pkd":
        layers = pkd_layers(n, m, p.pkd_exclude_last)
        if layers:
            terms["pkd"] = pkd_loss(student_states, teacher_states, layers)
            total = total + p.pkd_beta * terms["pkd"]
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
