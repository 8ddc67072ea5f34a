"""Waveform augmentation (MUSAN-style noise/music/babble, RIR reverb) from the sets stage 0 prepares,
SpecAugment, and their config builders."""
from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile as sf
import torch

from pysv.data.corpora.musan import prepare_musan
from pysv.data.corpora.rirs import prepare_rirs
from pysv.data.prepare import AudioOptions
from pysv.data.spec_augment import SpecAugment, build_spec_augment
from pysv.data.waveform_augment import build_augmentor, load_audio_list, mix_at_snr, read_segment, reverberate
from pysv.utils.io import DataError

torch.set_num_threads(2)
SR = 16000


def snr_db(clean, mixed):
    noise = mixed.astype(np.float64) - clean.astype(np.float64)
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise ** 2))


def _write(path, x, sr=SR):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.asarray(x, dtype=np.float32), sr, subtype="FLOAT")
    return path


def prepared_noise(src, data_root):
    """Stage 0 on a folder of noise categories: the recordings manifest training reads."""
    prepare_musan(src, data_root, audio_opts=AudioOptions(progress=False))
    return data_root / "manifests" / "musan_recordings.jsonl.gz"


@pytest.fixture()
def corpus(tmp_path):
    """Stage-0 noise set (noise + music, no speech), RIR set and a 9-speaker training dir."""
    rng = np.random.default_rng(0)
    src = tmp_path / "musan_src"
    _write(src / "noise" / "noise-long.wav", rng.normal(0, 0.1, 20000))
    _write(src / "noise" / "noise-short.wav", rng.normal(0, 0.3, 700))  # shorter than a crop: wrapped
    _write(src / "music" / "music-a.wav", np.sin(np.arange(15000) * 0.05) * 0.2)
    musan = prepared_noise(src, tmp_path / "data")

    t = np.arange(1600)
    h = rng.normal(0, 1, 1600) * np.exp(-t / 200.0) * 0.1
    h[40] = 1.0
    _write(tmp_path / "rirs_src" / "room1.wav", h)
    prepare_rirs(tmp_path / "rirs_src", tmp_path / "data", audio_opts=AudioOptions(progress=False))
    rirs = tmp_path / "data" / "manifests" / "rirs_recordings.jsonl.gz"

    train = tmp_path / "train"
    wav, u2s = [], []
    for s in range(9):
        for j in range(2):
            utt = f"spk{s}-u{j}"
            p = _write(train / "wav" / f"{utt}.wav", rng.normal(0, 0.1 * (s + 1), 5000))
            wav.append(f"{utt} {p}\n")
            u2s.append(f"{utt} spk{s}\n")
    (train / "wav.scp").write_text("".join(sorted(wav)))
    (train / "utt2spk").write_text("".join(sorted(u2s)))
    return {"musan": musan, "rirs": rirs, "train": train}


def clean_crop(n=4000, seed=1):
    return (np.random.default_rng(seed).normal(0, 0.05, n)).astype(np.float32)


# ---------------------------------------------------------------------------------------------- helpers
def test_mix_at_snr_is_exact():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 0.3, 8000).astype(np.float32)
    n = rng.normal(0, 2.0, 8000).astype(np.float32)
    for snr in (-5.0, 0.0, 7.5, 20.0):
        assert snr_db(x, mix_at_snr(x, n, snr)) == pytest.approx(snr, abs=1e-3)
    np.testing.assert_array_equal(mix_at_snr(x, np.zeros_like(x), 5.0), x)


def test_read_segment_contiguous_and_wrap(tmp_path):
    ramp = (np.arange(3000) / 4096.0).astype(np.float32)
    p = _write(tmp_path / "ramp.wav", ramp)
    seg = read_segment(str(p), 1000, np.random.default_rng(0))
    start = int(round(seg[0] * 4096))
    np.testing.assert_array_equal(seg, ramp[start:start + 1000])
    seg = read_segment(str(p), 7000, np.random.default_rng(0))
    np.testing.assert_array_equal(seg, np.resize(ramp, 7000))


