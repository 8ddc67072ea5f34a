"""Back-ends: PLDA (two-covariance, Kaldi), LDA, length norm, cosine, crop distance, AS-norm, Kaldi file formats."""
import struct

import numpy as np
import pytest
from scipy.linalg import eigh
from scipy.stats import multivariate_normal as mvn

from pysv.backend import (INPUTS, LDA, PLDA, SCORERS, LengthNorm, MeanSubtract, PldaBackend, ScoringOptions,
                          TrialSides, asnorm, asnorm_cosine_trials, cohort_stats, cosine_score,
                          cosine_score_trials, cosine_trial_scores, crop_distance_score,
                          crop_distance_score_trials, index_trials, length_norm, read_kaldi_matrix,
                          read_kaldi_vector, read_plda_file)
from pysv.backend.sampled_matmul import paired_dot
from pysv.utils.io import DataError

# a fixed two-covariance model in 3 dims
MU = np.array([0.5, -1.0, 2.0])
B_TRUE = np.array([[4.0, 1.0, 0.5], [1.0, 3.0, -0.4], [0.5, -0.4, 2.0]])
W_TRUE = np.array([[1.0, 0.3, 0.0], [0.3, 0.8, 0.1], [0.0, 0.1, 0.5]])


def gaussian_llr(enroll_vectors, test, mean, B, W):
    """log p(enroll..., test | same speaker) - log p(enroll...) - log p(test), from the Gaussians.

    With n enrollment vectors the statistic used is their mean x̄ ~ N(m, B + W/n), and
    cov(x̄, t) = B under the same-speaker hypothesis (t ~ N(m, B + W)).
    """
    X = np.atleast_2d(enroll_vectors)
    n = X.shape[0]
    xbar = X.mean(0)
    Ce = B + W / n
    Ct = B + W
    J = np.block([[Ce, B], [B, Ct]])
    return (mvn.logpdf(np.r_[xbar, test], np.r_[mean, mean], J)
            - mvn.logpdf(xbar, mean, Ce) - mvn.logpdf(test, mean, Ct))


def sample(n_spk, n_utt, rng, B=B_TRUE, W=W_TRUE, mu=MU):
    y = rng.multivariate_normal(np.zeros(len(mu)), B, n_spk)
    lab = np.repeat(np.arange(n_spk), n_utt)
    X = mu + y[lab] + rng.multivariate_normal(np.zeros(len(mu)), W, lab.size)
    return X, lab


# ----------------------------------------------------------------------------- PLDA
def test_plda_llr_known_model_matches_gaussian_ratio():
    p = PLDA.from_covariances(MU, B_TRUE, W_TRUE, length_norm="none")
    # the transform makes within-class unit and between-class diag(psi), psi decreasing
    T = p.transform_
    np.testing.assert_allclose(T @ W_TRUE @ T.T, np.eye(3), atol=1e-10)
    np.testing.assert_allclose(T @ B_TRUE @ T.T, np.diag(p.psi_), atol=1e-10)
    assert np.all(np.diff(p.psi_) <= 0)
    np.testing.assert_allclose(p.offset_, -T @ MU)
    rng = np.random.default_rng(0)
    X, _ = sample(4, 4, rng)
    e, t = X[:6], X[6:12]
    got = p.score(e, t)
    ref = [gaussian_llr(a, b, MU, B_TRUE, W_TRUE) for a, b in zip(e, t)]
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)
    # single-utterance LLR is symmetric
    np.testing.assert_allclose(p.score(t, e), got, rtol=1e-10)
    # n-utterance enrollment (speaker mean) as ivector-plda-scoring --num-utts
    enr = X[:5]
    got_n = p.score(enr.mean(0)[None], X[9][None], num_enroll=5)[0]
    assert got_n == pytest.approx(gaussian_llr(enr, X[9], MU, B_TRUE, W_TRUE), rel=1e-9)


