"""pysv.export: every registered encoder with its front end as one TorchScript / ONNX graph.

The references are the stage-3 computation: the numpy feature path (``pysv.features.build(name,
dither=0.0)(samples, sr)``, itself tested against Kaldi in test_features.py) followed by the
PyTorch encoder on the whole utterance in eval mode; the exported graphs must give the same
embedding for inputs of lengths other than the traced one.
"""
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

import pysv
import pysv.export as export_lib
import pysv.features as features_lib
import pysv.models as model_lib
from pysv.train.config import list_systems, load_config

torch.set_num_threads(2)
pytestmark = pytest.mark.filterwarnings("ignore:.*is deprecated:DeprecationWarning:torch.jit")

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
SECONDS = (0.7, 2.3, 4.0)

#: hyper-parameters that keep each built-in encoder small (the system config's others are kept)
SMALL = {
    "thin_resnet34": dict(channels=[8, 16, 16, 32], layers=[1, 1, 1, 1], embed_dim=32),
    "mla_resnet34": dict(channels=[4, 8, 16, 32], layers=[1, 1, 1, 1]),
    "xvector": dict(hidden_dim=32, stats_dim=64, embed_dim=32),
    "saep": dict(d_k=32, d_ff=64, embed_dim=32),
    "rawnet2": dict(first_filters=8, filters=[8, 16], blocks=[1, 2], gru_dim=16, embed_dim=16, sinc_length=31),
}


def _system_configs():
    """One resolved system config per encoder name (the first conf/<system>.yaml that uses it)."""
    out = {}
    for system in list_systems(ROOT / "conf"):
        cfg = load_config(str(ROOT / "conf" / f"{system}.yaml"))
        out.setdefault(cfg["model"]["name"], cfg)
        if cfg["train"]["ensemble"] > 1 and "ensemble" not in out:  # the final.pt of a train.ensemble run
            member = {"name": cfg["model"]["name"],
                      "hparams": {**cfg["model"]["hparams"], **SMALL.get(cfg["model"]["name"], {})}}
            out["ensemble"] = {**cfg, "model": {"name": "ensemble", "hparams": {"members": [member, member]}}}
    return out


CONFIGS = _system_configs()


def _chirp(seconds: float, seed: int = 0) -> np.ndarray:
    """A noisy linear chirp 100 Hz -> 6 kHz, float32 in [-1, 1]. (With much less noise, the lowest mel
    bands fall ~90 dB below the chirp, where float32 rounding alone reaches ~1e-3 in the log.)"""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    phase = 2 * np.pi * (100.0 * t + 0.5 * (6000.0 - 100.0) / seconds * t * t)
    noise = np.random.default_rng(seed).standard_normal(n)
    return (0.4 * np.sin(phase) + 0.05 * noise).astype(np.float32)


def _cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


#: hyper-parameter variants exported besides each encoder's system config (option -> graph change)
VARIANTS = {"thin_resnet34+flatten": ("thin_resnet34", dict(freq_pool="flatten", pooling="stats"))}


def _encoder(name: str, **extra):
    """``name``'s encoder as its system config builds it, made small, ``extra`` hparams on top."""
    if name not in CONFIGS:
        pytest.skip(f"no conf/ system uses encoder {name!r}")
    cfg = CONFIGS[name]
    torch.manual_seed(0)
    enc = model_lib.build(name, **{**cfg["model"]["hparams"], **SMALL.get(name, {}), **extra})
    with torch.no_grad():  # non-trivial batch-norm statistics, so eval mode differs from identity
        for m in enc.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return enc.eval(), cfg


@pytest.mark.parametrize("feature", sorted({c["data"]["feature"] for c in CONFIGS.values() if c["data"]["feature"]}))
def test_torch_front_end_matches_numpy_features(feature, tmp_path):
    ext = features_lib.build(feature, dither=0.0)
    module = features_lib.TorchFrontEnd(ext)
    traced = torch.jit.trace(module, torch.from_numpy(_chirp(1.0))[None], check_trace=False)
    path = tmp_path / "front_end.onnx"
    example = torch.from_numpy(_chirp(1.0))[None]
    export_lib._onnx_export(module, example, path, export_lib.DEFAULT_OPSET, output_axes={1: "frames"})
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for seconds in SECONDS:
        x = _chirp(seconds, seed=1)
        ref = ext(x, SR)
        assert ref.shape == (ext.num_frames(len(x)), ext.dim)
        w = torch.from_numpy(x)[None]
        for what, out in (("eager", module(w)[0].numpy()), ("traced", traced(w)[0].numpy()),
                          ("onnx", session.run(None, {"waveform": w.numpy()})[0][0])):
            assert out.shape == ref.shape, (what, seconds)
            assert np.abs(out - ref).max() <= 1e-3, (what, seconds, float(np.abs(out - ref).max()))


