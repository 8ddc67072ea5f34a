"""Stage 2 (training) and stage 3 (extraction) on the tiny mini corpus: smoke, resume, DDP, faults."""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pysv.bin import extract as extract_bin
from pysv.bin import train as train_bin
from pysv.train import checkpoint
from pysv.train.config import ConfigError, load_config
from pysv.train.distributed import DistInfo
from pysv.train.trainer import NonFiniteLossError, Trainer

REPO = Path(__file__).resolve().parents[1]

# small, fast settings for the tiny corpus (7 training speakers: 2 held out for validation)
FAST = ["train.epochs=2", "sampler.batch_size=10", "data.crop=100", "data.num_workers=0",
        "data.valid_speakers=2", "train.log_interval=1", "optim.lr=0.05", "optim.lr_batch=null"]


def overrides(tiny, *extra):
    return [f"data.train={tiny['train']}", *FAST, *extra]


def run_train(tiny, tmp, config, *extra, exp_name="exp", check=True):
    exp = Path(tmp) / exp_name
    rc = train_bin.main(["--config", str(REPO / "conf" / config), "--exp-dir", str(exp), "--resume",
                         "--threads", "2", *overrides(tiny, *extra)])
    if check:
        assert rc == 0
    return exp, rc


def killed_after_epoch_1(monkeypatch, tiny, tmp, config, *extra, exp_name):
    """Run ``run_train`` with a second epoch that raises (a kill after the epoch-1 checkpoint);
    returns the run dir. The trainer is restored afterwards."""
    original = Trainer.train_epoch

    def dying(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt("killed")
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", dying)
    with pytest.raises(KeyboardInterrupt):
        run_train(tiny, tmp, config, *extra, exp_name=exp_name)
    monkeypatch.setattr(Trainer, "train_epoch", original)
    return Path(tmp) / exp_name


def encoder_state(exp):
    return torch.load(Path(exp) / "final.pt", map_location="cpu", weights_only=True)["model"]


def test_train_smoke_and_extract(tiny_recipe, tmp_path):
    exp, _ = run_train(tiny_recipe, tmp_path, "thin_resnet34_angleproto.yaml", "extract.num_crops=3",
                       "extract.crop=50")
    for name in ("config.yaml", "train.log", "final.pt", "history.json", "valid_eer.png", "num_params", ".done"):
        assert (exp / name).is_file(), name
    hist = json.loads((exp / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2]
    assert all(np.isfinite(h["loss"]) and 0.0 <= h["valid_eer"] <= 100.0 for h in hist)
    cfg = load_config(str(exp / "config.yaml"))
    assert cfg["sampler"]["batch_size"] == 10 and cfg["loss"]["name"] == "angleproto"
    log = (exp / "train.log").read_text()
    assert "epoch 2/2" in log and "valid EER" in log
    # a completed run is skipped
    assert train_bin.main(["--config", str(exp / "config.yaml"), "--exp-dir", str(exp)]) == 0

    # stage 3: full-utterance embeddings in 2 parts equal a single-process run
    test = tiny_recipe["test"]
    assert extract_bin.main(["--exp", str(exp), "--data", str(test)]) == 0
    import kaldiio
    emb = {k: np.asarray(v) for k, v in kaldiio.load_scp(str(exp / "embeddings" / test.name / "xvector.scp")).items()}
    utts = sorted(line.split()[0] for line in (test / "utt2spk").read_text().splitlines())
    assert sorted(emb) == utts and all(v.shape == (512,) for v in emb.values())
    exp2 = tmp_path / "exp_copy"
    exp2.mkdir()
    (exp2 / "final.pt").symlink_to(exp / "final.pt")
    for j in (1, 2):
        assert extract_bin.main(["--exp", str(exp2), "--data", str(test), "--job", str(j), "--nj", "2"]) == 0
    assert extract_bin.main(["--exp", str(exp2), "--data", str(test), "--merge", "--nj", "2"]) == 0
    emb2 = kaldiio.load_scp(str(exp2 / "embeddings" / test.name / "xvector.scp"))
    for k in utts:
        np.testing.assert_allclose(emb2[k], emb[k], rtol=1e-5, atol=1e-6)
    spk = kaldiio.load_scp(str(exp / "embeddings" / test.name / "spk_xvector.scp"))
    counts = dict(line.split() for line in (exp / "embeddings" / test.name / "num_utts.ark").read_text().splitlines())
    assert sorted(spk) == sorted(counts) and sum(int(c) for c in counts.values()) == len(utts)
    # crop mode keeps a [num_crops, D] matrix per utterance; crop length and count come from the
    # system's extract: block (here extract.num_crops=3, extract.crop=50) unless given explicitly
    emb_dir = exp / "embeddings" / test.name
    full_ark = (emb_dir / "xvector.ark").read_bytes()
    assert extract_bin.main(["--exp", str(exp), "--data", str(test), "--mode", "crops"]) == 0
    crops = kaldiio.load_scp(str(emb_dir / "xvector_crops.scp"))
    assert np.asarray(crops[utts[0]]).shape == (3, 512)
    # tta is stored under its own name and leaves the full-utterance embeddings alone
    assert extract_bin.main(["--exp", str(exp), "--data", str(test), "--mode", "tta"]) == 0
    tta = kaldiio.load_scp(str(emb_dir / "xvector_tta.scp"))
    assert sorted(tta) == utts and np.asarray(tta[utts[0]]).shape == (512,)
    assert (emb_dir / "xvector.ark").read_bytes() == full_ark
    assert not np.allclose(np.asarray(tta[utts[0]]), emb[utts[0]])
    from pysv.embed import resolve_protocol
    cfg = load_config(str(exp / "config.yaml"))
    assert resolve_protocol(cfg) == {"mode": "crops", "crop_len": 50, "num_crops": 3, "overlap": 0.2}
    assert resolve_protocol(cfg, "tta", crop_len=70)["crop_len"] == 70


def test_resume_equals_uninterrupted(tiny_recipe, tmp_path, monkeypatch):
    cfgname = "xvector_softmax.yaml"
    extra = ["data.feature=fbank40", "model.hparams.feat_dim=40", "optim.lr=0.001", "train.epochs=3"]
    full, _ = run_train(tiny_recipe, tmp_path, cfgname, *extra, exp_name="full")

    # "kill" a run after its first epoch checkpoint: the second epoch raises
    killed = killed_after_epoch_1(monkeypatch, tiny_recipe, tmp_path, cfgname, *extra, exp_name="killed")
    assert [p.name for p in (killed / "checkpoints").glob("*.pt")] == ["epoch_001.pt"]
    assert not (killed / "final.pt").exists()
    # a damaged newest checkpoint (here: epoch 2 cut short) is skipped with a message naming it
    (killed / "checkpoints" / "epoch_002.pt").write_bytes(b"PK\x03\x04 cut short")
    # without --resume an unfinished run is refused, with it the run completes
    assert train_bin.main(["--config", str(REPO / "conf" / cfgname), "--exp-dir", str(killed),
                           *overrides(tiny_recipe, *extra)]) == 2
    run_train(tiny_recipe, tmp_path, cfgname, *extra, exp_name="killed")
    log_text = (killed / "train.log").read_text()
    assert "epoch_002.pt: cannot read checkpoint" in log_text and "falling back to epoch_001.pt" in log_text
    assert "resumed from" in log_text and "epoch_001.pt (epoch 1 done)" in log_text
    a, b = encoder_state(full), encoder_state(killed)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    ha = json.loads((full / "history.json").read_text())
    hb = json.loads((killed / "history.json").read_text())
    assert [h["loss"] for h in ha] == [h["loss"] for h in hb]


def test_config_errors_name_the_key(tiny_recipe, tmp_path, capsys):
    conf = str(REPO / "conf" / "thin_resnet34_triplet.yaml")
    with pytest.raises(ConfigError, match="train.epoch'"):
        load_config(conf, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(conf, ["optim.lr=fast"])
    assert train_bin.main(["--config", conf, "--exp-dir", str(tmp_path / "e"), "sampler.bogus=1"]) == 2
    assert "sampler.bogus" in capsys.readouterr().err
    # triplet needs two utterances of each speaker per batch: a shuffling sampler cannot work
    cfg = load_config(conf, overrides(tiny_recipe, "sampler.kind=shuffle"))
    with pytest.raises(ConfigError, match="sampler.kind"):
        Trainer(cfg, str(tmp_path / "t"), DistInfo()).build()
    cfg = load_config(conf, overrides(tiny_recipe, "model.hparams.not_a_param=3"))
    with pytest.raises(ConfigError, match="not_a_param"):
        Trainer(cfg, str(tmp_path / "t2"), DistInfo()).build()


def test_nan_loss_stops_with_step_and_keeps_checkpoint(tiny_recipe, tmp_path):
    conf = str(REPO / "conf" / "thin_resnet34_softmax.yaml")
    cfg = load_config(conf, overrides(tiny_recipe, "train.epochs=3", "train.log_interval=100"))
    trainer = Trainer(cfg, str(tmp_path / "nan"), DistInfo())
    trainer.build()
    loss = trainer.net.loss
    orig_forward = loss.forward
    calls = {"n": 0}

    def poisoned(emb, labels):
        calls["n"] += 1
        value = orig_forward(emb, labels)
        # epoch 1 has len(loader) steps; poison the 2nd step of epoch 2
        return value * float("nan") if calls["n"] == n_epoch1 + 2 else value

    n_epoch1 = len(trainer.data.loader)
    loss.forward = poisoned
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 2"):
        trainer.fit()
    assert (tmp_path / "nan" / "checkpoints" / "epoch_001.pt").is_file()
    assert not (tmp_path / "nan" / "checkpoints" / "epoch_002.pt").exists()


def test_missing_features_named_by_utterance(tiny_recipe, tmp_path):
    import shutil
    fdir = tmp_path / "broken_train_fbank40"
    shutil.copytree(tiny_recipe["train_feats"], fdir)
    lines = (fdir / "feats.scp").read_text().splitlines()
    first_utt = lines[0].split()[0]
    (fdir / "feats.scp").write_text("\n".join(lines[1:]) + "\n")
    data = tmp_path / "broken_train"
    shutil.copytree(tiny_recipe["train"], data)
    cfg = load_config(str(REPO / "conf" / "thin_resnet34_softmax.yaml"),
                      overrides(tiny_recipe, f"data.train={data}"))
    with pytest.raises(Exception, match=first_utt):
        Trainer(cfg, str(tmp_path / "m"), DistInfo()).build()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_cpu_processes(tiny_recipe, tmp_path):
    exp = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "pysv.bin.train", "--config",
           str(REPO / "conf" / "thin_resnet34_mmp_balance.yaml"), "--exp-dir", str(exp), "--device", "cpu",
           "--threads", "1", *overrides(tiny_recipe, "train.epochs=1", "sampler.batch_size=12")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (exp / "final.pt").is_file()
    log = (exp / "train.log").read_text()
    assert "2 process(es)" in log
    hist = json.loads((exp / "history.json").read_text())
    assert len(hist) == 1 and np.isfinite(hist[0]["loss"])


def _noise_dirs(tmp_path):
    """The recordings manifests of a noise set (noise and music categories) and an RIR set, as
    stage 0 prepares them from generated folders."""
    import soundfile as sf
    from pysv.data.corpora.musan import prepare_musan
    from pysv.data.corpora.rirs import prepare_rirs
    from pysv.data.prepare import AudioOptions
    rng = np.random.default_rng(0)
    musan = tmp_path / "musan"
    for cat in ("noise", "music"):
        (musan / cat).mkdir(parents=True)
        sf.write(musan / cat / f"{cat}1.wav", (0.1 * rng.standard_normal(24000)).astype(np.float32), 16000)
    rirs = tmp_path / "rirs"
    rirs.mkdir()
    t = np.arange(4000) / 16000
    rir = (rng.standard_normal(4000) * np.exp(-t / 0.05)).astype(np.float32)
    rir[0] = 1.0
    sf.write(rirs / "room1.wav", rir, 16000)
    data = tmp_path / "aug_data"
    prepare_musan(musan, data, audio_opts=AudioOptions(progress=False))
    prepare_rirs(rirs, data, audio_opts=AudioOptions(progress=False))
    return data / "manifests" / "musan_recordings.jsonl.gz", data / "manifests" / "rirs_recordings.jsonl.gz"


@pytest.mark.parametrize("system,extra", [
    ("saep_amsoftmax", ["data.feature=fbank40", "model.hparams.feat_dim=40", "model.hparams.d_k=32",
                        "model.hparams.d_ff=64"]),
    # fbank64 computed on the fly from augmented audio, then SpecAugment (MLA-SAP's set-up)
    ("mla_resnet34_mla_sap_fr_dln_softmax", ["data.crop=60", "AUGMENT"]),
    # raw waveform with augmentation and the embedding scaled to norm 10 before the classifier
    ("rawnet2_mul_add_softmax", ["data.crop=8000", "AUGMENT"]),
])
def test_every_encoder_family_trains(tiny_recipe, tmp_path, system, extra):
    musan, rirs = _noise_dirs(tmp_path)
    extra = [e for e in extra if e != "AUGMENT"] + (
        [f"data.augment={{musan: {musan}, rirs: {rirs}, prob: 1.0}}"] if "AUGMENT" in extra else [])
    exp, _ = run_train(tiny_recipe, tmp_path, f"{system}.yaml", "train.epochs=1", "sampler.batch_size=6",
                       "data.valid_speakers=2", *extra)
    hist = json.loads((exp / "history.json").read_text())
    assert np.isfinite(hist[0]["loss"]) and "valid_eer" in hist[0]
    cfg = load_config(str(exp / "config.yaml"))
    if "AUGMENT" in " ".join(extra) or any("augment" in e for e in extra):
        assert cfg["data"]["augment"]["prob"] == 1.0


def test_stage3_with_a_hostile_exp_path_runs_nothing_from_it(tiny_recipe, tmp_path):
    # run.sh --exp 'a b;touch X' reaches stage 3 as this path: it must be used literally
    from pysv import models
    from pysv.train import checkpoint
    cfg = load_config(str(REPO / "conf" / "thin_resnet34_angleproto.yaml"), ["model.hparams.embed_dim=16"])
    torch.manual_seed(0)
    model = models.build(cfg["model"]["name"], **cfg["model"]["hparams"])
    exp = tmp_path / "a b;touch X;$(touch Y)" / "thin_resnet34_angleproto"
    exp.mkdir(parents=True)
    checkpoint.save({"model": model.state_dict(), "config": checkpoint.config_to_text(cfg)}, exp / "final.pt")
    r = subprocess.run(["steps/extract_embeddings.sh", "--nj", "2", str(exp), str(tiny_recipe["test"])],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr + r.stdout
    import kaldiio
    emb = kaldiio.load_scp(str(exp / "embeddings" / tiny_recipe["test"].name / "xvector.scp"))
    assert len(emb) == len((tiny_recipe["test"] / "utt2spk").read_text().splitlines())
    for f in ("X", "Y"):
        assert not (REPO / f).exists() and not (tmp_path / f).exists()


def test_precision_choices_resolve_per_device():
    from pysv.train import precision
    cpu = torch.device("cpu")
    assert precision.resolve("fp32", cpu) == "fp32" and precision.resolve("bf16", cpu) == "bf16"
    assert precision.resolve("auto", cpu) == ("bf16" if precision.cpu_has_native_bf16() else "fp32")
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        precision.resolve("fp16", cpu)
    with pytest.raises(ConfigError, match="train.precision"):
        load_config(str(REPO / "conf" / "xvector_softmax.yaml"), ["train.precision=fp8"])


def test_bf16_trains_like_fp32_and_resumes(tiny_recipe, tmp_path, monkeypatch):
    # Same seed, data order and steps in fp32 and in bf16 autocast (CPU). Tolerances: the training
    # losses of the last epoch agree within 5 % (bf16 rounds activations to 8 mantissa bits, the
    # losses themselves run in float32); the validation EERs within 3 binomial standard errors of
    # the fp32 EER for this many target trials -- the noise of an EER on so few trials (two held-out
    # speakers), so "within noise" and not "equal".
    extra = ["train.epochs=3", "model.hparams.embed_dim=64"]
    fp32, _ = run_train(tiny_recipe, tmp_path, "thin_resnet34_angleproto.yaml", *extra, "train.precision=fp32",
                        exp_name="fp32")
    bf16, _ = run_train(tiny_recipe, tmp_path, "thin_resnet34_angleproto.yaml", *extra, "train.precision=bf16",
                        exp_name="bf16")
    ha = json.loads((fp32 / "history.json").read_text())
    hb = json.loads((bf16 / "history.json").read_text())
    assert abs(hb[-1]["loss"] - ha[-1]["loss"]) <= 0.05 * abs(ha[-1]["loss"])
    n_target = _valid_targets(fp32)
    p = max(ha[-1]["valid_eer"] / 100, 0.05)
    tol = 100 * 3 * (p * (1 - p) / n_target) ** 0.5
    assert abs(hb[-1]["valid_eer"] - ha[-1]["valid_eer"]) <= tol, (ha[-1]["valid_eer"], hb[-1]["valid_eer"], tol)
    # resume in bf16: killed after epoch 1, resumed, identical to the uninterrupted bf16 run
    killed_after_epoch_1(monkeypatch, tiny_recipe, tmp_path, "thin_resnet34_angleproto.yaml", *extra,
                         "train.precision=bf16", exp_name="bf16_killed")
    killed, _ = run_train(tiny_recipe, tmp_path, "thin_resnet34_angleproto.yaml", *extra, "train.precision=bf16",
                          exp_name="bf16_killed")
    a, b = encoder_state(bf16), encoder_state(killed)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def _valid_targets(exp) -> int:
    """Target trials of a run's held-out validation speakers (all pairs of their utterances)."""
    spk = set((exp / "valid_speakers").read_text().split())
    cfg = load_config(str(exp / "config.yaml"))
    u2s = dict(line.split() for line in (Path(cfg["data"]["train"]) / "utt2spk").read_text().splitlines())
    counts = {}
    for s in u2s.values():
        if s in spk:
            counts[s] = counts.get(s, 0) + 1
    return sum(n * (n - 1) // 2 for n in counts.values())


def test_compile_falls_back_to_eager_with_a_warning(tiny_recipe, tmp_path, monkeypatch):
    def broken_compile(module, *a, **k):
        class Broken(torch.nn.Module):
            def forward(self, *args, **kwargs):
                raise RuntimeError("no backend for this platform")
        return Broken()

    monkeypatch.setattr(torch, "compile", broken_compile)
    exp, _ = run_train(tiny_recipe, tmp_path, "xvector_softmax.yaml", "data.feature=fbank40",
                       "model.hparams.feat_dim=40", "train.epochs=1", "train.compile=true")
    assert "train.compile: compilation failed (RuntimeError: no backend for this platform); training eagerly" \
        in (exp / "train.log").read_text()


@pytest.mark.parametrize("name,shape,budget", [("thin_resnet34", (None, 40), 900), ("rawnet2", (None,), 90000)])
def test_length_batched_extraction_equals_one_at_a_time(name, shape, budget):
    # utterances of ragged lengths, read in windows, sorted and padded into batches with lengths:
    # every embedding equals the one of the utterance alone (encoders mask padding)
    from pysv import models
    from pysv.embed import embed_utterances
    torch.manual_seed(0)
    kw = {"embed_dim": 32} if name == "thin_resnet34" else {"gru_dim": 64, "embed_dim": 32}
    model = models.build(name, **kw)
    rng = np.random.default_rng(0)
    scale = 1 if name == "thin_resnet34" else 160
    arrays = {f"u{i}": rng.standard_normal((int(rng.integers(120, 400)) * scale,) + shape[1:]).astype(np.float32)
              for i in range(9)}
    reader = arrays.__getitem__
    one = embed_utterances(model, reader, sorted(arrays), "cpu")
    batched = embed_utterances(model, reader, sorted(arrays), "cpu", batch_frames=budget, window=5)
    for u in arrays:
        np.testing.assert_allclose(batched[u], one[u], rtol=1e-4, atol=1e-4 * np.abs(one[u]).max())
    if name == "thin_resnet34":  # bf16 autocast: close to fp32, not equal
        half = embed_utterances(model, reader, sorted(arrays), "cpu", batch_frames=budget, precision="bf16")
        cos = [float(half[u] @ one[u] / np.linalg.norm(half[u]) / np.linalg.norm(one[u])) for u in arrays]
        assert min(cos) > 0.99 and max(abs(half[u] - one[u]).max() for u in arrays) > 0


@pytest.mark.parametrize("augment", [None, "{prob: 1.0, types: [babble]}"])
def test_device_front_end_gives_the_worker_features_and_trains(tiny_recipe, tmp_path, augment):
    # front_end=device: the loader yields waveform crops (and augmentation plans), the trainer
    # applies the same augmentation and computes the same Kaldi features batched on the device
    # (dither off to compare exactly)
    no_dither = tmp_path / "fbank40_no_dither.yaml"
    no_dither.write_text((REPO / "conf" / "fbank40.yaml").read_text().replace("dither: 1.0 ", "dither: 0.0 "))
    base = [f"data.train={tiny_recipe['train']}", *FAST, "data.on_the_fly_features=true",
            f"data.feature={no_dither}"] + ([f"data.augment={augment}"] if augment else [])
    conf = str(REPO / "conf" / "thin_resnet34_angleproto.yaml")
    trainers = {}
    for fe in ("worker", "device"):
        t = Trainer(load_config(conf, base + [f"data.front_end={fe}"]), str(tmp_path / fe), DistInfo(), progress=False)
        t.build()
        t.data.sampler.set_epoch(1)
        t.data.train_set.set_epoch(1)
        trainers[fe] = next(iter(t.data.loader))
    (xw, yw), (xd, yd, *plans) = trainers["worker"], trainers["device"]
    assert xw.dim() == 3 and xd.dim() == 2 and torch.equal(yw, yd)
    assert bool(plans) == bool(augment) and (not plans or {p.kind for p in plans[0]} == {"babble"})
    t_dev = Trainer(load_config(conf, base + ["data.front_end=device"]), str(tmp_path / "d2"), DistInfo(),
                    progress=False)
    t_dev.build()
    feats = t_dev.device_features(xd, 1, plans[0] if plans else None)
    np.testing.assert_allclose(feats.numpy(), xw.numpy(), rtol=1e-4, atol=1e-3)
    exp, _ = run_train(tiny_recipe, tmp_path, "thin_resnet34_angleproto.yaml", "train.epochs=1",
                       "data.on_the_fly_features=true", "data.front_end=device",
                       *([f"data.augment={augment}"] if augment else []), exp_name="dev_run")
    assert json.loads((exp / "history.json").read_text())[0]["loss"] > 0


def test_time_budget_stops_after_the_last_epoch_that_fits(tiny_recipe, tmp_path, capsys):
    # a budget far below one epoch: the first epoch always runs, then the estimate of the next one
    # exceeds the budget; training finalises as usual and history.json records why it stopped
    exp, _ = run_train(tiny_recipe, tmp_path, "thin_resnet34_angleproto.yaml", "train.epochs=50",
                       "train.max_minutes=0.0001", exp_name="budget")
    hist = json.loads((exp / "history.json").read_text())
    assert len(hist) == 1 and hist[-1]["stopped"] == "train.max_minutes" and hist[-1]["max_minutes"] == 0.0001
    assert (exp / "final.pt").is_file() and (exp / ".done").is_file()
    assert "train.max_minutes=0.0001" in (exp / "train.log").read_text()
    # the same command again: complete, not retrained
    run_train(tiny_recipe, tmp_path, "thin_resnet34_angleproto.yaml", "train.epochs=50",
              "train.max_minutes=0.0001", exp_name="budget")
    assert "fitted in train.max_minutes" in capsys.readouterr().err
    # a larger budget continues the run (--resume) up to the epochs that fit
    run_train(tiny_recipe, tmp_path, "thin_resnet34_angleproto.yaml", "train.epochs=2",
              "train.max_minutes=1000", exp_name="budget")
    assert [h["epoch"] for h in json.loads((exp / "history.json").read_text())] == [1, 2]


def test_fine_tuning_starts_from_a_trained_encoder_with_a_new_head(tiny_recipe, tmp_path):
    # source: 5 training speakers; fine-tuning run: 4 (another classifier size), encoder from the
    # source's final.pt; with a vanishing learning rate the encoder weights stay the loaded ones
    extra = ["data.feature=fbank40", "model.hparams.feat_dim=40", "train.epochs=1", "optim.lr=0.001"]
    src, _ = run_train(tiny_recipe, tmp_path, "xvector_softmax.yaml", *extra, exp_name="src")
    exp = tmp_path / "ft"
    rc = train_bin.main(["--config", str(REPO / "conf" / "xvector_softmax.yaml"), "--exp-dir", str(exp),
                         "--threads", "2", "--init-from", str(src / "final.pt"),
                         *overrides(tiny_recipe, *extra[:3], "optim.lr=1e-12", "data.valid_speakers=3")])
    assert rc == 0
    assert "encoder initialised from" in (exp / "train.log").read_text()
    a, b = encoder_state(src), encoder_state(exp)
    for name, t in a.items():
        if t.is_floating_point() and "running" not in name:  # BN statistics move in train mode
            torch.testing.assert_close(b[name], t, rtol=0, atol=1e-6)
    assert load_config(str(exp / "config.yaml"))["train"]["init_from"] == str(src / "final.pt")
    assert "loss head new" in (exp / "train.log").read_text()
    # the same training speakers: the classifier carries over from final.pt as well (large-margin
    # fine-tuning keeps it); the bundle a user exports holds the encoder only
    same = tmp_path / "ft_same"
    rc = train_bin.main(["--config", str(REPO / "conf" / "xvector_softmax.yaml"), "--exp-dir", str(same),
                         "--threads", "2", "--init-from", str(src / "final.pt"),
                         *overrides(tiny_recipe, *extra[:3], "optim.lr=1e-12")])
    assert rc == 0
    assert "encoder and loss head initialised from" in (same / "train.log").read_text()
    src_final = torch.load(src / "final.pt", map_location="cpu", weights_only=True)
    same_final = torch.load(same / "final.pt", map_location="cpu", weights_only=True)
    assert src_final["train_speakers"] == same_final["train_speakers"]
    for name, t in src_final["loss"].items():
        torch.testing.assert_close(same_final["loss"][name], t, rtol=0, atol=1e-6)
    # another architecture is refused by name
    rc = train_bin.main(["--config", str(REPO / "conf" / "xvector_softmax.yaml"), "--exp-dir", str(tmp_path / "bad"),
                         "--init-from", str(src / "final.pt"),
                         *overrides(tiny_recipe, *extra, "model.hparams.hidden_dim=64")])
    assert rc == 2
    assert "holds another architecture" in (tmp_path / "bad" / "train.log").read_text()


def test_warmup_and_decay_schedules_per_iteration():
    from pysv.train.optim import lr_multiplier
    # 4 warm-up steps of 20: 1/4, 2/4, 3/4, 1; then exponential to 0.01 at the last step
    assert [lr_multiplier(s, 4, 20, 0.01, "warmup_exp") for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_multiplier(4, 4, 20, 0.01, "warmup_exp") == pytest.approx(1.0)
    assert lr_multiplier(19, 4, 20, 0.01, "warmup_exp") == pytest.approx(0.01)
    assert lr_multiplier(4 + 15 // 2, 4, 20, 0.01, "warmup_exp") == pytest.approx(0.01 ** (7 / 15))
    assert lr_multiplier(19, 4, 20, 0.01, "warmup_cosine") == pytest.approx(0.01)
    mid = lr_multiplier(4 + 7.5, 4, 20, 0.01, "warmup_cosine")
    assert mid == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_multiplier(0, 0, 10, 0.1, "warmup_cosine") == pytest.approx(1.0)


def test_schedule_and_margin_ramp_in_training(tiny_recipe, tmp_path):
    # warmup_exp stepped per iteration: the lr recorded after each epoch is base x multiplier(steps done)
    exp, _ = run_train(tiny_recipe, tmp_path, "thin_resnet34_aamsoftmax.yaml", "train.epochs=2",
                       "scheduler.name=warmup_exp", "scheduler.warmup_epochs=0.5", "scheduler.min_lr=0.0005",
                       "train.margin_ramp=[0, 2]", exp_name="sched")
    from pysv.train.optim import lr_multiplier
    cfg = load_config(str(exp / "config.yaml"))
    t = Trainer(cfg, str(tmp_path / "probe"), DistInfo(), progress=False)
    t.build()
    per_epoch = len(t.data.loader)
    hist = json.loads((exp / "history.json").read_text())
    for h in hist:
        steps = h["epoch"] * per_epoch
        want = 0.05 * lr_multiplier(steps, round(0.5 * per_epoch), 2 * per_epoch, 0.0005 / 0.05, "warmup_exp")
        assert h["lr"] == pytest.approx(want, rel=1e-6), h
    # the margin ramp: 0 before the start, linear, the target from the end on (AAM constants follow)
    m = cfg["loss"]["hparams"]["margin"]
    for done, frac in ((0.0, 0.0), (1.0, 0.5), (2.0, 1.0), (5.0, 1.0)):
        t._ramp_margin(done)
        assert t.net.loss.margin == pytest.approx(m * frac)
        assert t.net.loss.cos_m == pytest.approx(math.cos(m * frac))


def test_validation_uses_the_trial_generator_of_stage_0(tiny_recipe, tmp_path):
    from pysv.data.trials import TrialOptions, make_trials
    from pysv.utils.io import read_table
    cfg = load_config(str(REPO / "conf" / "thin_resnet34_softmax.yaml"),
                      overrides(tiny_recipe, "data.valid_speakers=3", "data.valid_max_target=7"))
    t = Trainer(cfg, str(tmp_path / "v"), DistInfo(), progress=False)
    t.build()
    utt2spk = read_table(Path(tiny_recipe["train"]) / "utt2spk")
    spk2utt = {s: sorted(u for u, x in utt2spk.items() if x == s) for s in t.data.valid_speakers}
    want = make_trials(spk2utt, TrialOptions(seed=cfg["seed"], max_target_trials=7, nontarget_ratio=1.0), "v")
    assert t.data.valid_trials == want and sum(lab for *_, lab in want) == 7
    assert not set(t.data.valid_speakers) & set(t.data.train_speakers)


def test_learning_rate_scales_linearly_with_the_batch():
    from pysv.train.optim import build_optimizer, effective_lr
    cfg = load_config(str(REPO / "conf" / "thin_resnet34_angleproto.yaml"), ["sampler.batch_size=48"])
    assert cfg["optim"]["lr"] == 0.2 and cfg["optim"]["lr_batch"] == 400
    assert effective_lr(cfg) == pytest.approx(0.2 * 48 / 400)
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.024)
    # at the papers' own batch the rate is the papers'; Adam systems state no lr_batch and keep theirs
    assert effective_lr(load_config(str(REPO / "conf" / "thin_resnet34_proxy_nca.yaml"))) == pytest.approx(0.2)
    assert effective_lr(load_config(str(REPO / "conf" / "saep_softmax.yaml"), ["sampler.batch_size=8"])) == 1e-4


def test_speed_perturbation_counts_copies_as_new_speakers(tiny_recipe, tmp_path):
    sp = "data.speed_perturb={factors: [0.9, 1.0, 1.1], new_speakers: true}"
    cfg = load_config(str(REPO / "conf" / "thin_resnet34_softmax.yaml"), overrides(tiny_recipe, sp, "train.epochs=1"))
    t = Trainer(cfg, str(tmp_path / "sp"), DistInfo(), progress=False)
    t.build()
    k = len(t.data.train_speakers) // 3
    assert t.num_classes == 3 * k and t.data.train_speakers[k].startswith("sp0.9-")
    ds = t.data.train_set
    ds.set_epoch(1)
    seen = set()
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == ds[0][0].shape and 0 <= y < 3 * k  # same crop length at every speed
        seen.add(y // k)
    assert seen == {0, 1, 2}
    # the draw is reproducible: the same item gives the same crop and label again
    a, b = ds[3], ds[3]
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    t.fit()
    assert (tmp_path / "sp" / "final.pt").is_file()
    with pytest.raises(ConfigError, match="new_speakers"):
        Trainer(load_config(str(REPO / "conf" / "thin_resnet34_angleproto.yaml"), overrides(tiny_recipe, sp)),
                str(tmp_path / "ap"), DistInfo(), progress=False).build()


def test_speed_perturbation_resamples_with_lhotse(tiny_recipe):
    from lhotse.augmentation import Speed

    from pysv.data.dataset import WaveformCropDataset
    ds = WaveformCropDataset(tiny_recipe["train"], 8000, seed=3, speed_factors=[1.1])
    rng = np.random.default_rng(0)
    x = ds.read_crop(0, np.random.default_rng(0), speed=0)
    plain = WaveformCropDataset(tiny_recipe["train"], 8800, seed=3).read_crop(0, rng)  # ceil(8000 * 1.1) samples
    want = Speed(1.1)(plain[None], 16000)[0][:8000]
    assert x.shape == (8000,) and np.allclose(x, want, atol=1e-6)


def test_large_margin_fine_tuning_config_starts_from_the_trained_system(tiny_recipe, tmp_path):
    base, _ = run_train(tiny_recipe, tmp_path, "thin_resnet34_aamsoftmax.yaml", "train.epochs=1", exp_name="base")
    ft = tmp_path / "lmft"
    # run.sh's folder profile (30 epochs) does not replace the step's own epochs; an override still does
    # (run.sh's order: overrides before and after the --profile items)
    assert train_bin.main(["--config", str(REPO / "conf" / "thin_resnet34_aamsoftmax_lmft.yaml"), "--exp-dir", str(ft),
                           "--threads", "2", f"data.train={tiny_recipe['train']}", "--profile", "train.epochs=30",
                           "--profile", "train.average_last=1", *FAST, "train.epochs=1",
                           f"train.init_from={base / 'final.pt'}"]) == 0
    log = (ft / "train.log").read_text()
    # the same training speakers: the AAM classifier carries over from final.pt (wespeaker's LM keeps it)
    assert f"encoder and loss head initialised from {base / 'final.pt'}" in log
    assert "keeps its own train.epochs over the profile's train.epochs=30" in log
    cfg = load_config(str(ft / "config.yaml"))
    assert cfg["train"]["epochs"] == 1
    assert cfg["loss"]["hparams"]["margin"] == 0.5 and cfg["scheduler"]["name"] == "warmup_exp"
    assert load_config(str(REPO / "conf" / "thin_resnet34_aamsoftmax_lmft.yaml"))["data"]["crop"] == 600  # 6 s
    assert (ft / "final.pt").is_file()


def test_best_valid_epochs_and_protected_checkpoints(tmp_path):
    hist = [{"epoch": 1, "valid_eer": 9.0}, {"epoch": 2, "valid_eer": 7.0}, {"epoch": 3},
            {"epoch": 4, "valid_eer": 8.0}, {"epoch": 5, "valid_eer": 7.0}, {"epoch": 6, "valid_eer": 12.0}]
    assert checkpoint.best_valid_epochs(hist, 1) == [5]  # tie 7.0: the later epoch
    assert checkpoint.best_valid_epochs(hist, 3) == [2, 4, 5]  # epoch order; epoch 3 has no EER
    assert checkpoint.best_valid_epochs(hist, 10) == [1, 2, 4, 5, 6]
    for e in range(1, 7):
        checkpoint.save_epoch({"epoch": e}, tmp_path, e, keep=2, protect=[2, 5])
    assert [checkpoint.epoch_of(p) for p in checkpoint.epoch_checkpoints(tmp_path)] == [2, 5, 6]


def test_final_averages_the_best_validation_epochs(tiny_recipe, tmp_path, capsys):
    extra = ["data.feature=fbank40", "model.hparams.feat_dim=40", "train.epochs=4", "train.average_last=2",
             "train.average_select=best_valid", "train.keep_checkpoints=1"]
    exp, _ = run_train(tiny_recipe, tmp_path, "xvector_softmax.yaml", *extra, exp_name="best")
    hist = json.loads((exp / "history.json").read_text())
    best = checkpoint.best_valid_epochs(hist, 2)
    assert len(best) == 2 and all(h.get("valid_eer") is not None for h in hist)
    final = torch.load(exp / "final.pt", map_location="cpu", weights_only=True)
    assert final["averaged_epochs"] == best
    # the pruned checkpoint directory kept the best epochs and the newest max(keep_checkpoints,
    # average_last) = 2 (for --resume); an earlier expectation of best | {4} held only when the
    # validation EERs made epoch 3 one of the best (it failed where bf16 numerics ranked them otherwise)
    kept = {checkpoint.epoch_of(p) for p in checkpoint.epoch_checkpoints(exp / "checkpoints")}
    assert kept == set(best) | {3, 4}
    want = checkpoint.average_encoder_weights([exp / "checkpoints" / f"epoch_{e:03d}.pt" for e in best])
    for name, t in want.items():
        torch.testing.assert_close(final["model"][name], t)
    # without validation speakers the selection is refused by name
    _, rc = run_train(tiny_recipe, tmp_path, "xvector_softmax.yaml", *extra, "data.valid_speakers=0",
                      exp_name="no_valid", check=False)
    assert rc == 2
    assert "average_select=best_valid needs validation trials" in (tmp_path / "no_valid" / "train.log").read_text()
    # pysv.bin.average re-averages the complete run without retraining: into another run directory
    from pysv.bin import average as average_bin
    assert average_bin.main(["--exp-dir", str(exp), "--select", "last", "--num", "1",
                             "--out-dir", str(tmp_path / "last")]) == 0
    last = torch.load(tmp_path / "last" / "final.pt", map_location="cpu", weights_only=True)
    assert last["averaged_epochs"] == [4] and (tmp_path / "last" / ".done").is_file()
    torch.testing.assert_close(last["model"], checkpoint.load(exp / "checkpoints" / "epoch_004.pt")["model"])
    # a pruned checkpoint is named
    pruned = sorted({1, 2, 3, 4} - kept)
    if pruned:
        before = (exp / "final.pt").read_bytes()
        rc = average_bin.main(["--exp-dir", str(exp), "--select", "last", "--num", "4"])
        assert rc == 2 and f"epoch(s) {pruned}" in capsys.readouterr().err
        assert (exp / "final.pt").read_bytes() == before and (exp / ".done").is_file()


def test_budget_horizon_estimates_the_steps_the_budget_holds():
    from pysv.train.optim import Horizon
    h = Horizon(steps_per_epoch=10, epochs=1000)
    assert h.fit_budget([], 10, pace=0.0) == 10_000  # before the first epoch: train.epochs
    # 3 epochs of 60 s spent of 600: 7 more fit at that pace -> 10 epochs of 10 steps
    assert h.fit_budget([60.0, 60.0, 60.0], 10, pace=60.0) == 100
    assert h.fit_budget([60.0, 60.0, 90.0, 120.0], 10, pace=90.0) == (4 + int((600 - 330) // 90)) * 10
    assert Horizon(10, 5).fit_budget([1.0], 10, pace=1.0) == 50  # never past train.epochs
    with pytest.raises(ConfigError, match="budget needs train.max_minutes"):
        load_config(str(REPO / "conf" / "xvector_softmax.yaml"), ["scheduler.horizon=budget",
                                                                  "scheduler.name=warmup_cosine"])
    with pytest.raises(ConfigError, match="per-iteration"):
        load_config(str(REPO / "conf" / "xvector_softmax.yaml"), ["scheduler.horizon=budget",
                                                                  "train.max_minutes=10"])


def test_valid_every_validates_every_nth_and_the_last_epoch(tiny_recipe, tmp_path):
    exp, _ = run_train(tiny_recipe, tmp_path, "xvector_softmax.yaml", "data.feature=fbank40",
                       "model.hparams.feat_dim=40", "train.epochs=5", "train.valid_every=2",
                       "scheduler.name=plateau", exp_name="valid_every")
    hist = json.loads((exp / "history.json").read_text())
    assert [h["epoch"] for h in hist if "valid_eer" in h] == [2, 4, 5]
    assert [h["epoch"] for h in hist if "valid_seconds" in h] == [2, 4, 5]
    assert all(0 < h["valid_seconds"] < h["epoch_seconds"] for h in hist if "valid_seconds" in h)
    with pytest.raises(ConfigError, match="valid_every"):
        load_config(str(REPO / "conf" / "xvector_softmax.yaml"), ["train.valid_every=0"])


def test_budget_estimate_counts_validation_only_for_epochs_that_validate():
    import types
    t = Trainer.__new__(Trainer)
    t.cfg = {"train": {"valid_every": 3, "epochs": 100}}
    t.dist = types.SimpleNamespace(is_main=False)
    t.history = [{"epoch": 1, "epoch_seconds": 10.0}, {"epoch": 2, "epoch_seconds": 10.0},
                 {"epoch": 3, "epoch_seconds": 16.0, "valid_seconds": 6.0}]
    assert t._pace() == (10.0, 6.0)
    # 36 s spent of 50: epoch 4 (no validation, ~10 s) fits; epoch 6 (10 + 6 s) would not
    assert not t._over_budget(50 / 60, 4)
    assert t._over_budget(50 / 60, 6) and t.history[-1]["stopped"] == "train.max_minutes"
    # the budget horizon's pace amortises one validation over valid_every epochs
    from pysv.train.optim import Horizon
    train_s, valid_s = t._pace()
    assert Horizon(10, 1000).fit_budget(t._epoch_seconds(), 1, pace=train_s + valid_s / 3) == (3 + 2) * 10


def test_budget_horizon_decays_to_min_lr_when_the_budget_ends(tiny_recipe, tmp_path, monkeypatch):
    # every epoch "takes" 6 s of a 30 s budget (the clock replaced): 5 epochs fit; from epoch 2 on the
    # schedule spans those 5 epochs and the learning rate reaches min_lr at the last step
    monkeypatch.setattr(Trainer, "_epoch_seconds", lambda self: [6.0] * len(self.history))
    exp, _ = run_train(tiny_recipe, tmp_path, "xvector_softmax.yaml", "data.feature=fbank40",
                       "model.hparams.feat_dim=40", "train.epochs=50", "train.max_minutes=0.5",
                       "scheduler.name=warmup_cosine", "scheduler.horizon=budget", "scheduler.min_lr=0.0005",
                       "scheduler.warmup_epochs=0.5", exp_name="horizon")
    hist = json.loads((exp / "history.json").read_text())
    assert len(hist) == 5 and hist[-1]["stopped"] == "train.max_minutes"
    spe = hist[1]["lr_horizon_steps"] // 5
    assert [h["lr_horizon_steps"] for h in hist] == [50 * spe] + [5 * spe] * 4
    assert hist[-1]["lr"] == pytest.approx(0.0005)
    assert hist[1]["lr"] > hist[2]["lr"] > hist[3]["lr"] > hist[-1]["lr"]


def test_ensemble_trains_members_with_their_seeds_and_one_final_pt(tiny_recipe, tmp_path, capsys):
    # train.ensemble=2: two member runs (seeds 1 and 2, the same validation speakers), one final.pt
    # whose embedding is the members' normalised embeddings concatenated / sqrt(2)
    exp, _ = run_train(tiny_recipe, tmp_path, "thin_resnet34_angleproto.yaml", "train.epochs=1",
                       "train.ensemble=2", "model.hparams.embed_dim=32", exp_name="ens")
    members = [exp / "members" / "m1", exp / "members" / "m2"]
    cfgs = [load_config(str(m / "config.yaml")) for m in members]
    assert [c["seed"] for c in cfgs] == [1, 2] and [c["data"]["valid_seed"] for c in cfgs] == [1, 1]
    assert (members[0] / "valid_speakers").read_text() == (members[1] / "valid_speakers").read_text() \
        == (exp / "valid_speakers").read_text()
    for name in ("config.yaml", "final.pt", "history.json", "num_params", ".done"):
        assert (exp / name).is_file(), name
    assert load_config(str(exp / "config.yaml"))["train"]["ensemble"] == 2
    assert [h["member"] for h in json.loads((exp / "history.json").read_text())] == [1, 2]
    model, cfg = checkpoint.load_encoder(exp)
    assert cfg["model"]["name"] == "ensemble" and model.embed_dim == 64
    a, _ = checkpoint.load_encoder(members[0])
    b, _ = checkpoint.load_encoder(members[1])
    x = torch.randn(3, 120, 40)
    with torch.no_grad():
        e, ea, eb = model(x), a(x), b(x)
    cos = torch.nn.functional.cosine_similarity
    # the seeds differ, so do the members; the ensemble's cosine is the mean of theirs
    assert not torch.allclose(ea, eb)
    torch.testing.assert_close(cos(e[0:1], e[1:2]), (cos(ea[0:1], ea[1:2]) + cos(eb[0:1], eb[1:2])) / 2,
                               rtol=1e-4, atol=1e-5)
    # stage 3 reads it as any run
    test = tiny_recipe["test"]
    assert extract_bin.main(["--exp", str(exp), "--data", str(test)]) == 0
    import kaldiio
    emb = kaldiio.load_scp(str(exp / "embeddings" / test.name / "xvector.scp"))
    assert all(np.asarray(v).shape == (64,) for v in emb.values())
    # the same command again: complete, skipped; a changed key is refused by name
    capsys.readouterr()
    run_train(tiny_recipe, tmp_path, "thin_resnet34_angleproto.yaml", "train.epochs=1",
              "train.ensemble=2", "model.hparams.embed_dim=32", exp_name="ens")
    assert "is complete (an ensemble of 2 members)" in capsys.readouterr().err
    _, rc = run_train(tiny_recipe, tmp_path, "thin_resnet34_angleproto.yaml", "train.epochs=1",
                      "train.ensemble=2", "model.hparams.embed_dim=32", "optim.lr=0.01", exp_name="ens", check=False)
    assert rc == 2 and "optim.lr" in capsys.readouterr().err


def test_ensemble_members_share_the_time_budget(tiny_recipe, tmp_path):
    # a budget far below one epoch: each member runs one epoch; member 1 gets half the budget and
    # member 2 what member 1 left (nothing: the floor, 1e-4 min), and the ensemble's config keeps the total
    exp, _ = run_train(tiny_recipe, tmp_path, "thin_resnet34_angleproto.yaml", "train.epochs=50",
                       "train.ensemble=2", "train.max_minutes=0.0002", exp_name="ens_budget")
    budgets = [load_config(str(exp / "members" / m / "config.yaml"))["train"]["max_minutes"] for m in ("m1", "m2")]
    assert budgets == [0.0001, 0.0001]
    assert load_config(str(exp / "config.yaml"))["train"]["max_minutes"] == 0.0002
    hist = json.loads((exp / "history.json").read_text())
    assert [h["member"] for h in hist][:1] == [1] and hist[0]["stopped"] == "train.max_minutes"


def test_ensemble_members_of_another_kind(tiny_recipe, tmp_path):
    # train.member_overrides: member 2 trains with another loss, sampler and encoder width; the
    # ensemble holds both encoders and every member keeps the system's validation speakers
    changes = "[{}, {loss.name: softmax, sampler.kind: shuffle, model.hparams.embed_dim: 16}]"
    exp, _ = run_train(tiny_recipe, tmp_path, "thin_resnet34_angleproto.yaml", "train.epochs=1",
                       "train.ensemble=2", "model.hparams.embed_dim=32", f"train.member_overrides={changes}",
                       exp_name="ens_mixed")
    cfgs = [load_config(str(exp / "members" / m / "config.yaml")) for m in ("m1", "m2")]
    assert [c["loss"]["name"] for c in cfgs] == ["angleproto", "softmax"]
    assert [c["sampler"]["kind"] for c in cfgs] == ["balanced", "shuffle"]
    assert [c["model"]["hparams"]["embed_dim"] for c in cfgs] == [32, 16]
    assert [c["seed"] for c in cfgs] == [1, 2] and all(c["train"]["member_overrides"] == [] for c in cfgs)
    model, cfg = checkpoint.load_encoder(exp)
    assert model.embed_dim == 48 and len(cfg["model"]["hparams"]["members"]) == 2
    assert load_config(str(exp / "config.yaml"))["train"]["member_overrides"][1]["loss.name"] == "softmax"


@pytest.mark.parametrize("changes, message", [
    ("[{data.feature: fbank64}]", "sets 'data.feature', which the members of an ensemble share"),
    ("[{}, {data.valid_seed: 3}]", "item 2 sets 'data.valid_seed'"),
    ("[{extract: {mode: full}}]", "sets 'extract.mode'"),
    ("[{}, {loss.nam: softmax}]", "item 2: unknown config key 'loss.nam'"),
    ("[{}, {sampler.kind: no_such_sampler}]", "sampler.kind"),
    ("[{}, {}, {}]", "3 items for train.ensemble=2"),
    ("[softmax]", "item 1 must be a mapping"),
])
def test_member_overrides_are_validated_by_name(changes, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(str(REPO / "conf" / "thin_resnet34_angleproto.yaml"),
                    ["train.ensemble=2", f"train.member_overrides={changes}"])


def test_ensemble_model_refuses_mixed_or_single_members():
    from pysv import models
    with pytest.raises(ValueError, match="at least 2 members"):
        models.build("ensemble", members=[{"name": "thin_resnet34"}])
    with pytest.raises(ValueError, match="different feature dims"):
        models.build("ensemble", members=[{"name": "thin_resnet34"},
                                          {"name": "thin_resnet34", "hparams": {"feat_dim": 64}}])
    with pytest.raises(ValueError, match="takes waveforms"):
        models.build("ensemble", members=[{"name": "thin_resnet34"}, {"name": "rawnet2"}])
