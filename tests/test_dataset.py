"""Crop rules (pysv.data.crop_windows) and the training datasets (pysv.data.dataset) on tiny generated data."""
from __future__ import annotations

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch

from pysv.data.crop_windows import (crop_indices, crop_or_wrap, even_crops, frames_to_samples, gather_crops,
                             random_crop, sliding_crops)
from pysv.data.dataset import FeatureCropDataset, SpeakerIndex, WaveformCropDataset, collate
from pysv.utils.io import DataError

torch.set_num_threads(2)

DIM = 5
# speaker -> list of utterance lengths (frames); speakers deliberately not in sorted order of creation
SPEAKERS = {"spkB": [60, 150, 40], "spkA": [120, 90], "spkC": [200, 70, 30]}


def _utt_value(uid: int, t: np.ndarray) -> np.ndarray:
    """Feature row t of utterance number uid: each row says which utterance/frame it is."""
    return (1000.0 * uid + t)[:, None] + np.zeros((1, DIM))


def make_feat_dir(root, dtype=np.float32, compress_one=False):
    d = root / "train_fbank"
    d.mkdir()
    lines, uid, meta = [], 0, {}
    with kaldiio.WriteHelper(f"ark,scp:{d}/feats.1.ark,{d}/feats.scp") as w:
        for spk, lens in SPEAKERS.items():
            for j, n in enumerate(lens):
                utt = f"{spk}-u{j}"
                mat = _utt_value(uid, np.arange(n)).astype(dtype)
                w(utt, mat)
                meta[utt] = (uid, n)
                lines.append(f"{utt} {spk}\n")
                uid += 1
    if compress_one:  # one utterance in a separate compressed ark -> kaldiio fallback path
        utt = "spkA-u9"
        mat = _utt_value(uid, np.arange(80)).astype(np.float32)
        with kaldiio.WriteHelper(f"ark,scp:{d}/feats.2.ark,{d}/feats2.scp", compression_method=2) as w:
            w(utt, mat)
        with open(d / "feats.scp", "a") as f:
            f.write(open(d / "feats2.scp").read())
        meta[utt] = (uid, 80)
        lines.append(f"{utt} spkA\n")
    (d / "utt2spk").write_text("".join(sorted(lines)))
    (d / "utt2num_frames").write_text("".join(f"{u} {n}\n" for u, (_, n) in sorted(meta.items())))
    return d, meta


def make_wav_dir(root, sr=16000):
    d = root / "train"
    d.mkdir()
    (d / "wav").mkdir()
    rng = np.random.default_rng(0)
    wav, u2s, audio = [], [], {}
    for spk, lens in SPEAKERS.items():
        for j, n in enumerate(lens):
            utt = f"{spk}-u{j}"
            x = (rng.uniform(-0.5, 0.5, size=n * 40)).astype(np.float32)
            path = d / "wav" / f"{utt}.flac"
            sf.write(path, x, sr, subtype="PCM_16")
            audio[utt] = sf.read(path, dtype="float32")[0]
            wav.append(f"{utt} {path}\n")
            u2s.append(f"{utt} {spk}\n")
    (d / "wav.scp").write_text("".join(sorted(wav)))
    (d / "utt2spk").write_text("".join(sorted(u2s)))
    return d, audio


# ---------------------------------------------------------------------------------------------- crops
def test_random_crop_range_and_short_rule():
    rng = np.random.default_rng(0)
    starts = np.array([random_crop(100, 30, rng) for _ in range(4000)])
    assert starts.min() == 0 and starts.max() == 70  # inclusive range [0, L - crop]
    assert len(np.unique(starts)) == 71
    assert random_crop(30, 30, rng) == 0 and random_crop(10, 30, rng) == 0


