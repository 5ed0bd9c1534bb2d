"""alpkd.losses against plain-loop numpy references written from the method's definitions (DESIGN.md)."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from alpkd import losses, methods
from helpers import distill_params

RNG = np.random.default_rng(1234)
# every method the losses know, whether or not the config lists it yet
ALL_METHODS = tuple(methods.BUILT_IN)
ASSISTED_METHODS = tuple(methods.assisted(ALL_METHODS))


def distillation_loss(method, p, logits, labels, student_states=None, teacher_logits=None, teacher_states=None,
                      mask=None, rail_pairs=None, assistant_logits=None, guides_kept=None, experts=None):
    """`methods.distillation_loss` on a batch of these tensors (the draws given, as the trainer gives them)."""
    return methods.distillation_loss(method, p, methods.Batch(
        logits, labels, student_states, teacher_logits, teacher_states, mask, assistant_logits, pairs=rail_pairs,
        kept=guides_kept, experts=experts))


def alp_allowed(method, n, m, overlap=1):
    return methods.get(method).attention(n, m, params(alp_overlap=overlap))[0]


def params(**overrides):
    """`distill_params` with the fields of the matching controls and the assisted methods (their defaults)."""
    return distill_params(**{"all_to_one_layer": None, "dgkd_drop": 1, "ces_curriculum": True, "assistant": "kd",
                             **overrides})


# --- independent references (float64 numpy, explicit loops) --------------------------------------------
def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def ce_ref(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean([-math.log(softmax(z)[y]) for z, y in zip(logits, labels)]))


def mse_ref(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    return float(sum((x - y) ** 2 for x, y in zip(a, b)) / len(a))


def task_ref(logits: np.ndarray, labels: np.ndarray) -> float:
    """The task loss: cross-entropy, or the MSE for regression (one output)."""
    return mse_ref(logits[:, 0], labels) if logits.shape[-1] == 1 else ce_ref(logits, labels)


def kd_ref(zs: np.ndarray, zt: np.ndarray, t: float) -> float:
    if zs.shape[-1] == 1:
        return mse_ref(zs, zt)
    total = 0.0
    for s, te in zip(zs, zt):
        ps, pt = softmax(s / t), softmax(te / t)
        total += sum(pt[c] * math.log(pt[c] / ps[c]) for c in range(len(s)))
    return t * t * total / len(zs)


def skip_ref(n: int, m: int) -> list[int]:
    """PKD-skip g(i) = ceil(i n / m), i = 1..m, as 0-based indices."""
    return [math.ceil(i * n / m) - 1 for i in range(1, m + 1)]


def pkd_ref(hs: np.ndarray, ht: np.ndarray, layers: list[int]) -> float:
    total = 0.0
    for b in range(hs.shape[0]):
        for i, j in enumerate(layers):
            u = hs[b, i] / np.linalg.norm(hs[b, i])
            v = ht[b, j] / np.linalg.norm(ht[b, j])
            total += sum((u[k] - v[k]) ** 2 for k in range(len(u)))
    return total / hs.shape[0]


def kd_grad_ref(zs: np.ndarray, zt: np.ndarray, t: float) -> np.ndarray:
    """d kd_ref / d zs: T (p_S - p_T) / B per example and class; 2 (s - t) / B for regression."""
    grad = np.zeros(zs.shape)
    for b in range(zs.shape[0]):
        if zs.shape[-1] == 1:
            grad[b, 0] = 2 * (zs[b, 0] - zt[b, 0]) / zs.shape[0]
            continue
        ps, pt = softmax(zs[b] / t), softmax(zt[b] / t)
        for c in range(zs.shape[1]):
            grad[b, c] = t * (ps[c] - pt[c]) / zs.shape[0]
    return grad


def pkd_grad_ref(hs: np.ndarray, ht: np.ndarray, layers: list[int]) -> np.ndarray:
    """d pkd_ref / d hs: 2 (-v + u (u . v)) / |h_S^i| / B for each pair, u = h_S^i/|h_S^i|, v = h_T^j/|h_T^j|."""
    grad = np.zeros(hs.shape)
    for b in range(hs.shape[0]):
        for i, j in enumerate(layers):
            norm = math.sqrt(sum(x * x for x in hs[b, i]))
            u, v = hs[b, i] / norm, ht[b, j] / math.sqrt(sum(x * x for x in ht[b, j]))
            dot = sum(u[k] * v[k] for k in range(len(u)))
            for k in range(len(u)):
                grad[b, i, k] += 2 * (-v[k] + u[k] * dot) / norm / hs.shape[0]
    return grad


def reverse_ref(n: int, m: int, exclude_last: bool) -> list[int]:
    """Student layer i -> teacher layer g(m + 1 - i) = ceil((m + 1 - i) n / m), for i = 1..m (or 1..m-1)."""
    return [math.ceil((m + 1 - i) * n / m) - 1 for i in range(1, (m - 1 if exclude_last else m) + 1)]


def all_to_one_ref(n: int, m: int, layer, exclude_last: bool) -> list[int]:
    return [(n if layer is None else layer) - 1 for _ in range(1, (m - 1 if exclude_last else m) + 1)]


def dgkd_ref(zs: np.ndarray, guides: np.ndarray, keep, t: float) -> tuple[float, np.ndarray]:
    """The sum over the kept guides k of T^2 KL(p_k || p_S) averaged over the batch (MSE: regression), and its
    gradient."""
    total, grad = 0.0, np.zeros(zs.shape)
    for k in range(guides.shape[0]):
        if keep[k]:
            total += kd_ref(zs, guides[k], t)
            grad += kd_grad_ref(zs, guides[k], t)
    return total, grad


def ceskd_ref(zs: np.ndarray, experts: np.ndarray, expert, t: float) -> tuple[float, np.ndarray]:
    """Per example b, KD from z_{e_b, b}: T^2 KL (classification) or the squared error (regression), mean over b."""
    B, C = zs.shape
    total, grad = 0.0, np.zeros(zs.shape)
    for b in range(B):
        z = experts[expert[b], b]
        if C == 1:
            total += (zs[b, 0] - z[0]) ** 2 / B
            grad[b, 0] = 2 * (zs[b, 0] - z[0]) / B
            continue
        ps, pt = softmax(zs[b] / t), softmax(z / t)
        total += t * t * sum(pt[c] * math.log(pt[c] / ps[c]) for c in range(C)) / B
        for c in range(C):
            grad[b, c] = t * (ps[c] - pt[c]) / B
    return total, grad


def ce_grad_ref(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """d task loss / d z: (softmax(z) - onehot(y)) / B; 2 (z - y) / B for regression."""
    grad = np.zeros(z.shape)
    for b in range(z.shape[0]):
        if z.shape[-1] == 1:
            grad[b, 0] = 2 * (z[b, 0] - labels[b]) / z.shape[0]
            continue
        p = softmax(z[b])
        for c in range(z.shape[1]):
            grad[b, c] = (p[c] - (1.0 if c == labels[b] else 0.0)) / z.shape[0]
    return grad


def alp_position_ref(hs: np.ndarray, ht: np.ndarray, allowed, scale: bool):
    """One position: hs (m, d), ht (n, d). Returns (sum_i mean_d (h_S^i - f_i)^2, weights (m, n))."""
    m, d = hs.shape
    n = ht.shape[0]
    weights = np.zeros((m, n))
    loss = 0.0
    for i in range(m):
        js = [j for j in range(n) if allowed is None or allowed[i][j]]
        scores = np.array([float(np.dot(hs[i], ht[j])) / (math.sqrt(d) if scale else 1.0) for j in js])
        alpha = softmax(scores)
        fused = np.zeros(d)
        for a, j in zip(alpha, js):
            fused += a * ht[j]
            weights[i, j] = a
        loss += sum((hs[i, k] - fused[k]) ** 2 for k in range(d)) / d
    return loss, weights


def alp_ref(hs: np.ndarray, ht: np.ndarray, allowed=None, scale=False, mask=None):
    """hs (B, m, d) / ht (B, n, d), or (B, T, m, d) / (B, T, n, d) with a (B, T) mask of real tokens."""
    if hs.ndim == 3:
        hs, ht, mask = hs[:, None], ht[:, None], np.ones((hs.shape[0], 1))
    total, count = 0.0, 0
    weights = np.zeros(hs.shape[:2] + (hs.shape[2], ht.shape[2]))
    for b in range(hs.shape[0]):
        for t in range(hs.shape[1]):
            loss, weights[b, t] = alp_position_ref(hs[b, t], ht[b, t], allowed, scale)
            if mask[b, t]:
                total += loss
                count += 1
    return total / count, weights


def buckets_ref(n: int, m: int) -> list[list[int]]:
    """n layers cut into m consecutive buckets, the first n % m one layer larger."""
    sizes = [n // m + (1 if k < n % m else 0) for k in range(m)]
    out, start = [], 0
    for s in sizes:
        out.append(list(range(start, start + s)))
        start += s
    return out


def mask_of(buckets: list[list[int]], n: int) -> np.ndarray:
    mask = np.zeros((len(buckets), n), dtype=bool)
    for i, bucket in enumerate(buckets):
        mask[i, bucket] = True
    return mask


def t64(x: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64, requires_grad=grad)


def close(a, b, tol=1e-9):
    a, b = (x.detach() if isinstance(x, torch.Tensor) else x for x in (a, b))
    assert float(a) == pytest.approx(float(b), rel=tol, abs=tol)


def close_grad(x: torch.Tensor, ref: np.ndarray, tol=1e-9):
    np.testing.assert_allclose(x.grad.numpy(), ref, rtol=tol, atol=tol)


# --- output-level losses -------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 5.0, 10.0])
@pytest.mark.parametrize("classes", [2, 3])
def test_kd_loss_matches_reference(temperature, classes):
    zs, zt = RNG.normal(size=(7, classes)) * 3, RNG.normal(size=(7, classes)) * 3
    close(losses.kd_loss(t64(zs), t64(zt), temperature), kd_ref(zs, zt, temperature))


def test_kd_loss_is_zero_for_equal_logits_and_positive_otherwise():
    z = RNG.normal(size=(5, 3))
    close(losses.kd_loss(t64(z), t64(z), 2.0), 0.0)
    assert float(losses.kd_loss(t64(z), t64(z[::-1].copy()), 2.0)) > 1e-3


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_loss_regression_is_mse_between_predictions(temperature):
    zs, zt = RNG.normal(size=(9, 1)), RNG.normal(size=(9, 1))
    close(losses.kd_loss(t64(zs), t64(zt), temperature), mse_ref(zs, zt))


@pytest.mark.parametrize("classes", [2, 3])
def test_task_loss_cross_entropy(classes):
    z, y = RNG.normal(size=(8, classes)) * 2, RNG.integers(0, classes, size=8)
    close(losses.task_loss(t64(z), torch.tensor(y)), ce_ref(z, y))


def test_task_loss_regression_mse():
    z, y = RNG.normal(size=(8, 1)), RNG.uniform(0, 5, size=8)
    close(losses.task_loss(t64(z), torch.tensor(y, dtype=torch.float32)), mse_ref(z[:, 0], y), tol=1e-6)


# --- PKD -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,m,exclude_last", [(12, 6, True), (12, 6, False), (12, 4, True), (6, 3, False),
                                               (6, 2, True), (4, 1, False), (7, 3, True), (7, 3, False)])
def test_pkd_loss_matches_reference(n, m, exclude_last):
    hs, ht = RNG.normal(size=(5, m, 8)), RNG.normal(size=(5, n, 8)) * 4
    layers = skip_ref(n, m)[:-1] if exclude_last else skip_ref(n, m)
    close(losses.pkd_loss(t64(hs), t64(ht), layers), pkd_ref(hs, ht, layers))


def test_pkd_loss_ignores_norms():
    hs, ht = RNG.normal(size=(3, 2, 6)), RNG.normal(size=(3, 4, 6))
    scaled = hs * RNG.uniform(0.1, 10, size=(3, 2, 1))
    close(losses.pkd_loss(t64(scaled), t64(ht), [1, 3]), losses.pkd_loss(t64(hs), t64(ht), [1, 3]), tol=1e-9)


def test_pkd_and_skip_layers_examples():
    assert losses.skip_layers(12, 6) == [1, 3, 5, 7, 9, 11]
    assert losses.pkd_layers(12, 6, exclude_last=False) == [1, 3, 5, 7, 9, 11]
    assert losses.pkd_layers(12, 6, exclude_last=True) == [1, 3, 5, 7, 9]
    assert losses.pkd_layers(6, 3, exclude_last=False) == [1, 3, 5]
    assert losses.skip_layers(6, 2) == [2, 5]
    assert losses.pkd_layers(4, 1, exclude_last=True) == []


@pytest.mark.parametrize("n", range(1, 25))
def test_skip_layers_every_pair(n):
    for m in range(1, n + 1):
        assert losses.skip_layers(n, m) == skip_ref(n, m)


@pytest.mark.parametrize("n,m", [(4, 5), (4, 0), (0, 0)])
def test_skip_layers_bad_input(n, m):
    with pytest.raises(ValueError):
        losses.skip_layers(n, m)


# --- ALP -----------------------------------------------------------------------------------------------
def random_allowed(m: int, n: int) -> np.ndarray:
    allowed = RNG.random((m, n)) < 0.5
    allowed[np.arange(m), RNG.integers(0, n, size=m)] = True  # at least one layer per student layer
    return allowed


@pytest.mark.parametrize("scale", [False, True])
@pytest.mark.parametrize("use_allowed", [False, True])
@pytest.mark.parametrize("n,m", [(6, 3), (4, 1), (12, 4), (5, 2)])
def test_alp_loss_cls_matches_reference(scale, use_allowed, n, m):
    d = 8
    hs, ht = RNG.normal(size=(4, m, d)) * 2, RNG.normal(size=(4, n, d)) * 2
    allowed = random_allowed(m, n) if use_allowed else None
    loss, weights = losses.alp_loss(t64(hs), t64(ht), None if allowed is None else torch.tensor(allowed), scale)
    ref_loss, ref_w = alp_ref(hs, ht, allowed, scale)
    close(loss, ref_loss)
    np.testing.assert_allclose(weights.detach().numpy(), ref_w[:, 0], atol=1e-12)


def test_alp_scale_changes_the_result():
    hs, ht = RNG.normal(size=(2, 2, 16)) * 3, RNG.normal(size=(2, 4, 16)) * 3
    a, _ = losses.alp_loss(t64(hs), t64(ht), scale=False)
    b, _ = losses.alp_loss(t64(hs), t64(ht), scale=True)
    assert abs(float(a) - float(b)) > 1e-6


@pytest.mark.parametrize("scale", [False, True])
@pytest.mark.parametrize("use_allowed", [False, True])
def test_alp_loss_tokens_mean_over_real_tokens(scale, use_allowed):
    B, T, m, n, d = 3, 5, 2, 6, 4
    hs, ht = RNG.normal(size=(B, T, m, d)), RNG.normal(size=(B, T, n, d))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    hs[mask == 0] = 1e3  # padding positions: huge values that would dominate if they were counted
    allowed = random_allowed(m, n) if use_allowed else None
    loss, weights = losses.alp_loss(t64(hs), t64(ht), None if allowed is None else torch.tensor(allowed),
                                    scale, torch.tensor(mask))
    ref_loss, ref_w = alp_ref(hs, ht, allowed, scale, mask)
    close(loss, ref_loss)
    real = mask == 1
    np.testing.assert_allclose(weights.detach().numpy()[real], ref_w[real], atol=1e-12)


@pytest.mark.parametrize("m", [1, 3])
def test_alp_with_one_teacher_layer_is_mse_to_it(m):
    hs, ht = RNG.normal(size=(6, m, 10)), RNG.normal(size=(6, 1, 10))
    ref = sum(mse_ref(hs[:, i], ht[:, 0]) for i in range(m))
    for scale in (False, True):
        loss, weights = losses.alp_loss(t64(hs), t64(ht), scale=scale)
        close(loss, ref)
        assert torch.all(weights == 1)


@pytest.mark.parametrize("method", ["alp_no", "alp_po"])
@pytest.mark.parametrize("n,m", [(4, 1), (6, 3), (12, 4), (12, 6), (7, 3), (24, 5)])
def test_alp_attention_stays_in_bucket(method, n, m):
    allowed = alp_allowed(method, n, m, 1)
    expected = buckets_ref(n, m)
    if method == "alp_po":
        expected = [list(range(max(0, b[0] - 1), min(n, b[-1] + 2))) for b in expected]
    assert np.array_equal(allowed.numpy(), mask_of(expected, n))
    hs, ht = RNG.normal(size=(3, m, 8)), RNG.normal(size=(3, n, 8))
    w = losses.alp_attention(t64(hs), t64(ht), allowed).numpy()
    ok = mask_of(expected, n)[None].repeat(3, axis=0)
    assert np.all(w[~ok] == 0.0)
    assert np.all(w[ok] > 0.0)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-12)


def test_alp_allowed_plain_and_unknown():
    assert alp_allowed("alp", 6, 2) is None
    assert methods.get("pkd").attention is None  # no attention over teacher layers


# --- buckets -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", range(1, 25))
def test_no_buckets_partition(n):
    for m in range(1, n + 1):
        check_no_buckets(n, m)


def check_no_buckets(n, m):
    buckets = losses.layer_buckets(n, m)
    assert len(buckets) == m
    flat = [j for b in buckets for j in b]
    assert flat == list(range(n))  # consecutive, in order, each layer exactly once
    assert all(b == list(range(b[0], b[-1] + 1)) for b in buckets)
    sizes = [len(b) for b in buckets]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
    if n % m == 0:
        assert buckets == [list(range(k * n // m, (k + 1) * n // m)) for k in range(m)]


@pytest.mark.parametrize("n", range(1, 25))
def test_po_buckets_widen_no_buckets(n):
    for m in range(1, n + 1):
        check_po_buckets(n, m)


def check_po_buckets(n, m):
    no, po = losses.layer_buckets(n, m), losses.layer_buckets(n, m, overlap=1)
    assert len(po) == m
    for b, p in zip(no, po):
        assert p == list(range(max(0, b[0] - 1), min(n - 1, b[-1] + 1) + 1))
    assert sorted({j for p in po for j in p}) == list(range(n))
    for left, right in zip(po, po[1:]):
        assert set(left) & set(right)  # neighbours share layers


@pytest.mark.parametrize("n,m,overlap", [(4, 5, 0), (3, 0, 0), (6, 3, -1), (6, 2, -2)])
def test_layer_buckets_bad_input(n, m, overlap):
    with pytest.raises(ValueError):
        losses.layer_buckets(n, m, overlap)


# --- the objective of each method ----------------------------------------------------------------------
def make_batch(classes=3, B=4, m=2, n=6, d=8, tokens=False, assistants=2):
    lead = (B, 5) if tokens else (B,)
    return dict(
        logits=RNG.normal(size=(B, classes)), labels=RNG.integers(0, classes, size=B) if classes > 1
        else RNG.uniform(0, 5, size=B), student_states=RNG.normal(size=lead + (m, d)),
        teacher_logits=RNG.normal(size=(B, classes)), teacher_states=RNG.normal(size=lead + (n, d)) * 2,
        assistant_logits=RNG.normal(size=(assistants, B, classes)) * 2,
    )


def guides_kept_of(b) -> list[bool]:
    """A fixed DGKD draw for a batch: the smallest assistant dropped when there are two guides or more."""
    return [k > 0 or len(b["assistant_logits"]) == 0 for k in range(len(b["assistant_logits"]) + 1)]


def experts_of(b) -> np.ndarray:
    """A fixed CES-KD assignment: example i learns from guide i mod (K+1) (every guide used for B >= K+1)."""
    return np.arange(len(b["logits"])) % (len(b["assistant_logits"]) + 1)


def rail_pairs_of(b) -> list[int]:
    """A fixed RAIL-KD draw for a batch: the last m-1 of the n-1 intermediate layers (any valid draw will do)."""
    m, n = b["student_states"].shape[-2], b["teacher_states"].shape[-2]
    return list(range(n - m, n - 1))


def call(method, p, b, grad=False):
    tensors = {k: t64(v, grad) for k, v in b.items() if k != "labels"}
    labels = torch.tensor(b["labels"]) if b["labels"].dtype.kind == "i" else torch.tensor(b["labels"], dtype=torch.float64)
    total, terms = distillation_loss(method, p, tensors["logits"], labels, tensors["student_states"],
                                            tensors["teacher_logits"], tensors["teacher_states"], None,
                                            rail_pairs_of(b) if method == "rail" else None,
                                            assistant_logits=tensors["assistant_logits"], guides_kept=guides_kept_of(b),
                                            experts=torch.tensor(experts_of(b)))
    return total, terms, tensors


def guides_of(b) -> np.ndarray:
    """DGKD's and CES-KD's guides: the assistants (by size ascending), then the teacher."""
    return np.concatenate([b["assistant_logits"], b["teacher_logits"][None]])


def rail_ref(s: np.ndarray, t: np.ndarray, pairs: list[int]) -> float:
    """RAIL-KD by hand: mean over examples and pairs of || s_i/|s_i| - t_l(i)/|t_l(i)| ||^2."""
    total, count = 0.0, 0
    for sb, tb in zip(s, t):
        for i, j in enumerate(pairs):
            a, c = sb[i] / math.sqrt(sum(x * x for x in sb[i])), tb[j] / math.sqrt(sum(x * x for x in tb[j]))
            total += sum((x - y) ** 2 for x, y in zip(a, c))
            count += 1
    return total / count


def expected_total(method, p, b):
    m, n = b["student_states"].shape[-2], b["teacher_states"].shape[-2]
    ce = task_ref(b["logits"], b["labels"])
    if method == "nokd":
        return ce
    a, t = p.kd_alpha, p.temperature
    if method == "takd":  # the nearest assistant only
        return (1 - a) * ce + a * kd_ref(b["logits"], b["assistant_logits"][0], t)
    if method == "dgkd":
        return (1 - a) * ce + a * dgkd_ref(b["logits"], guides_of(b), guides_kept_of(b), t)[0]
    if method == "ceskd":
        return (1 - a) * ce + a * ceskd_ref(b["logits"], guides_of(b), experts_of(b), t)[0]
    kd = (1 - a) * ce + a * kd_ref(b["logits"], b["teacher_logits"], t)
    if method == "kd":
        return kd
    if method in ("pkd", "reverse", "all_to_one"):
        layers = {"pkd": skip_ref(n, m)[:-1] if p.pkd_exclude_last else skip_ref(n, m),
                  "reverse": reverse_ref(n, m, p.pkd_exclude_last),
                  "all_to_one": all_to_one_ref(n, m, p.all_to_one_layer, p.pkd_exclude_last)}[method]
        return kd + (p.pkd_beta * pkd_ref(b["student_states"], b["teacher_states"], layers) if layers else 0.0)
    if method == "rail":  # the intermediate student layers 1..m-1 only: none at m = 1
        pairs = rail_pairs_of(b)
        return kd + (p.rail_weight * rail_ref(b["student_states"], b["teacher_states"], pairs) if pairs else 0.0)
    if method == "alp_scaled":
        return kd + p.alp_lambda * alp_ref(b["student_states"], b["teacher_states"], None, True)[0]
    buckets = {"alp": None, "alp_no": buckets_ref(n, m),
               "alp_po": [list(range(max(0, c[0] - p.alp_overlap), min(n, c[-1] + 1 + p.alp_overlap)))
                          for c in buckets_ref(n, m)]}[method]
    allowed = None if buckets is None else mask_of(buckets, n)
    return kd + p.alp_lambda * alp_ref(b["student_states"], b["teacher_states"], allowed, p.alp_scale)[0]


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("overrides", [{}, {"pkd_exclude_last": False, "alp_scale": True, "kd_alpha": 0.8},
                                       {"temperature": 1.0, "alp_overlap": 2, "all_to_one_layer": 2}])
@pytest.mark.parametrize("classes,m,n", [(3, 2, 6), (2, 3, 12), (1, 2, 4), (2, 1, 4)])
def test_distillation_loss_combines_terms(method, overrides, classes, m, n):
    p = params(**overrides)
    b = make_batch(classes=classes, m=m, n=n)
    total, terms, _ = call(method, p, b)
    close(total, expected_total(method, p, b))
    assert "ce" in terms


def test_unknown_method_raises():
    with pytest.raises(ValueError):
        call("alp_xx", params(), make_batch())


@pytest.mark.parametrize("method", ALL_METHODS)
def test_no_gradient_reaches_the_teacher(method):
    p = params(pkd_exclude_last=False)
    total, _, t = call(method, p, make_batch(m=2, n=6), grad=True)
    total.backward()
    assert t["teacher_logits"].grad is None
    assert t["teacher_states"].grad is None
    assert t["assistant_logits"].grad is None
    assert t["logits"].grad is not None and t["logits"].grad.abs().sum() > 0
    if methods.get(method).states:
        assert t["student_states"].grad is not None and t["student_states"].grad.abs().sum() > 0


@pytest.mark.parametrize("method", ["alp", "alp_no", "alp_po"])
def test_distillation_loss_tokens_uses_the_mask(method):
    p = params()
    b = make_batch(m=2, n=6, tokens=True)
    mask = np.ones((4, 5), dtype=int)
    mask[0, 3:] = mask[2, 1:] = 0
    tensors = {k: t64(v) for k, v in b.items() if k != "labels"}
    total, terms = distillation_loss(method, p, tensors["logits"], torch.tensor(b["labels"]),
                                            tensors["student_states"], tensors["teacher_logits"],
                                            tensors["teacher_states"], torch.tensor(mask))
    allowed = None if method == "alp" else alp_allowed(method, 6, 2, p.alp_overlap).numpy()
    close(terms["alp"], alp_ref(b["student_states"], b["teacher_states"], allowed, p.alp_scale, mask)[0])


@pytest.mark.parametrize("method,layers", [("pkd", skip_ref(6, 2)), ("reverse", [5, 2]), ("all_to_one", [5, 5])])
def test_pkd_with_token_states_matches_cls_vectors(method, layers):
    """`states: tokens` is an ALP option: PKD (Sun et al.) and its controls still match the [CLS] vectors."""
    p = params(pkd_exclude_last=False)
    b = make_batch(m=2, n=6, tokens=True)
    mask = torch.ones(4, 5, dtype=torch.long)
    tensors = {k: t64(v) for k, v in b.items() if k != "labels"}
    _, terms = distillation_loss(method, p, tensors["logits"], torch.tensor(b["labels"]),
                                        tensors["student_states"], tensors["teacher_logits"],
                                        tensors["teacher_states"], mask)
    close(terms[method], pkd_ref(b["student_states"][:, 0], b["teacher_states"][:, 0], layers))


# --- RAIL-KD's draw ------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,m", [(6, 3), (6, 2), (12, 6), (4, 4), (6, 5)])
def test_rail_layers_draw(n, m):
    draws = [losses.rail_layers(n, m, seed=7, epoch=e) for e in range(200)]
    for d in draws:
        assert d == sorted(d) and len(set(d)) == m - 1  # one per intermediate student layer, without replacement
        assert all(0 <= j <= n - 2 for j in d)  # intermediate layers only: the last is left to the logits
    assert draws == [losses.rail_layers(n, m, seed=7, epoch=e) for e in range(200)]  # a function of (seed, epoch)
    assert {j for d in draws for j in d} == set(range(n - 1))  # over epochs every intermediate layer is drawn
    if m < n:
        assert len({tuple(d) for d in draws}) > 1  # a new draw each epoch
        assert draws != [losses.rail_layers(n, m, seed=8, epoch=e) for e in range(200)]  # and per seed
    # uniform over subsets: each layer is drawn with probability (m-1)/(n-1) (binomial 4-sigma band, 200 draws)
    counts = np.bincount([j for d in draws for j in d], minlength=n - 1)
    q = (m - 1) / (n - 1)
    assert np.all(np.abs(counts - 200 * q) <= 4 * math.sqrt(200 * q * (1 - q)) + 1e-9)


def test_rail_layers_one_student_layer_draws_nothing():
    """A one-layer student's only layer is its last: nothing is paired, the objective is KD."""
    assert [losses.rail_layers(6, 1, seed=3, epoch=e) for e in range(5)] == [[]] * 5


