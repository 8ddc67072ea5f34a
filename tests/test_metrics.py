"""EER / minDCF / DET: hand-computed cases (with and without ties) and Kaldi's reference loops."""
import itertools

import numpy as np
import pytest

from pysv.metrics import (compute_eer, compute_metrics, compute_min_dcf, det_curve,
                          operating_points, plot_det)


def kaldi_compute_eer(tar, non):
    """Kaldi's compute-eer.cc ComputeEer, transcribed as a loop (reference)."""
    tar = sorted(tar)
    non = sorted(non)
    pos = 0
    while pos + 1 < len(tar):
        nn = int(len(non) * pos / len(tar))
        npos = max(len(non) - 1 - nn, 0)
        if non[npos] < tar[pos]:
            break
        pos += 1
    return 100.0 * pos / len(tar), tar[pos]


@pytest.fixture(scope="module")
def kaldi_min_dcf(bench_script):
    """Kaldi's compute_min_dcf.py as plain loops (kept once, in bench/scoring.py)."""
    ref = bench_script("scoring")
    return lambda scores, labels, p: ref.kaldi_min_dcf(*ref.kaldi_error_rates(scores, labels), p)


# targets 0.9 0.8 0.3, non-targets 0.7 0.2 0.1 (no ties)
S1 = [0.9, 0.8, 0.3, 0.7, 0.2, 0.1]
L1 = [1, 1, 1, 0, 0, 0]


def test_eer_hand_no_ties():
    # accept >= 0.7: misses {0.3} = 1/3, false alarms {0.7} = 1/3 -> EER 33.33 %, threshold 0.7
    eer, thr = compute_eer(S1, L1)
    assert eer == pytest.approx(100 / 3)
    assert thr == pytest.approx(0.7)
    k_eer, k_thr = kaldi_compute_eer([0.9, 0.8, 0.3], [0.7, 0.2, 0.1])
    assert k_eer == pytest.approx(100 / 3) and k_thr == pytest.approx(0.8)


def test_eer_interpolated_step():
    # sorted: 0.4 t, 0.5 n, 0.6 t. Points (FNR, FPR): (0,1) (.5,1) (.5,0) (1,0);
    # FNR - FPR crosses 0 on the step (.5,1)->(.5,0): EER = 50 %
    eer, thr = compute_eer([0.4, 0.5, 0.6], [1, 0, 1])
    assert eer == pytest.approx(50.0)
    assert thr == pytest.approx(0.5)


def test_min_dcf_hand_no_ties():
    # operating points (FNR, FPR): (0,1) (0,2/3) (0,1/3) (1/3,1/3) (1/3,0) (2/3,0) (1,0)
    # p=0.5: c_def=0.5, best DCF = 0.5*1/3 at (0,1/3) or (1/3,0) -> 1/3
    assert compute_min_dcf(S1, L1, p_target=0.5) == pytest.approx(1 / 3)
    # p=0.01: c_def=0.01, (1/3,0) gives 0.01/3 -> 1/3; (0,1/3) gives 0.33 -> 33
    assert compute_min_dcf(S1, L1, p_target=0.01) == pytest.approx(1 / 3)
    # c_miss=10, p=0.01: c_def=min(0.1, 0.99)=0.1; (1/3,0): 10*0.01/3/0.1 = 1/3
    assert compute_min_dcf(S1, L1, p_target=0.01, c_miss=10) == pytest.approx(1 / 3)
    # p=0.4, c_fa=2: c_def=min(0.4, 1.2)=0.4; (1/3,0): 0.4/3/0.4=1/3; (0,1/3): 1.2/3/0.4 = 1
    assert compute_min_dcf(S1, L1, p_target=0.4, c_fa=2) == pytest.approx(1 / 3)


def test_all_scores_tied():
    # one operating point besides "accept all": a non-discriminating system -> EER 50 %, minDCF 1
    s = [0.3] * 6
    lab = [1, 0, 1, 0, 1, 0]
    eer, thr = compute_eer(s, lab)
    assert eer == pytest.approx(50.0)
    assert thr == pytest.approx(0.3)
    assert compute_min_dcf(s, lab, 0.01) == pytest.approx(1.0)


# ties: 0.1 n | 0.5: t t n n | 0.9 t
S2 = [0.5, 0.5, 0.5, 0.5, 0.9, 0.1]
L2 = [1, 0, 1, 0, 1, 0]


