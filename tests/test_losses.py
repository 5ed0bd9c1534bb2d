"""alpkd.losses against plain-loop numpy references written from the method's definitions (DESIGN.md)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alpkd import losses
from alpkd.config import METHODS
from helpers import distill_params

RNG = np.random.default_rng(1234)


# --- independent references (float64 numpy, explicit loops) --------------------------------------------
def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def ce_ref(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean([-math.log(softmax(z)[y]) for z, y in zip(logits, labels)]))


def mse_ref(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    return float(sum((x - y) ** 2 for x, y in zip(a, b)) / len(a))


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
    assert float(a) == pytest.approx(float(b), rel=tol, abs=tol)


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
    allowed = losses.alp_allowed(method, n, m, 1)
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
    assert losses.alp_allowed("alp", 6, 2) is None
    with pytest.raises(ValueError):
        losses.alp_allowed("pkd", 6, 2)


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
def make_batch(classes=3, B=4, m=2, n=6, d=8, tokens=False):
    lead = (B, 5) if tokens else (B,)
    return dict(
        logits=RNG.normal(size=(B, classes)), labels=RNG.integers(0, classes, size=B) if classes > 1
        else RNG.uniform(0, 5, size=B), student_states=RNG.normal(size=lead + (m, d)),
        teacher_logits=RNG.normal(size=(B, classes)), teacher_states=RNG.normal(size=lead + (n, d)) * 2,
    )


def rail_pairs_of(b) -> list[int]:
    """A fixed RAIL-KD draw for a batch: the last m-1 of the n-1 intermediate layers (any valid draw will do)."""
    m, n = b["student_states"].shape[-2], b["teacher_states"].shape[-2]
    return list(range(n - m, n - 1))


def call(method, p, b, grad=False):
    tensors = {k: t64(v, grad) for k, v in b.items() if k != "labels"}
    labels = torch.tensor(b["labels"]) if b["labels"].dtype.kind == "i" else torch.tensor(b["labels"], dtype=torch.float64)
    total, terms = losses.distillation_loss(method, p, tensors["logits"], labels, tensors["student_states"],
                                            tensors["teacher_logits"], tensors["teacher_states"], None,
                                            rail_pairs_of(b) if method == "rail" else None)
    return total, terms, tensors


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
    if b["logits"].shape[-1] == 1:
        ce = mse_ref(b["logits"][:, 0], b["labels"])
    else:
        ce = ce_ref(b["logits"], b["labels"])
    if method == "nokd":
        return ce
    kd = (1 - p.kd_alpha) * ce + p.kd_alpha * kd_ref(b["logits"], b["teacher_logits"], p.temperature)
    if method == "kd":
        return kd
    if method == "pkd":
        layers = skip_ref(n, m)[:-1] if p.pkd_exclude_last else skip_ref(n, m)
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


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("overrides", [{}, {"pkd_exclude_last": False, "alp_scale": True, "kd_alpha": 0.8},
                                       {"temperature": 1.0, "alp_overlap": 2}])
@pytest.mark.parametrize("classes,m,n", [(3, 2, 6), (2, 3, 12), (1, 2, 4), (2, 1, 4)])
def test_distillation_loss_combines_terms(method, overrides, classes, m, n):
    p = distill_params(**overrides)
    b = make_batch(classes=classes, m=m, n=n)
    total, terms, _ = call(method, p, b)
    close(total, expected_total(method, p, b))
    assert "ce" in terms


def test_unknown_method_raises():
    with pytest.raises(ValueError):
        call("alp_xx", distill_params(), make_batch())


@pytest.mark.parametrize("method", METHODS)
def test_no_gradient_reaches_the_teacher(method):
    p = distill_params(pkd_exclude_last=False)
    total, _, t = call(method, p, make_batch(m=2, n=6), grad=True)
    total.backward()
    assert t["teacher_logits"].grad is None
    assert t["teacher_states"].grad is None
    assert t["logits"].grad is not None and t["logits"].grad.abs().sum() > 0
    if method in ("pkd", "alp", "alp_no", "alp_po", "alp_scaled", "rail"):
        assert t["student_states"].grad is not None and t["student_states"].grad.abs().sum() > 0


@pytest.mark.parametrize("method", ["alp", "alp_no", "alp_po"])
def test_distillation_loss_tokens_uses_the_mask(method):
    p = distill_params()
    b = make_batch(m=2, n=6, tokens=True)
    mask = np.ones((4, 5), dtype=int)
    mask[0, 3:] = mask[2, 1:] = 0
    tensors = {k: t64(v) for k, v in b.items() if k != "labels"}
    total, terms = losses.distillation_loss(method, p, tensors["logits"], torch.tensor(b["labels"]),
                                            tensors["student_states"], tensors["teacher_logits"],
                                            tensors["teacher_states"], torch.tensor(mask))
    allowed = None if method == "alp" else losses.alp_allowed(method, 6, 2, p.alp_overlap).numpy()
    close(terms["alp"], alp_ref(b["student_states"], b["teacher_states"], allowed, p.alp_scale, mask)[0])


def test_pkd_with_token_states_matches_cls_vectors():
    """`states: tokens` is an ALP option: PKD (Sun et al.) still matches the [CLS] vectors."""
    p = distill_params(pkd_exclude_last=False)
    b = make_batch(m=2, n=6, tokens=True)
    mask = torch.ones(4, 5, dtype=torch.long)
    tensors = {k: t64(v) for k, v in b.items() if k != "labels"}
    _, terms = losses.distillation_loss("pkd", p, tensors["logits"], torch.tensor(b["labels"]),
                                        tensors["student_states"], tensors["teacher_logits"],
                                        tensors["teacher_states"], mask)
    close(terms["pkd"], pkd_ref(b["student_states"][:, 0], b["teacher_states"][:, 0], skip_ref(6, 2)))


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
        losses.distillation_loss("rail", distill_params(), *args, [0, 1, 2])


def test_rail_loss_ignores_norms_and_needs_a_draw():
    b = make_batch(m=2, n=6)
    s, t = t64(b["student_states"]), t64(b["teacher_states"])
    close(losses.rail_loss(3 * s, 0.5 * t, [1, 3]), losses.rail_loss(s, t, [1, 3]))
    with pytest.raises(ValueError, match="rail_pairs"):
        call_without_pairs = losses.distillation_loss
        call_without_pairs("rail", distill_params(), t64(b["logits"]), torch.tensor(b["labels"]), s,
                           t64(b["teacher_logits"]), t)


# --- duplicates: the same objective, numerically ---------------------------------------------------------
@pytest.mark.parametrize("method,n,m,overrides,same", [
    ("pkd", 6, 1, {}, "kd"), ("pkd", 6, 1, {"pkd_exclude_last": False}, "pkd"), ("pkd", 6, 2, {}, "pkd"),
    ("alp_no", 6, 1, {}, "alp"), ("alp_po", 6, 1, {}, "alp"), ("alp_po", 6, 2, {"alp_overlap": 3}, "alp"),
    ("alp_po", 6, 2, {}, "alp_po"), ("alp_no", 6, 3, {}, "alp_no"), ("alp_scaled", 6, 2, {"alp_scale": True}, "alp"),
    ("alp_scaled", 6, 2, {}, "alp_scaled"), ("rail", 6, 1, {}, "kd"), ("rail", 6, 2, {}, "rail"), ("kd", 6, 1, {}, "kd"),
])
def test_same_objective_is_numerically_the_same(method, n, m, overrides, same):
    """`same_objective` against the objectives themselves: equal totals on random batches when it names another
    method, different totals when it names the method itself."""
    p = distill_params(**overrides)
    assert losses.same_objective(method, n, m, p) == same
    b = make_batch(m=m, n=n)
    a, _, _ = call(method, p, b)
    other = "alp" if method.startswith("alp") else "kd"
    c, _, _ = call(other, p, b)
    if same != method:
        close(a, c)
    elif method != other:
        assert abs(float(a) - float(c)) > 1e-6


# --- float32 loss terms under mixed precision ------------------------------------------------------------
@pytest.mark.parametrize("method", ["kd", "pkd", "alp", "alp_scaled", "rail"])
def test_loss_terms_are_float32_under_bf16_autocast(method):
    """Under CPU bf16 autocast, with bf16 activations (what a bf16 forward pass gives), every term equals the
    float32 computation on the same values, and is float32."""
    p = distill_params(pkd_exclude_last=False)
    b = make_batch(m=3, n=6, d=64)
    b["student_states"] = b["student_states"] * 4  # MiniLM-like norms: unscaled ALP scores in the hundreds
    b["teacher_states"] = b["teacher_states"] * 2
    bf = {k: torch.tensor(v, dtype=torch.bfloat16) for k, v in b.items() if k != "labels"}
    labels = torch.tensor(b["labels"])
    pairs = [1, 4] if method == "rail" else None
    args = lambda ts: (ts["logits"], labels, ts["student_states"], ts["teacher_logits"], ts["teacher_states"], None, pairs)  # noqa: E731
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, got = losses.distillation_loss(method, p, *args(bf))
    _, ref = losses.distillation_loss(method, p, *args({k: v.float() for k, v in bf.items()}))
    for k in ref:
        if k == "ce":  # the task loss follows autocast like the model; the distillation terms do not
            continue
        assert got[k].dtype == torch.float32, k
        torch.testing.assert_close(got[k], ref[k], rtol=1e-6, atol=1e-6)
