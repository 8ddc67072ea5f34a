"""Feature extraction: Kaldi compatibility (against kaldi-native-fbank), post-processing against Kaldi's
definitions written out here, the make_features stage (CLI, job split, merge, skip, resume) and bad input."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from pysv import features
from pysv.bin import make_features as mf
from pysv.utils import stage
from pysv.utils.io import DataError

torch.set_num_threads(2)
REPO = Path(__file__).resolve().parent.parent
SR = 16000


def make_audio(seconds=2.37, seed=0, sr=SR):
    """Two tones + white noise, with a quiet (not silent) first 0.2 s, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1234.5 * t + 1.0)
    x += 0.05 * rng.standard_normal(t.size)
    x[: int(0.2 * sr)] *= 0.01
    return x.astype(np.float32)


# --------------------------------------------------------------------------------------------
# kaldi-native-fbank reference (test-only dependency)
# --------------------------------------------------------------------------------------------
knf = pytest.importorskip("kaldi_native_fbank")


def _frame_opts(o, *, snip_edges=True, window_type="povey"):
    o.frame_opts.dither = 0.0
    o.frame_opts.samp_freq = SR
    o.frame_opts.snip_edges = snip_edges
    o.frame_opts.window_type = window_type
    o.frame_opts.preemph_coeff = 0.97
    o.frame_opts.remove_dc_offset = True


def _run_knf(comp, x):
    comp.accept_waveform(SR, (x * 32768.0).tolist())  # Kaldi reads int16-scaled samples
    comp.input_finished()
    return np.array([comp.get_frame(i) for i in range(comp.num_frames_ready)], dtype=np.float32)


def knf_fbank(x, num_bins, *, use_energy=False, **kw):
    o = knf.FbankOptions()
    _frame_opts(o, **kw)
    o.mel_opts.num_bins = num_bins
    o.mel_opts.low_freq = 20.0
    o.mel_opts.high_freq = 0.0
    o.use_energy = use_energy
    return _run_knf(knf.OnlineFbank(o), x)


def knf_mfcc(x, *, num_bins=30, num_ceps=30, high_freq=7600.0, **kw):
    o = knf.MfccOptions()
    _frame_opts(o, **kw)
    o.mel_opts.num_bins = num_bins
    o.mel_opts.low_freq = 20.0
    o.mel_opts.high_freq = high_freq
    o.num_ceps = num_ceps
    o.use_energy = True
    o.cepstral_lifter = 22.0
    return _run_knf(knf.OnlineMfcc(o), x)


def assert_close_where_not_floored(ours, ref, tol=1e-3):
    assert ours.shape == ref.shape and ours.dtype == np.float32
    ok = ref > np.log(features.FLOAT_EPS) + 5.0  # energy not near the floor
    assert ok.mean() > 0.99
    assert np.abs(ours - ref)[ok].max() < tol


@pytest.mark.parametrize("snip_edges,window_type", [(True, "povey"), (False, "povey"), (True, "hamming")])
def test_fbank40_matches_kaldi(snip_edges, window_type):
    x = make_audio()
    ext = features.build("fbank40", dither=0.0, snip_edges=snip_edges, window_type=window_type)
    ours = ext(x, SR)
    ref = knf_fbank(x, 40, snip_edges=snip_edges, window_type=window_type)
    assert ours.shape == (ext.num_frames(x.size), 40)
    assert_close_where_not_floored(ours, ref)


def test_fbank64_before_cmvn_matches_kaldi():
    x = make_audio(seed=3)
    ours = features.build("fbank64", dither=0.0, cmvn="none")(x, SR)
    assert_close_where_not_floored(ours, knf_fbank(x, 64))
    # with the energy prepended (Kaldi --use-energy: dimension 0 is the raw log energy)
    ours_e = features.build("fbank64", dither=0.0, cmvn="none", use_energy=True)(x, SR)
    assert ours_e.shape[1] == 65
    assert_close_where_not_floored(ours_e, knf_fbank(x, 64, use_energy=True))