def test_reverberate_hand_computed_and_aligned():
    x = np.random.default_rng(0).normal(size=300).astype(np.float32)
    h = np.array([0.0, 0.0, 1.0, 0.5])  # direct path at index 2
    y = reverberate(x, h)
    expect = (x + 0.5 * np.concatenate([[0.0], x[:-1]])) / np.sqrt(1.25)
    assert y.shape == x.shape
    np.testing.assert_allclose(y, expect, atol=1e-5)
    imp = np.zeros(2000, np.float32)
    imp[500] = 1.0
    t = np.arange(800)
    rir = np.random.default_rng(1).normal(size=800) * np.exp(-t / 100) * 0.1
    rir[37] = 1.0
    out = reverberate(imp, rir)
    assert out.shape == (2000,) and int(np.argmax(np.abs(out))) == 500
    assert out[500] == pytest.approx(1.0 / np.sqrt(np.sum(rir ** 2)), rel=1e-5)
    # RIR longer than the signal: same as the direct full convolution cut at the peak
    full = np.convolve(x.astype(np.float64), rir / np.sqrt(np.sum(rir ** 2)))[37:37 + 300]
    np.testing.assert_allclose(reverberate(x, rir), full, atol=1e-5)


# ---------------------------------------------------------------------------------------------- augmentor
def test_noise_and_music_at_requested_snr(corpus):
    aug = build_augmentor({"musan": str(corpus["musan"]), "prob": 1.0, "types": ["noise", "music"]})
    x = clean_crop()
    seen = set()
    for seed in range(40):
        y, info = aug(x, np.random.default_rng(seed), return_info=True)
        assert y.shape == x.shape and y.dtype == np.float32
        lo, hi = (0, 15) if info["type"] == "noise" else (5, 15)
        (snr,) = info["snrs"]
        assert lo <= snr <= hi
        assert snr_db(x, y) == pytest.approx(snr, abs=0.01)
        seen.add((info["type"], info["files"][0].split("/")[-1]))
    assert {t for t, _ in seen} == {"noise", "music"}
    assert ("noise", "noise-short.wav") in seen  # short noise file (wrapped) used too


def test_reverb_type_keeps_length_and_alignment(corpus):
    aug = build_augmentor({"rirs": str(corpus["rirs"]), "prob": 1.0})
    assert aug.types == ["reverb"]
    imp = np.zeros(4000, np.float32)
    imp[1000] = 1.0
    y, info = aug(imp, np.random.default_rng(0), return_info=True)
    assert info["type"] == "reverb" and y.shape == imp.shape
    assert int(np.argmax(np.abs(y))) == 1000


def test_babble_from_other_training_speakers(corpus):
    aug = build_augmentor({"musan": str(corpus["musan"]), "prob": 1.0, "types": ["babble"]},
                          train_wav_scp=corpus["train"] / "wav.scp")
    assert aug.babble_from == "train"
    x = clean_crop()
    counts = set()
    for seed in range(60):
        target = f"spk{seed % 9}"
        y, info = aug(x, np.random.default_rng(seed), spk=target, return_info=True)
        spks = info["speakers"]
        assert target not in spks
        assert len(set(spks)) == len(spks)  # distinct talkers
        assert all(f"/{s}-u" in f for s, f in zip(spks, info["files"]))
        assert all(13 <= s <= 20 for s in info["snrs"])
        counts.add(len(spks))
        assert not np.array_equal(y, x)
    assert counts <= set(range(3, 8)) and {3, 7} <= counts


