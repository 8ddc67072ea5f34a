"""Tests of pysv.losses: values recomputed from the seed equations with plain numpy loops, gradients
(gradcheck, float64), invariances, bad input, and a tiny training run per loss."""
import math

import numpy as np
import pytest
import torch

import pysv.losses as L

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _one_thread():
    # the tensors here are tiny: intra-op threads only add synchronisation cost (tens of ms per op
    # on a loaded 2-core machine), so these tests run single-threaded and restore the setting after
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

# a tiny batch: classes not sorted, class 0 has three samples, classes 3 and 4 absent
LABELS = [2, 0, 2, 0, 0, 1, 1]
NUM_CLASSES = 5
D = 3


def batch(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(LABELS), D, generator=g, dtype=dtype)
    return x, torch.tensor(LABELS)


def build(name, **hp):
    torch.manual_seed(123)
    return L.build(name, D, NUM_CLASSES, **hp).double()


def unit(v):
    return v / np.linalg.norm(v)


def lse(values):
    values = np.asarray(values, dtype=np.float64)
    m = values.max()
    return m + math.log(np.exp(values - m).sum())


def ce(logits, target):
    return lse(logits) - logits[target]


def queries_centroids(x, labels, normalize=False):
    """{class: (query, centroid)}: query = first occurrence, centroid = mean of the other samples."""
    if normalize:
        x = np.stack([unit(v) for v in x])
    out = {}
    for c in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == c]
        out[c] = (x[idx[0]], np.mean([x[i] for i in idx[1:]], axis=0))
    return out


# ---------------------------------------------------------------------------------------------
# values from the equations
# ---------------------------------------------------------------------------------------------
def test_softmax_value_and_accuracy():
    m = build("softmax")
    x, y = batch()
    W, b = m.weight.detach().numpy(), m.bias.detach().numpy()
    xs = x.numpy()
    expected = np.mean([ce(W @ xs[i] + b, LABELS[i]) for i in range(len(LABELS))])
    acc = np.mean([np.argmax(W @ xs[i] + b) == LABELS[i] for i in range(len(LABELS))])
    assert m(x, y).item() == pytest.approx(expected, rel=1e-10)
    assert m.last_accuracy.item() == pytest.approx(acc)


def test_amsoftmax_value():
    m = build("amsoftmax", scale=30.0, margin=0.4)
    x, y = batch()
    W, xs = m.weight.detach().numpy(), x.numpy()
    total = 0.0
    for i, t in enumerate(LABELS):
        cos = np.array([unit(xs[i]) @ unit(W[k]) for k in range(NUM_CLASSES)])
        logits = 30.0 * cos
        logits[t] = 30.0 * (cos[t] - 0.4)  # CosFace
        total += ce(logits, t)
    assert m(x, y).item() == pytest.approx(total / len(LABELS), rel=1e-10)


@pytest.mark.parametrize("easy_margin", [False, True])
def test_aamsoftmax_value_both_branches(easy_margin):
    margin, scale = 0.5, 30.0
    m = build("aamsoftmax", scale=scale, margin=margin, easy_margin=easy_margin)
    x, y = batch()
    W = m.weight.detach().numpy()
    x = x.clone()
    x[0] = -torch.from_numpy(W[LABELS[0]]) + 0.05  # theta close to pi: theta + m > pi
    x[1] = torch.from_numpy(W[LABELS[1]]) * 2.0 + 0.1  # theta small
    xs = x.numpy()
    total = 0.0
    branches = set()
    for i, t in enumerate(LABELS):
        cos = np.array([unit(xs[i]) @ unit(W[k]) for k in range(NUM_CLASSES)])
        theta = math.acos(cos[t])
        logits = scale * cos
        if easy_margin:
            target = math.cos(theta + margin) if cos[t] > 0 else cos[t]
            branches.add(cos[t] > 0)
        elif theta + margin <= math.pi:
            target = math.cos(theta + margin)
            branches.add(True)
        else:  # insightface fallback
            target = cos[t] - math.sin(math.pi - margin) * margin
            branches.add(False)
        logits[t] = scale * target
        total += ce(logits, t)
    assert branches == {True, False}
    assert m(x, y).item() == pytest.approx(total / len(LABELS), rel=1e-10)