def test_mfcc30_base_matches_kaldi():
    x = make_audio(seed=4)
    ext = features.build("mfcc30", dither=0.0, cmvn="none", delta_order=0)
    ours = ext(x, SR)
    ref = knf_mfcc(x)
    assert ours.shape == ref.shape == (ext.num_frames(x.size), 30)
    assert np.abs(ours - ref).max() < 2e-3  # cepstra: sums of 30 log energies
    # the full mfcc30 pipeline starts from exactly these coefficients
    full = features.build("mfcc30", dither=0.0)
    np.testing.assert_array_equal(full.compute_base(full.prepare(x, SR)), ours)


def test_mel_banks_match_kaldi():
    ours = features.mel_banks(40, 512, 16000.0, 20.0, 0.0)
    o = knf.MelBanksOptions()
    o.num_bins, o.low_freq, o.high_freq = 40, 20.0, 0.0
    fo = knf.FrameExtractionOptions()
    ref = np.asarray(knf.MelBanks(o, fo, 1.0).get_matrix())  # [bins, fft_bins]
    if ref.shape[0] != 40:
        ref = ref.T
    np.testing.assert_allclose(ours[: ref.shape[1]].T, ref, atol=1e-5)
    assert np.all(ours[256] == 0)  # the Nyquist bin is not used by Kaldi's banks


# --------------------------------------------------------------------------------------------
# Interface, options, dither
# --------------------------------------------------------------------------------------------

def test_interface_and_shipped_yaml():
    for name, dim in (("fbank40", 40), ("fbank64", 64), ("mfcc30", 90)):
        ext = features.build(name)
        assert ext.dim == dim and ext.sample_rate == 16000
        assert ext.frame_shift == 160 and ext.frame_length == 400 and ext.frame_shift_seconds == pytest.approx(0.01)
        # Kaldi NumFrames: snip_edges -> 1 + (N - 400) // 160
        assert ext.num_frames(16000) == 98 and ext.num_frames(399) == 0 and ext.num_frames(400) == 1
        raw = yaml.safe_load((REPO / "conf" / f"{name}.yaml").read_text())
        for key in ("dither", "window_type", "snip_edges", "preemphasis_coefficient", "remove_dc_offset",
                    "energy_floor", "use_energy", "low_freq", "high_freq", "num_mel_bins", "cmvn"):
            assert key in raw, (name, key)
        # the recipe's conf/<name>.yaml is the package's named config
        assert (REPO / "conf" / f"{name}.yaml").resolve() == features.FEATURE_CONFIG_DIR / f"{name}.yaml"
    assert features.build("fbank40", snip_edges=False).num_frames(16000) == (16000 + 80) // 160
    assert features.build("mfcc30").config["num_ceps"] == 30
    assert features.build(REPO / "conf" / "fbank64.yaml").dim == 64
    with pytest.raises(ValueError, match="unknown"):
        features.build("fbank40", no_such_option=1)


def test_dither_settable():
    x = make_audio(1.0)
    off = features.build("fbank40", dither=0.0)
    a, b = off(x, SR), off(x, SR)
    np.testing.assert_array_equal(a, b)  # deterministic without dither
    on = features.build("fbank40", dither=1.0)
    c, d = on(x, SR, seed=7), on(x, SR, seed=7)
    np.testing.assert_array_equal(c, d)  # reproducible for a given seed
    assert not np.array_equal(c, on(x, SR, seed=8))
    assert not np.array_equal(a, c) and np.abs(a - c).max() > 1e-4
    # one int16 LSB of noise barely moves loud frames
    assert np.median(np.abs(a - c)[50:]) < 0.05
    # and it lifts digital silence above the log(FLT_EPSILON) floor
    z = x.copy()
    z[:4000] = 0.0
    assert off(z, SR)[:5].min() == pytest.approx(np.log(features.FLOAT_EPS))
    assert on(z, SR, seed=1)[:5].min() > np.log(features.FLOAT_EPS) + 10.0


# --------------------------------------------------------------------------------------------
# Post-processing against Kaldi's definitions
# --------------------------------------------------------------------------------------------