def test_rail_layers_bad_input():
    for n, m in [(4, 5), (4, 0)]:
        with pytest.raises(ValueError, match="need 1 <= m <= n"):
            losses.rail_layers(n, m, 0, 0)


def test_rail_pairs_must_cover_the_intermediate_student_layers():
    b = make_batch(m=3, n=6)
    t = {k: t64(v) for k, v in b.items() if k != "labels"}
    args = (t["logits"], torch.tensor(b["labels"]), t["student_states"], t["teacher_logits"], t["teacher_states"], None)
    with pytest.raises(ValueError, match="pairs the 2 intermediate student layers: got 3"):
        distillation_loss("rail", params(), *args, [0, 1, 2])


def test_rail_loss_ignores_norms_and_needs_a_draw():
    b = make_batch(m=2, n=6)
    s, t = t64(b["student_states"]), t64(b["teacher_states"])
    close(losses.rail_loss(3 * s, 0.5 * t, [1, 3]), losses.rail_loss(s, t, [1, 3]))
    with pytest.raises(ValueError, match="rail_pairs"):
        call_without_pairs = distillation_loss
        call_without_pairs("rail", params(), t64(b["logits"]), torch.tensor(b["labels"]), s,
                           t64(b["teacher_logits"]), t)


# --- PKD's controls: reverse and all-to-one matching (Yu, Wen, Mou 2025) ----------------------------------
# hand-listed from the definitions: reverse pairs student i with g(m+1-i), g(i) = ceil(i n / m) (1-based);
# all-to-one pairs every participating student layer with teacher layer n. Written 0-based, by student layer.
MAPPINGS = [  # (n, m, reverse without the last student layer, reverse with it, all-to-one without, with)
    (6, 3, [5, 3], [5, 3, 1], [5, 5], [5, 5, 5]),
    (6, 2, [5], [5, 2], [5], [5, 5]),
    (6, 1, [], [5], [], [5]),
    (12, 6, [11, 9, 7, 5, 3], [11, 9, 7, 5, 3, 1], [11, 11, 11, 11, 11], [11, 11, 11, 11, 11, 11]),
    (12, 4, [11, 8, 5], [11, 8, 5, 2], [11, 11, 11], [11, 11, 11, 11]),
    (12, 2, [11], [11, 5], [11], [11, 11]),
]