def test_plda_em_reaches_ml_estimate_and_true_covariances():
    rng = np.random.default_rng(1)
    n = 4
    X, lab = sample(3000, n, rng)
    p = PLDA(num_em_iters=300, length_norm="none").fit(X, lab)
    # EM increases the likelihood at every iteration
    assert np.all(np.diff(p.objf_) >= -1e-10)
    # balanced data: the ML solution is closed-form
    means = X.reshape(3000, n, 3).mean(1)
    R = X - np.repeat(means, n, axis=0)
    W_ml = R.T @ R / (X.shape[0] - 3000)
    C = means - means.mean(0)
    B_ml = C.T @ C / 3000 - W_ml / n
    np.testing.assert_allclose(p.within_var_, W_ml, atol=1e-6)
    np.testing.assert_allclose(p.between_var_, B_ml, atol=1e-6)
    np.testing.assert_allclose(p.mean_, means.mean(0), atol=1e-12)
    W_fit, B_fit = p.model_covariances()
    np.testing.assert_allclose(W_fit, W_ml, atol=1e-6)
    # and close to the generating model
    np.testing.assert_allclose(W_fit, W_TRUE, atol=0.05)
    np.testing.assert_allclose(B_fit, B_TRUE, atol=0.35)
    # LLR of the fitted model equals the direct Gaussian ratio with the fitted parameters
    e, t = X[:5], X[100:105]
    ref = [gaussian_llr(a, b, p.mean_, B_fit, W_fit) for a, b in zip(e, t)]
    np.testing.assert_allclose(p.score(e, t), ref, rtol=1e-8)


def test_plda_default_ten_iterations_unbalanced():
    rng = np.random.default_rng(2)
    X, lab = sample(400, 6, rng)
    keep = rng.random(lab.size) > 0.3  # unbalanced speakers
    p = PLDA().fit(X[keep], lab[keep])
    assert p.num_em_iters == 10 and len(p.objf_) == 10
    assert np.all(np.diff(p.objf_) >= -1e-10)


def test_plda_kaldi_length_norm():
    rng = np.random.default_rng(3)
    X, lab = sample(200, 5, rng)
    p = PLDA(length_norm="kaldi").fit(X, lab)
    for n in (1, 5):
        U = p.transform(X[:20], num_examples=n)
        # expected squared norm under the model: u^T (psi + I/n)^-1 u == dim
        np.testing.assert_allclose((U ** 2 / (p.psi_ + 1.0 / n)).sum(1), 3.0, rtol=1e-10)
    p.length_norm = "simple"
    np.testing.assert_allclose(np.linalg.norm(p.transform(X[:20]), axis=1), np.sqrt(3), rtol=1e-10)
    p.length_norm = "none"
    np.testing.assert_allclose(p.transform(X[:3]), (X[:3] - p.mean_) @ p.transform_.T, atol=1e-12)


def test_plda_score_trials_equals_row_pairs():
    rng = np.random.default_rng(4)
    X, lab = sample(300, 5, rng)
    p = PLDA().fit(X, lab)
    E = rng.normal(size=(7, 3)) * 2
    T = rng.normal(size=(9, 3)) * 2
    ei = rng.integers(0, 7, 5000)
    ti = rng.integers(0, 9, 5000)
    n_e = np.array([1, 2, 3, 1, 5, 2, 1])
    got = p.score_trials(E, T, ei, ti, num_enroll=n_e)
    ref = p.score(E[ei], T[ti], num_enroll=n_e[ei])
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(p.score_trials(E, T, ei, ti), p.score(E[ei], T[ti]), atol=1e-4, rtol=1e-5)


def test_plda_refuses_too_few_speakers():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(40, 10))
    lab = np.repeat(np.arange(5), 8)
    with pytest.raises(ValueError, match=r"smaller dim.*--lda-dim 4"):
        PLDA().fit(X, lab)
    with pytest.raises(ValueError, match="multiple utterances"):
        PLDA().fit(rng.normal(size=(20, 3)), np.arange(20))
    with pytest.raises(ValueError, match="length_norm"):
        PLDA(length_norm="bad")


def test_plda_smoothing_matches_kaldi_definition():
    p = PLDA.from_covariances(MU, B_TRUE, W_TRUE, length_norm="none")
    p.smooth_within_class_covariance(0.1)
    W_new, B_new = p.model_covariances()
    # SmoothWithinClassCovariance: within += 0.1 * between (in the PLDA space), between shrinks accordingly
    np.testing.assert_allclose(W_new, W_TRUE + 0.1 * B_TRUE, atol=1e-10)
    np.testing.assert_allclose(B_new, B_TRUE, atol=1e-10)