def _triplet_parts(xs, labels):
    xs = np.stack([unit(v) for v in xs])
    parts = []
    for c in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == c]
        a, p = xs[idx[0]], xs[idx[1]]
        d_ap = np.sum((a - p) ** 2)
        d_an = [np.sum((a - xs[j]) ** 2) for j, y in enumerate(labels) if y != c]
        parts.append((d_ap, d_an))
    return parts


@pytest.mark.parametrize("mining", ["hardest", "semi_hard"])
def test_triplet_value(mining):
    margin = 0.5
    m = build("triplet", margin=margin, mining=mining)
    x, y = batch()
    total = []
    for d_ap, d_an in _triplet_parts(x.numpy(), LABELS):
        if mining == "hardest":
            d_n = min(d_an)
        else:
            farther = [d for d in d_an if d > d_ap]
            d_n = min(farther) if farther else max(d_an)
        total.append(max(0.0, d_ap - d_n + margin))
    assert m(x, y).item() == pytest.approx(np.mean(total), rel=1e-10)
    assert m.last_accuracy is None


def _triplet_positive_parts(xs, labels):
    """(d_ap, [(negative class, d_an)]) per class, negatives = the other classes' positives."""
    xs = np.stack([unit(v) for v in xs])
    first = {c: [i for i, y in enumerate(labels) if y == c] for c in sorted(set(labels))}
    out = []
    for c, idx in first.items():
        a, p = xs[idx[0]], xs[idx[1]]
        negs = [(k, np.sum((a - xs[first[k][1]]) ** 2)) for k in first if k != c]
        out.append((np.sum((a - p) ** 2), negs))
    return out


def test_triplet_positives_as_negatives_hardest():
    margin = 0.5
    m = build("triplet", margin=margin, negatives="positives")
    x, y = batch()
    total = [max(0.0, d_ap - min(d for _, d in negs) + margin)
             for d_ap, negs in _triplet_positive_parts(x.numpy(), LABELS)]
    assert m(x, y).item() == pytest.approx(np.mean(total), rel=1e-10)


def test_triplet_rank_mining_with_fixed_rng():
    # hard_rank=1, hard_prob=0.5: per anchor, with probability 0.5 one of the 2 closest negatives
    # (uniformly), else a uniformly random negative. Replay the documented draw order with the same
    # seed: rand(K) < hard_prob, randint(0, hard_rank + 1, (K,)), multinomial over the candidates.
    margin = 2.0
    m = build("triplet", margin=margin, negatives="positives", hard_rank=1, hard_prob=0.5)
    x, y = batch()
    parts = _triplet_positive_parts(x.numpy(), LABELS)
    k = len(parts)
    for seed in range(6):
        torch.manual_seed(seed)
        hard = (torch.rand(k) < 0.5).tolist()
        rank = torch.randint(0, 2, (k,)).tolist()
        cand = torch.tensor([[float(c != cls) for c in sorted(set(LABELS))] for cls in sorted(set(LABELS))])
        rand_pick = torch.multinomial(cand, 1).squeeze(1).tolist()
        expected = []
        for i, (d_ap, negs) in enumerate(parts):
            by_dist = sorted(negs, key=lambda kv: kv[1])
            if hard[i]:
                d_n = by_dist[min(rank[i], len(by_dist) - 1)][1]
            else:
                d_n = dict(negs)[sorted(set(LABELS))[rand_pick[i]]]
            expected.append(max(0.0, d_ap - d_n + margin))
        torch.manual_seed(seed)
        assert m(x, y).item() == pytest.approx(np.mean(expected), rel=1e-10), seed
    # hard_rank=0, hard_prob=1 is deterministic hardest mining, no RNG used
    det = build("triplet", margin=margin, negatives="positives")
    torch.manual_seed(0)
    state = torch.get_rng_state()
    v = det(x, y).item()
    assert torch.equal(state, torch.get_rng_state())
    assert v == pytest.approx(np.mean([d_ap - min(d for _, d in negs) + margin for d_ap, negs in parts]))
    with pytest.raises(ValueError, match="hard_rank / hard_prob apply to mining='hardest'"):
        L.build("triplet", D, None, mining="random", hard_rank=3)