def kaldi_sliding_cmn(x, cmn_window, center, min_window, norm_vars):
    """Line-by-line port of Kaldi's SlidingWindowCmnInternal (feature-functions.cc)."""
    x = np.asarray(x, dtype=np.float64)
    num_frames, dim = x.shape
    out = np.zeros_like(x)
    cur_sum, cur_sumsq = np.zeros(dim), np.zeros(dim)
    last_start = last_end = -1
    for t in range(num_frames):
        if center:
            start = t - cmn_window // 2
            end = start + cmn_window
        else:
            start = t - cmn_window
            end = t + 1
        if start < 0:
            end -= start
            start = 0
        if not center and end > t:
            end = max(t + 1, min_window)
        if end > num_frames:
            start -= end - num_frames
            end = num_frames
            if start < 0:
                start = 0
        if last_start == -1:
            cur_sum = x[start:end].sum(0)
            cur_sumsq = (x[start:end] ** 2).sum(0)
        else:
            if start > last_start:
                assert start == last_start + 1
                cur_sum -= x[last_start]
                cur_sumsq -= x[last_start] ** 2
            if end > last_end:
                assert end == last_end + 1
                cur_sum += x[last_end]
                cur_sumsq += x[last_end] ** 2
        n = end - start
        last_start, last_end = start, end
        out[t] = x[t] - cur_sum / n
        if norm_vars:
            if n == 1:
                out[t] = 0.0
            else:
                var = np.maximum(cur_sumsq / n - (cur_sum / n) ** 2, 1.0e-10)
                out[t] *= var ** -0.5
    return out


@pytest.mark.parametrize("T", [1, 7, 120, 731])
@pytest.mark.parametrize("center,norm_vars", [(True, True), (True, False), (False, True), (False, False)])
def test_sliding_cmvn_matches_kaldi_definition(T, center, norm_vars):
    rng = np.random.default_rng(T)
    x = (rng.standard_normal((T, 5)) * [1, 2, 3, 4, 5] + np.linspace(0, 10, T)[:, None]).astype(np.float32)
    ours = features.apply_sliding_cmvn(x, window=300, center=center, min_window=100, norm_vars=norm_vars)
    ref = kaldi_sliding_cmn(x, 300, center, 100, norm_vars)
    np.testing.assert_allclose(ours, ref, atol=2e-5, rtol=1e-5)


def test_fbank64_is_sliding_cmvn_of_fbank():
    x = make_audio(4.0, seed=5)  # 398 frames > the 300-frame window
    base = features.build("fbank64", dither=0.0, cmvn="none")(x, SR)
    full = features.build("fbank64", dither=0.0)(x, SR)
    np.testing.assert_allclose(full, kaldi_sliding_cmn(base, 300, True, 100, True), atol=1e-4)


def test_deltas_hand_examples():
    # window 1, order 2: delta_t = (x[t+1] - x[t-1]) / 2, delta2 = [0.25, 0, -0.5, 0, 0.25], edges replicated
    x = np.array([[1.0], [2.0], [4.0]], dtype=np.float32)
    out = features.apply_deltas(x, order=2, window=1)
    np.testing.assert_allclose(out, [[1, 0.5, 0.75], [2, 1.5, 0.25], [4, 1.0, -0.75]], atol=1e-6)
    # window 2: delta_t = sum_j j x[t+j] / 10; e.g. t=1: (-2*3 - 3 + 4 + 2*1) / 10 = -0.3
    x = np.array([[3.0], [1.0], [4.0], [1.0], [5.0]], dtype=np.float32)
    np.testing.assert_allclose(features.apply_deltas(x, order=1, window=2)[:, 1], [0.0, -0.3, 0.4, 0.9, 0.6],
                               atol=1e-6)
    # the second-order window for window 2 is the 1st-order window convolved with itself
    np.testing.assert_allclose(features.delta_scales(2, 2)[2],
                               [0.04, 0.04, 0.01, -0.04, -0.1, -0.04, 0.01, 0.04, 0.04], atol=1e-12)