@pytest.mark.parametrize("n,m,rev,rev_all,one,one_all", MAPPINGS)
def test_control_mappings_by_hand(n, m, rev, rev_all, one, one_all):
    assert losses.reverse_layers(n, m) == rev == reverse_ref(n, m, True)
    assert losses.reverse_layers(n, m, exclude_last=False) == rev_all == reverse_ref(n, m, False)
    assert losses.all_to_one_layers(n, m) == one == all_to_one_ref(n, m, None, True)
    assert losses.all_to_one_layers(n, m, exclude_last=False) == one_all
    assert losses.all_to_one_layers(n, m, layer=n) == one


def test_control_mappings_other_layer_and_uneven_depths():
    assert losses.all_to_one_layers(12, 4, layer=6) == [5, 5, 5]
    assert losses.all_to_one_layers(6, 3, layer=1, exclude_last=False) == [0, 0, 0]
    assert losses.reverse_layers(7, 3) == [6, 4]  # g = 3, 5, 7: student 1 -> 7, student 2 -> 5
    assert losses.reverse_layers(6, 3) != losses.pkd_layers(6, 3) == [1, 3]
    for n in range(1, 13):
        for m in range(1, n + 1):
            for exclude_last in (True, False):
                assert losses.reverse_layers(n, m, exclude_last) == reverse_ref(n, m, exclude_last)
                assert sorted(losses.reverse_layers(n, m, False)) == losses.skip_layers(n, m)


