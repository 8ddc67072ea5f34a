"""Weighted EER / minDCF and the paired speaker bootstrap of pysv.significance / pysv.bin.compare."""
import json

import numpy as np
import pytest

from pysv.bin import compare
from pysv.metrics import compute_eer, compute_min_dcf
from pysv.significance import speaker_bootstrap
from pysv.utils.io import write_scores, write_trials


def _trials(num_spk=12, per_spk=20, sep=2.0, seed=0):
    """Synthetic trials: per enrolment speaker, half target; target scores shifted by ``sep``."""
    rng = np.random.default_rng(seed)
    labels = np.tile(np.r_[np.ones(per_spk // 2), np.zeros(per_spk // 2)], num_spk).astype(int)
    groups = np.repeat([f"spk{i:02d}" for i in range(num_spk)], per_spk)
    noise = rng.normal(size=labels.size)
    return labels, groups, noise


def test_integer_weights_equal_repeated_trials():
    rng = np.random.default_rng(1)
    s = rng.normal(size=60)
    y = (rng.random(60) < 0.4).astype(int)
    s[y == 1] += 1.0
    w = rng.integers(0, 4, size=60)
    w[np.flatnonzero(y)[0]] = 1  # at least one target and one non-target stay
    w[np.flatnonzero(1 - y)[0]] = 1
    rep = np.repeat(np.arange(60), w)
    assert compute_eer(s, y, w)[0] == pytest.approx(compute_eer(s[rep], y[rep])[0], abs=1e-9)
    assert compute_min_dcf(s, y, 0.05, weights=w) == pytest.approx(compute_min_dcf(s[rep], y[rep], 0.05), abs=1e-9)
    assert compute_eer(s, y, np.ones(60))[0] == pytest.approx(compute_eer(s, y)[0])
    with pytest.raises(ValueError, match="non-negative"):
        compute_eer(s, y, -np.ones(60))
    with pytest.raises(ValueError, match="no target"):
        compute_eer(s, y, (y == 0).astype(float))


def test_bootstrap_identical_systems_and_a_clearly_better_one():
    labels, groups, noise = _trials()
    weak = noise + 1.0 * labels
    strong = noise + 4.0 * labels
    res = speaker_bootstrap({"a": weak, "b": weak.copy(), "c": strong}, labels, groups,
                            num_resamples=200, seed=3, aims=(10, 99.9))
    assert res.num_speakers == 12 and res.num_resamples == 200
    a, c = res.systems["a"], res.systems["c"]
    assert a.eer == pytest.approx(compute_eer(weak, labels)[0])
    assert a.eer_ci[0] <= a.eer <= a.eer_ci[1] and a.eer_ci[0] < a.eer_ci[1]
    same, better = res.differences
    assert (same.system, better.system) == ("b", "c")
    assert same.reduction == 0 and same.reduction_ci == (0.0, 0.0) and same.p_better == 0.0
    assert better.p_better == 1.0 and better.reduction_ci[0] > 50
    assert better.p_reaches[10.0] == 1.0 and better.p_reaches[99.9] < 1.0
    assert c.eer < a.eer


def test_bootstrap_is_seeded_and_spread_shrinks_with_more_speakers():
    def width(num_spk):
        labels, groups, noise = _trials(num_spk=num_spk, seed=num_spk)
        r = speaker_bootstrap({"a": noise + 1.5 * labels}, labels, groups, num_resamples=300, seed=0)
        lo, hi = r.systems["a"].eer_ci
        return hi - lo
    labels, groups, noise = _trials()
    one = speaker_bootstrap({"a": noise + labels, "b": noise + 2 * labels}, labels, groups, num_resamples=50, seed=7)
    two = speaker_bootstrap({"a": noise + labels, "b": noise + 2 * labels}, labels, groups, num_resamples=50, seed=7)
    assert one.differences[0].reduction_ci == two.differences[0].reduction_ci
    assert width(80) < width(8)


def test_bootstrap_input_errors():
    labels, groups, noise = _trials()
    with pytest.raises(ValueError, match="reference"):
        speaker_bootstrap({"a": noise}, labels, groups, reference="x")
    with pytest.raises(ValueError, match="scores for"):
        speaker_bootstrap({"a": noise[:-1]}, labels, groups)
    with pytest.raises(ValueError, match="two enrolment speakers"):
        speaker_bootstrap({"a": noise}, labels, np.full(labels.size, "s"))


def test_compare_cli(tmp_path, capsys):
    labels, groups, noise = _trials(num_spk=6, per_spk=10)
    utts = [f"{g}-u{i}" for i, g in enumerate(groups)]
    test_utts = [f"t{i}" for i in range(labels.size)]
    (tmp_path / "utt2spk").write_text("".join(f"{u} {g}\n" for u, g in zip(utts, groups)))
    write_trials(tmp_path / "trials", zip(utts, test_utts, labels))
    write_scores(tmp_path / "a", zip(utts, test_utts, noise + labels))
    write_scores(tmp_path / "b", list(zip(utts, test_utts, noise + 3 * labels))[::-1])  # order does not matter
    out = tmp_path / "cmp.json"
    rc = compare.main(["--trials", str(tmp_path / "trials"), "--utt2spk", str(tmp_path / "utt2spk"),
                       "--scores", f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}", "--resamples", "100",
                       "--aim", "40", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "6 enrolment speakers" in text and "b vs a" in text and "reaches 40 %" in text
    res = json.loads(out.read_text())
    assert res["systems"]["b"]["eer"] == pytest.approx(compute_eer(noise + 3 * labels, labels)[0], abs=1e-3)
    # a trial without a score is named
    write_scores(tmp_path / "c", list(zip(utts, test_utts, noise))[1:])
    rc = compare.main(["--trials", str(tmp_path / "trials"), "--utt2spk", str(tmp_path / "utt2spk"),
                       "--scores", f"a={tmp_path / 'a'}", f"c={tmp_path / 'c'}"])
    assert rc == 2
    assert f"no score for trial '{utts[0]} {test_utts[0]}'" in capsys.readouterr().err