def test_mfcc30_pipeline_deltas_then_cmvn():
    x = make_audio(3.0, seed=6)
    base = features.build("mfcc30", dither=0.0, cmvn="none", delta_order=0)(x, SR)
    full = features.build("mfcc30", dither=0.0)(x, SR)
    assert full.shape == (base.shape[0], 90)
    with_deltas = features.apply_deltas(base, 2, 2)
    mean, std = with_deltas.mean(0, dtype=np.float64), with_deltas.std(0, dtype=np.float64)
    np.testing.assert_allclose(full, (with_deltas - mean) / std, atol=2e-4)
    np.testing.assert_allclose(full.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(full.std(0), 1.0, atol=1e-3)


# --------------------------------------------------------------------------------------------
# make_features stage
# --------------------------------------------------------------------------------------------

LENGTHS = {"spkA-u1": 16000, "spkA-u2": 23456, "spkB-u3": 30001}


def make_data_dir(root: Path, lengths=LENGTHS):
    data = root / "data" / "dev"
    data.mkdir(parents=True)
    wavs = {}
    for i, (utt, n) in enumerate(sorted(lengths.items())):
        x = make_audio(n / SR, seed=10 + i)[:n]
        path = root / "wav" / f"{utt}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, x, SR, subtype="PCM_16")
        wavs[utt] = path
    (data / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p in sorted(wavs.items())))
    (data / "utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u in sorted(wavs)))
    (data / "spk2utt").write_text("spkA spkA-u1 spkA-u2\nspkB spkB-u3\n")
    (data / "trials").write_text("spkA-u1 spkA-u2 target\nspkA-u1 spkB-u3 nontarget\n")
    return data, wavs


def cli(data, out, *extra):
    return mf.main(["--data", str(data), "--feat-config", "fbank40", "--out", str(out), *extra])


def test_make_features_cli(tmp_path):
    kaldiio = pytest.importorskip("kaldiio")
    data, wavs = make_data_dir(tmp_path)
    out = tmp_path / "data" / "dev_fbank40"
    assert cli(data, out, "--nj", "2") == 0
    feats = kaldiio.load_scp(str(out / "feats.scp"))
    assert sorted(feats) == sorted(LENGTHS)
    u2nf = {k: int(v) for k, v in (line.split() for line in (out / "utt2num_frames").read_text().splitlines())}
    ref = features.build("fbank40")
    for utt, n in LENGTHS.items():
        assert feats[utt].shape == (1 + (n - 400) // 160, 40) and feats[utt].dtype == np.float32
        assert u2nf[utt] == 1 + (n - 400) // 160
        x, _ = sf.read(wavs[utt], dtype="float32")
        np.testing.assert_array_equal(feats[utt], ref(x, SR, seed=mf.utt_seed(utt, 0)))
    for name in ("wav.scp", "utt2spk", "spk2utt", "trials"):
        assert (out / name).read_text() == (data / name).read_text()
    assert features.resolve_config(yaml.safe_load((out / "feat_conf.yaml").read_text())) == ref.config
    assert (out / ".done").is_file()
    assert sorted(p.name for p in (out / "data").glob("feats.*.ark")) == ["feats.1.ark", "feats.2.ark"]
    assert not list(out.rglob("*.tmp"))

    # re-run skips: nothing is rewritten
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert cli(data, out, "--nj", "2") == 0
    assert stamps == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}

    # a stage killed after job 1: only job 2 and the merge are redone; the result is identical
    before = (out / "feats.scp").read_text()
    for p in (out / ".done", out / "feats.scp", out / "data" / ".done.2", out / "data" / "feats.2.ark"):
        p.unlink()
    (out / "data" / ".feats.2.ark.12345.tmp").write_bytes(b"partial")  # left by the killed job
    assert cli(data, out, "--nj", "2") == 0
    assert (out / "data" / "feats.1.ark").stat().st_mtime_ns == stamps[out / "data" / "feats.1.ark"]
    assert (out / "feats.scp").read_text() == before
    assert not list(out.rglob("*.tmp"))
    np.testing.assert_array_equal(kaldiio.load_scp(str(out / "feats.scp"))["spkB-u3"], feats["spkB-u3"])

    # other options invalidate the output; features do not depend on --nj
    assert cli(data, out, "--nj", "3", "dither=0") == 0
    assert "dither: 0.0" in (out / "feat_conf.yaml").read_text()
    x, _ = sf.read(wavs["spkA-u2"], dtype="float32")
    np.testing.assert_array_equal(kaldiio.load_scp(str(out / "feats.scp"))["spkA-u2"],
                                  features.build("fbank40", dither=0.0)(x, SR))


def test_make_features_job_mode_and_merge(tmp_path):
    data, _ = make_data_dir(tmp_path)
    out = tmp_path / "out"
    assert cli(data, out, "--job", "1", "--nj", "2") == 0
    assert (out / "data" / "feats.1.scp").read_text().count("\n") == 2  # contiguous split of the sorted list
    assert (out / "data" / "utt2num_frames.1").is_file()
    with pytest.raises(DataError, match="job.*2"):
        mf.merge(data, out, mf.resolve("fbank40", {}), 2)
    assert not (out / "feats.scp").exists()
    assert cli(data, out, "--job", "2", "--nj", "2") == 0
    assert cli(data, out, "--merge", "--nj", "2") == 0
    assert (out / "feats.scp").read_text().count("\n") == 3 and (out / ".done").is_file()


def test_make_features_markers_record_inputs_and_outputs(tmp_path):
    data, _ = make_data_dir(tmp_path)
    out = tmp_path / "out"
    assert cli(data, out, "--nj", "2") == 0
    job1 = stage.read(out / "data" / ".done.1")
    assert sorted(job1["outputs"]) == ["feats.1.ark", "feats.1.scp", "utt2num_frames.1"]
    assert job1["fingerprint"]["part"]["items"]["count"] == 2 and job1["info"]["utts"] == 2
    assert stage.info(out / ".done") == {"dim": 40, "utts": 3}
    arks = {p: p.stat().st_mtime_ns for p in (out / "data").glob("feats.*.ark")}
    # a copied text file changed: the copies are refreshed, the features are not recomputed
    (data / "utt2spk").write_text((data / "utt2spk").read_text().replace("spkB-u3 spkB", "spkB-u3 spkC"))
    assert not mf.is_done(data, out, mf.resolve("fbank40", {}))
    assert cli(data, out, "--nj", "2") == 0
    assert (out / "utt2spk").read_text() == (data / "utt2spk").read_text()
    assert arks == {p: p.stat().st_mtime_ns for p in (out / "data").glob("feats.*.ark")}
    # one utterance's audio path changed: only the job holding it is redone
    wav = (data / "wav.scp").read_text().splitlines()
    moved = tmp_path / "moved.wav"
    shutil.copy(wav[2].split()[1], moved)
    (data / "wav.scp").write_text("\n".join(wav[:2] + [f"spkB-u3 {moved}"]) + "\n")
    assert cli(data, out, "--nj", "2") == 0
    assert (out / "data" / "feats.1.ark").stat().st_mtime_ns == arks[out / "data" / "feats.1.ark"]
    assert (out / "data" / "feats.2.ark").stat().st_mtime_ns != arks[out / "data" / "feats.2.ark"]
    assert (out / "wav.scp").read_text() == (data / "wav.scp").read_text()


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
def test_make_features_sh(tmp_path):
    data, _ = make_data_dir(tmp_path)
    out = tmp_path / "out_mfcc"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    script = str(REPO / "steps" / "make_features.sh")
    r = subprocess.run([script, "--nj", "2", "mfcc30", str(data), str(out)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 of 3 utterances" in r.stdout and (out / "log" / "make_feats.2.log").is_file()
    import kaldiio
    assert kaldiio.load_scp(str(out / "feats.scp"))["spkA-u1"].shape == (98, 90)
    r = subprocess.run([script, "--nj", "2", "mfcc30", str(data), str(out)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "skipping" in r.stdout


# --------------------------------------------------------------------------------------------
# Bad input: a clear error naming the culprit, and no feats.scp
# --------------------------------------------------------------------------------------------

def _bad(tmp_path, utt, writer):
    data, wavs = make_data_dir(tmp_path)
    writer(wavs[utt])
    return data, wavs[utt]


def _expect_failure(data, out, match, *overrides):
    cfg = mf.resolve("fbank40", mf.parse_overrides(overrides))
    with pytest.raises(DataError, match=match):
        mf.run_all(data, out, cfg, nj=2)
    assert not (out / "feats.scp").exists() and not (out / ".done").exists()
    if out.exists():
        assert not list(out.rglob("*.tmp"))


@pytest.mark.parametrize("case", ["corrupt", "empty", "zeros", "rate", "stereo", "missing"])
def test_bad_audio_is_named(tmp_path, case):
    utt = "spkA-u2"
    writers = {
        "corrupt": lambda p: p.write_bytes(b"RIFF\x00\x00garbage" * 10),
        "empty": lambda p: sf.write(p, np.zeros(0, np.float32), SR),
        "zeros": lambda p: sf.write(p, np.zeros(20000, np.float32), SR, subtype="PCM_16"),
        "rate": lambda p: sf.write(p, make_audio(1.0, sr=8000), 8000, subtype="PCM_16"),
        "stereo": lambda p: sf.write(p, np.stack([make_audio(1.0), make_audio(1.0, seed=9)], 1), SR),
        "missing": lambda p: p.unlink(),
    }
    expect = {"corrupt": "cannot read", "empty": "empty", "zeros": "all-zero", "rate": "resample=resample",
              "stereo": "channel=", "missing": "missing"}
    data, path = _bad(tmp_path, utt, writers[case])
    out = tmp_path / "data" / "dev_fbank40"
    _expect_failure(data, out, expect[case])
    with pytest.raises(DataError) as err:
        mf.run_all(data, out, mf.resolve("fbank40", {}), nj=2)
    assert utt in str(err.value) and str(path) in str(err.value)
    assert not (out / "data" / "feats.2.ark").exists()  # the job holding the bad utterance left nothing
    assert cli(data, out, "--nj", "2") == 1  # the CLI reports it and exits non-zero
    if case == "rate":  # resampling on request
        assert mf.run_all(data, out, mf.resolve("fbank40", {"resample": "resample"}), nj=2) is None
        import kaldiio
        assert kaldiio.load_scp(str(out / "feats.scp"))[utt].shape == (98, 40)
    if case == "stereo":  # an explicit channel
        assert cli(data, out, "--nj", "2", "channel=0", "dither=0") == 0
        import kaldiio
        x, _ = sf.read(path, dtype="float32")
        np.testing.assert_array_equal(kaldiio.load_scp(str(out / "feats.scp"))[utt],
                                      features.build("fbank40", dither=0.0)(x[:, 0], SR))


def test_duplicate_utterance_ids(tmp_path, capsys):
    data, wavs = make_data_dir(tmp_path)
    with open(data / "wav.scp", "a") as f:
        f.write(f"spkA-u1 {wavs['spkA-u2']}\n")
    _expect_failure(data, tmp_path / "out", "duplicate key 'spkA-u1'")
    assert mf.main(["--data", str(data), "--feat-config", "fbank40", "--out", str(tmp_path / "o"), "--check"]) == 1
    assert "duplicate key 'spkA-u1'" in capsys.readouterr().err


def test_extractor_rejects_bad_arrays():
    ext = features.build("fbank40", dither=0.0)
    with pytest.raises(DataError, match="empty"):
        ext(np.zeros(0, np.float32), SR)
    with pytest.raises(DataError, match="all-zero"):
        ext(np.zeros(8000, np.float32), SR)
    with pytest.raises(DataError, match="resample=resample"):
        ext(make_audio(1.0, sr=8000), 8000)
    with pytest.raises(DataError, match="channel="):
        ext(np.stack([make_audio(1.0)] * 2, 1), SR)
    with pytest.raises(DataError, match="too short"):
        ext(make_audio(0.02), SR)
    x = make_audio(1.0)
    np.testing.assert_array_equal(features.build("fbank40", dither=0.0, channel=1)(np.stack([x * 0.5, x], 1), SR),
                                  ext(x, SR))
    assert features.build("fbank40", resample="resample")(make_audio(1.0, sr=8000), 8000).shape == (98, 40)


@pytest.mark.parametrize("name,extra", [("fbank40", {}), ("fbank64", {}), ("mfcc30", {}),
                                        ("fbank40", {"snip_edges": False}), ("mfcc30", {"cmvn": "sliding"})])
def test_batched_torch_front_end_equals_per_utterance(name, extra):
    # FeatureExtractor.batch is the one torch definition (stage 1 runs it on one row); a batch of
    # equal-length crops gives each row's features
    import torch
    fe = features.build(name, dither=0.0, **extra)
    rng = np.random.default_rng(3)
    w = (0.1 * rng.standard_normal((3, 24000))).astype(np.float32)
    batch = fe.batch(torch.from_numpy(w)).numpy()
    assert batch.shape == (3, fe.num_frames(24000), fe.dim)
    for row in range(3):
        np.testing.assert_allclose(batch[row], fe(w[row], 16000), rtol=1e-5, atol=1e-5)
    # dither draws from the generator it is given: reproducible
    fd = features.build(name, **extra)
    a = fd.batch(torch.from_numpy(w), generator=torch.Generator().manual_seed(1))
    b = fd.batch(torch.from_numpy(w), generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, torch.from_numpy(batch))