@pytest.mark.parametrize("layer", [0, 7, -1])
def test_all_to_one_layer_out_of_range(layer):
    with pytest.raises(ValueError, match=r"allowed 1\.\.6"):
        losses.all_to_one_layers(6, 3, layer)


@pytest.mark.parametrize("n,m", [(4, 5), (4, 0)])
def test_control_mappings_bad_depths(n, m):
    for fn in (losses.reverse_layers, losses.all_to_one_layers):
        with pytest.raises(ValueError, match="need 1 <= m <= n"):
            fn(n, m)


@pytest.mark.parametrize("method", ["reverse", "all_to_one"])
@pytest.mark.parametrize("n,m,exclude_last,layer", [(6, 3, True, None), (12, 4, False, None), (12, 4, True, 5),
                                                    (6, 2, False, 1), (7, 3, True, None)])
def test_control_losses_values_and_gradients(method, n, m, exclude_last, layer):
    """kd + b PKD with the control's pairs, the term named after the method; the states' gradient by hand."""
    p = params(pkd_exclude_last=exclude_last, all_to_one_layer=layer)
    b = make_batch(m=m, n=n)
    total, terms, t = call(method, p, b, grad=True)
    layers = reverse_ref(n, m, exclude_last) if method == "reverse" else all_to_one_ref(n, m, layer, exclude_last)
    close(terms[method], pkd_ref(b["student_states"], b["teacher_states"], layers))
    assert "pkd" not in terms
    close(total, expected_total(method, p, b))
    total.backward()
    close_grad(t["student_states"], p.pkd_beta * pkd_grad_ref(b["student_states"], b["teacher_states"], layers))
    close_grad(t["logits"], (1 - p.kd_alpha) * ce_grad_ref(b["logits"], b["labels"])
               + p.kd_alpha * kd_grad_ref(b["logits"], b["teacher_logits"], p.temperature))