def test_triplet_random_is_seeded_and_a_valid_choice():
    margin = 2.0  # every triplet active: the loss is linear in the chosen distances
    m = build("triplet", margin=margin, mining="random")
    x, y = batch()
    parts = _triplet_parts(x.numpy(), LABELS)
    torch.manual_seed(7)
    v1 = m(x, y).item()
    torch.manual_seed(7)
    assert m(x, y).item() == v1
    # v1 = mean_k (d_ap_k - d_n_k + m) with each d_n_k one of the anchor's negatives
    lo = np.mean([d_ap - max(d_an) + margin for d_ap, d_an in parts])
    hi = np.mean([d_ap - min(d_an) + margin for d_ap, d_an in parts])
    assert lo - 1e-12 <= v1 <= hi + 1e-12
    draws = set()
    for s in range(20):
        torch.manual_seed(s)
        draws.add(round(m(x, y).item(), 10))
    assert len(draws) > 1


def test_proto_value():
    m = build("proto")
    x, y = batch()
    qc = queries_centroids(x.numpy(), LABELS)
    classes = sorted(qc)
    total, correct = 0.0, 0
    for i, c in enumerate(classes):
        logits = np.array([-np.sum((qc[c][0] - qc[k][1]) ** 2) for k in classes])
        total += ce(logits, i)
        correct += int(np.argmax(logits) == i)
    assert m(x, y).item() == pytest.approx(total / len(classes), rel=1e-10)
    assert m.last_accuracy.item() == pytest.approx(correct / len(classes))


def test_angleproto_value():
    m = build("angleproto", init_w=7.0, init_b=-3.0)
    x, y = batch()
    qc = queries_centroids(x.numpy(), LABELS)
    classes = sorted(qc)
    total = 0.0
    for i, c in enumerate(classes):
        logits = np.array([7.0 * (unit(qc[c][0]) @ unit(qc[k][1])) - 3.0 for k in classes])
        total += ce(logits, i)
    assert m(x, y).item() == pytest.approx(total / len(classes), rel=1e-10)


@pytest.mark.parametrize("normalize,min_cosine", [(True, None), (False, None), (False, 1e-6), (True, 0.2)])
def test_ge2e_value(normalize, min_cosine):
    m = build("ge2e", init_w=7.0, init_b=-3.0, normalize=normalize, min_cosine=min_cosine)
    x, y = batch()
    xs = np.stack([unit(v) for v in x.numpy()]) if normalize else x.numpy()
    classes = sorted(set(LABELS))
    total, clamped = 0.0, 0
    for i, t in enumerate(LABELS):
        logits = []
        for k in classes:
            members = [j for j, yy in enumerate(LABELS) if yy == k and not (k == t and j == i)]
            c = np.mean(xs[members], axis=0)  # own centroid without the utterance itself
            cos = unit(xs[i]) @ unit(c)
            if min_cosine is not None and cos < min_cosine:  # voxceleb_trainer's torch.clamp(cos, 1e-6)
                cos, clamped = min_cosine, clamped + 1
            logits.append(7.0 * cos - 3.0)
        total += ce(np.array(logits), classes.index(t))
    assert m(x, y).item() == pytest.approx(total / len(LABELS), rel=1e-10)
    if min_cosine is not None:
        assert clamped > 0  # the batch exercises the clamp


def test_ge2e_raw_centroids_differ_from_normalised():
    x, y = batch()
    x = x * torch.linspace(0.2, 5.0, len(LABELS), dtype=x.dtype).unsqueeze(1)  # unequal norms
    a = build("ge2e", normalize=True)(x, y).item()
    b = build("ge2e", normalize=False)(x, y).item()
    assert abs(a - b) > 1e-6