@pytest.mark.parametrize("name", [*model_lib.names(), *sorted(VARIANTS)])
def test_exported_graphs_match_pytorch_embeddings(name, tmp_path):
    name, extra = VARIANTS.get(name, (name, {}))
    enc, cfg = _encoder(name, **extra)
    feature = cfg["data"]["feature"]
    ts_path, onnx_path = tmp_path / "model.pt", tmp_path / "model.onnx"
    meta_ts = export_lib.export_torchscript(enc, cfg, ts_path, check=False)
    meta_onnx = export_lib.export_onnx(enc, cfg, onnx_path, check=False)
    assert not enc.training and all(p.requires_grad for p in enc.parameters())  # the caller's encoder untouched

    scripted = torch.jit.load(str(ts_path))
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.shape[0], out.name, out.shape) == ("waveform", 1, "embedding", [1, enc.embed_dim])
    assert isinstance(inp.shape[1], str)  # the samples axis is dynamic
    extractor = features_lib.build(feature, dither=0.0) if feature else None
    waves = [_chirp(seconds, seed=2) for seconds in SECONDS]
    with torch.no_grad():  # stage 3 (mode full): features of the numpy path, encoder in eval mode
        refs = [enc(torch.from_numpy(extractor(x, SR) if extractor is not None else x)[None]).numpy()
                for x in waves]
    for i, (x, ref) in enumerate(zip(waves, refs)):
        w = torch.from_numpy(x)[None]
        got_ts = scripted(w).detach().numpy()  # no torch.no_grad(): a user's plain call
        got_onnx = session.run(None, {"waveform": w.numpy()})[0]
        assert got_ts.shape == got_onnx.shape == ref.shape == (1, enc.embed_dim)
        assert _cosine(got_ts, ref) >= 0.9999, (SECONDS[i], _cosine(got_ts, ref))
        assert _cosine(got_onnx, ref) >= 0.9999, (SECONDS[i], _cosine(got_onnx, ref))
        # random small encoders share a large common component (cosines between different inputs reach
        # 0.9999), so the error must also be small against how far apart different inputs' embeddings are
        spread = min(np.linalg.norm(ref - other) for j, other in enumerate(refs) if j != i)
        assert spread > 0
        for got in (got_ts, got_onnx):
            assert np.linalg.norm(got - ref) <= 1e-2 * spread, (SECONDS[i], np.linalg.norm(got - ref), spread)

    # metadata, in both files
    for meta in (meta_ts, meta_onnx, export_lib.read_metadata(ts_path), export_lib.read_metadata(onnx_path)):
        assert meta["sample_rate"] == SR and meta["embed_dim"] == enc.embed_dim
        assert meta["system"] == cfg["system"] and meta["encoder"] == name
        assert meta["pysv_version"] == pysv.__version__
        if feature:
            assert meta["feature"] == feature and meta["feature_type"] == extractor.type
            assert meta["feature_dim"] == extractor.dim and meta["feature_config"]["dither"] == 0.0
        else:
            assert meta["feature"] == meta["feature_type"] == "waveform" and meta["feature_config"] is None
    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert props["sample_rate"] == str(SR) and props["embed_dim"] == str(enc.embed_dim)
    assert props["system"] == cfg["system"] and props["pysv_version"] == pysv.__version__
    extra = {export_lib.METADATA_FILE: ""}
    torch.jit.load(str(ts_path), _extra_files=extra)
    assert json.loads(extra[export_lib.METADATA_FILE])["embed_dim"] == enc.embed_dim


def test_export_checks_and_errors(tmp_path, monkeypatch):
    enc, cfg = _encoder("xvector")
    # the built-in length check passes for a correct graph ...
    export_lib.export_onnx(enc, cfg, tmp_path / "ok.onnx")
    assert (tmp_path / "ok.onnx").is_file()

    # ... and refuses a trace that bakes the traced frame count in (int() of a traced size)
    def baked(self, waveform):
        feats = self.front_end(waveform)
        return self.encoder(feats[:, :int(feats.shape[1])])

    monkeypatch.setattr(export_lib.EmbeddingGraph, "forward", baked)
    with pytest.raises(RuntimeError, match="not valid for every length"):
        export_lib.export_torchscript(enc, cfg, tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()
    monkeypatch.undo()

    with pytest.raises(ValueError, match="feat_dim=90"):
        export_lib.EmbeddingGraph(enc, cfg, feature="fbank40")
    with pytest.raises(ValueError, match="opset"):
        export_lib.export_onnx(enc, cfg, tmp_path / "old.onnx", opset=16)
    assert not (tmp_path / "old.onnx").exists()