# ----------------------------------------------------------------------------- Kaldi files
def test_plda_file_roundtrip_binary_and_text(tmp_path):
    p = PLDA.from_covariances(MU, B_TRUE, W_TRUE)
    p.write(tmp_path / "plda.bin", binary=True)
    p.write(tmp_path / "plda.txt", binary=False)
    for f in ("plda.bin", "plda.txt"):
        q = PLDA.read(tmp_path / f)
        np.testing.assert_array_equal(q.mean_, p.mean_)
        np.testing.assert_array_equal(q.transform_, p.transform_)
        np.testing.assert_array_equal(q.psi_, p.psi_)
    # exact Kaldi binary layout: \0B <Plda> DV <int32 3> 3 doubles DM <3> <3> 9 doubles DV ... </Plda>
    raw = (tmp_path / "plda.bin").read_bytes()
    i4 = lambda n: b"\x04" + struct.pack("<i", n)  # noqa: E731
    expect = (b"\x00B<Plda> DV " + i4(3) + p.mean_.astype("<f8").tobytes()
              + b"DM " + i4(3) + i4(3) + p.transform_.astype("<f8").tobytes()
              + b"DV " + i4(3) + p.psi_.astype("<f8").tobytes() + b"</Plda> ")
    assert raw == expect
    txt = (tmp_path / "plda.txt").read_text()
    assert txt.startswith("<Plda>  [ ") and txt.rstrip().endswith("</Plda>")


def test_read_kaldi_text_plda_written_by_hand(tmp_path):
    # the layout Kaldi's Plda::Write(os, binary=false) produces
    f = tmp_path / "plda"
    f.write_text("<Plda>  [ 1 2 ]\n [\n  1 0 \n  0.5 2 ]\n [ 3 0.25 ]\n</Plda> ")
    mean, transform, psi = read_plda_file(f)
    np.testing.assert_array_equal(mean, [1, 2])
    np.testing.assert_array_equal(transform, [[1, 0], [0.5, 2]])
    np.testing.assert_array_equal(psi, [3, 0.25])
    p = PLDA.read(f, length_norm="none")
    np.testing.assert_allclose(p.offset_, [-1, -4.5])
    (tmp_path / "bad").write_text("<Plda>  [ 1 2 ]\n [\n  1 0 ]\n [ 3 ]\n</Plda> ")
    with pytest.raises(ValueError, match="inconsistent"):
        read_plda_file(tmp_path / "bad")
    with pytest.raises(ValueError, match="missing"):
        read_plda_file(tmp_path / "nope")


# ----------------------------------------------------------------------------- LDA
def test_lda_properties_and_kaldi_matrix(tmp_path):
    rng = np.random.default_rng(6)
    D, S, n = 8, 60, 7
    A = rng.normal(size=(D, D))
    X, lab = sample(S, n, rng, B=A @ A.T, W=np.diag(rng.uniform(0.5, 2, D)), mu=rng.normal(size=D) * 3)
    lda = LDA(dim=5).fit(X, lab)
    assert lda.matrix_.shape == (5, D + 1)
    Y = lda.transform(X)
    np.testing.assert_allclose(Y.mean(0), 0, atol=1e-10)  # offset column removes the mean
    # Kaldi's covariances (normalized by the number of utterances)
    cls = np.unique(lab)
    M = np.stack([Y[lab == c].mean(0) for c in cls])
    within = sum((Y[lab == c] - M[i]).T @ (Y[lab == c] - M[i]) for i, c in enumerate(cls)) / len(Y)
    between = (M * n).T @ M / len(Y)
    np.testing.assert_allclose(within, np.eye(5), atol=1e-9)
    np.testing.assert_allclose(between, np.diag(np.diag(between)), atol=1e-9)
    assert np.all(np.diff(np.diag(between)) <= 0)
    # the kept between-class variances are the top generalized eigenvalues of (B, W)
    Xc = X - X.mean(0)
    Mx = np.stack([Xc[lab == c].mean(0) for c in cls])
    Bx = (Mx * n).T @ Mx / len(X)
    Wx = Xc.T @ Xc / len(X) - Bx
    ev = eigh(Bx, Wx, eigvals_only=True)[::-1]
    np.testing.assert_allclose(np.diag(between), ev[:5], rtol=1e-8)
    np.testing.assert_allclose(lda.eigenvalues_, ev, rtol=1e-7, atol=1e-9)
    # Kaldi matrix round trip (binary and text)
    for binary in (True, False):
        lda.write(tmp_path / "transform.mat", binary=binary)
        M2 = read_kaldi_matrix(tmp_path / "transform.mat")
        np.testing.assert_allclose(M2, lda.matrix_, rtol=1e-6)
        np.testing.assert_allclose(LDA.read(tmp_path / "transform.mat").transform(X), Y, atol=1e-4)
    with pytest.raises(ValueError, match="exceeds"):
        LDA(dim=D + 1).fit(X, lab)