def test_single_talker_babble_snr(corpus):
    aug = build_augmentor({"musan": str(corpus["musan"]), "prob": 1.0, "types": ["babble"],
                           "babble_count": [1, 1]}, train_wav_scp=corpus["train"])
    x = clean_crop()
    y, info = aug(x, np.random.default_rng(5), spk="spk0", return_info=True)
    assert snr_db(x, y) == pytest.approx(info["snrs"][0], abs=0.01)


def test_babble_prefers_musan_speech(tmp_path, corpus):
    rng = np.random.default_rng(2)
    src = tmp_path / "musan"  # the MUSAN layout: <category>/<source>/<file>
    for rel in ("noise/free-sound/noise-free-sound-0001", "music/fma/music-fma-0001",
                "speech/librivox/speech-librivox-0001", "speech/librivox/speech-librivox-0002",
                "speech/us-gov/speech-us-gov-0003", "speech/us-gov/speech-us-gov-0004"):
        _write(src / f"{rel}.wav", rng.normal(0, 0.1, 6000))
    manifest = prepared_noise(src, tmp_path / "d")
    cats = {a.id: a.category for a in load_audio_list(manifest)}
    assert cats["noise-free-sound-0001"] == "noise" and cats["speech-us-gov-0004"] == "speech"
    aug = build_augmentor({"musan": str(manifest), "prob": 1.0, "types": ["babble"]},
                          train_wav_scp=corpus["train"] / "wav.scp")
    assert aug.babble_from == "musan"
    y, info = aug(clean_crop(), np.random.default_rng(0), spk="spk1", return_info=True)
    assert 3 <= len(info["files"]) <= 4 and all("speech-" in f for f in info["files"])


def test_choice_probabilities_and_determinism(corpus):
    aug = build_augmentor({"musan": str(corpus["musan"]), "rirs": str(corpus["rirs"]), "prob": 0.6},
                          train_wav_scp=corpus["train"])
    assert aug.types == ["noise", "music", "babble", "reverb"]
    rng = np.random.default_rng(0)
    kinds = [aug.choose(rng) for _ in range(4000)]
    assert kinds.count("none") / 4000 == pytest.approx(0.4, abs=0.03)
    for t in aug.types:
        assert kinds.count(t) / 4000 == pytest.approx(0.15, abs=0.03)
    x = clean_crop()
    for seed in range(6):
        y1, i1 = aug(x, np.random.default_rng(seed), spk="spk2", return_info=True)
        y2, i2 = aug(x, np.random.default_rng(seed), spk="spk2", return_info=True)
        np.testing.assert_array_equal(y1, y2)
        assert i1 == i2
    w = build_augmentor({"musan": str(corpus["musan"]), "prob": 1.0, "types": ["noise", "music"],
                         "weights": {"music": 1.0}})
    assert {w.choose(rng) for _ in range(50)} == {"music"}


# ---------------------------------------------------------------------------------------------- config
def test_augment_config_errors(corpus, tmp_path):
    assert build_augmentor(None) is None
    assert build_augmentor({"musan": str(corpus["musan"]), "enabled": False}) is None
    assert build_augmentor({"musan": str(corpus["musan"]), "prob": 0}) is None
    with pytest.raises(ValueError, match="'snr'"):
        build_augmentor({"musan": str(corpus["musan"]), "snr": 5})
    with pytest.raises(ValueError, match="'echo'"):
        build_augmentor({"musan": str(corpus["musan"]), "types": ["noise", "echo"]})
    with pytest.raises(DataError, match="babble"):  # no speech category, no training wav.scp
        build_augmentor({"musan": str(corpus["musan"]), "types": ["babble"]})
    with pytest.raises(DataError, match="reverb"):
        build_augmentor({"musan": str(corpus["musan"]), "types": ["reverb"]})
    # only the recordings manifests of stage 0: anything else fails naming the file
    wav_scp = corpus["musan"].parents[1] / "musan" / "wav.scp"
    cuts = corpus["musan"].with_name("musan_cuts.jsonl.gz")
    for wrong in (wav_scp, wav_scp.parent, cuts, tmp_path / "missing_recordings.jsonl.gz"):
        with pytest.raises(DataError, match=re.escape(str(wrong))):
            build_augmentor({"musan": str(wrong)})
    broken = tmp_path / "broken_recordings.jsonl.gz"
    broken.write_text("not gzip")
    with pytest.raises(DataError, match=re.escape(str(broken))):
        build_augmentor({"musan": str(broken)})
    # a category training does not know
    src = tmp_path / "odd"
    _write(src / "traffic" / "t1.wav", np.random.default_rng(0).normal(0, 0.1, 9000))
    with pytest.raises(DataError, match="'traffic'"):
        build_augmentor({"musan": str(prepared_noise(src, tmp_path / "odd_data"))})