@pytest.mark.parametrize("scale", [1.0, 3.0])
@pytest.mark.parametrize("squared", [False, True])
def test_proxy_nca_value(squared, scale):
    m = build("proxy_nca", squared=squared, scale=scale)
    x, y = batch()
    P = np.stack([scale * unit(p) for p in m.weight.detach().numpy()])
    total = 0.0
    for i, t in enumerate(LABELS):
        xi = unit(x.numpy()[i])
        d = np.array([np.linalg.norm(xi - P[k]) for k in range(NUM_CLASSES)])
        if squared:
            d = d**2
        # MP-2020 eq. (2): exp(-d(x, p_y)) / sum_{k != y} exp(-d(x, p_k))
        total += d[t] + lse([-d[k] for k in range(NUM_CLASSES) if k != t])
    assert m(x, y).item() == pytest.approx(total / len(LABELS), rel=1e-10)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_proxy_nca_seeds_code_form(eps):
    # dichotomies/proxy-nca: P = 3 * unit(p), X = unit(x), D = ||X - P||^2,
    # loss = sum_k -T_k log softmax(-D)_k with T = 1 - eps on the own class, eps / (C - 1) elsewhere
    m = build("proxy_nca", scale=3.0, squared=True, label_smoothing=eps)
    x, y = batch()
    P = np.stack([3.0 * unit(p) for p in m.weight.detach().numpy()])
    total = 0.0
    for i, t in enumerate(LABELS):
        xi = unit(x.numpy()[i])
        d = np.array([np.sum((xi - P[k]) ** 2) for k in range(NUM_CLASSES)])
        log_sm = -d - lse(-d)
        target = np.full(NUM_CLASSES, eps / (NUM_CLASSES - 1))
        target[t] = 1.0 - eps
        total += -(target * log_sm).sum()
    assert m(x, y).item() == pytest.approx(total / len(LABELS), rel=1e-10)
    with pytest.raises(ValueError, match="label_smoothing"):
        L.build("proxy_nca", D, NUM_CLASSES, label_smoothing=1.0)


def test_proxy_anchor_value():
    alpha, delta = 50.0, 0.15
    m = build("proxy_anchor", scale=alpha, margin=delta)
    x, y = batch()
    P = np.stack([unit(p) for p in m.weight.detach().numpy()])
    X = np.stack([unit(v) for v in x.numpy()])
    s = X @ P.T
    present = sorted(set(LABELS))
    pos = sum(
        math.log1p(sum(math.exp(-alpha * (s[i, p] - delta)) for i, t in enumerate(LABELS) if t == p)) for p in present
    ) / len(present)
    neg = sum(
        math.log1p(sum(math.exp(alpha * (s[i, p] + delta)) for i, t in enumerate(LABELS) if t != p))
        for p in range(NUM_CLASSES)
    ) / NUM_CLASSES
    assert m(x, y).item() == pytest.approx(pos + neg, rel=1e-10)


def _mp_reference(m, x, multinomial, w, b, lam, normalize_centroids=False):
    """Seed 002 eqs. (4)-(13) in loops (positive included in the softmax denominators);
    ``normalize_centroids``: centroids re-normalised to unit length (the authors' MMP code)."""
    P = np.stack([unit(p) for p in m.weight.detach().numpy()])
    qc = queries_centroids(x.numpy(), LABELS, normalize=True)
    if normalize_centroids:
        qc = {c: (q, unit(cen)) for c, (q, cen) in qc.items()}
    in_batch = sorted(qc)
    out = [k for k in range(NUM_CLASSES) if k not in in_batch]

    def s(u, v):  # eq. (6), alpha (u.v - beta) = w u.v + b
        return w * (u @ v) + b

    if not multinomial:
        l1 = 0.0
        for c in in_batch:
            q = qc[c][0]
            logits = [s(q, qc[k][1]) for k in in_batch] + [s(q, P[k]) for k in out]
            l1 += ce(np.array(logits), in_batch.index(c))
        l1 /= len(in_batch)
    else:
        t1 = math.log1p(sum(math.exp(-s(qc[c][0], qc[c][1])) for c in in_batch))
        t2 = np.mean([math.log1p(sum(math.exp(s(qc[c][0], qc[k][1])) for k in in_batch if k != c)) for c in in_batch])
        t3 = np.mean([math.log1p(sum(math.exp(s(qc[c][0], P[k])) for k in out)) for c in in_batch])
        l1 = t1 + t2 + t3
    l2 = np.mean([ce(np.array([s(qc[k][1], P[c]) for k in in_batch]), in_batch.index(c)) for c in in_batch])
    return l1 + lam * l2