# --- teacher assistants: DGKD --------------------------------------------------------------------------
@pytest.mark.parametrize("classes", [1, 2, 3])
@pytest.mark.parametrize("keep", [[True, True, True], [False, True, True], [True, False, False], [False, False, True]])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_dgkd_loss_values_and_gradients(classes, keep, temperature):
    zs, guides = RNG.normal(size=(5, classes)) * 2, RNG.normal(size=(3, 5, classes)) * 2
    ref, ref_grad = dgkd_ref(zs, guides, keep, temperature)
    for kept in (keep, torch.tensor(keep)):
        s = t64(zs, grad=True)
        loss = losses.dgkd_loss(s, t64(guides), kept, temperature)
        close(loss, ref)
        loss.backward()
        close_grad(s, ref_grad)


def test_dgkd_loss_one_guide_is_kd_and_bad_keep():
    zs, guides = t64(RNG.normal(size=(4, 3))), t64(RNG.normal(size=(2, 4, 3)))
    close(losses.dgkd_loss(zs, guides, [False, True], 2.0), losses.kd_loss(zs, guides[1], 2.0))
    with pytest.raises(ValueError, match="every guide was dropped"):
        losses.dgkd_loss(zs, guides, [False, False], 2.0)
    with pytest.raises(ValueError, match="3 entries for 2 guides"):
        losses.dgkd_loss(zs, guides, [True, True, True], 2.0)