def test_length_norm_and_mean(tmp_path):
    X = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    Y = length_norm(X)
    np.testing.assert_allclose(Y, [[3 * np.sqrt(2) / 5, 4 * np.sqrt(2) / 5], [0, 0], [np.sqrt(2), 0]])
    np.testing.assert_allclose(LengthNorm("unit").fit(X).transform(X[:1]), [[0.6, 0.8]])
    m = MeanSubtract().fit(X)
    np.testing.assert_allclose(m.mean_, [4 / 3, 4 / 3])
    m.write(tmp_path / "mean.vec")
    np.testing.assert_allclose(read_kaldi_vector(tmp_path / "mean.vec"), m.mean_, rtol=1e-6)
    np.testing.assert_allclose(MeanSubtract.read(tmp_path / "mean.vec").transform(X), X - m.mean_, rtol=1e-6)


def test_pipeline_save_load(tmp_path):
    rng = np.random.default_rng(7)
    D = 6
    X, lab = sample(40, 5, rng, B=np.eye(D) * 3, W=np.eye(D), mu=np.zeros(D))
    be = PldaBackend(lda_dim=4).fit(X, lab)
    be.save(tmp_path)
    be2 = PldaBackend.load(tmp_path)
    np.testing.assert_allclose(be2.score(X[:10], X[10:20]), be.score(X[:10], X[10:20]), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="--lda-dim 9"):
        PldaBackend(lda_dim=10).fit(X[:50], lab[:50])
    (tmp_path / "plda").unlink()
    with pytest.raises(ValueError, match="plda"):
        PldaBackend.load(tmp_path)


# ----------------------------------------------------------------------------- cosine
def test_cosine_hand():
    e = np.array([[1.0, 0.0], [2.0, 2.0]])
    t = np.array([[1.0, 1.0], [0.0, -3.0]])
    np.testing.assert_allclose(cosine_score(e, t), [1 / np.sqrt(2), -1 / np.sqrt(2)])
    # with a mean (1, 1): e-m = (0,-1),(1,1); t-m = (0,0)->0 score, (-1,-4)
    got = cosine_score(e, t, mean=np.array([1.0, 1.0]))
    np.testing.assert_allclose(got, [0.0, -5 / (np.sqrt(2) * np.sqrt(17))])
    ei = np.array([0, 1, 1])
    ti = np.array([1, 0, 1])
    np.testing.assert_allclose(cosine_score_trials(e, t, ei, ti), cosine_score(e[ei], t[ti]), rtol=1e-6)


def test_cosine_trial_scores_of_an_embedding_dict():
    rng = np.random.default_rng(9)
    emb = {f"u{i}": rng.normal(size=8).astype(np.float32) for i in range(6)}
    trials = [("u0", "u1", 1), ("u2", "u0", 0), ("u5", "u5", 1)]
    ref = [float(np.dot(emb[a].astype(np.float64), emb[b].astype(np.float64))
                 / np.linalg.norm(emb[a].astype(np.float64)) / np.linalg.norm(emb[b].astype(np.float64)))
           for a, b, _ in trials]
    got = cosine_trial_scores(emb, trials)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    with pytest.raises(DataError, match="u0 ghost"):
        cosine_trial_scores(emb, [("u0", "ghost", 0)])


def test_index_trials():
    trials = [("a", "x", 1), ("b", "y", 0), ("c", "x", 0)]
    ei, ti, missing = index_trials(trials, ["a", "b"], ["y", "x"])
    np.testing.assert_array_equal(ei, [0, 1, -1])
    np.testing.assert_array_equal(ti, [1, 0, 1])
    np.testing.assert_array_equal(missing, [False, False, True])
    ei, ti, missing = index_trials([("a", "b", 1)], ["b", "a"])
    assert (ei[0], ti[0], missing[0]) == (1, 0, False)