def test_spec_augment_config():
    assert build_spec_augment(None) is None
    assert build_spec_augment({"time_masks": 2, "enabled": False}) is None
    sa = build_spec_augment({"time_masks": 2, "time_width": 10, "freq_masks": 2, "freq_width": 8})
    assert (sa.time_masks, sa.time_width, sa.freq_masks, sa.freq_width) == (2, 10, 2, 8)
    with pytest.raises(ValueError, match="'time_warp'"):
        build_spec_augment({"time_masks": 2, "time_warp": 5})


# ---------------------------------------------------------------------------------------------- SpecAugment
def _runs(mask_row):
    """Lengths of the runs of True in a 1-D boolean array."""
    m = np.concatenate([[False], mask_row, [False]]).astype(np.int8)
    d = np.diff(m)
    return np.flatnonzero(d == -1) - np.flatnonzero(d == 1)


def test_spec_augment_mask_widths_and_counts():
    rng = np.random.default_rng(0)
    one = SpecAugment(time_masks=1, time_width=10, freq_masks=1, freq_width=8)
    tm, fm = one.make_masks(200, 40, rng, batch=3000)
    t_widths = tm.sum(1)
    f_widths = fm.sum(1)
    assert set(t_widths.tolist()) == set(range(0, 11))  # width ~ U{0..10}, all values reached
    assert set(f_widths.tolist()) == set(range(0, 9))
    assert all(len(_runs(r)) <= 1 for r in tm[:200])
    assert np.mean(t_widths) == pytest.approx(5.0, abs=0.3)
    assert tm[:, 0].any() and tm[:, -1].any()  # masks can touch both ends
    three = SpecAugment(time_masks=3, time_width=10, freq_masks=2, freq_width=8)
    tm, fm = three.make_masks(200, 40, rng, batch=2000)
    assert tm.sum(1).max() <= 30 and fm.sum(1).max() <= 16
    n_runs = [len(_runs(r)) for r in tm]
    assert max(n_runs) == 3 and min(n_runs) >= 0
    assert max(len(_runs(r)) for r in fm) == 2


def test_spec_augment_values_torch_numpy_batch():
    x = torch.arange(50 * 6, dtype=torch.float32).reshape(50, 6) + 1.0
    sa = SpecAugment(time_masks=2, time_width=10, freq_masks=2, freq_width=3, mask_value=0.0)
    y = sa(x, np.random.default_rng(4))
    tm, fm = sa.make_masks(50, 6, np.random.default_rng(4))
    mask = torch.from_numpy(tm[0][:, None] | fm[0][None, :])
    assert torch.all(y[mask] == 0) and torch.equal(y[~mask], x[~mask])
    assert mask.any()
    assert torch.equal(x[0, 0], torch.tensor(1.0))  # input not modified
    mean_sa = SpecAugment(time_masks=1, time_width=50, freq_masks=0, freq_width=0, mask_value="mean")
    y = mean_sa(x.numpy(), np.random.default_rng(1))
    tm, _ = mean_sa.make_masks(50, 6, np.random.default_rng(1))
    assert isinstance(y, np.ndarray)
    np.testing.assert_allclose(y[tm[0]], float(x.mean()))
    xb = torch.ones(4, 50, 6)
    yb = sa(xb, np.random.default_rng(0))
    masked = (yb == 0).reshape(4, -1).sum(1)
    assert yb.shape == xb.shape and len(set(masked.tolist())) > 1  # independent masks per item