def test_crop_or_wrap_repeats_short_utterances():
    x = np.arange(3)
    np.testing.assert_array_equal(crop_or_wrap(x, 0, 7), [0, 1, 2, 0, 1, 2, 0])
    m = np.arange(8).reshape(4, 2)
    np.testing.assert_array_equal(crop_or_wrap(m, 0, 6)[:, 0], [0, 2, 4, 6, 0, 2])
    np.testing.assert_array_equal(crop_or_wrap(np.arange(10), 3, 4), [3, 4, 5, 6])  # inside: a slice
    t = torch.arange(3.0)
    assert crop_or_wrap(t, 0, 5).tolist() == [0, 1, 2, 0, 1]
    np.testing.assert_array_equal(crop_indices(3, [0, 1], 4), [[0, 1, 2, 0], [1, 2, 0, 1]])


def test_even_crops_cover_utterance():
    starts = even_crops(1000, 200, n=10)
    # hand-computed: trunc(linspace(0, 800, 10))
    np.testing.assert_array_equal(starts, [0, 88, 177, 266, 355, 444, 533, 622, 711, 800])
    covered = np.zeros(1000, bool)
    for s in starts:
        covered[s:s + 200] = True
    assert covered.all()
    np.testing.assert_array_equal(even_crops(150, 200, n=10), np.zeros(10))
    crops = gather_crops(np.arange(150), even_crops(150, 200, 3), 200)
    assert crops.shape == (3, 200) and crops[0, 150] == 0  # wrapped


def test_sliding_crops_overlap_and_tail():
    starts = sliding_crops(1000, 200, overlap=0.2)  # hop = 160
    np.testing.assert_array_equal(starts, [0, 160, 320, 480, 640, 800])
    assert starts[-1] + 200 == 1000
    assert np.all(np.diff(starts) <= 160)  # >= 20 % overlap everywhere
    np.testing.assert_array_equal(sliding_crops(840, 200, 0.2), [0, 160, 320, 480, 640])  # no duplicate
    np.testing.assert_array_equal(sliding_crops(1001, 200, 0.2), [0, 160, 320, 480, 640, 800, 801])
    np.testing.assert_array_equal(sliding_crops(100, 200, 0.2), [0])
    w = np.arange(59049 * 3, dtype=np.float32)
    crops = gather_crops(w, sliding_crops(len(w), 59049), 59049)
    assert crops.shape[1] == 59049 and crops[-1, -1] == w[-1]
    with pytest.raises(ValueError):
        sliding_crops(100, 10, overlap=1.0)


def test_frames_to_samples():
    assert frames_to_samples(200) == 200 * 160 + 240  # voxceleb_trainer max_audio
    assert frames_to_samples(200, snip_edges=False) == 32000


# ---------------------------------------------------------------------------------------------- index
def test_speaker_index_labels_sorted(tmp_path):
    d, meta = make_feat_dir(tmp_path)
    idx = SpeakerIndex(d)
    assert idx.source == "feats"
    assert idx.spk2label == {"spkA": 0, "spkB": 1, "spkC": 2}
    assert idx.num_classes == 3 and len(idx) == 8
    assert idx.utts == sorted(meta)
    assert idx.labels == [idx.spk2label[u.split("-")[0]] for u in idx.utts]
    assert list(idx.num_frames) == [meta[u][1] for u in idx.utts]
    assert np.bincount(idx.labels).tolist() == [2, 3, 3]
    with pytest.raises(DataError, match="spkC"):
        SpeakerIndex(d, spk2label={"spkA": 0, "spkB": 1})


def test_missing_feature_entry_names_utterance(tmp_path):
    d, _ = make_feat_dir(tmp_path)
    with open(d / "utt2spk", "a") as f:
        f.write("spkZ-lost spkZ\n")
    with pytest.raises(DataError, match="spkZ-lost.*feats.scp"):
        SpeakerIndex(d)


