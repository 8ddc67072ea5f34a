"""Using a trained system: pysv.load / embed / score / verify, the `pysv` command, bundles, calibration.

A tiny system goes through stages 2-5 on the tiny corpus (test-set features with dither off, as the
recipe computes them); the API must give stage 3's embeddings and stage 5's scores for the same audio.
"""
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf

import pysv
from pysv.bin import backend as backend_bin
from pysv.bin import extract as extract_bin
from pysv.bin import make_features
from pysv.bin import score as score_bin
from pysv.bin import train as train_bin
from pysv.bin import calibrate as calibrate_bin
from pysv.calibration import Calibration, cllr, fit_linear_fusion, fit_logistic, min_cllr
from pysv.inference import write_bundle
from pysv.utils.io import DataError, read_scores, read_table, read_trials

REPO = Path(__file__).resolve().parents[1]
SMALL = ["sampler.batch_size=10", "data.crop=100", "data.num_workers=0", "data.valid_speakers=2",
         "train.log_interval=1", "optim.lr=0.05", "model.hparams.embed_dim=32", "train.epochs=1",
         "model.hparams.channels=[8,16,32,64]", "extract.crop=60", "extract.num_crops=3"]


@pytest.fixture(scope="module")
def trained(tiny_recipe, tmp_path_factory):
    """exp/<system> after stages 2-5 (cosine, PLDA, crops) and the test set it was scored on."""
    root = tmp_path_factory.mktemp("inference")
    test = root / "data" / "tiny_test"
    test.mkdir(parents=True)
    for f in ("wav.scp", "utt2spk", "spk2utt", "trials"):
        (test / f).write_text((tiny_recipe["test"] / f).read_text())
    assert make_features.main(["--data", str(test), "--feat-config", "fbank40", "--out",
                               str(root / "data" / "tiny_test_fbank40"), "dither=0"]) in (0, None)
    exp = root / "exp" / "sys"
    assert train_bin.main(["--config", str(REPO / "conf" / "thin_resnet34_angleproto.yaml"), "--exp-dir", str(exp),
                           "--threads", "2", f"data.train={tiny_recipe['train']}", *SMALL]) == 0
    train = tiny_recipe["train"]
    for data, mode in ((train, "full"), (test, "full"), (test, "crops")):
        assert extract_bin.main(["--exp", str(exp), "--data", str(data), "--mode", mode]) == 0
    assert backend_bin.main(["--exp", str(exp), "--train-set", train.name, "--utt2spk", str(train / "utt2spk"),
                             "--lda-dim", "4"]) == 0
    for backend in ("cosine", "plda", "crops", "asnorm"):
        assert score_bin.main(["--exp", str(exp), "--trials", str(test / "trials"), "--test-set", test.name,
                               "--train-set", train.name, "--backend", backend, "--no-plot"]) == 0
    return {"exp": exp, "test": test}


def _recipe_scores(exp: Path, backend: str):
    return {(a, b): s for a, b, s in read_scores(exp / "scores" / f"tiny_test_{backend}")}


