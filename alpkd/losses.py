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

# the gold-label term (the teacher's objective too) and PKD-skip's layers (also the students' `skip` start) live
# where the teacher stage reads them, so that stage depends on no distillation code; shared from here
from .students import skip_layers  # noqa: F401
from .trainer import task_loss  # noqa: F401



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


# --- PKD's pairs ----------------------------------------------------------------------------------------
def pkd_layers(n: int, m: int, exclude_last: bool = True) -> list[int]:
    """Teacher layers g(i) for the student layers PKD matches (the last one dropped if `exclude_last`)."""
    layers = skip_layers(n, m)
    return layers[:-1] if exclude_last else layers