@pytest.mark.parametrize("normalize_centroids", [False, True])
@pytest.mark.parametrize("name", ["mp", "mmp"])
def test_masked_proxy_value(name, normalize_centroids):
    w, b, lam = 7.0, -0.75, 0.3  # exactly representable in float32 (parameters start as float32)
    m = build(name, init_w=w, init_b=b, reg_lambda=lam, normalize_centroids=normalize_centroids)
    x, y = batch()
    expected = _mp_reference(m, x, name == "mmp", w, b, lam, normalize_centroids)
    assert m(x, y).item() == pytest.approx(expected, rel=1e-10)
    assert 0.0 <= m.last_accuracy.item() <= 1.0


def test_mmp_renormalised_centroids_change_only_classes_with_three_samples():
    # class 0 of LABELS has M = 3 samples: its centroid (mean of two unit vectors) is shorter than
    # 1, so re-normalising changes the loss; with M = 2 everywhere it cannot.
    assert L.build("mmp", D, NUM_CLASSES).normalize_centroids is True  # default: the authors' code
    assert L.build("mp", D, NUM_CLASSES).normalize_centroids is False  # default: literal reading
    x, y = batch()
    a = build("mmp", normalize_centroids=True)(x, y).item()
    b = build("mmp", normalize_centroids=False)(x, y).item()
    assert abs(a - b) > 1e-6
    keep = [i for i, t in enumerate(LABELS) if not (t == 0 and i == 4)]  # drop class 0's third sample
    x2, y2 = x[keep], y[keep]
    a2 = build("mmp", normalize_centroids=True)(x2, y2).item()
    b2 = build("mmp", normalize_centroids=False)(x2, y2).item()
    assert a2 == pytest.approx(b2, rel=1e-12)


def test_mp_defaults_are_paper_init():
    m = L.build("mp", 4, 10)
    assert m.w.item() == pytest.approx(10.0) and m.b.item() == pytest.approx(-1.0)  # alpha=10, beta=0.1
    assert m.reg_lambda == 0.5
    assert tuple(m.weight.shape) == (10, 4)
    a = L.build("proxy_anchor", 4, 10)
    assert (a.scale, a.margin) == (50.0, 0.15)
    am = L.build("amsoftmax", 4, 10)
    assert (am.scale, am.margin) == (30.0, 0.4)


def test_mp_accuracy_uses_masked_proxies():
    # queries equal to their own class's other sample -> perfect accuracy whatever the proxies are
    m = build("mp")
    e = torch.eye(D, dtype=torch.float64)
    x = torch.stack([e[0], e[0], e[1], e[1], e[2], e[2]])
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    with torch.no_grad():
        m.weight.copy_(torch.randn(NUM_CLASSES, D, dtype=torch.float64) * 0.1)
        m.weight[3] = -e[0]  # out-of-batch proxies far from every query
        m.weight[4] = -e[1]
    m(x, y)
    assert m.last_accuracy.item() == 1.0


# ---------------------------------------------------------------------------------------------
# gradients, invariances
# ---------------------------------------------------------------------------------------------
GRAD_CASES = [
    ("softmax", {}),
    ("amsoftmax", {"scale": 5.0}),
    ("aamsoftmax", {"scale": 5.0}),
    ("triplet", {"margin": 1.0}),
    ("triplet", {"margin": 1.0, "mining": "semi_hard"}),
    ("triplet", {"margin": 1.0, "mining": "random"}),
    ("proto", {}),
    ("angleproto", {}),
    ("ge2e", {}),
    ("proxy_nca", {}),
    ("proxy_anchor", {"scale": 5.0}),
    ("mp", {}),
    ("mmp", {}),
]