def test_embed_equals_stage_3(trained):
    model = pysv.load(trained["exp"])
    wavs = read_table(trained["test"] / "wav.scp")
    emb = trained["exp"] / "embeddings" / "tiny_test"
    stage3 = {k: np.asarray(v) for k, v in kaldiio.load_scp(str(emb / "xvector.scp")).items()}
    crops3 = {k: np.asarray(v) for k, v in kaldiio.load_scp(str(emb / "xvector_crops.scp")).items()}
    utts = sorted(wavs)[:4]
    batch = model.embed([wavs[u] for u in utts])
    assert batch.shape == (4, model.embed_dim) and batch.dtype == np.float32
    for i, u in enumerate(utts):
        np.testing.assert_allclose(batch[i], stage3[u], rtol=1e-4, atol=1e-5)
        # a waveform array gives the file's embedding
        x, sr = sf.read(wavs[u], dtype="float32")
        np.testing.assert_allclose(model.embed(x, sample_rate=sr), stage3[u], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(model.embed(wavs[u], mode="crops"), crops3[u], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", ["cosine", "plda", "crops", "asnorm"])
def test_score_equals_stage_5(trained, backend):
    model = pysv.load(trained["exp"])
    wavs = read_table(trained["test"] / "wav.scp")
    recipe = _recipe_scores(trained["exp"], backend)
    for (a, b), want in list(recipe.items())[:6]:
        assert model.score(wavs[a], wavs[b], backend=backend) == pytest.approx(want, abs=2e-3 * max(1, abs(want)))


def test_wrong_rate_and_channels_are_refused(trained, tmp_path):
    model = pysv.load(trained["exp"])
    x = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    with pytest.raises(DataError, match="resample=True"):
        model.embed(x, sample_rate=8000)
    assert model.embed(x[::2], sample_rate=8000, resample=True).shape == (model.embed_dim,)
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([x, x], axis=1), 16000)
    with pytest.raises(DataError, match="channel"):
        model.embed(stereo)
    np.testing.assert_allclose(model.embed(stereo, channel=1), model.embed(x), rtol=1e-4, atol=1e-4)


def test_verify_command_prints_the_recipe_score(trained):
    model = pysv.load(trained["exp"])
    backend = model.default_backend
    metrics = {p.name: json.loads(p.read_text()) for p in (trained["exp"] / "scores").glob("*.metrics")}
    best = min(metrics.values(), key=lambda m: m["eer"])
    assert backend == best["backend"]
    wavs = read_table(trained["test"] / "wav.scp")
    (a, b), want = next(iter(_recipe_scores(trained["exp"], backend).items()))
    res = subprocess.run([sys.executable, "-m", "pysv.cli", "verify", "--model", str(trained["exp"]), wavs[a], wavs[b]],
                         capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    _, _, score, decision = res.stdout.split()
    assert float(score) == pytest.approx(want, abs=2e-3 * max(1, abs(want)))
    assert decision == ("accept" if float(score) >= best["eer_threshold"] else "reject")


def test_bundle_scores_like_the_run(trained, tmp_path):
    run = pysv.load(trained["exp"])
    bundle = pysv.load(write_bundle(run, tmp_path / "bundle"))
    info = json.loads((tmp_path / "bundle" / "model.json").read_text())
    assert info["system"] == run.system and info["embed_dim"] == run.embed_dim and info["sample_rate"] == 16000
    import torch
    weights = torch.load(tmp_path / "bundle" / "model.pt", weights_only=True)
    assert "model" in weights and "loss" not in weights and "train_speakers" not in weights
    assert "loss" in torch.load(Path(trained["exp"]) / "final.pt", weights_only=True)  # the run keeps its head
    wavs = read_table(trained["test"] / "wav.scp")
    a, b = sorted(wavs)[:2]
    for backend in ("cosine", "plda", "crops", "asnorm"):
        assert bundle.score(wavs[a], wavs[b], backend=backend) == run.score(wavs[a], wavs[b], backend=backend)
    assert bundle.verify(wavs[a], wavs[b]) == run.verify(wavs[a], wavs[b])


def test_cllr_and_min_cllr_by_hand():
    labels = np.array([1, 1, 0, 0])
    assert cllr(np.zeros(4), labels) == pytest.approx(1.0)  # an uninformative system costs 1 bit
    # llr +-2 on the right sides: (log2(1 + e^-2)) on each side
    assert cllr(np.array([2.0, 2.0, -2.0, -2.0]), labels) == pytest.approx(math.log2(1 + math.exp(-2)))
    assert min_cllr(np.array([3.0, 2.0, 1.0, 0.0]), labels) == pytest.approx(0.0, abs=1e-12)  # separable
    assert min_cllr(np.array([0.0, 1.0, 0.0, 1.0]), labels) == pytest.approx(1.0)  # no information


def test_logistic_calibration_recovers_the_true_llr():
    # scores N(+1, 1) for targets and N(-1, 1) for non-targets: the true LLR is 2 * score
    rng = np.random.default_rng(3)
    s = np.concatenate([rng.normal(1, 1, 20000), rng.normal(-1, 1, 20000)])
    y = np.r_[np.ones(20000), np.zeros(20000)]
    a, b = fit_logistic(s, y)
    assert a == pytest.approx(2.0, abs=0.05) and b == pytest.approx(0.0, abs=0.05)
    cal = Calibration.fit("cosine", s, y, "dev", far=0.01)
    assert cal.dev_min_cllr <= cal.dev_cllr < cal.dev_min_cllr + 0.01
    llr = cal.llr(s)
    assert np.mean(llr[y == 0] >= cal.threshold) <= 0.01 + 1e-9


def test_linear_fusion_recovers_the_true_llr_and_keeps_weights_non_negative():
    # two independent scores of one trial: s1 ~ N(+-1, 1) (LLR 2 s1) and s2 = 10 + 3 u, u ~ N(+-0.5, 1)
    # (LLR u = (s2 - 10) / 3): the fused LLR is 2 s1 + s2 / 3 - 10 / 3
    rng = np.random.default_rng(5)
    n = 20000
    y = np.r_[np.ones(n), np.zeros(n)].astype(bool)
    sign = np.where(y, 1.0, -1.0)
    s1 = rng.normal(sign, 1.0)
    s2 = 10.0 + 3.0 * rng.normal(0.5 * sign, 1.0)
    w, b = fit_linear_fusion(np.stack([s1, s2], axis=1), y)
    np.testing.assert_allclose(w, [2.0, 1.0 / 3.0], atol=0.05)
    assert b == pytest.approx(-10.0 / 3.0, abs=0.2)
    # one column: the same fit as the single back-end's calibration
    np.testing.assert_allclose(fit_linear_fusion(s1[:, None], y, nonnegative=False)[0], [fit_logistic(s1, y)[0]])
    # a near copy of s1 (cosine and cosine_mean): the weights stay >= 0 and the fusion is no worse than s1
    near = np.stack([s1, s1 + rng.normal(0.0, 0.01, 2 * n)], axis=1)
    w, b = fit_linear_fusion(near, y)
    assert (w >= 0).all() and w.sum() == pytest.approx(2.0, abs=0.1)
    assert cllr(near @ w + b, y) <= cllr(2 * s1, y) + 1e-3
    # a score that ranks the wrong way gets weight 0, not a negative one
    wrong = np.stack([s1, -rng.normal(0.5 * sign, 1.0)], axis=1)
    assert fit_linear_fusion(wrong, y, nonnegative=False)[0][1] < -0.5
    w, _ = fit_linear_fusion(wrong, y)
    assert w[0] > 0 and w[1] == 0.0


def test_calibration_fits_the_fusion_and_stage_5_and_the_api_score_it(trained, tiny_recipe, tmp_path, capsys):
    src = trained["exp"]
    exp = tmp_path / src.name  # a copy: the calibration and its scores stay out of the shared run
    shutil.copytree(src, exp)
    test = trained["test"]
    train_set, utt2spk = tiny_recipe["train"].name, tiny_recipe["train"] / "utt2spk"
    args = ["--exp", str(exp), "--train-set", train_set, "--utt2spk"]
    # the fusion needs two back-ends it can combine
    assert calibrate_bin.main(args + [str(utt2spk), "--backends", "cosine asnorm fusion"]) == 1
    assert "fusion combines at least two of cosine, cosine_mean, plda" in capsys.readouterr().err
    assert score_bin.main(["--exp", str(exp), "--trials", str(test / "trials"), "--test-set", test.name,
                           "--train-set", train_set, "--backend", "fusion", "--no-plot"]) == 1
    assert "calibration.json" in capsys.readouterr().err
    assert calibrate_bin.main(args + [str(utt2spk), "--backends", "cosine cosine_mean plda fusion"]) == 0
    cal = Calibration.load(exp / "calibration.json")
    assert set(cal.fusion_weights) == {"cosine", "cosine_mean", "plda"}
    assert all(w >= 0 for w in cal.fusion_weights.values()) and any(w > 0 for w in cal.fusion_weights.values())
    dev = {b: {(x, z): s for x, z, s in read_scores(exp / "scores" / f"{train_set}_dev_{b}")}
           for b in ("cosine", "cosine_mean", "plda", "fusion")}
    for key, fused in dev["fusion"].items():
        want = sum(w * dev[b][key] for b, w in cal.fusion_weights.items())
        assert fused == pytest.approx(want, rel=1e-5, abs=1e-5)
    for backend in ("cosine_mean", "fusion"):
        assert score_bin.main(["--exp", str(exp), "--trials", str(test / "trials"), "--test-set", test.name,
                               "--train-set", train_set, "--backend", backend, "--no-plot"]) == 0
    recipe = {b: _recipe_scores(exp, b) for b in ("cosine", "cosine_mean", "plda", "fusion")}
    for key, fused in recipe["fusion"].items():
        want = sum(w * recipe[b][key] for b, w in cal.fusion_weights.items())
        assert fused == pytest.approx(want, rel=1e-5, abs=1e-5)  # score files hold 6 significant digits
    wavs = read_table(test / "wav.scp")
    run = pysv.load(exp)
    bundle = pysv.load(write_bundle(run, tmp_path / "bundle"))
    for (a, b), want in list(recipe["fusion"].items())[:4]:
        got = run.score(wavs[a], wavs[b], backend="fusion")
        assert got == pytest.approx(want, abs=2e-3 * max(1, abs(want)))
        assert bundle.score(wavs[a], wavs[b], backend="fusion") == pytest.approx(got, rel=1e-6, abs=1e-6)


def test_calibrated_verify_uses_the_stored_threshold(trained, tmp_path):
    exp = trained["exp"]
    trials = read_trials(trained["test"] / "trials")
    scores = _recipe_scores(exp, "cosine")
    med = float(np.median(list(scores.values())))  # a threshold that accepts some trials and rejects others
    cal = Calibration(backend="cosine", a=4.0, b=-4.0 * med, prior=0.5, threshold=0.0, threshold_rule="eer",
                      dev_trials="dev", dev_cllr=0.0, dev_min_cllr=0.0, dev_eer=0.0)
    cal.save(exp / "calibration.json")
    try:
        model = pysv.load(exp)
        wavs = read_table(trained["test"] / "wav.scp")
        a, b, _ = trials[0]
        assert model.default_backend == "cosine" and model.threshold()[1] == pytest.approx(med)
        for a, b, _ in trials[:6]:
            score, accept = model.verify(wavs[a], wavs[b])
            assert score == pytest.approx(scores[(a, b)], abs=2e-3)
            assert accept == (score >= med) and model.llr(score) == pytest.approx(cal.llr(score))
    finally:
        (exp / "calibration.json").unlink()


def test_embed_score_and_export_commands(trained, tmp_path, capsys):
    from pysv import cli
    exp, test = trained["exp"], trained["test"]
    out = f"ark,scp:{tmp_path / 'e.ark'},{tmp_path / 'e.scp'}"
    assert cli.main(["embed", "--model", str(exp), "--wav-scp", str(test / "wav.scp"), "--out", out]) == 0
    got = {k: np.asarray(v) for k, v in kaldiio.load_scp(str(tmp_path / "e.scp")).items()}
    emb = exp / "embeddings" / "tiny_test" / "xvector.scp"
    want = {k: np.asarray(v) for k, v in kaldiio.load_scp(str(emb)).items()}
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5)
    assert cli.main(["score", "--model", str(exp), "--wav-scp", str(test / "wav.scp"), "--trials",
                     str(test / "trials"), "--out", str(tmp_path / "scores"), "--backend", "plda"]) == 0
    recipe = _recipe_scores(exp, "plda")
    for a, b, s in read_scores(tmp_path / "scores"):
        assert s == pytest.approx(recipe[(a, b)], abs=2e-3 * max(1, abs(recipe[(a, b)])))
    assert cli.main(["export", "--model", str(exp), "--format", "bundle", "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "model.json").is_file()
    # ONNX from the bundle: the graph's embedding of a test file is the API's
    onnx_path = tmp_path / "m.onnx"
    assert cli.main(["export", "--model", str(tmp_path / "b"), "--format", "onnx", "--out", str(onnx_path)]) == 0
    ort = pytest.importorskip("onnxruntime")
    wav = sorted(read_table(test / "wav.scp").values())[0]
    x, _ = sf.read(wav, dtype="float32")
    got = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {
        "waveform": x[None]})[0][0]
    ref = pysv.load(tmp_path / "b").embed(wav)
    assert float(got @ ref / np.linalg.norm(got) / np.linalg.norm(ref)) > 0.9999
    # errors name the file at fault
    assert cli.main(["verify", "--model", str(exp), str(tmp_path / "missing.wav"), str(tmp_path / "e.ark")]) == 1
    assert "missing.wav" in capsys.readouterr().err


def test_energy_vad_at_inference(trained):
    import torch

    from pysv.vad import apply_energy_vad
    model = pysv.load(trained["exp"], vad="energy")
    wav = sorted(read_table(trained["test"] / "wav.scp").values())[0]
    x, sr = sf.read(wav, dtype="float32")
    silence = np.zeros(8000, np.float32)
    padded = np.concatenate([silence, x, silence])  # leading / trailing silence is dropped
    feats = apply_energy_vad(padded, sr, model.features)
    assert feats.shape[0] < model.features(padded, sr).shape[0]
    with torch.no_grad():
        want = model.encoder(torch.from_numpy(feats)[None])[0].numpy()
    np.testing.assert_allclose(model.embed(padded, sample_rate=sr), want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError):
        pysv.load(trained["exp"], vad="spectral")