@pytest.mark.parametrize("guides", [1, 2, 3, 5])
@pytest.mark.parametrize("drop", [0, 1, 2, 4, 9])
def test_dgkd_keep_drops_exactly_and_is_a_function_of_seed_and_step(guides, drop):
    draws = [losses.dgkd_keep(guides, seed=11, step=s, drop=drop) for s in range(300)]
    assert draws == [losses.dgkd_keep(guides, seed=11, step=s, drop=drop) for s in range(300)]  # (seed, step) only
    for kept in draws:
        assert len(kept) == guides and all(type(k) is bool for k in kept)
        assert kept.count(False) == min(drop, guides - 1)  # at least one always kept
    dropped = {k for kept in draws for k in range(guides) if not kept[k]}
    if 0 < drop and guides > 1:
        assert dropped == set(range(guides))  # over many steps every guide is dropped sometimes
        assert len({tuple(d) for d in draws}) > 1
        assert draws != [losses.dgkd_keep(guides, seed=12, step=s, drop=drop) for s in range(300)]  # and per seed
    else:
        assert dropped == set()
    if guides == 1:
        assert draws[0] == [True]


def test_dgkd_keep_large_seed_and_bad_input():
    assert losses.dgkd_keep(3, seed=2**40 + 5, step=3) == losses.dgkd_keep(3, seed=5, step=3)  # the seed's low 32 bits
    with pytest.raises(ValueError, match="at least one guide"):
        losses.dgkd_keep(0, 0, 0)
    with pytest.raises(ValueError, match="drop must be >= 0"):
        losses.dgkd_keep(3, 0, 0, drop=-1)


# --- teacher assistants: CES-KD ------------------------------------------------------------------------
def test_example_difficulty_is_the_teachers_loss():
    z, y = RNG.normal(size=(6, 3)) * 3, RNG.integers(0, 3, size=6)
    ref = [-math.log(softmax(z[i])[y[i]]) for i in range(6)]
    for zz, yy in ((z, y), (torch.tensor(z, dtype=torch.float64), torch.tensor(y))):
        got = losses.example_difficulty(zz, yy)
        assert got.shape == (6,) and got.dtype == np.float64
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    zr, yr = RNG.normal(size=(5, 1)), RNG.uniform(0, 5, size=5)
    np.testing.assert_allclose(losses.example_difficulty(torch.tensor(zr, dtype=torch.float32), yr),
                               [(float(np.float32(zr[i, 0])) - yr[i]) ** 2 for i in range(5)], rtol=1e-12)
    big = np.array([[1000.0, 0.0], [0.0, 1000.0]])  # stable at large logits
    np.testing.assert_allclose(losses.example_difficulty(big, np.array([0, 0])), [0.0, 1000.0], atol=1e-9)


def test_ces_experts_by_hand():
    """N = 6, 3 experts, 3 epochs. Difficulty ranks (0 = easiest) by example: 3, 0, 2, 5, 1, 4. Expert =
    floor(3 * (rank + 1/2)/6 * s) = floor((rank + 1/2) s / 2): s = 1/3 puts every rank below 1 (all expert 0);
    s = 2/3 gives (rank + 1/2)/3: ranks 0-2 -> 0, 3-5 -> 1; s = 1 gives (rank + 1/2)/2: ranks 0-1 -> 0, 2-3 -> 1,
    4-5 -> 2 (equal shares, the hardest third to the teacher)."""
    d = [0.9, 0.1, 0.5, 2.0, 0.3, 1.2]
    expected = {0: [0, 0, 0, 0, 0, 0], 1: [1, 0, 0, 1, 0, 1], 2: [1, 0, 1, 2, 0, 2]}
    for epoch, e in expected.items():
        got = losses.ces_experts(np.array(d), 3, epoch, 3)
        assert got.tolist() == e and got.dtype == np.int64
        assert losses.ces_experts(torch.tensor(d), 3, epoch, 3).tolist() == e
        assert losses.ces_experts(d, 3, epoch, 3, curriculum=False).tolist() == expected[2]  # no pace: the last epoch's
    assert losses.ces_experts(d, 3, 7, 3).tolist() == expected[2]  # past the last epoch the pace stays 1