def test_missing_ark_names_utterance(tmp_path):
    d, _ = make_feat_dir(tmp_path)
    (d / "feats.1.ark").rename(d / "moved.ark")
    with pytest.raises(DataError, match=r"feats\.1\.ark of utterance 'spkA-u0'"):
        FeatureCropDataset(d, 50)
    ds = FeatureCropDataset(d, 50, check_files=False)  # at read time too
    with pytest.raises(DataError, match="spkA-u0"):
        ds[0]


def test_missing_wav_names_utterance(tmp_path):
    d, _ = make_wav_dir(tmp_path)
    (d / "wav" / "spkC-u1.flac").unlink()
    with pytest.raises(DataError, match="spkC-u1"):
        WaveformCropDataset(d, 1000)


# ---------------------------------------------------------------------------------------------- features
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_feature_crops_shapes_labels_values(tmp_path, dtype):
    d, meta = make_feat_dir(tmp_path, dtype=dtype, compress_one=dtype == np.float32)
    ds = FeatureCropDataset(d, 100, seed=3)
    for i, utt in enumerate(ds.index.utts):
        x, lab = ds[i]
        assert x.shape == (100, DIM) and x.dtype == torch.float32
        assert lab == ds.index.spk2label[utt.split("-")[0]]
        uid, n = meta[utt]
        frames = x[:, 0].numpy() - 1000.0 * uid
        if utt == "spkA-u9":  # compressed: lossy, only check it is this utterance's ramp
            assert np.all(np.abs(frames[frames < 79] - np.round(frames[frames < 79])) < 1.0)
            continue
        if n >= 100:  # a contiguous window at the start drawn from the item's generator
            start = random_crop(n, 100, ds.rng(i))
            np.testing.assert_array_equal(frames, np.arange(start, start + 100))
        else:  # wrap-repeat from frame 0
            np.testing.assert_array_equal(frames, np.arange(100) % n)
        ref = kaldiio.load_mat(ds.index.entries[i])
        np.testing.assert_array_equal(x.numpy(), crop_or_wrap(ref, frames[0], 100).astype(np.float32))


def test_feature_determinism_epochs_and_duplicates(tmp_path):
    d, _ = make_feat_dir(tmp_path)
    a = FeatureCropDataset(d, 30, seed=7)
    b = FeatureCropDataset(d, 30, seed=7)
    assert torch.equal(a[3][0], b[3][0])
    a.set_epoch(1)
    assert not torch.equal(a[3][0], b[3][0])
    b.set_epoch(1)
    assert torch.equal(a[3][0], b[3][0])
    items = a.__getitems__([3, 3, 2])
    assert torch.equal(items[0][0], a[3][0])
    assert not torch.equal(items[0][0], items[1][0])  # repeated index in a batch: another crop
    assert not torch.equal(FeatureCropDataset(d, 30, seed=8)[3][0], b[3][0])


def _run_loader(ds, batches, num_workers, epochs=(0, 1), persistent=False):
    loader = torch.utils.data.DataLoader(ds, batch_sampler=batches, num_workers=num_workers,
                                         collate_fn=collate, persistent_workers=persistent)
    out = []
    for e in epochs:
        ds.set_epoch(e)
        out.append([(x.clone(), y.clone()) for x, y in loader])
    return out


def test_feature_loader_independent_of_num_workers(tmp_path):
    d, _ = make_feat_dir(tmp_path)
    batches = [[0, 3, 5], [1, 1, 7], [2, 4, 6]]
    ref = _run_loader(FeatureCropDataset(d, 40, seed=11), batches, 0)
    got = _run_loader(FeatureCropDataset(d, 40, seed=11), batches, 2, persistent=True)
    assert ref[0][0][0].shape == (3, 40, DIM) and ref[0][0][1].dtype == torch.int64
    for e in range(2):
        for (x0, y0), (x1, y1) in zip(ref[e], got[e]):
            assert torch.equal(x0, x1) and torch.equal(y0, y1)
    assert not torch.equal(ref[0][0][0], ref[1][0][0])  # set_epoch reached the persistent workers