def test_category_from_sibling_supervisions(tmp_path):
    """Stage 0's layout: ids without a category prefix, category in the supervisions' custom field."""
    lhotse = pytest.importorskip("lhotse")
    recs, sups, cuts = [], [], []
    for rid, cat in (("dishes", "noise"), ("brahms", "music")):
        p = _write(tmp_path / "audio" / f"{rid}.wav", np.ones(100) * 0.1)
        r = lhotse.Recording.from_file(p, recording_id=rid)
        s = lhotse.SupervisionSegment(id=rid, recording_id=rid, start=0, duration=r.duration,
                                      custom={"category": cat})
        recs.append(r)
        sups.append(s)
        cuts.append(lhotse.MonoCut(id=rid, start=0, duration=r.duration, channel=0, recording=r,
                                   supervisions=[s], custom={"category": cat}))
    man = tmp_path / "manifests"
    man.mkdir()
    lhotse.RecordingSet.from_recordings(recs).to_file(man / "musan_recordings.jsonl.gz")
    lhotse.CutSet.from_cuts(cuts).to_file(man / "musan_cuts.jsonl.gz")
    with pytest.raises(DataError, match="dishes"):  # no supervisions yet: category unknown
        build_augmentor({"musan": str(man / "musan_recordings.jsonl.gz")})
    lhotse.SupervisionSet.from_segments(sups).to_file(man / "musan_supervisions.jsonl.gz")
    got = {a.id: (a.category, a.path) for a in load_audio_list(man / "musan_recordings.jsonl.gz")}
    assert got == {"dishes": ("noise", str(tmp_path / "audio" / "dishes.wav")),
                   "brahms": ("music", str(tmp_path / "audio" / "brahms.wav"))}
    with pytest.raises(DataError, match="musan_cuts.jsonl.gz"):  # a cuts manifest is not the list
        load_audio_list(man / "musan_cuts.jsonl.gz")


def test_batched_device_augmentation_equals_the_worker_path(corpus):
    # one plan per crop (the same random draws and reads as aug(x, rng)); apply (numpy, per item)
    # and apply_batch (torch, the whole batch at once) give the same waveforms for every kind
    aug = build_augmentor({"musan": str(corpus["musan"]), "rirs": str(corpus["rirs"]), "prob": 1.0,
                           "babble_wav_scp": str(corpus["train"] / "wav.scp")})
    crops, plans = [], []
    while len({p.kind for p in plans}) < 4 or len(plans) < 12:
        x = clean_crop(4000, seed=len(crops))
        # the plan consumes the rng exactly as the per-item call does
        state = np.random.default_rng(len(crops) + 100)
        plans.append(aug.plan(len(x), state, spk="spk0"))
        y_call = aug(x, np.random.default_rng(len(crops) + 100), spk="spk0")
        np.testing.assert_array_equal(aug.apply(x, plans[-1]), y_call)
        crops.append(x)
    plans.append(type(plans[0])("none", None, None, None, {"type": "none"}))
    crops.append(clean_crop(4000, seed=99))
    assert {p.kind for p in plans} == {"noise", "music", "babble", "reverb", "none"}
    batch = aug.apply_batch(torch.from_numpy(np.stack(crops)), plans).numpy()
    for row, (x, plan) in enumerate(zip(crops, plans)):
        ref = aug.apply(x, plan)
        np.testing.assert_allclose(batch[row], ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max(), err_msg=plan.kind)
        if plan.kind in ("noise", "music"):
            assert snr_db(x, batch[row]) == pytest.approx(float(plan.snrs[0]), abs=1e-2)