def test_ties_hand_and_order_independent(kaldi_min_dcf):
    # points: (0,1) (0,2/3) [reject 0.1] (2/3,0) [reject the 0.5 group] (1,0)
    # FNR-FPR: -1, -2/3, 2/3, 1 -> crossing halfway between (0,2/3) and (2/3,0): EER = 1/3
    # minDCF p=0.01: min(99, 66, (0.01*2/3)/0.01, 1) = 2/3 ; p=0.25: min(4, 2, 2/3, 1) = 2/3
    expect = (100 / 3, 0.5, 2 / 3, 2 / 3)
    for perm in itertools.permutations(range(6)):
        s = [S2[i] for i in perm]
        lab = [L2[i] for i in perm]
        eer, thr = compute_eer(s, lab)
        got = (eer, thr, compute_min_dcf(s, lab, 0.01), compute_min_dcf(s, lab, 0.25))
        assert got == pytest.approx(expect)
    # Kaldi's ungrouped loop depends on the order of tied trials; ours does not
    a = kaldi_min_dcf([0.5, 0.5, 0.9, 0.1], [1, 0, 1, 0], 0.01)
    b = kaldi_min_dcf([0.5, 0.5, 0.9, 0.1], [0, 1, 1, 0], 0.01)
    assert a != b


def test_against_kaldi_loops_random(kaldi_min_dcf):
    rng = np.random.default_rng(3)
    for _ in range(5):
        nt, nn = rng.integers(50, 300, 2)
        tar = rng.normal(2.0, 1.0, nt)
        non = rng.normal(0.0, 1.0, nn)
        s = np.r_[tar, non]
        lab = np.r_[np.ones(nt, int), np.zeros(nn, int)]
        eer, _ = compute_eer(s, lab)
        k_eer, _ = kaldi_compute_eer(tar.tolist(), non.tolist())
        assert abs(eer - k_eer) <= 100.0 / min(nt, nn) + 1e-9
        for p in (0.01, 0.05, 0.3):
            assert compute_min_dcf(s, lab, p) == pytest.approx(kaldi_min_dcf(s.tolist(), lab.tolist(), p))


def test_eer_exact_continuous_crossing():
    # EER on the ROC: FNR == FPR at the reported value, up to one trial
    rng = np.random.default_rng(0)
    s = np.r_[rng.normal(1, 1, 1000), rng.normal(-1, 1, 1000)]
    lab = np.r_[np.ones(1000), np.zeros(1000)]
    eer, thr = compute_eer(s, lab)
    fnr = np.mean(s[:1000] < thr)
    fpr = np.mean(s[1000:] >= thr)
    assert abs(fnr * 100 - eer) <= 0.1 + 1e-9 and abs(fpr * 100 - eer) <= 0.1 + 1e-9
    # theoretical EER of N(1,1) vs N(-1,1) is Phi(-1) = 15.87 %
    assert eer == pytest.approx(15.87, abs=2.0)


def test_compute_metrics_keys_and_consistency():
    m = compute_metrics(S2, L2, p_targets=(0.01, 0.05))
    assert m["eer"] == pytest.approx(100 / 3)
    assert m["min_dcf_p0.01"] == pytest.approx(compute_min_dcf(S2, L2, 0.01))
    assert m["min_dcf_p0.05"] == pytest.approx(compute_min_dcf(S2, L2, 0.05))
    assert m["num_target"] == 3 and m["num_nontarget"] == 3


def test_errors():
    with pytest.raises(ValueError, match="no target"):
        compute_eer([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="no non-target"):
        compute_min_dcf([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="labels"):
        compute_eer([0.1, 0.2], [1, 2])
    with pytest.raises(ValueError, match="not finite"):
        compute_eer([0.1, np.nan], [1, 0])
    with pytest.raises(ValueError, match="length"):
        compute_eer([0.1, 0.2, 0.3], [1, 0])
    with pytest.raises(ValueError, match="p_target"):
        compute_min_dcf(S1, L1, p_target=1.0)
    # booleans are accepted as labels
    assert compute_eer(S1, np.array(L1, dtype=bool))[0] == pytest.approx(100 / 3)


def test_det_curve_and_plot(tmp_path):
    fpr, fnr, thr = det_curve(S2, L2)
    np.testing.assert_allclose(fpr, [1, 2 / 3, 0, 0])
    np.testing.assert_allclose(fnr, [0, 0, 2 / 3, 1])
    assert np.all(np.diff(thr) > 0)
    op = operating_points(S1, L1)
    assert op.num_target == 3 and op.num_nontarget == 3
    rng = np.random.default_rng(1)
    s = np.r_[rng.normal(1, 1, 500), rng.normal(-1, 1, 500)]
    lab = np.r_[np.ones(500), np.zeros(500)]
    out = plot_det(tmp_path / "det.png", {"sys A": (s, lab), "sys B": (s * 0.5 + rng.normal(0, 0.5, 1000), lab)},
                   title="test")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert not list(tmp_path.glob(".*.tmp"))