def test_ces_experts_ties_paces_and_shares():
    # ties broken by index: the earlier example counts as easier
    assert losses.ces_experts([1.0, 1.0, 1.0, 1.0], 2, 0, 1).tolist() == [0, 0, 1, 1]
    assert losses.ces_experts([2.0, 1.0, 2.0, 1.0], 2, 0, 1).tolist() == [1, 0, 1, 0]
    # epoch 0 of 2 with 2 experts: every example to the assistant; epoch 1: halves
    d = RNG.normal(size=10)
    assert losses.ces_experts(d, 2, 0, 2).tolist() == [0] * 10
    half = losses.ces_experts(d, 2, 1, 2)
    assert sorted(half.tolist()) == [0] * 5 + [1] * 5 and np.all(d[half == 1].min() > d[half == 0].max())
    # the last epoch: equal shares by difficulty (N divisible by E); earlier epochs favour the smaller experts
    d = RNG.normal(size=12)
    for experts in (1, 2, 3, 4, 6):
        last = losses.ces_experts(d, experts, 4, 5)
        assert np.bincount(last, minlength=experts).tolist() == [12 // experts] * experts
        for epoch in range(4):
            earlier = losses.ces_experts(d, experts, epoch, 5)
            assert np.all(earlier <= last)
    assert losses.ces_experts(d, 1, 0, 3).tolist() == [0] * 12  # one expert: all to it


def ces_experts_ref(difficulty, experts: int, epoch: int, epochs: int, curriculum: bool) -> list[int]:
    """Plain loops, exact fractions: rank_i = #{j: (d_j, j) < (d_i, i)}, q_i = (rank_i + 1/2)/N, the pace s."""
    count = len(difficulty)
    pace = min(Fraction(1), Fraction(epoch + 1, epochs)) if curriculum else Fraction(1)
    out = []
    for i in range(count):
        rank = sum(1 for j in range(count) if (difficulty[j], j) < (difficulty[i], i))
        out.append(min(experts - 1, math.floor(experts * Fraction(2 * rank + 1, 2 * count) * pace)))
    return out


def test_ces_experts_uneven_shares_by_hand():
    """N = 4, 3 experts, last epoch: 3 (rank + 1/2)/4 = 0.375, 1.125, 1.875, 2.625 -> 0, 1, 1, 2; N = 5, 2 experts:
    2 (rank + 1/2)/5 = 0.2, 0.6, 1.0, 1.4, 1.8 -> 0, 0, 1, 1, 1 (the middle example exactly on the boundary)."""
    assert losses.ces_experts([0.4, 0.3, 0.2, 0.1], 3, 1, 2).tolist() == [2, 1, 1, 0]
    assert losses.ces_experts([5.0, 4.0, 3.0, 2.0, 1.0], 2, 0, 1).tolist() == [1, 1, 1, 0, 0]


@pytest.mark.parametrize("count,experts,epochs", [(7, 3, 3), (200, 2, 2), (97, 4, 5), (60, 3, 7), (1, 2, 3)])
def test_ces_experts_matches_reference(count, experts, epochs):
    """Many ties (difficulties from 4 values), so a sort that is not stable would show."""
    d = RNG.integers(0, 4, size=count).astype(float)
    for epoch in range(epochs + 1):
        for curriculum in (True, False):
            assert losses.ces_experts(d, experts, epoch, epochs, curriculum).tolist() == \
                ces_experts_ref(d.tolist(), experts, epoch, epochs, curriculum)


def test_ces_experts_bad_input():
    for args in [(0, 0, 1), (2, -1, 1), (2, 0, 0)]:
        with pytest.raises(ValueError, match="need experts >= 1"):
            losses.ces_experts([0.1, 0.2], *args)


@pytest.mark.parametrize("classes", [1, 2, 3])
@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_ceskd_loss_values_and_gradients(classes, temperature):
    zs, experts = RNG.normal(size=(7, classes)) * 2, RNG.normal(size=(3, 7, classes)) * 2
    expert = RNG.integers(0, 3, size=7)
    ref, ref_grad = ceskd_ref(zs, experts, expert, temperature)
    s = t64(zs, grad=True)
    loss = losses.ceskd_loss(s, t64(experts), torch.tensor(expert), temperature)
    close(loss, ref)
    loss.backward()
    close_grad(s, ref_grad)


@pytest.mark.parametrize("classes", [1, 3])
def test_ceskd_loss_with_one_shared_expert_is_kd(classes):
    zs, experts = t64(RNG.normal(size=(5, classes))), t64(RNG.normal(size=(3, 5, classes)))
    for e in range(3):
        close(losses.ceskd_loss(zs, experts, torch.full((5,), e), 2.0), losses.kd_loss(zs, experts[e], 2.0))
    with pytest.raises(ValueError, match=r"expert must be \(B,\)"):
        losses.ceskd_loss(zs, experts, torch.zeros(4, dtype=torch.long), 2.0)


# --- teacher assistants: the objectives ----------------------------------------------------------------
@pytest.mark.parametrize("method", ASSISTED_METHODS)
@pytest.mark.parametrize("classes,assistants", [(3, 1), (2, 2), (1, 3)])
def test_assisted_objectives_values_and_gradients(method, classes, assistants):
    """(1-a) CE + a term, by hand; the student's gradient by hand; TAKD sees only the nearest assistant."""
    p = params()
    b = make_batch(classes=classes, B=5, assistants=assistants)
    total, terms, t = call(method, p, b, grad=True)
    a, temp, z, guides = p.kd_alpha, p.temperature, b["logits"], guides_of(b)
    if method == "takd":  # the nearest assistant (index 0) only
        name, term, grad = "kd", kd_ref(z, guides[0], temp), kd_grad_ref(z, guides[0], temp)
    elif method == "dgkd":
        name, (term, grad) = "dgkd", dgkd_ref(z, guides, guides_kept_of(b), temp)
    else:
        name, (term, grad) = "ceskd", ceskd_ref(z, guides, experts_of(b), temp)
    assert set(terms) == {"ce", name}
    close(terms[name], term)
    close(total, (1 - a) * task_ref(z, b["labels"]) + a * term)
    total.backward()
    close_grad(t["logits"], (1 - a) * ce_grad_ref(z, b["labels"]) + a * grad)
    assert t["assistant_logits"].grad is None and t["teacher_logits"].grad is None


def test_takd_ignores_the_teacher_and_the_larger_assistants():
    p = params()
    b = make_batch(assistants=3)
    a, _, _ = call("takd", p, b)
    b2 = dict(b, teacher_logits=b["teacher_logits"] * -5, assistant_logits=b["assistant_logits"].copy())
    b2["assistant_logits"][1:] *= 3
    close(a, call("takd", p, b2)[0])


def test_dgkd_with_every_guide_but_the_teacher_dropped_and_ceskd_all_teacher():
    """Edge checks of the guide order: the teacher is the last guide."""
    p = params()
    b = make_batch(assistants=2)
    t = {k: t64(v) for k, v in b.items() if k != "labels"}
    args = (p, t["logits"], torch.tensor(b["labels"]), None, t["teacher_logits"], None, None, None)
    kd, _ = distillation_loss("kd", *args)
    dgkd, _ = distillation_loss("dgkd", *args, assistant_logits=t["assistant_logits"],
                                       guides_kept=[False, False, True])
    ceskd, _ = distillation_loss("ceskd", *args, assistant_logits=t["assistant_logits"],
                                        experts=torch.full((4,), 2))
    close(dgkd, kd)
    close(ceskd, kd)


@pytest.mark.parametrize("method", ASSISTED_METHODS)
def test_assisted_methods_need_an_assistant(method):
    b = make_batch()
    t = {k: t64(v) for k, v in b.items() if k != "labels"}
    args = (params(), t["logits"], torch.tensor(b["labels"]), None, t["teacher_logits"], None, None, None)
    message = f"method '{method}' needs at least one teacher assistant: a deeper student depth"
    for assistants in (None, t["assistant_logits"][:0]):
        with pytest.raises(ValueError, match=message):
            distillation_loss(method, *args, assistant_logits=assistants, guides_kept=[True],
                                     experts=torch.zeros(4, dtype=torch.long))


def test_dgkd_and_ceskd_draw_from_the_run_when_not_given():
    """Without a given draw, DGKD keeps the guides of (seed, step) and CES-KD gives each row its epoch's expert."""
    b = make_batch(assistants=2)
    t = {k: t64(v) for k, v in b.items() if k != "labels"}
    p, labels = params(), torch.tensor(b["labels"])
    common = dict(teacher_logits=t["teacher_logits"], assistant_logits=t["assistant_logits"], seed=7, step=3)
    drawn, _ = methods.distillation_loss("dgkd", p, methods.Batch(t["logits"], labels, **common))
    given, _ = distillation_loss("dgkd", p, t["logits"], labels, None, t["teacher_logits"], None, None, None,
                                 t["assistant_logits"], losses.dgkd_keep(3, 7, 3, p.dgkd_drop))
    close(drawn, float(given))
    with pytest.raises(ValueError, match=r"3 guides \(2 assistants and the teacher\): got 2 entries"):
        distillation_loss("dgkd", p, t["logits"], labels, None, t["teacher_logits"], None, None, None,
                          t["assistant_logits"], [True, True])
    difficulty, rows = np.arange(10.0), torch.tensor([0, 9, 4, 5])
    drawn, _ = methods.distillation_loss("ceskd", p, methods.Batch(t["logits"], labels, rows=rows, epochs=1,
                                                                   difficulty=difficulty, **common))
    experts = torch.from_numpy(losses.ces_experts(difficulty, 3, 0, 1)[rows.numpy()])
    given, _ = distillation_loss("ceskd", p, t["logits"], labels, None, t["teacher_logits"], None, None, None,
                                 t["assistant_logits"], experts=experts)
    close(drawn, float(given))


# --- duplicates: the same objective, numerically ---------------------------------------------------------
@pytest.mark.parametrize("method,n,m,overrides,same", [
    ("pkd", 6, 1, {}, "kd"), ("pkd", 6, 1, {"pkd_exclude_last": False}, "pkd"), ("pkd", 6, 2, {}, "pkd"),
    ("alp_no", 6, 1, {}, "alp"), ("alp_po", 6, 1, {}, "alp"), ("alp_po", 6, 2, {"alp_overlap": 3}, "alp"),
    ("alp_po", 6, 2, {}, "alp_po"), ("alp_no", 6, 3, {}, "alp_no"), ("alp_scaled", 6, 2, {"alp_scale": True}, "alp"),
    ("alp_scaled", 6, 2, {}, "alp_scaled"), ("rail", 6, 1, {}, "kd"), ("rail", 6, 2, {}, "rail"), ("kd", 6, 1, {}, "kd"),
    # PKD's controls: no pair (KD), PKD's pairs, reverse's pairs (all-to-one), their own
    ("reverse", 6, 1, {}, "kd"), ("reverse", 6, 1, {"pkd_exclude_last": False}, "pkd"),
    ("reverse", 6, 2, {}, "reverse"), ("reverse", 6, 3, {}, "reverse"),
    ("reverse", 12, 4, {"pkd_exclude_last": False}, "reverse"),
    ("all_to_one", 6, 1, {}, "kd"), ("all_to_one", 6, 1, {"pkd_exclude_last": False}, "pkd"),
    ("all_to_one", 6, 2, {}, "reverse"), ("all_to_one", 12, 2, {}, "reverse"), ("all_to_one", 6, 3, {}, "all_to_one"),
    ("all_to_one", 6, 2, {"all_to_one_layer": 3}, "pkd"), ("all_to_one", 6, 2, {"all_to_one_layer": 4}, "all_to_one"),
    ("all_to_one", 6, 3, {"all_to_one_layer": 4}, "all_to_one"),
    ("all_to_one", 6, 2, {"pkd_exclude_last": False}, "all_to_one"),
    ("takd", 6, 1, {}, "takd"), ("dgkd", 6, 2, {}, "dgkd"), ("ceskd", 6, 3, {}, "ceskd"),
])
def test_same_objective_is_numerically_the_same(method, n, m, overrides, same):
    """`same_objective` against the objectives themselves: equal totals on random batches when it names another
    method, different totals from each simpler candidate when it names the method itself."""
    p = params(**overrides)
    assert methods.same_objective(method, n, m, p) == same
    b = make_batch(m=m, n=n)
    a, _, _ = call(method, p, b)
    if same != method:
        close(a, call(same, p, b)[0])
        return
    simpler = {"reverse": ("kd", "pkd"), "all_to_one": ("kd", "pkd", "reverse")}.get(
        method, ("alp",) if method.startswith("alp") else ("kd",))
    for other in simpler:
        if other != method:
            assert abs(float(a) - float(call(other, p, b)[0])) > 1e-6, other


# --- float32 loss terms under mixed precision ------------------------------------------------------------
@pytest.mark.parametrize("method", ["kd", "pkd", "alp", "alp_scaled", "rail", "reverse", "all_to_one", "takd", "dgkd",
                                    "ceskd"])
def test_loss_terms_are_float32_under_bf16_autocast(method):
    """Under CPU bf16 autocast, with bf16 activations (what a bf16 forward pass gives), every term equals the
    float32 computation on the same values, and is float32."""
    p = params(pkd_exclude_last=False)
    b = make_batch(m=3, n=6, d=64)
    b["student_states"] = b["student_states"] * 4  # MiniLM-like norms: unscaled ALP scores in the hundreds
    b["teacher_states"] = b["teacher_states"] * 2
    bf = {k: torch.tensor(v, dtype=torch.bfloat16) for k, v in b.items() if k != "labels"}
    labels = torch.tensor(b["labels"])
    pairs = [1, 4] if method == "rail" else None
    args = lambda ts: (ts["logits"], labels, ts["student_states"], ts["teacher_logits"], ts["teacher_states"], None, pairs)  # noqa: E731
    extra = lambda ts: dict(assistant_logits=ts["assistant_logits"], guides_kept=guides_kept_of(b),  # noqa: E731
                            experts=torch.tensor(experts_of(b)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, got = distillation_loss(method, p, *args(bf), **extra(bf))
    f32 = {k: v.float() for k, v in bf.items()}
    _, ref = distillation_loss(method, p, *args(f32), **extra(f32))
    for k in ref:
        if k == "ce":  # the task loss follows autocast like the model; the distillation terms do not
            continue
        assert got[k].dtype == torch.float32, k
        torch.testing.assert_close(got[k], ref[k], rtol=1e-6, atol=1e-6)
