"""bench/scale.py: the synthetic VoxCeleb-shaped corpus is a valid Kaldi data dir that pysv reads,
and the bench runs end to end at tiny sizes (so the script cannot rot)."""
from __future__ import annotations

import re
from pathlib import Path

import kaldiio
import numpy as np
import pytest


@pytest.fixture(scope="module")
def scale(bench_script):
    return bench_script("scale")


def _table(path: Path):
    rows = [line.split(maxsplit=1) for line in path.read_text().splitlines() if line.strip()]
    return {k: v for k, v in rows}


def test_speaker_counts_voxceleb2_dev(scale):
    counts = scale.speaker_counts(scale.VOX2_UTTS, scale.VOX2_SPKS, np.random.default_rng(0))
    assert counts.sum() == 1_092_009 and counts.size == 5_994
    assert counts.min() >= 20 and counts.max() <= 900
    assert 170 < counts.mean() < 190 and np.median(counts) < counts.mean()  # skewed to the right


def test_make_corpus_is_a_valid_data_dir(scale, tmp_path):
    from pysv.data.dataset import FeatureCropDataset, SpeakerIndex

    info = scale.make_corpus(tmp_path, 2000)
    data, fdir = Path(info["data"]), Path(info["features"])
    assert info["speakers"] == 11  # VoxCeleb2-dev's 182 utterances per speaker
    assert data.name == "vox2_dev_2000" and fdir.name == "vox2_dev_2000_fbank40"

    for d in (data, fdir):
        utt2spk = _table(d / "utt2spk")
        assert len(utt2spk) == 2000 and len(set(utt2spk.values())) == 11
        keys = (d / "utt2spk").read_text().split()[::2]
        assert keys == sorted(keys)  # Kaldi (C locale) order
        for utt, spk in utt2spk.items():
            assert re.fullmatch(r"id\d{5}-[A-Za-z0-9_-]{11}-\d{5}", utt), utt
            assert re.fullmatch(r"id\d{5}", spk) and utt.startswith(spk + "-")
        spk2utt = {s: v.split() for s, v in _table(d / "spk2utt").items()}
        assert sorted(u for v in spk2utt.values() for u in v) == sorted(utt2spk)
        assert all(utt2spk[u] == s for s, v in spk2utt.items() for u in v)
        dur = np.array([float(v) for v in _table(d / "utt2dur").values()])
        assert dur.size == 2000 and dur.min() >= 4.0 and 7.0 < dur.mean() < 8.6

    feats = _table(fdir / "feats.scp")
    frames = {u: int(v) for u, v in _table(fdir / "utt2num_frames").items()}
    assert set(feats) == set(frames) == set(_table(fdir / "utt2spk"))
    arks = {v.rpartition(":")[0] for v in feats.values()}
    assert arks == {str((fdir / "shared.ark").resolve())}  # one small shared ark
    assert (fdir / "shared.ark").stat().st_size < 20e6
    for utt in list(feats)[::97]:
        mat = kaldiio.load_mat(feats[utt])
        assert mat.dtype == np.float32 and mat.shape == (frames[utt], 40)
    assert 600 < np.mean(list(frames.values())) < 900  # ~ the nominal durations at 100 frames/s

    index = SpeakerIndex(fdir)
    assert len(index) == 2000 and index.num_classes == 11
    assert index.num_frames is not None and index.num_frames.min() >= 400
    ds = FeatureCropDataset(fdir, crop_frames=200)
    x, y = ds[123]
    assert tuple(x.shape) == (200, 40) and 0 <= y < 11 and np.isfinite(x.numpy()).all()


def test_bench_runs_end_to_end(scale, tmp_path):
    work, out = tmp_path / "work", tmp_path / "table.md"
    rc = scale.main(["--sizes", "1000,2000", "--workers", "2", "--batches", "2", "--valid-speakers", "3",
                     "--in-process", "--work-dir", str(work), "--out", str(out),
                     "--backend-utts", "1500", "--backend-trials", "3000", "--cohort", "50",
                     "--plda-utts", "1200", "--plda-speakers", "40", "--emb-dim", "16", "--extract-utts", "200"])
    assert rc == 0
    text = out.read_text()
    for step in ("index (build_training_data)", "plan balanced", "plan mp_random", "plan shuffle",
                 "2 workers up, first batch", "training start", "validation", "scaling index",
                 "extraction", "write embeddings", "read embeddings", "AS-norm", "PLDA fit", "scaling PLDA fit"):
        assert f"| {step}" in text, step
    assert "| training start (index + plan balanced + first batch) | 2,000 / 11 spk |" in text
    assert Path(str(out) + ".json").is_file()
    assert work.is_dir() and not any(work.iterdir())  # the generated data is removed (no --keep)


def test_steps_run_in_a_fresh_process(scale, tmp_path):
    info = scale.make_corpus(tmp_path, 1000)
    (tmp_path / "valid_spk").write_text("")
    out = scale.run_child("plan", {"features": info["features"], "valid_spk_file": str(tmp_path / "valid_spk"),
                                   "kind": "shuffle", "batch_size": 32}, timeout=120)
    assert out["batches"] == 1000 // 32 and out["seconds"] >= 0 and out["peak_gib"] > 0