@pytest.mark.parametrize("name,hp", GRAD_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(GRAD_CASES)])
def test_gradcheck(name, hp):
    m = build(name, **hp)
    x, y = batch(seed=3)
    names = [n for n, _ in m.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for _, p in m.named_parameters())
    x = x.requires_grad_(True)

    def f(x, *ps):
        torch.manual_seed(0)  # random mining draws the same negatives every call
        return torch.func.functional_call(m, dict(zip(names, ps)), (x, y))

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["proxy_nca", "proxy_anchor", "mp", "mmp"])
def test_scale_invariance(name):
    m = build(name)
    x, y = batch()
    scales = torch.tensor([0.1, 3.0, 7.0, 0.5, 100.0, 1.0, 2.5], dtype=torch.float64).unsqueeze(1)
    assert m(x * scales, y).item() == pytest.approx(m(x, y).item(), rel=1e-10)


ALL = list(L.names())


@pytest.mark.parametrize("name", ALL)
def test_permuting_whole_classes_leaves_loss_unchanged(name):
    m = build(name)
    g = torch.Generator().manual_seed(5)
    blocks = {0: 3, 1: 2, 2: 2, 4: 3}  # class -> samples (class 3 absent)
    xs = {c: torch.randn(n, D, generator=g, dtype=torch.float64) for c, n in blocks.items()}

    def assemble(order):
        x = torch.cat([xs[c] for c in order])
        y = torch.cat([torch.full((blocks[c],), c) for c in order])
        return x, y

    ref = m(*assemble([0, 1, 2, 4])).item()
    for order in ([4, 2, 1, 0], [1, 4, 0, 2]):
        assert m(*assemble(order)).item() == pytest.approx(ref, rel=1e-10)


def test_query_is_first_occurrence():
    m = build("proto")
    x, y = batch()
    base = m(x, y).item()
    # swapping two non-first samples of class 0 (indices 3 and 4) changes nothing...
    perm = [0, 1, 2, 4, 3, 5, 6]
    assert m(x[perm], y[perm]).item() == pytest.approx(base, rel=1e-12)
    # ...swapping class 0's first occurrence with a later one changes the query
    perm = [0, 3, 2, 1, 4, 5, 6]
    assert m(x[perm], y[perm]).item() != pytest.approx(base, rel=1e-6)


def test_half_precision_input_computes_in_float32():
    m = L.build("mp", D, NUM_CLASSES)
    x, y = batch(dtype=torch.float32)
    loss = m(x.to(torch.bfloat16), y)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


# ---------------------------------------------------------------------------------------------
# bad input, registry
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["proto", "angleproto", "ge2e", "mp", "mmp", "triplet"])
def test_single_sample_class_names_the_class(name):
    m = build(name)
    x = torch.randn(5, D, dtype=torch.float64)
    y = torch.tensor([0, 0, 3, 1, 1])
    with pytest.raises(ValueError, match=r"class 3"):
        m(x, y)


@pytest.mark.parametrize("name", ALL)
def test_labels_out_of_range(name):
    m = build(name)
    x = torch.randn(4, D, dtype=torch.float64)
    for bad in ([0, 0, 5, 5], [0, 0, -1, -1]):
        with pytest.raises(ValueError, match="outside"):
            m(x, torch.tensor(bad))


@pytest.mark.parametrize("name", ["triplet", "proto", "angleproto", "ge2e"])
def test_single_class_batch_rejected_where_negatives_are_in_batch(name):
    with pytest.raises(ValueError, match="single class"):
        build(name)(torch.randn(4, D, dtype=torch.float64), torch.tensor([1, 1, 1, 1]))


@pytest.mark.parametrize("name", ["softmax", "aamsoftmax", "proxy_nca", "proxy_anchor", "mp", "mmp"])
def test_single_class_batch_ok_when_negatives_are_class_vectors(name):
    loss = build(name)(torch.randn(4, D, dtype=torch.float64), torch.tensor([1, 1, 1, 1]))
    assert torch.isfinite(loss)