def test_every_scorer_scores_a_trial_list():
    rng = np.random.default_rng(10)
    X = rng.normal(size=(12, 4)).astype(np.float32)
    crops = (X[:, None] + 0.1 * rng.normal(size=(12, 3, 4))).astype(np.float32)
    labels = np.repeat(np.arange(4), 3)
    ei, ti = np.array([0, 1, 5, 7]), np.array([1, 4, 6, 11])
    inputs = {"train_mean": X.mean(0, dtype=np.float64), "cohort": X[:6],
              "plda": PldaBackend(lda_dim=2).fit(np.tile(X, (3, 1)) + rng.normal(size=(36, 4)),
                                                 np.tile(labels, 3)),
              "fusion": {"cosine": 0.5, "cosine_mean": 0.0, "plda": 0.25}}
    for name, scorer in SCORERS.items():
        assert set(scorer.reads) <= set(INPUTS), name
        data = crops if scorer.crops else X
        got = scorer.score(TrialSides(data, data, ei, ti), {k: inputs[k] for k in scorer.reads},
                           ScoringOptions(asnorm_top_n=3))
        assert got.shape == (4,) and np.isfinite(got).all(), name
    np.testing.assert_allclose(SCORERS["cosine"].score(TrialSides(X, X, ei, ti), {}, ScoringOptions()),
                               cosine_score(X[ei], X[ti]), rtol=1e-5)
    # the fusion is the weighted sum of its back-ends' scores
    sides = TrialSides(X, X, ei, ti, np.ones(len(X)))
    part = {b: SCORERS[b].score(sides, inputs, ScoringOptions()) for b in ("cosine", "plda")}
    np.testing.assert_allclose(SCORERS["fusion"].score(sides, inputs, ScoringOptions()),
                               0.5 * part["cosine"] + 0.25 * part["plda"], rtol=1e-10)


def test_paired_dot_backends_agree():
    rng = np.random.default_rng(8)
    A = rng.normal(size=(50, 16)).astype(np.float32)
    B = rng.normal(size=(70, 16)).astype(np.float32)
    ai = rng.integers(0, 50, 10000)
    bi = rng.integers(0, 70, 10000)
    ref = np.einsum("ij,ij->i", A[ai].astype(np.float64), B[bi].astype(np.float64))
    for backend in ("numpy", "torch"):
        np.testing.assert_allclose(paired_dot(A, B, ai, bi, backend=backend), ref, atol=1e-4)


# ----------------------------------------------------------------------------- crops
def test_crop_distance_hand():
    A = np.array([[0.0, 0.0], [3.0, 4.0]])
    B = np.array([[0.0, 0.0], [0.0, 4.0]])
    # distances: 0, 4, 5, 3 -> mean 3 -> score -3
    assert crop_distance_score(A, B, normalize=False) == pytest.approx(-3.0)
    # normalized: (1,0),(0,1) vs (1,0),(-1,0): 0, 2, sqrt2, sqrt2 -> -(1 + sqrt2)/2
    A2 = np.array([[5.0, 0.0], [0.0, 2.0]])
    B2 = np.array([[1.0, 0.0], [-3.0, 0.0]])
    assert crop_distance_score(A2, B2, normalize=True) == pytest.approx(-(1 + np.sqrt(2)) / 2)
    C = np.stack([A, B, A2, B2])
    got = crop_distance_score_trials(C, C, [0, 2, 1], [1, 3, 1], normalize=False)
    # B against itself: distances 0, 4, 4, 0 -> -2 (crops of one utterance differ)
    np.testing.assert_allclose(got, [-3.0, crop_distance_score(A2, B2, normalize=False), -2.0], atol=1e-7)


# ----------------------------------------------------------------------------- AS-norm
def test_asnorm_hand():
    mu, sd = cohort_stats([[0.1, 0.5, 0.3], [0.2, 0.2, 0.6]], top_n=2)
    np.testing.assert_allclose(mu, [0.4, 0.4])
    np.testing.assert_allclose(sd, [0.1, 0.2])
    # raw 0.8: 0.5 * ((0.8 - 0.4) / 0.1 + (0.8 - 0.4) / 0.2) = 3
    got = asnorm([0.8], [0], [1], (mu, sd), (mu, sd))
    np.testing.assert_allclose(got, [3.0])
    # whole cohort (S-norm): mean 0.3, std sqrt(((-.2)^2 + .2^2 + 0)/3)
    mu3, sd3 = cohort_stats([[0.1, 0.5, 0.3]], top_n=None)
    np.testing.assert_allclose([mu3[0], sd3[0]], [0.3, np.sqrt(0.08 / 3)])


