"""Stage 0 (data preparation): mini corpus, folder corpus, VoxCeleb layout, MUSAN/RIRs, bad input."""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pysv.data import prepare as prep
from pysv.data.corpora.folder import parse_fold, prepare_folder, speaker_folds, split_speakers
from pysv.data.corpora.mini import prepare_mini
from pysv.data.corpora.mini_synth import (MiniConfig, check_generated, draw_speaker,
                                          generate_mini_corpus, synthesize_utterance, time_varying_sosfilt,
                                          _resonator_sos)
from pysv.data.corpora.musan import prepare_musan
from pysv.data.corpora.rirs import prepare_rirs
from pysv.data.corpora.voxceleb import prepare_voxceleb
from pysv.data.prepare import AudioOptions, find_audio_files
from pysv.data.trials import TrialOptions, make_trials
from pysv.utils.io import DataError, read_table, read_trials

SR = 16000
QUIET = AudioOptions(progress=False)


def audio_digest(paths) -> str:
    """SHA-256 over the decoded samples of ``paths`` (in the given order)."""
    h = hashlib.sha256()
    for p in paths:
        x, sr = sf.read(str(p), dtype="int16")
        h.update(str(sr).encode())
        h.update(x.tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def write_wav(path: Path, seconds: float = 0.6, sr: int = SR, seed: int = 0, channels: int = 1,
              zeros: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(seconds * sr)
    x = np.zeros((n, channels)) if zeros else np.random.default_rng(seed).uniform(-0.3, 0.3, (n, channels))
    sf.write(str(path), x if channels > 1 else x[:, 0], sr, subtype="PCM_16")
    return path


def make_folder_corpus(root: Path, n_spk: int = 10, n_utt: int = 3, ext: str = "wav") -> Path:
    for s in range(n_spk):
        for u in range(n_utt):
            write_wav(root / f"spk{s:02d}" / f"u{u}.{ext}", 0.6 + 0.05 * u, seed=s * 100 + u)
    return root


def assert_no_output(data_root: Path) -> None:
    """Nothing was written: no manifests, no set dirs (the data root may not even exist)."""
    if data_root.exists():
        left = [p for p in data_root.rglob("*")]
        assert not left, f"partial output left behind: {left}"


def load_manifest(path: Path):
    from lhotse import load_manifest as lm
    return lm(path)


def check_kaldi_dir(set_dir: Path, corpus: str, data_root: Path) -> None:
    """Kaldi dir consistent with itself, with the audio and with the lhotse manifests."""
    wav = read_table(set_dir / "wav.scp")
    utt2spk = read_table(set_dir / "utt2spk")
    spk2utt = {k: v.split() for k, v in read_table(set_dir / "spk2utt").items()}
    utt2dur = read_table(set_dir / "utt2dur")
    assert (set_dir / ".done").is_file()
    assert set(wav) == set(utt2spk) == set(utt2dur)
    # spk2utt is the exact inverse of utt2spk
    inv = {}
    for u, s in utt2spk.items():
        inv.setdefault(s, []).append(u)
    assert {s: sorted(us) for s, us in inv.items()} == spk2utt
    # files sorted (Kaldi order), ids prefixed by speaker
    lines = (set_dir / "utt2spk").read_text().splitlines()
    assert lines == sorted(lines)
    for u, s in utt2spk.items():
        assert u.startswith(s)
    for u, p in wav.items():
        assert os.path.isabs(p) and os.path.isfile(p) and " " not in p and "|" not in p
        info = sf.info(p)
        assert abs(float(utt2dur[u]) - info.frames / info.samplerate) < 1e-3
    name = set_dir.name
    man = data_root / "manifests"
    recs = load_manifest(man / f"{corpus}_recordings_{name}.jsonl.gz")
    sups = load_manifest(man / f"{corpus}_supervisions_{name}.jsonl.gz")
    cuts = load_manifest(man / f"{corpus}_cuts_{name}.jsonl.gz")
    assert sorted(r.id for r in recs) == sorted(wav)
    assert {s.id: s.speaker for s in sups} == utt2spk
    assert {c.id: c.supervisions[0].speaker for c in cuts} == utt2spk
    for c in cuts:
        assert abs(c.duration - float(utt2dur[c.id])) < 1e-3
    trials = set_dir / "trials"
    if trials.exists():
        for a, b, _ in read_trials(trials):
            assert a in utt2spk and b in utt2spk


def tree_snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------
# mini corpus
# ----------------------------------------------------------------------------------------------
SMALL = dict(num_speakers=4, utts_per_speaker=3, min_duration=2.0, max_duration=3.0)


def test_mini_corpus_deterministic_and_sized(tmp_path):
    cfg = MiniConfig(**SMALL)
    a = generate_mini_corpus(tmp_path / "a", cfg, nj=1, progress=False)
    b = generate_mini_corpus(tmp_path / "b", cfg, nj=2, progress=False)  # process count must not matter
    fa, fb = sorted(a.rglob("*.flac")), sorted(b.rglob("*.flac"))
    assert [p.relative_to(a) for p in fa] == [p.relative_to(b) for p in fb]
    assert len(fa) == 4 * 3
    assert audio_digest(fa) == audio_digest(fb)
    c = generate_mini_corpus(tmp_path / "c", MiniConfig(seed=cfg.seed + 1, **SMALL), nj=1, progress=False)
    assert audio_digest(sorted(c.rglob("*.flac"))) != audio_digest(fa)
    for p in fa:
        info = sf.info(str(p))
        assert info.samplerate == SR and info.channels == 1 and info.format == "FLAC"
        assert 2.0 <= info.frames / SR <= 3.0
        assert p.parent.name == p.stem.split("-")[0]  # <spk>/<spk>-uttNN.flac
        x, _ = sf.read(str(p))
        assert 0.001 < np.sqrt(np.mean(x ** 2)) and np.abs(x).max() < 1.0
    assert (tmp_path / "a" / "speakers.tsv").read_text().count("\n") == 5
    # a completed corpus is not regenerated
    m = fa[0].stat().st_mtime_ns
    generate_mini_corpus(tmp_path / "a", cfg, nj=1, progress=False)
    assert fa[0].stat().st_mtime_ns == m


def test_mini_corpus_regenerated_when_config_changes(tmp_path):
    out = tmp_path / "mini"
    generate_mini_corpus(out, MiniConfig(num_speakers=2, utts_per_speaker=3, min_duration=1.0, max_duration=1.0),
                         progress=False)
    (out / "wav" / "mini001" / "notes.txt").write_text("not ours")
    (out / "wav" / "mini001" / ".mini001-utt09.flac.x1y2.tmp").write_text("left by a killed run")
    cfg = MiniConfig(num_speakers=2, utts_per_speaker=2, min_duration=1.0, max_duration=1.0)
    generate_mini_corpus(out, cfg, progress=False)
    assert sorted(p.name for p in (out / "wav").rglob("*.flac")) == [
        "mini001-utt01.flac", "mini001-utt02.flac", "mini002-utt01.flac", "mini002-utt02.flac"]
    assert (out / "wav" / "mini001" / "notes.txt").exists()  # foreign files are left alone
    assert not list((out / "wav").rglob("*.tmp"))
    assert check_generated(out, cfg) is None
    # a generated file lost or cut short: the corpus is generated again
    victim = out / "wav" / "mini002" / "mini002-utt01.flac"
    victim.write_bytes(victim.read_bytes()[:100])
    assert "mini002-utt01.flac" in check_generated(out, cfg)
    generate_mini_corpus(out, cfg, progress=False)
    assert check_generated(out, cfg) is None and sf.info(str(victim)).frames == SR


def test_time_varying_filter_fast_path_matches_sosfilt():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(3000)
    sos = np.stack([_resonator_sos(rng.uniform(300, 3000, 5), rng.uniform(60, 200, 5), SR) for _ in range(6)])
    bounds = [0, 100, 700, 701, 1500, 2600, 3000]
    np.testing.assert_allclose(time_varying_sosfilt(sos, bounds, x), time_varying_sosfilt(sos, bounds, x, fast=False),
                               rtol=1e-12, atol=1e-12)
    # constant coefficients over all blocks = one plain filter (state carried across block edges)
    from scipy.signal import sosfilt
    same = np.repeat(sos[:1], 6, axis=0)
    np.testing.assert_allclose(time_varying_sosfilt(same, bounds, x), sosfilt(same[0], x), atol=1e-12)


def _f0_median(y: np.ndarray) -> float:
    n, hop = int(0.04 * SR), int(0.01 * SR)
    fr = np.lib.stride_tricks.sliding_window_view(y, n)[::hop]
    fr = fr - fr.mean(1, keepdims=True)
    from scipy import fft
    ac = fft.irfft(np.abs(fft.rfft(fr, 2048)) ** 2)[:, :n]  # zero-padded: linear autocorrelation
    lo, hi = SR // 400, SR // 60
    lag = lo + np.argmax(ac[:, lo:hi], 1)
    voiced = ac[np.arange(len(ac)), lag] / (ac[:, 0] + 1e-12) > 0.5
    return float(np.median(SR / lag[voiced]))


def _voice_features(y: np.ndarray, f0: float) -> np.ndarray:
    """Long-term log mel spectrum (mean, std over loud frames) + median F0."""
    from scipy.signal import stft
    f, _, z = stft(y, SR, nperseg=512, noverlap=352)
    mel = lambda h: 1127 * np.log(1 + h / 700)  # noqa: E731
    e, m = np.linspace(mel(100), mel(7600), 26), mel(f)
    fb = np.stack([np.clip(np.minimum((m - a) / (b - a), (c - m) / (c - b)), 0, None)
                   for a, b, c in zip(e[:-2], e[1:-1], e[2:])])
    band = np.log(fb @ np.abs(z) ** 2 + 1e-10)
    band = band[:, band.sum(0) > np.percentile(band.sum(0), 50)]
    return np.concatenate([band.mean(1) - band.mean(), band.std(1), [np.log(f0)] * 10])


def test_mini_speakers_distinguishable_and_f0_follows_speaker():
    """Nearest-centroid speaker id on held-out utterances (leave one out) is far above chance."""
    n_spk, n_utt = 10, 4
    feats, labels, f0_err = [], [], []
    for s in range(n_spk):
        voice = draw_speaker(np.random.default_rng([5, s]))
        for u in range(n_utt):
            y = synthesize_utterance(voice, np.random.default_rng([5, s, u + 1]), 2.5)
            f0 = _f0_median(y)
            feats.append(_voice_features(y, f0))
            labels.append(s)
            f0_err.append(abs(np.log2(f0 / voice.f0_mean)) * 12)  # semitones
    # the synthesised pitch sits around the speaker's mean F0 (per-utterance offsets ~1 semitone)
    assert np.median(f0_err) < 2.0
    x = np.array(feats)
    x = (x - x.mean(0)) / (x.std(0) + 1e-9)
    y = np.array(labels)
    correct = 0
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        cents = np.stack([x[keep & (y == c)].mean(0) for c in range(n_spk)])
        correct += int(np.argmin(((cents - x[i]) ** 2).sum(1)) == y[i])
    acc = correct / len(x)
    assert acc >= 3.0 / n_spk, f"speaker-id accuracy {acc:.2f} not well above chance {1 / n_spk:.2f}"
    # ... but not trivially perfect: within-speaker variability (channel, noise, content) is real
    assert acc < 1.0


def test_mini_default_generation_time_budget(tmp_path):
    """CPU time for one default speaker (12 utts, 2-6 s), projected to the 48-speaker default corpus,
    is well under a minute on one core."""
    cfg = MiniConfig(num_speakers=1)
    t0 = time.process_time()
    generate_mini_corpus(tmp_path / "one", cfg, nj=1, progress=False)
    per_speaker = time.process_time() - t0
    projected = per_speaker * MiniConfig().num_speakers
    assert projected < 60.0, f"projected default generation {projected:.1f} s CPU"


def test_prepare_mini_end_to_end_and_rerun_skips(tmp_path, monkeypatch):
    root = tmp_path / "data"
    cfg = MiniConfig(num_speakers=5, utts_per_speaker=3, min_duration=2.0, max_duration=2.5)
    dirs = prepare_mini(root, num_test_speakers=2, mini_cfg=cfg, audio_opts=QUIET)
    assert [d.name for d in dirs] == ["mini_train", "mini_test"]
    for d in dirs:
        check_kaldi_dir(d, "mini", root)
    assert len(read_table(root / "mini_train" / "spk2utt")) == 3
    test_spk = set(read_table(root / "mini_test" / "spk2utt"))
    assert test_spk == {"mini004", "mini005"}  # the last speakers, unseen in training
    trials = read_trials(root / "mini_test" / "trials")
    assert sum(t[2] for t in trials) == 2 * 3  # 2 speakers x C(3, 2)
    assert len(trials) == 12
    # re-running a completed stage does nothing
    snap = tree_snapshot(root)
    monkeypatch.setattr(prep, "build_sets", lambda *a, **k: pytest.fail("re-run did work"))
    prepare_mini(root, num_test_speakers=2, mini_cfg=cfg, audio_opts=QUIET)
    assert tree_snapshot(root) == snap


def test_mini_bad_options_leave_nothing(tmp_path):
    root = tmp_path / "data"
    with pytest.raises(DataError, match="num-test-speakers"):
        prepare_mini(root, num_test_speakers=1, mini_cfg=MiniConfig(num_speakers=4, utts_per_speaker=2),
                     audio_opts=QUIET)
    with pytest.raises(DataError, match="utts-per-speaker"):
        prepare_mini(root, num_test_speakers=2, mini_cfg=MiniConfig(num_speakers=4, utts_per_speaker=1),
                     audio_opts=QUIET)
    assert_no_output(root)


# ----------------------------------------------------------------------------------------------
# trials
# ----------------------------------------------------------------------------------------------
def test_make_trials_counts_by_hand():
    spk2utt = {"A": ["A-1", "A-2", "A-3"], "B": ["B-1", "B-2"], "C": ["C-1", "C-2"]}
    t = make_trials(spk2utt, TrialOptions(seed=1))
    targets = {(a, b) for a, b, line in t if line}
    # every same-speaker pair: C(3,2) + C(2,2) + C(2,2) = 5
    assert targets == {("A-1", "A-2"), ("A-1", "A-3"), ("A-2", "A-3"), ("B-1", "B-2"), ("C-1", "C-2")}
    non = [(a, b) for a, b, line in t if not line]
    assert len(non) == 5 and len(set(non)) == 5  # ratio 1.0, no duplicates
    assert all(a.split("-")[0] != b.split("-")[0] and a < b for a, b in non)
    assert t == make_trials(spk2utt, TrialOptions(seed=1))  # deterministic
    # 3*2 + 3*2 + 2*2 = 16 different-speaker pairs exist; ratio 3 wants 15
    assert sum(1 for *_, line in make_trials(spk2utt, TrialOptions(nontarget_ratio=3.0)) if not line) == 15
    assert sum(1 for *_, line in make_trials(spk2utt, TrialOptions(nontarget_ratio=10.0)) if not line) == 16
    t2 = make_trials(spk2utt, TrialOptions(max_target_trials=2, nontarget_ratio=2.0))
    assert sum(line for *_, line in t2) == 2 and sum(1 - line for *_, line in t2) == 4
    with pytest.raises(DataError, match="speaker 'D'"):
        make_trials({**spk2utt, "D": ["D-1"]}, TrialOptions())
    with pytest.raises(DataError, match="at least 2 speakers"):
        make_trials({"A": spk2utt["A"]}, TrialOptions())


# ----------------------------------------------------------------------------------------------
# folder corpus
# ----------------------------------------------------------------------------------------------
def test_folder_split_disjoint_deterministic_and_trials(tmp_path):
    corpus = make_folder_corpus(tmp_path / "corpus", n_spk=10, n_utt=3)
    r1, r2, r3 = tmp_path / "d1", tmp_path / "d2", tmp_path / "d3"
    prepare_folder(corpus, r1, test_fraction=0.3, trial_opts=TrialOptions(seed=3), audio_opts=QUIET)
    prepare_folder(corpus, r2, test_fraction=0.3, trial_opts=TrialOptions(seed=3), audio_opts=QUIET)
    for d in ("folder_train", "folder_test"):
        check_kaldi_dir(r1 / d, "folder", r1)
        for f in ("utt2spk", "trials", "wav.scp"):
            if (r1 / d / f).exists():
                assert (r1 / d / f).read_text() == (r2 / d / f).read_text()
    train = set(read_table(r1 / "folder_train" / "spk2utt"))
    test = set(read_table(r1 / "folder_test" / "spk2utt"))
    assert len(test) == 3 and len(train) == 7 and not train & test
    assert set(read_table(r1 / "folder_train" / "utt2spk")) == {f"{s}-u{u}" for s in train for u in range(3)}
    trials = read_trials(r1 / "folder_test" / "trials")
    n_target = sum(line for *_, line in trials)
    assert n_target == 3 * 3  # all C(3,2) pairs of 3 test speakers
    assert len(trials) - n_target == n_target
    # other seeds pick other speakers (at least one of a few seeds differs)
    picks = set()
    for seed in (4, 5, 6):
        prepare_folder(corpus, r3 / str(seed), test_fraction=0.3, trial_opts=TrialOptions(seed=seed),
                       audio_opts=QUIET)
        picks.add(tuple(sorted(read_table(r3 / str(seed) / "folder_test" / "spk2utt"))))
    assert len(picks | {tuple(sorted(test))}) > 1


def test_speaker_folds_partition_and_test_fold_split(tmp_path):
    """--test-fold K/N: N disjoint seeded folds covering every speaker once; fold K is the test set."""
    speakers = [f"s{i:02d}" for i in range(11)]
    folds = speaker_folds(speakers, 4, seed=0)
    assert sorted(len(f) for f in folds) == [2, 3, 3, 3]
    assert sorted(s for f in folds for s in f) == speakers  # a partition: each speaker in one fold
    assert folds == speaker_folds(list(reversed(speakers)), 4, seed=0)  # order of the input does not matter
    assert folds != speaker_folds(speakers, 4, seed=1)
    for k, fold in enumerate(folds, 1):
        train, test = split_speakers(speakers, 0.2, 0, test_fold=f"{k}/4")
        assert test == fold and sorted(train + test) == speakers
    for bad in ("0/4", "5/4", "1/1", "x/4", "2"):
        with pytest.raises(DataError, match="--test-fold must be K/N"):
            parse_fold(bad)
    with pytest.raises(DataError, match="fewer than 2 test speakers"):
        speaker_folds(speakers, 6, seed=0)
    corpus = make_folder_corpus(tmp_path / "corpus", n_spk=6, n_utt=2)
    tested = []
    for k in (1, 2, 3):
        root = tmp_path / f"fold{k}"
        prepare_folder(corpus, root, audio_opts=QUIET, test_fold=f"{k}/3")
        train = set(read_table(root / "folder_train" / "spk2utt"))
        test = set(read_table(root / "folder_test" / "spk2utt"))
        assert len(test) == 2 and not train & test and len(train | test) == 6
        tested += sorted(test)
    assert sorted(tested) == sorted(read_table(tmp_path / "fold1" / "folder_train" / "spk2utt")
                                    | read_table(tmp_path / "fold1" / "folder_test" / "spk2utt"))
    with pytest.raises(DataError, match="not both"):
        prepare_folder(corpus, tmp_path / "x", audio_opts=QUIET, test_fold="1/3",
                       test_speakers=str(tmp_path / "none"))


def test_folder_test_dir_and_speaker_list(tmp_path):
    train = make_folder_corpus(tmp_path / "train", n_spk=3, n_utt=2)
    test = tmp_path / "test"
    for s in ("tA", "tB"):
        for u in range(3):
            write_wav(test / s / f"{s}-{u}.flac", seed=u)  # stem already prefixed: kept as the utt id
    root = tmp_path / "d"
    prepare_folder(train, root, name="x", test_corpus_dir=test, audio_opts=QUIET)
    assert set(read_table(root / "x_test" / "utt2spk")) == {f"{s}-{u}" for s in ("tA", "tB") for u in range(3)}
    assert set(read_table(root / "x_train" / "spk2utt")) == {"spk00", "spk01", "spk02"}
    check_kaldi_dir(root / "x_test", "x", root)
    lst = tmp_path / "test_spk.txt"
    lst.write_text("spk01\n")
    with pytest.raises(DataError, match="at least 2"):  # one listed speaker cannot make non-targets
        prepare_folder(train, tmp_path / "e", test_speakers=str(lst), audio_opts=QUIET)
    lst.write_text("spk01\nspk02\n")
    prepare_folder(train, tmp_path / "l", test_speakers=str(lst), audio_opts=QUIET)
    assert set(read_table(tmp_path / "l" / "folder_test" / "spk2utt")) == {"spk01", "spk02"}
    lst.write_text("spk01\nnobody\n")
    with pytest.raises(DataError, match="nobody"):
        prepare_folder(train, tmp_path / "m", test_speakers=str(lst), audio_opts=QUIET)
    assert_no_output(tmp_path / "m")
    assert_no_output(tmp_path / "e")


# ----------------------------------------------------------------------------------------------
# bad input: clear error naming the culprit, no output
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["corrupt", "empty", "zeros", "rate", "stereo", "truncated"])
def test_bad_audio_named_and_nothing_written(tmp_path, kind):
    corpus = make_folder_corpus(tmp_path / "c", n_spk=4, n_utt=2)
    bad = corpus / "spk01" / "bad.wav"
    if kind == "corrupt":
        bad.write_bytes(b"RIFF this is not audio at all" * 10)
    elif kind == "empty":
        sf.write(str(bad), np.zeros(0), SR)
    elif kind == "zeros":
        write_wav(bad, zeros=True)
    elif kind == "rate":
        write_wav(bad, sr=8000)
    elif kind == "stereo":
        write_wav(bad, channels=2)
    elif kind == "truncated":
        bad = corpus / "spk01" / "bad.flac"  # a FLAC cut in half: the header still reads fine
        sf.write(str(bad), np.random.default_rng(0).uniform(-.3, .3, SR), SR)
        bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    root = tmp_path / "data"
    with pytest.raises(DataError) as ei:
        prepare_folder(corpus, root, test_fraction=0.5, audio_opts=QUIET)
    assert str(bad) in str(ei.value)
    expect = {"corrupt": "cannot read", "empty": "empty", "zeros": "all-zero", "rate": "8000 Hz",
              "stereo": "channels", "truncated": "decode"}[kind]
    assert expect in str(ei.value)
    assert_no_output(root)


def test_rate_mismatch_resample(tmp_path):
    corpus = make_folder_corpus(tmp_path / "c", n_spk=4, n_utt=2)
    write_wav(corpus / "spk02" / "u9.wav", seconds=0.5, sr=8000)
    root = tmp_path / "data"
    prepare_folder(corpus, root, test_fraction=0.5, trial_opts=TrialOptions(seed=1),
                   audio_opts=AudioOptions(on_rate_mismatch="resample", progress=False))
    set_name = next(s for s in ("folder_train", "folder_test")
                    if "spk02-u9" in read_table(root / s / "utt2spk"))
    check_kaldi_dir(root / set_name, "folder", root)
    wav = read_table(root / set_name / "wav.scp")["spk02-u9"]
    assert sf.info(wav).samplerate == SR and f"{set_name}/wav16k/" in wav
    rec = load_manifest(root / "manifests" / f"folder_recordings_{set_name}.jsonl.gz")["spk02-u9"]
    assert rec.sampling_rate == SR and rec.num_samples == SR // 2
    assert [type(t).__name__ for t in rec.transforms] == ["Resample"]
    assert rec.sources[0].source.endswith("u9.wav")  # manifest keeps the original + the transform
    assert abs(float(read_table(root / set_name / "utt2dur")["spk02-u9"]) - 0.5) < 1e-3


def test_duplicate_ids_missing_and_single_utt_speaker(tmp_path):
    corpus = make_folder_corpus(tmp_path / "c", n_spk=4, n_utt=2)
    write_wav(corpus / "spk03" / "u1.flac")  # u1.wav exists too -> same id spk03-u1
    with pytest.raises(DataError, match="duplicate utterance id 'spk03-u1'"):
        prepare_folder(corpus, tmp_path / "d1", audio_opts=QUIET)
    assert_no_output(tmp_path / "d1")
    (corpus / "spk03" / "u1.flac").unlink()
    (corpus / "spk02" / "u1.wav").unlink()
    lst = tmp_path / "t.txt"
    lst.write_text("spk02\nspk03\n")
    with pytest.raises(DataError, match="speaker 'spk02'"):
        prepare_folder(corpus, tmp_path / "d2", test_speakers=str(lst), audio_opts=QUIET)
    assert_no_output(tmp_path / "d2")
    # a dangling symlink is a listed-but-missing file
    write_wav(corpus / "spk02" / "u1.wav")
    os.symlink(tmp_path / "nowhere.wav", corpus / "spk00" / "gone.wav")
    with pytest.raises(DataError, match="gone.wav: file is missing"):
        prepare_folder(corpus, tmp_path / "d3", test_fraction=0.5, audio_opts=QUIET)
    assert_no_output(tmp_path / "d3")
    with pytest.raises(DataError, match="not found"):
        prepare_folder(tmp_path / "nope", tmp_path / "d4", audio_opts=QUIET)


def test_m4a_refused_in_folder(tmp_path):
    corpus = make_folder_corpus(tmp_path / "c", n_spk=3, n_utt=2)
    (corpus / "spk00" / "x.m4a").write_bytes(b"\x00\x00\x00 ftypM4A ")
    with pytest.raises(DataError, match="ffmpeg") as ei:
        prepare_folder(corpus, tmp_path / "d", audio_opts=QUIET)
    assert "x.m4a" in str(ei.value)
    assert_no_output(tmp_path / "d")


# ----------------------------------------------------------------------------------------------
# robustness: killed midway, stale temp files
# ----------------------------------------------------------------------------------------------
def test_killed_midway_then_rerun_completes(tmp_path, monkeypatch):
    corpus = make_folder_corpus(tmp_path / "c", n_spk=6, n_utt=2)
    clean = tmp_path / "clean"
    prepare_folder(corpus, clean, test_fraction=0.5, audio_opts=QUIET)
    root = tmp_path / "data"
    calls = {"n": 0}
    real = prep.write_trials

    def dying(path, trials):  # the "kill" hits while the test set is being written
        calls["n"] += 1
        (Path(path).parent / ".trials.abcd.tmp").write_text("half")  # as a SIGKILL would leave it
        raise KeyboardInterrupt

    monkeypatch.setattr(prep, "write_trials", dying)
    with pytest.raises(KeyboardInterrupt):
        prepare_folder(corpus, root, test_fraction=0.5, audio_opts=QUIET)
    assert (root / "folder_train" / ".done").exists() and not (root / "folder_test" / ".done").exists()
    assert not (root / "folder_test" / "trials").exists()
    monkeypatch.setattr(prep, "write_trials", real)
    prepare_folder(corpus, root, test_fraction=0.5, audio_opts=QUIET)
    assert not list((root / "folder_test").glob(".*.tmp"))
    for d in ("folder_train", "folder_test"):
        check_kaldi_dir(root / d, "folder", root)
        for f in ("wav.scp", "utt2spk", "spk2utt", "utt2dur", "trials"):
            if (clean / d / f).exists():
                assert (root / d / f).read_text() == (clean / d / f).read_text()
    for m in (clean / "manifests").iterdir():  # reproducible manifest bytes (gzip mtime 0)
        assert (root / "manifests" / m.name).read_bytes() == m.read_bytes()


def test_truncated_output_is_redone(tmp_path, caplog):
    corpus = make_folder_corpus(tmp_path / "c", n_spk=4, n_utt=2)
    root = tmp_path / "d"
    prepare_folder(corpus, root, test_fraction=0.5, audio_opts=QUIET)
    trials = root / "folder_test" / "trials"
    whole = trials.read_text()
    trials.write_text(whole[:10])
    with caplog.at_level("INFO"):
        prepare_folder(corpus, root, test_fraction=0.5, audio_opts=QUIET)
    assert "truncated" in caplog.text and trials.read_text() == whole


def test_find_audio_files_walk_order_hidden_and_unreadable(tmp_path):
    for rel in ("b.wav", "a.flac", "sub/c.wav", ".hidden.wav", ".git/d.wav", "x.m4a", "a.m4a", "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    unsupported = []
    assert [str(p) for p in find_audio_files(tmp_path, unsupported)] == ["a.flac", "b.wav", "sub/c.wav"]
    assert unsupported == [str(tmp_path / "x.m4a")]  # a.m4a has its converted twin a.flac


def test_changed_options_redo_and_force(tmp_path):
    corpus = make_folder_corpus(tmp_path / "c", n_spk=6, n_utt=2)
    root = tmp_path / "d"
    prepare_folder(corpus, root, test_fraction=0.5, audio_opts=QUIET)
    before = (root / "folder_test" / "trials").read_text()
    prepare_folder(corpus, root, test_fraction=0.5, trial_opts=TrialOptions(nontarget_ratio=2.0), audio_opts=QUIET)
    after = read_trials(root / "folder_test" / "trials")
    assert (root / "folder_test" / "trials").read_text() != before
    assert sum(1 - line for *_, line in after) == 2 * sum(line for *_, line in after)


# ----------------------------------------------------------------------------------------------
# VoxCeleb on a tiny fake tree with the real layout
# ----------------------------------------------------------------------------------------------
def make_fake_vox(tmp_path: Path):
    vox1 = tmp_path / "voxceleb1"
    # two Vox1-O (test) speakers and two Vox1-dev speakers
    for spk in ("id10270", "id10271", "id10001", "id10002"):
        for vid in ("x6uYqmx31kE", "8jEAjG-SegY"):
            for n in (1, 2):
                write_wav(vox1 / "wav" / spk / vid / f"{n:05d}.wav", seed=hash((spk, vid, n)) % 1000)
    vox2 = tmp_path / "voxceleb2"
    for spk in ("id00012", "id00015"):
        for n in (1, 2, 3):
            write_wav(vox2 / "dev" / "wav" / spk / "21Uxsk56VDQ" / f"{n:05d}.wav", seed=n)
            (vox2 / "dev" / "aac" / spk / "21Uxsk56VDQ").mkdir(parents=True, exist_ok=True)
            (vox2 / "dev" / "aac" / spk / "21Uxsk56VDQ" / f"{n:05d}.m4a").write_bytes(b"aac")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "veri_test2.txt").write_text(
        "1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG-SegY/00002.wav\n"
        "0 id10270/x6uYqmx31kE/00001.wav id10271/x6uYqmx31kE/00002.wav\n")
    (lists / "list_test_all2.txt").write_text(
        "1 id10001/x6uYqmx31kE/00001.wav id10001/8jEAjG-SegY/00001.wav\n"
        "0 id10001/x6uYqmx31kE/00001.wav id10270/x6uYqmx31kE/00002.wav\n")
    (lists / "list_test_hard2.txt").write_text(
        "0 id10002/x6uYqmx31kE/00002.wav id10001/8jEAjG-SegY/00002.wav\n")
    return vox1, vox2, lists


def test_voxceleb_fake_tree(tmp_path):
    vox1, vox2, lists = make_fake_vox(tmp_path)
    root = tmp_path / "data"
    dirs = prepare_voxceleb(root, [str(vox1)], str(vox2), trials_dir=str(lists), audio_opts=QUIET)
    assert [d.name for d in dirs] == ["vox2_dev", "vox1_test"]
    check_kaldi_dir(root / "vox2_dev", "voxceleb", root)
    check_kaldi_dir(root / "vox1_test", "voxceleb", root)
    u2s = read_table(root / "vox2_dev" / "utt2spk")
    assert sorted(u2s) == [f"{s}-21Uxsk56VDQ-{n:05d}" for s in ("id00012", "id00015") for n in (1, 2, 3)]
    assert read_table(root / "vox2_dev" / "wav.scp")["id00012-21Uxsk56VDQ-00001"].endswith(
        "dev/wav/id00012/21Uxsk56VDQ/00001.wav")
    t = root / "vox1_test"
    assert (t / "trials_O").read_text() == (
        "id10270-x6uYqmx31kE-00001 id10270-8jEAjG-SegY-00002 target\n"
        "id10270-x6uYqmx31kE-00001 id10271-x6uYqmx31kE-00002 nontarget\n")
    assert (t / "trials_E").read_text() == (
        "id10001-x6uYqmx31kE-00001 id10001-8jEAjG-SegY-00001 target\n"
        "id10001-x6uYqmx31kE-00001 id10270-x6uYqmx31kE-00002 nontarget\n")
    assert (t / "trials_H").read_text() == "id10002-x6uYqmx31kE-00002 id10001-8jEAjG-SegY-00002 nontarget\n"
    assert (t / "trials").read_text() == (t / "trials_O").read_text()
    # the test set holds exactly the utterances the lists name
    assert len(read_table(t / "utt2spk")) == 3 + 3 + 2
    assert read_table(t / "utt2spk")["id10270-8jEAjG-SegY-00002"] == "id10270"


def test_voxceleb_refusals(tmp_path):
    vox1, vox2, lists = make_fake_vox(tmp_path)
    root = tmp_path / "data"
    # VoxCeleb1-dev in training + Vox1-E/H testing = speaker overlap: refused
    with pytest.raises(DataError, match="VoxCeleb1-dev.*Vox1-E/H"):
        prepare_voxceleb(root, [str(vox1)], str(vox2), train_corpora=["vox2_dev", "vox1_dev"],
                         trials_dir=str(lists), audio_opts=QUIET)
    assert_no_output(root)
    # m4a only (not converted): refused with the conversion hint
    import shutil
    shutil.rmtree(vox2 / "dev" / "wav")
    with pytest.raises(DataError, match="m4a.*ffmpeg") as ei:
        prepare_voxceleb(root, [str(vox1)], str(vox2), trials_dir=str(lists), audio_opts=QUIET)
    assert "00001.m4a" in str(ei.value)
    assert_no_output(root)
    # a trial list naming a missing file
    bad = tmp_path / "veri_bad.txt"
    bad.write_text("1 id10270/x6uYqmx31kE/00001.wav id10270/x6uYqmx31kE/00009.wav\n")
    with pytest.raises(DataError, match="id10270/x6uYqmx31kE/00009.wav"):
        prepare_voxceleb(root, [str(vox1)], train_corpora=[], trial_lists={"O": str(bad)}, audio_opts=QUIET)
    assert_no_output(root)
    # VoxCeleb1-dev training with Vox1-O only is fine and leaves out the 40 Vox1-O speakers
    prepare_voxceleb(root, [str(vox1)], trial_lists={"O": str(lists / "veri_test2.txt")}, audio_opts=QUIET)
    assert set(read_table(root / "vox1_dev" / "spk2utt")) == {"id10001", "id10002"}
    assert set(read_table(root / "vox1_test" / "spk2utt")) == {"id10270", "id10271"}


# ----------------------------------------------------------------------------------------------
# MUSAN / RIRs
# ----------------------------------------------------------------------------------------------
def test_musan_layout_and_folder_with_lists(tmp_path):
    musan = tmp_path / "musan"
    write_wav(musan / "noise" / "free-sound" / "noise-free-sound-0000.wav")
    write_wav(musan / "noise" / "sound-bible" / "noise-sound-bible-0001.wav", seed=1)
    write_wav(musan / "music" / "fma" / "music-fma-0000.wav", seed=2)
    write_wav(musan / "speech" / "librivox" / "speech-librivox-0000.wav", seed=3)
    (musan / "music" / "fma" / "ANNOTATIONS").write_text("not audio")
    root = tmp_path / "data"
    prepare_musan(musan, root, audio_opts=QUIET)
    cat = read_table(root / "musan" / "utt2category")
    assert cat == {"noise-free-sound-0000": "noise", "noise-sound-bible-0001": "noise",
                   "music-fma-0000": "music", "speech-librivox-0000": "speech"}
    assert set(read_table(root / "musan" / "wav.scp")) == set(cat)
    recs = load_manifest(root / "manifests" / "musan_recordings.jsonl.gz")
    assert sorted(r.id for r in recs) == sorted(cat)
    sups = load_manifest(root / "manifests" / "musan_supervisions.jsonl.gz")
    assert {s.id: s.custom["category"] for s in sups} == cat
    cuts = load_manifest(root / "manifests" / "musan_cuts.jsonl.gz")
    assert {c.id: c.custom["category"] for c in cuts} == cat
    # category filter
    prepare_musan(musan, tmp_path / "d2", categories=["noise", "music"], audio_opts=QUIET)
    assert set(read_table(tmp_path / "d2" / "musan" / "utt2category").values()) == {"noise", "music"}
    with pytest.raises(DataError, match="babble"):
        prepare_musan(musan, tmp_path / "d3", categories=["babble"], audio_opts=QUIET)
    # the shared-data layout: <category>/<id>.flac + wav.list + files.tsv; a listed file missing
    folder = tmp_path / "noise"
    write_wav(folder / "noise" / "tap.flac")
    write_wav(folder / "music" / "song.flac", seed=4)
    (folder / "wav.list").write_text("tap noise/tap.flac\nsong music/song.flac\n")
    (folder / "files.tsv").write_text("id\tcategory\tpath\ntap\tnoise\tnoise/tap.flac\nsong\tmusic\tmusic/song.flac\n")
    prepare_musan(folder, tmp_path / "d4", name="noise", audio_opts=QUIET)
    assert read_table(tmp_path / "d4" / "noise" / "utt2category") == {"tap": "noise", "song": "music"}
    (folder / "wav.list").write_text("tap noise/tap.flac\nsong music/song.flac\ngone noise/gone.flac\n")
    with pytest.raises(DataError, match="gone.flac"):
        prepare_musan(folder, tmp_path / "d5", audio_opts=QUIET)
    assert_no_output(tmp_path / "d5")


def test_rirs_noises_layout_and_flat_folder(tmp_path):
    rirs = tmp_path / "RIRS_NOISES"
    write_wav(rirs / "simulated_rirs" / "smallroom" / "Room001" / "Room001-00001.wav", 0.1)
    write_wav(rirs / "simulated_rirs" / "mediumroom" / "Room002" / "Room002-00003.wav", 0.1, seed=1)
    real = rirs / "real_rirs_isotropic_noises"
    write_wav(real / "RVB2014_type1_rir_largeroom1_far_angla.wav", 0.1, seed=2, channels=2)
    write_wav(real / "RVB2014_type1_noise_largeroom1_1.wav", 0.2, seed=3)
    root = tmp_path / "data"
    prepare_rirs(tmp_path, root, audio_opts=QUIET)
    wav = read_table(root / "rirs" / "wav.scp")
    assert set(wav) == {"smallroom-Room001-00001", "mediumroom-Room002-00003",
                        "RVB2014_type1_rir_largeroom1_far_angla-ch0", "RVB2014_type1_rir_largeroom1_far_angla-ch1"}
    room = read_table(root / "rirs" / "utt2room")
    assert room["smallroom-Room001-00001"] == "smallroom-Room001"
    # the multi-channel RIR became two mono files holding its channels
    orig, _ = sf.read(str(real / "RVB2014_type1_rir_largeroom1_far_angla.wav"))
    for c in (0, 1):
        x, sr = sf.read(wav[f"RVB2014_type1_rir_largeroom1_far_angla-ch{c}"])
        assert sr == SR and x.ndim == 1
        np.testing.assert_allclose(x, orig[:, c], atol=1e-6)
    recs = load_manifest(root / "manifests" / "rirs_recordings.jsonl.gz")
    assert sorted(r.id for r in recs) == sorted(wav)
    assert all(r.num_channels == 1 for r in recs)
    prepare_rirs(tmp_path, tmp_path / "sim", rir_types=["simulated"], audio_opts=QUIET)
    assert len(read_table(tmp_path / "sim" / "rirs" / "wav.scp")) == 2
    # a flat folder of RIRs (the shared-data layout)
    flat = tmp_path / "rir"
    write_wav(flat / "roomA-1.flac", 0.1)
    write_wav(flat / "roomA-2.flac", 0.1, seed=1)
    (flat / "files.tsv").write_text("id\troom\nroomA-1\tRoom A (office)\nroomA-2\tRoom A (office)\n")
    prepare_rirs(flat, tmp_path / "d2", audio_opts=QUIET)
    assert read_table(tmp_path / "d2" / "rirs" / "utt2room") == {"roomA-1": "Room_A_(office)",
                                                                 "roomA-2": "Room_A_(office)"}
    write_wav(flat / "silent.flac", 0.1, zeros=True)
    with pytest.raises(DataError, match="silent.flac: all-zero"):
        prepare_rirs(flat, tmp_path / "d3", audio_opts=QUIET)
    assert_no_output(tmp_path / "d3")


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------
def test_cli(tmp_path, capsys):
    from pysv.bin.prepare_data import main
    corpus = make_folder_corpus(tmp_path / "c", n_spk=4, n_utt=2)
    root = tmp_path / "data"
    assert main(["folder", "--corpus-dir", str(corpus), "--name", "toy", "--test-fraction", "0.5",
                 "--data-root", str(root), "--no-progress", "--nj", "1"]) == 0
    assert (root / "toy_test" / "trials").is_file()
    assert (root / "manifests" / "toy_cuts_toy_train.jsonl.gz").is_file()
    assert main(["folder", "--corpus-dir", str(tmp_path / "missing"), "--data-root", str(tmp_path / "x")]) == 1
    for sub in ("mini", "folder", "voxceleb", "musan", "rirs"):
        with pytest.raises(SystemExit) as ei:
            main([sub, "--help"])
        assert ei.value.code == 0
    out = capsys.readouterr().out
    assert "--on-rate-mismatch" in out and "--vox1-dir" in out and "--nontarget-ratio" in out


def test_shell_wrapper_accepts_options_and_positionals(tmp_path):
    import subprocess
    import sys
    repo = Path(__file__).resolve().parents[1]
    corpus = make_folder_corpus(tmp_path / "c", n_spk=4, n_utt=2)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    # run.sh style: everything as --options
    r = subprocess.run([str(repo / "local" / "prepare_folder.sh"), "--data-root", str(tmp_path / "a"),
                        "--name", "toy", "--corpus-dir", str(corpus), "--test-fraction", "0.5", "--no-progress"],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "a" / "toy_test" / "trials").is_file() and not (tmp_path / "data").exists()
    # Kaldi style: positionals; a failing stage fails the script
    r = subprocess.run([str(repo / "local" / "prepare_folder.sh"), "--nj", "1", str(tmp_path / "missing"),
                        str(tmp_path / "b")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode != 0 and "missing" in r.stderr