@pytest.mark.parametrize("name", ALL)
def test_non_finite_embeddings_raise(name):
    m = build(name)
    x, y = batch()
    for bad in (float("nan"), float("inf")):
        x2 = x.clone()
        x2[2, 1] = bad
        with pytest.raises(ValueError, match="NaN or Inf"):
            m(x2, y)


def test_bad_shapes_and_types():
    m = build("softmax")
    with pytest.raises(ValueError, match="dimension"):
        m(torch.randn(3, D + 1, dtype=torch.float64), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"\[N\]"):
        m(torch.randn(3, D, dtype=torch.float64), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="integer"):
        m(torch.randn(3, D, dtype=torch.float64), torch.tensor([0.0, 1.0, 2.0]))


def test_registry_and_hparams():
    # the losses DESIGN.md names are registered (plug-ins may add more)
    assert {"softmax", "amsoftmax", "aamsoftmax", "triplet", "proto", "angleproto", "ge2e",
            "proxy_nca", "proxy_anchor", "mp", "mmp"} <= set(L.names())
    for name in L.names():
        m = L.build(name, 16, 7)
        assert isinstance(m, L.LossBase) and m.loss_name == name
        assert set(L.default_hparams(name)) == set(L.hparam_names(name))
        if m.owns_class_vectors:
            assert tuple(m.weight.shape) == (7, 16)
        if hasattr(m, "w"):
            assert m.w.dim() == 0 and m.b.dim() == 0
    assert tuple(L.build("softmax", 16, 7).bias.shape) == (7,)
    with pytest.raises(TypeError, match="'bogus'"):
        L.build("mp", 16, 7, bogus=1)
    with pytest.raises(TypeError, match="'margin'"):
        L.build("softmax", 16, 7, margin=0.2)
    with pytest.raises(TypeError, match="'nope'"):
        L.sampling_requirements("triplet", nope=3)
    with pytest.raises(ValueError, match="unknown loss"):
        L.build("nope", 16, 7)
    assert L.build("arcface", 16, 7).loss_name == "aamsoftmax"


def test_sampling_requirements():
    expect = {
        "softmax": (1, False), "amsoftmax": (1, False), "aamsoftmax": (1, False),
        "triplet": (2, True), "proto": (2, True), "angleproto": (2, True), "ge2e": (2, True),
        "proxy_nca": (1, False), "proxy_anchor": (1, False), "mp": (2, False), "mmp": (2, False),
    }
    for name, (k, multi) in expect.items():
        req = L.sampling_requirements(name)
        assert (req.min_per_class, req.needs_multiple_classes) == (k, multi)
        mpc, nmc = req  # unpacks as a pair
        assert mpc == k
    assert L.sampling_requirements("mp", reg_lambda=0.3).min_per_class == 2
    assert L.recommended_sampler("ge2e") == ("balanced", {"utts_per_spk": 3})


# ---------------------------------------------------------------------------------------------
# training on separable clusters
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_loss_decreases_when_training_a_linear_encoder(name):
    torch.manual_seed(0)
    n_cls, d_in, d_emb = 8, 12, 6
    centers = torch.randn(n_cls, d_in)
    enc = torch.nn.Linear(d_in, d_emb)
    loss_fn = L.build(name, d_emb, n_cls)
    opt = torch.optim.Adam(list(enc.parameters()) + list(loss_fn.parameters()), lr=0.02)
    gen = torch.Generator().manual_seed(1)
    history = []
    for step in range(120):
        classes = torch.randperm(n_cls, generator=gen)[:4]  # half the classes per batch
        y = classes.repeat_interleave(3)
        x = centers[y] + 0.3 * torch.randn(len(y), d_in, generator=gen)
        loss = loss_fn(enc(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    first, last = np.mean(history[:10]), np.mean(history[-20:])
    assert first > 0.04 and last < 0.5 * first, (first, last)  # the task is not solved at init