def test_asnorm_cosine_hand():
    # e=(1,0), t=(0,1), cohort (1,0), (0,1), (1,1): raw cosine 0; cohort scores of e: 1, 0, r and
    # of t: 0, 1, r with r = 1/sqrt2; top-2 {1, r}: mean (1+r)/2, std (1-r)/2
    # -> s' = 0.5 * 2 * (0 - (1+r)/2) / ((1-r)/2) = -(1+r)/(1-r)
    E = np.array([[1.0, 0.0], [0.0, 1.0]])
    cohort = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    r = 1 / np.sqrt(2)
    got = asnorm_cosine_trials(E, E, [0], [1], cohort, top_n=2)
    np.testing.assert_allclose(got, [-(1 + r) / (1 - r)], rtol=1e-6)


def _wespeaker_asnorm(enroll, test, pairs, cohort, mean, top_n):
    """wespeaker/bin/score_norm.py (v1.2) restated: subtract the training mean from the evaluation
    and cohort embeddings, length-normalise, sort each row's cohort cosines descending, mean/std of
    the first top_n, raw score = cosine after mean subtraction (wespeaker/bin/score.py)."""
    def unit(x):
        x = x - mean
        return x / np.sqrt(np.sum(x ** 2, axis=1, keepdims=True))

    def stats(x):
        s = np.sort(unit(x) @ unit(cohort).T, axis=1)[:, ::-1][:, :top_n]
        return s.mean(axis=1), s.std(axis=1)

    (me, se), (mt, st) = stats(enroll), stats(test)
    out = []
    for e, t in pairs:
        score = (unit(enroll[e:e + 1]) @ unit(test[t:t + 1]).T).item()
        out.append(0.5 * ((score - me[e]) / se[e] + (score - mt[t]) / st[t]))
    return np.array(out)


@pytest.mark.parametrize("top_n", [5, 40, 300])
def test_asnorm_equals_wespeakers_definition(top_n):
    # the same inputs through pysv's vectorised AS-norm and wespeaker's per-trial loop: top_n 300 >
    # cohort 60 is the whole cohort for both (np.sort(...)[:, :300] takes every column: S-norm)
    rng = np.random.default_rng(11)
    enroll, test = rng.normal(size=(30, 16)) + 0.5, rng.normal(size=(25, 16)) + 0.5
    cohort = rng.normal(size=(60, 16)) + 0.5
    mean = rng.normal(size=16) * 0.3
    pairs = [(int(rng.integers(30)), int(rng.integers(25))) for _ in range(200)]
    ei, ti = [p[0] for p in pairs], [p[1] for p in pairs]
    got = asnorm_cosine_trials(enroll, test, ei, ti, cohort, top_n=min(top_n, 60), mean=mean)
    np.testing.assert_allclose(got, _wespeaker_asnorm(enroll, test, pairs, cohort, mean, top_n), rtol=1e-4, atol=1e-4)


def test_lda_with_fewer_utterances_than_dimensions_uses_pca_subspace():
    # 40 utterances of 10 speakers in 64 dims: the within-class covariance has rank 30 < 64.
    from pysv.backend import LDA
    rng = np.random.default_rng(5)
    spk = rng.normal(size=(10, 64)) * 3.0
    labels = np.repeat(np.arange(10), 4)
    X = spk[labels] + rng.normal(size=(40, 64))
    lda = LDA(dim=5).fit(X, labels)
    Y = lda.transform(X)
    assert Y.shape == (40, 5) and lda.matrix_.shape == (5, 65)
    means = np.stack([Y[labels == k].mean(0) for k in range(10)])
    within = sum((Y[labels == k] - means[k]).T @ (Y[labels == k] - means[k]) for k in range(10)) / 40
    np.testing.assert_allclose(within, np.eye(5), atol=1e-8)
    centred = means - Y.mean(0)
    between = (centred.T @ centred) * 4 / 40
    off = between - np.diag(np.diag(between))
    assert np.abs(off).max() < 1e-8 and np.all(np.diff(np.diag(between)) <= 1e-12)
    with pytest.raises(ValueError, match="dim <= 29"):
        LDA(dim=31).fit(X, labels)
