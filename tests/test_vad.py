"""Energy VAD (Kaldi compute-vad / select-voiced-frames): hand-computed decisions, the mean scale,
utterances without a voiced frame, alignment with the feature frames, and stage 1 with ``--vad energy``."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from pysv import features, vad
from pysv.bin import make_features as mf

torch.set_num_threads(2)
SR = 16000


def kaldi_loop(e, energy_threshold=5.5, energy_mean_scale=0.5, frames_context=2, proportion_threshold=0.12):
    """ComputeVadEnergy as Kaldi writes it (a loop per frame)."""
    T = len(e)
    thr = energy_threshold + energy_mean_scale * sum(e) / T
    out = []
    for t in range(T):
        num = den = 0
        for t2 in range(t - frames_context, t + frames_context + 1):
            if 0 <= t2 < T:
                den += 1
                num += e[t2] > thr
        out.append(num >= den * proportion_threshold)
    return np.array(out)


def test_hand_computed_frames():
    # threshold 5.5 (no mean term): frames 2 and 9 are above it. Proportion 0.12 of a window of 3..5
    # frames needs one frame above: frames 0-4 see frame 2, frames 7-9 see frame 9, frames 5-6 see none.
    e = np.array([0, 0, 10, 0, 0, 0, 0, 0, 0, 10], dtype=np.float32)
    got = vad.energy_vad(e, energy_mean_scale=0.0)
    assert got.dtype == bool and got.tolist() == [1, 1, 1, 1, 1, 0, 0, 1, 1, 1]
    # proportion 0.3: a window of 3 (edges t=0, 9) needs 1 frame above, of 4 (t=1, 8) or 5 needs 2.
    # Above: 0, 8, 9. t=0: [0,2] 1 of 3 -> yes; t=1: [0,3] 1 of 4 -> no; t=2..6: <= 1 of 5 -> no;
    # t=7: [5,9] 2 of 5 -> yes; t=8: [6,9] 2 of 4 -> yes; t=9: [7,9] 2 of 3 -> yes.
    e = np.array([10, 0, 0, 0, 0, 0, 0, 0, 10, 10], dtype=np.float32)
    got = vad.energy_vad(e, energy_mean_scale=0.0, proportion_threshold=0.3)
    assert got.tolist() == [1, 0, 0, 0, 0, 0, 0, 1, 1, 1]
    # context 0: the frame alone; equality with the threshold is not above it
    assert vad.energy_vad(np.array([5.5, 5.6, 0.0]), energy_mean_scale=0.0, frames_context=0).tolist() == [0, 1, 0]


@pytest.mark.parametrize("context,prop", [(0, 0.5), (2, 0.12), (3, 0.6), (7, 0.3)])
def test_equals_kaldi_loop(context, prop):
    rng = np.random.default_rng(context)
    for T in (1, 2, 5, 40):
        e = rng.integers(0, 17, T).astype(np.float32)  # exact sums: no rounding-dependent comparison
        np.testing.assert_array_equal(
            vad.energy_vad(e, frames_context=context, proportion_threshold=prop),
            kaldi_loop(e.tolist(), frames_context=context, proportion_threshold=prop))


def test_mean_scale():
    e = np.array([6.0] * 5 + [12.0] * 5)
    # without the mean term every frame is above 5.5; with it the threshold is 5.5 + 0.5 * 9 = 10
    assert vad.energy_vad(e, energy_mean_scale=0.0, frames_context=0).all()
    assert vad.energy_vad(e, energy_mean_scale=0.5, frames_context=0).tolist() == [0] * 5 + [1] * 5
    # the same relative decision for a louder recording (+20 in log energy, threshold moves by 10)
    assert vad.energy_vad(e + 20.0, energy_mean_scale=0.5, frames_context=0, energy_threshold=15.5).tolist() == \
        [0] * 5 + [1] * 5
    with pytest.raises(ValueError):
        vad.energy_vad(e, proportion_threshold=1.0)
    with pytest.raises(ValueError):
        vad.energy_vad(e, frames_context=-1)


def test_no_voiced_frame_keeps_all():
    mask = vad.energy_vad(np.zeros(8))
    assert not mask.any()
    feats = np.arange(24, dtype=np.float32).reshape(8, 3)
    np.testing.assert_array_equal(vad.select_voiced(feats, mask), feats)
    m = np.zeros(8, dtype=bool)
    m[[1, 5]] = True
    np.testing.assert_array_equal(vad.select_voiced(feats, m), feats[[1, 5]])
    with pytest.raises(ValueError):
        vad.select_voiced(feats, np.ones(7, dtype=bool))
    assert vad.energy_vad(np.zeros(0)).shape == (0,)
    # audio with no voiced frame: a constant-level noise whose every frame is at the mean
    ext = features.build("fbank40", dither=0.0)
    rng = np.random.default_rng(0)
    x = (1e-4 * rng.standard_normal(SR)).astype(np.float32)
    out = vad.apply_energy_vad(x, SR, ext, energy_threshold=100.0)
    np.testing.assert_array_equal(out, ext(x, SR))


def silence_tone_silence(pre=0.5, tone=1.0, post=0.5, seed=0):
    rng = np.random.default_rng(seed)
    n0, n1, n2 = int(pre * SR), int(tone * SR), int(post * SR)
    x = 1e-4 * rng.standard_normal(n0 + n1 + n2)
    t = np.arange(n1) / SR
    x[n0:n0 + n1] += 0.5 * np.sin(2 * np.pi * 440.0 * t)
    return x.astype(np.float32), n0, n0 + n1


def numpy_log_energy(x, frame_length=400, shift=160):
    """Raw log energy of snip-edges frames: int16 scale, DC removed, before pre-emphasis and window."""
    w = x.astype(np.float64) * 32768.0
    T = 1 + (w.size - frame_length) // shift
    fr = np.stack([w[i * shift:i * shift + frame_length] for i in range(T)])
    fr = fr - fr.mean(axis=1, keepdims=True)
    return np.log(np.maximum((fr ** 2).sum(axis=1), np.finfo(np.float32).eps))


@pytest.mark.parametrize("name,extra", [("fbank40", {}), ("mfcc30", {}), ("fbank64", {"snip_edges": False}),
                                        ("mfcc30", {"snip_edges": False})])
def test_mask_aligns_with_feature_frames(name, extra):
    ext = features.build(name, dither=0.0, **extra)
    x, start, end = silence_tone_silence()
    energy = vad.frame_log_energy(x, SR, ext)
    feats = ext(x, SR)
    assert energy.shape == (feats.shape[0],) == (ext.num_frames(x.size),)
    if ext.config["snip_edges"]:
        np.testing.assert_allclose(energy, numpy_log_energy(x), rtol=1e-4, atol=1e-3)
    mask = vad.energy_vad(energy)
    shift, length = ext.frame_shift_samples, ext.frame_length_samples
    offset = 0 if ext.config["snip_edges"] else shift // 2 - length // 2  # first sample of frame 0
    first = offset + np.arange(mask.size) * shift
    overlaps = (first + length > start) & (first < end)  # frames holding some of the tone
    # voiced = the tone's frames and the frames_context (2) frames either side of them
    near = np.convolve(overlaps.astype(int), np.ones(5, dtype=int), mode="same") > 0
    np.testing.assert_array_equal(mask, near)
    kept = vad.apply_energy_vad(x, SR, ext)
    np.testing.assert_array_equal(kept, feats[mask])  # deltas / CMVN over all frames, then the selection


def test_energy_matches_kaldi_native_fbank():
    knf = pytest.importorskip("kaldi_native_fbank")
    x, _, _ = silence_tone_silence(tone=0.3)
    for snip in (True, False):
        o = knf.FbankOptions()
        o.frame_opts.dither = 0.0
        o.frame_opts.samp_freq = SR
        o.frame_opts.snip_edges = snip
        o.mel_opts.num_bins = 40
        o.use_energy = True
        comp = knf.OnlineFbank(o)
        comp.accept_waveform(SR, (x * 32768.0).tolist())
        comp.input_finished()
        ref = np.array([comp.get_frame(i)[0] for i in range(comp.num_frames_ready)])
        ours = vad.frame_log_energy(x, SR, features.build("fbank40", dither=0.0, snip_edges=snip))
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=2e-3)


def test_dithered_energy_is_that_of_the_features():
    ext = features.build("mfcc30")  # dither 1.0; column 0 of the base features is the log energy
    x, _, _ = silence_tone_silence(tone=0.3)
    base = ext.compute_base(ext.prepare(x, SR), seed=7)
    np.testing.assert_array_equal(vad.frame_log_energy(x, SR, ext, seed=7), base[:, 0])
    feats, mask = vad.compute_with_vad(ext, x, SR, vad.vad_options("energy"), seed=7)
    np.testing.assert_array_equal(feats, ext(x, SR, seed=7))


def test_vad_options():
    assert vad.vad_options(None) is None and vad.vad_options("none") is None
    assert vad.vad_options("energy") == {"method": "energy", **vad.VAD_DEFAULTS}
    assert vad.vad_options("energy", energy_threshold="5")["energy_threshold"] == 5.0
    for bad in [dict(method="webrtc"), dict(method="energy", threshold=1), dict(method="none", frames_context=1),
                dict(method="energy", proportion_threshold=0.0)]:
        with pytest.raises(ValueError):
            vad.vad_options(**bad)


# --------------------------------------------------------------------------------------------
# stage 1 with --vad energy
# --------------------------------------------------------------------------------------------

def make_data_dir(root: Path):
    data = root / "data" / "dev"
    data.mkdir(parents=True)
    lines = []
    for i, utt in enumerate(["spkA-u1", "spkB-u2"]):
        x, _, _ = silence_tone_silence(pre=0.4 + 0.1 * i, tone=0.6, post=0.3, seed=i)
        path = root / "wav" / f"{utt}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, x, SR, subtype="PCM_16")
        lines.append(f"{utt} {path}\n")
    (data / "wav.scp").write_text("".join(lines))
    (data / "utt2spk").write_text("spkA-u1 spkA\nspkB-u2 spkB\n")
    return data


def num_frames(out):
    return {u: int(n) for u, n in (line.split() for line in (out / "utt2num_frames").read_text().splitlines())}


def cli(data, out, *extra):
    return mf.main(["--data", str(data), "--feat-config", "fbank40", "--out", str(out), *extra])


def test_make_features_vad(tmp_path):
    kaldiio = pytest.importorskip("kaldiio")
    data = make_data_dir(tmp_path)
    plain, voiced = tmp_path / "plain", tmp_path / "voiced"
    assert cli(data, plain, "dither=0") == 0
    assert cli(data, voiced, "dither=0", "--vad", "energy", "--nj", "2") == 0
    n_plain, n_voiced = num_frames(plain), num_frames(voiced)
    assert n_plain.keys() == n_voiced.keys()
    for utt in n_plain:
        assert n_voiced[utt] < 0.8 * n_plain[utt]
    all_feats = kaldiio.load_scp(str(plain / "feats.scp"))
    kept = kaldiio.load_scp(str(voiced / "feats.scp"))
    ext = features.build("fbank40", dither=0.0)
    for utt in n_plain:
        x, _ = sf.read(data.parent.parent / "wav" / f"{utt}.wav", dtype="float32")
        mask = vad.energy_vad(vad.frame_log_energy(x, SR, ext))
        np.testing.assert_array_equal(kept[utt], all_feats[utt][mask])
    # markers and feat_conf.yaml record the VAD; without it, nothing changes
    fp_plain = json.loads((plain / ".done").read_text())["fingerprint"]
    fp_voiced = json.loads((voiced / ".done").read_text())["fingerprint"]
    assert "vad" not in fp_plain and fp_voiced["vad"] == {"method": "energy", **vad.VAD_DEFAULTS}
    assert fp_plain["options"] == fp_voiced["options"]
    conf = yaml.safe_load((voiced / "feat_conf.yaml").read_text())
    assert conf.pop("vad") == fp_voiced["vad"]
    assert features.resolve_config(conf) == ext.config
    assert "vad" not in yaml.safe_load((plain / "feat_conf.yaml").read_text())
    info = json.loads((voiced / "data" / ".done.1").read_text())["info"]
    assert info["frames_before_vad"] == n_plain["spkA-u1"] and info["frames"] == n_voiced["spkA-u1"]
    # --is-done: the VAD and its options are part of "complete"
    assert cli(data, voiced, "dither=0", "--vad", "energy", "--is-done") == 0
    assert cli(data, plain, "dither=0", "--vad", "energy", "--is-done") == 3
    assert cli(data, voiced, "dither=0", "--is-done") == 3
    assert cli(data, voiced, "--vad", "energy", "--is-done", "dither=0", "vad_energy_threshold=4") == 3
    # an option of the VAD changed: recomputed, with another fingerprint
    assert cli(data, voiced, "--vad", "energy", "--nj", "2", "dither=0", "vad_proportion_threshold=0.9") == 0
    fp2 = json.loads((voiced / ".done").read_text())["fingerprint"]
    assert fp2["vad"]["proportion_threshold"] == 0.9
    assert sum(num_frames(voiced).values()) <= sum(n_voiced.values())
    # VAD options without --vad energy, or unknown ones, are errors
    assert cli(data, tmp_path / "x", "--check", "vad_energy_threshold=4") == 1
    assert cli(data, tmp_path / "x", "--vad", "energy", "--check", "vad_bogus=4") == 1


def test_make_features_sh_vad(tmp_path):
    repo = Path(__file__).resolve().parent.parent
    data = make_data_dir(tmp_path)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(repo))
    cmd = [str(repo / "steps" / "make_features.sh"), "--nj", "1", "--vad", "energy", "fbank40", str(data), str(out),
           "dither=0"]
    r = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "with energy VAD" in r.stdout
    assert json.loads((out / ".done").read_text())["fingerprint"]["vad"]["method"] == "energy"
    r = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "skipping" in r.stdout
    bad = cmd[:3] + ["webrtc"] + cmd[4:]
    assert subprocess.run(bad, cwd=repo, env=env, capture_output=True, text=True, timeout=60).returncode != 0