def test_spec_augment_in_feature_dataset(tmp_path):
    from pysv.data.spec_augment import SpecAugment

    d, _ = make_feat_dir(tmp_path)
    sa = SpecAugment(time_masks=1, time_width=20, freq_masks=0, freq_width=0, mask_value=-1.0)
    ds = FeatureCropDataset(d, 100, spec_augment=sa, seed=0)
    masked = sum(int((ds[i][0][:, 0] == -1).sum()) for i in range(len(ds)))
    assert 0 < masked <= 20 * len(ds)
    assert torch.equal(ds[2][0], FeatureCropDataset(d, 100, spec_augment=sa, seed=0)[2][0])


# ---------------------------------------------------------------------------------------------- waveforms
def test_waveform_crops_partial_reads_and_wrap(tmp_path):
    d, audio = make_wav_dir(tmp_path)
    crop = 3000
    ds = WaveformCropDataset(d, crop, seed=5)
    for i, utt in enumerate(ds.index.utts):
        x, lab = ds[i]
        assert x.shape == (crop,) and x.dtype == torch.float32
        assert lab == ds.index.spk2label[utt.split("-")[0]]
        ref = audio[utt]
        start = random_crop(len(ref), crop, ds.rng(i))
        np.testing.assert_array_equal(x.numpy(), crop_or_wrap(ref, start, crop))
    xb, yb = collate([ds[0], ds[1]])
    assert xb.shape == (2, crop) and yb.tolist() == [ds.labels[0], ds.labels[1]]


def test_waveform_augment_and_features_pipeline(tmp_path):
    d, _ = make_wav_dir(tmp_path)
    seen = []

    def fake_aug(x, rng, spk=None):
        seen.append(spk)
        return x * 0.5

    def fake_feats(x, sr):
        assert sr == 16000
        return x.reshape(-1, 10)  # [frames, dim]

    plain = WaveformCropDataset(d, 2000, seed=1)
    ds = WaveformCropDataset(d, 2000, augment=fake_aug, feature_extractor=fake_feats, seed=1)
    x, lab = ds[3]
    assert x.shape == (200, 10)
    assert seen == [ds.index.spks[3]]
    np.testing.assert_allclose(x.numpy().reshape(-1), 0.5 * plain[3][0].numpy())
    batches = [[0, 1], [2, 3], [4, 5, 6, 7]]
    ref = _run_loader(WaveformCropDataset(d, 2000, seed=2), batches, 0, epochs=(0,))
    got = _run_loader(WaveformCropDataset(d, 2000, seed=2), batches, 2, epochs=(0,))
    for (x0, _), (x1, _) in zip(ref[0], got[0]):
        assert torch.equal(x0, x1)


def test_collate_rejects_unequal_lengths():
    with pytest.raises(ValueError, match="equal-length"):
        collate([(torch.zeros(3), 0), (torch.zeros(4), 1)])


def test_on_the_fly_fbank_with_dither_is_reproducible(tmp_path):
    features = pytest.importorskip("pysv.features")
    from pysv.data.crop_windows import frames_to_samples

    d, _ = make_wav_dir(tmp_path)
    fx = features.build("fbank40", dither=1.0)
    crop = frames_to_samples(20)  # exactly 20 frames with snip_edges (Kaldi default)
    ds = WaveformCropDataset(d, crop, feature_extractor=fx, seed=3)
    x, _ = ds[2]
    assert x.shape[0] == fx.num_frames(crop) and x.shape[1] == fx.dim
    batches = [[0, 1, 2], [3, 4, 5, 6, 7]]
    ref = _run_loader(WaveformCropDataset(d, crop, feature_extractor=fx, seed=3), batches, 0, epochs=(0,))
    got = _run_loader(WaveformCropDataset(d, crop, feature_extractor=fx, seed=3), batches, 2, epochs=(0,))
    for (x0, _), (x1, _) in zip(ref[0], got[0]):
        assert torch.equal(x0, x1)
