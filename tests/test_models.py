"""Tests of the encoders (pysv.models) and the shared pooling layers. CPU only, tiny inputs."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from pysv.models import build, count_parameters, default_feat_dim, hparam_names, input_kind, names
from pysv.models import pooling as P
from pysv.models.mla_resnet import ENCODINGS
from pysv.models.rawnet2 import FMS, FMS_MODES, SincConv

torch.set_num_threads(2)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The inputs here are tiny: one intra-op thread is faster than two (no OpenMP hand-offs,
    and no spin-wait collapse when the machine is shared). Restored after this module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

# every encoder variant the papers describe, with an input small enough to run fast. The 2-D CNNs
# of the variant sweep get 16 mel bins instead of 40/64 (the layers and parameters are the same,
# only the feature map is smaller); the FMS sweep uses the cheap strided-conv first layer.
VARIANTS = (
    [("thin_resnet34", {}), ("thin_resnet34", {"pooling": "tap", "feat_dim": 16}),
     ("thin_resnet34", {"pooling": "asp", "feat_dim": 16}),
     ("thin_resnet34", {"pooling": "stats", "freq_pool": "flatten", "feat_dim": 16}),
     ("thin_resnet34", {"pooling": "sap", "freq_pool": "flatten", "last_stride": 2, "feat_dim": 13}),
     ("thin_resnet34", {"se": False, "last_stride": 2, "input_norm": "instance", "feat_dim": 16}),
     ("xvector", {}), ("xvector", {"pad_input": True}), ("xvector", {"feat_dim": 90}),
     ("saep", {}), ("saep", {"d_k": 128}), ("saep", {"d_k": 64, "d_ff": 1024}),
     ("saep", {"pos_encoding": "sinusoidal"})]
    + [("mla_resnet34", {"encoding": "mla_sap_fr_dln"})]
    + [("mla_resnet34", {"encoding": e, "feat_dim": 16}) for e in ENCODINGS]
    + [("ensemble", {"members": [{"name": "thin_resnet34", "hparams": {"feat_dim": 16, "embed_dim": 32}},
                                 {"name": "xvector", "hparams": {"feat_dim": 16, "embed_dim": 24}}]})]
    + [("rawnet2", {})]
    + [("rawnet2", {"fms": f, "first_layer": "conv"}) for f in FMS_MODES]
    + [("rawnet2", {"sinc_length": 125}), ("rawnet2", {"sinc_length": 375}),
       ("rawnet2", {"aggregation": "sap", "first_layer": "conv"}),
       ("rawnet2", {"aggregation": "mhsap", "first_layer": "conv"})]
)
IDS = [n + "".join(f"-{k}={v}" for k, v in kw.items()) for n, kw in VARIANTS]

EMBED_DIM = {"thin_resnet34": 512, "xvector": 512, "saep": 400, "rawnet2": 1024}


def _input(model, batch, length, gen):
    if model.input_kind == "waveform":
        return torch.randn(batch, length, generator=gen) * 0.1
    return torch.randn(batch, length, model.feat_dim, generator=gen)


def _lengths(name, kw=None):
    """(padded length, per-row valid lengths) small but legal for each encoder (RawNet2: at least
    two frames reach the aggregation layer, so attention pooling has something to weigh)."""
    if name == "rawnet2":
        if (kw or {}).get("first_layer") == "conv":
            return 6600, [6600, 5000, 4400]
        return 7000, [7000, 5600, 4900]
    if name == "mla_resnet34":
        return 26, [26, 19, 11]
    return 40, [40, 29, 17]


def _randomize_bn(model, gen):
    """Non-trivial running statistics, so that masking mistakes cannot hide behind BN(0) = 0."""
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=gen) * 0.5)


# ------------------------------------------------------------------------------------------------
# registry / hyper-parameter handling
# ------------------------------------------------------------------------------------------------
def test_registry():
    # the encoders DESIGN.md names are registered (plug-ins may add more)
    assert {"thin_resnet34", "xvector", "saep", "mla_resnet34", "rawnet2"} <= set(names())
    for n in names():
        m = build(n)
        assert m.input_kind == input_kind(n) in ("features", "waveform")
        assert m.feat_dim == default_feat_dim(n)
        assert (m.feat_dim is None) == (m.input_kind == "waveform")
        assert isinstance(m.embed_dim, int) and m.embed_dim > 0
    with pytest.raises(ValueError, match="resnet99"):
        build("resnet99")
    assert "fms" in hparam_names("rawnet2") and "feat_dim" not in hparam_names("rawnet2")


@pytest.mark.parametrize("name", names())
def test_unknown_hparam_rejected(name):
    with pytest.raises(TypeError, match="bogus_key"):
        build(name, bogus_key=1)


@pytest.mark.parametrize("name,kw,key", [
    ("thin_resnet34", {"pooling": "max"}, "pooling"),
    ("thin_resnet34", {"freq_pool": "max"}, "freq_pool"),
    ("xvector", {"feat_dim": 0}, "feat_dim"),
    ("saep", {"dropout": 1.5}, "dropout"),
    ("mla_resnet34", {"encoding": "mla_gap_fr"}, "encoding"),
    ("rawnet2", {"fms": "div"}, "fms"),
    ("rawnet2", {"sinc_length": 250}, "sinc_length"),
    ("rawnet2", {"aggregation": "lstm"}, "aggregation"),
    ("thin_resnet34", {"channels": 16}, "channels"),
])
def test_bad_hparam_value_rejected(name, kw, key):
    with pytest.raises(ValueError, match=key):
        build(name, **kw)


def test_bad_inputs_rejected():
    m = build("thin_resnet34").eval()
    with pytest.raises(ValueError, match="40"):
        m(torch.zeros(1, 20, 64))
    with pytest.raises(ValueError, match="lengths"):
        m(torch.zeros(2, 20, 40), lengths=torch.tensor([20, 21]))
    with pytest.raises(ValueError, match="15"):
        build("xvector").eval()(torch.zeros(1, 14, 30))
    r = build("rawnet2").eval()
    with pytest.raises(ValueError, match=str(r.min_samples())):
        r(torch.zeros(1, r.min_samples() - 1))


# ------------------------------------------------------------------------------------------------
# shapes, variable length, gradients
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,kw", VARIANTS, ids=IDS)
def test_shapes_and_gradients(name, kw):
    """Train mode: [B, embed_dim] output and a gradient on every parameter (padded batch)."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)  # parameter init: independent of test order
    model = build(name, **kw)
    T, lens = _lengths(name, kw)
    x = _input(model, len(lens), T, gen)
    model.train()
    y = model(x, lengths=torch.tensor(lens))
    assert y.shape == (len(lens), model.embed_dim)
    if name in EMBED_DIM:
        assert model.embed_dim == EMBED_DIM[name]
    (y * torch.randn(y.shape, generator=gen)).sum().backward()
    params = list(model.named_parameters())
    missing = [n for n, p in params if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no gradient for {missing}"
    # nonzero everywhere, except that the 2-unit ReLU bottleneck of the SE layers of the
    # 16-channel Thin-ResNet blocks may be entirely off for a tiny batch (a dead ReLU, not a
    # disconnected layer: the gradient exists, it is just zero)
    zero = [n for n, p in params if p.grad.abs().sum() == 0 and ".se.fc." not in n]
    assert not zero, f"zero gradient for {zero}"
    # eval mode, two different lengths one at a time
    model.eval()
    with torch.no_grad():
        for L in (lens[1], T):
            e = model(x[:1, :L])
            assert e.shape == (1, model.embed_dim) and torch.isfinite(e).all()


def test_mla_embedding_dims():
    # MLA-SAP Table 3 "Dim" column
    dims = {e: build("mla_resnet34", encoding=e).embed_dim for e in ENCODINGS}
    assert dims == {"gap": 256, "sap": 256, "mla_gap": 512, "mla_sap": 512, "mla_sap_fr": 512,
                    "mla_sap_fr_dln": 512}


def test_long_input_at_inference():
    """Utterances much longer than training crops go through (x-vector: 3000 frames ~ 30 s)."""
    m = build("xvector").eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3000, 30)).shape == (1, 512)


# ------------------------------------------------------------------------------------------------
# batch invariance (eval mode)
# ------------------------------------------------------------------------------------------------
INVARIANCE = [("thin_resnet34", {}), ("thin_resnet34", {"input_norm": "none"}),
              ("thin_resnet34", {"pooling": "asp", "input_norm": "mean"}),
              ("thin_resnet34", {"pooling": "stats", "freq_pool": "flatten", "input_norm": "mean"}),
              ("xvector", {}), ("xvector", {"pad_input": True}), ("saep", {}),
              ("mla_resnet34", {}), ("mla_resnet34", {"encoding": "mla_gap"}),
              ("rawnet2", {}), ("rawnet2", {"first_layer": "conv", "fms": "mul_add_sep",
                                            "aggregation": "mhsap"})]


@pytest.mark.parametrize("name,kw", INVARIANCE, ids=[n + str(k) for n, k in INVARIANCE])
def test_batch_invariance(name, kw):
    """A padded row with ``lengths`` gives the embedding of its unpadded utterance, whatever else
    is in the batch (exact up to float rounding: padding is zeroed before every time-mixing conv)."""
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    model = build(name, **kw)
    _randomize_bn(model, gen)
    model.eval()
    T, lens = _lengths(name, kw)
    x = _input(model, len(lens), T, gen)
    with torch.no_grad():
        alone = torch.cat([model(x[i:i + 1, :L]) for i, L in enumerate(lens)])
        batch = model(x, lengths=torch.tensor(lens))
        perm = [2, 0, 1]
        other = model(x[perm], lengths=torch.tensor([lens[i] for i in perm]))[[1, 2, 0]]
    scale = alone.abs().max()
    assert torch.allclose(batch, alone, atol=1e-4 * scale, rtol=0)
    assert torch.allclose(other, alone, atol=1e-4 * scale, rtol=0)
    # full-length row: passing lengths or not makes no difference
    assert torch.allclose(batch[0], model(x[:1])[0], atol=1e-5 * scale, rtol=0)


def test_padding_without_lengths_changes_embedding():
    """Sanity check of the test above: the masks are what makes padded rows exact."""
    gen = torch.Generator().manual_seed(2)
    model = build("thin_resnet34")
    _randomize_bn(model, gen)
    model.eval()
    x = torch.randn(2, 40, 40, generator=gen)
    x[1, 25:] = 0
    with torch.no_grad():
        alone = model(x[1:, :25])
        unmasked = model(x)[1:]
        masked = model(x, lengths=torch.tensor([40, 25]))[1:]
    assert (unmasked - alone).abs().max() > 1e-3 * alone.abs().max()
    assert torch.allclose(masked, alone, atol=1e-4 * alone.abs().max(), rtol=0)


# ------------------------------------------------------------------------------------------------
# parameter counts against the papers
# ------------------------------------------------------------------------------------------------
# (name, hparams, count the paper way (up to embedding?), paper figure, relative tolerance)
# Figures given to 3 significant digits (SAEP) must match within 0.5 %; round figures
# ("1.4M", "about 6 million", "7.1M", and SAEP's "0.45M", see docs/models.md) within 3 %.
PAPER_COUNTS = [
    ("thin_resnet34", {}, False, 1.4e6, 0.03),            # In defence of metric learning, Table 1
    ("xvector", {"feat_dim": 90}, True, 4.38e6, 0.005),     # SAEP Table 1 (x-vector, 90-d MFCC)
    ("saep", {"d_k": 512, "d_ff": 2048}, True, 1.16e6, 0.005),  # SAEP Table 1 / section 4
    ("saep", {"d_k": 128, "d_ff": 2048}, True, 0.88e6, 0.005),  # SAEP section 4
    ("saep", {"d_k": 64, "d_ff": 2048}, True, 0.83e6, 0.005),   # SAEP section 4
    ("saep", {"d_k": 64, "d_ff": 1024}, True, 0.45e6, 0.03),    # SAEP section 4 (0.463 M ours)
    ("rawnet2", {}, False, 7.1e6, 0.03),                     # RawNet2 without output layer
]


@pytest.mark.parametrize("name,kw,upto,paper,tol", PAPER_COUNTS)
def test_param_counts_match_papers(name, kw, upto, paper, tol):
    n = count_parameters(build(name, **kw), upto_embedding=upto)
    assert abs(n - paper) <= tol * paper, f"{name} {kw}: {n} vs paper {paper:.0f}"


def test_mla_resnet_param_count():
    # MLA-SAP section 2.2: the scaled ResNet-34 (Table 1, MLA-GAP) "has only about 6 million
    # model parameters"; Table 1 includes the 512 x N output layer (N = 1211 VoxCeleb1 speakers).
    enc = count_parameters(build("mla_resnet34", encoding="mla_gap"))
    assert abs(enc + 512 * 1211 + 1211 - 6.0e6) <= 0.03 * 6.0e6
    # FR adds 512*64+64 + 64*512+512 weights, DLN one scalar (hand-computed from eq. (4), (5))
    sap = count_parameters(build("mla_resnet34", encoding="mla_sap"))
    assert count_parameters(build("mla_resnet34", encoding="mla_sap_fr")) - sap == 512 * 64 + 64 + 64 * 512 + 512
    assert count_parameters(build("mla_resnet34", encoding="mla_sap_fr_dln")) - sap == 66112 + 1


def test_rawnet2_variant_param_differences():
    base = count_parameters(build("rawnet2", fms="none"))
    fms_fc = 128 * 129 * 2 + 256 * 257 * 4  # one FC per residual block (2 x 128, 4 x 256 filters)
    for mode in ("add", "mul", "add_mul", "mul_add"):
        assert count_parameters(build("rawnet2", fms=mode)) - base == fms_fc
    assert count_parameters(build("rawnet2", fms="mul_add_sep")) - base == 2 * fms_fc
    # sinc layer: 2 learnable cut-offs per filter, whatever its length (RawNet2 section 3)
    s125 = count_parameters(build("rawnet2", sinc_length=125))
    assert s125 == count_parameters(build("rawnet2", sinc_length=375)) == base + fms_fc
    assert sum(p.numel() for p in SincConv(128, 251).parameters()) == 256


def test_saep_count_by_hand():
    # 2 blocks x [4 projections 90x64 (+bias) + FFN 90->1024->90 + 2 LayerNorms] + w_c + dense 90, 400
    block = 3 * (90 * 64 + 64) + (64 * 90 + 90) + (90 * 1024 + 1024 + 1024 * 90 + 90) + 2 * 180
    expected = 2 * block + 90 + (90 * 90 + 90) + (90 * 400 + 400)
    m = build("saep", d_k=64, d_ff=1024)
    assert count_parameters(m, upto_embedding=True) == expected
    assert count_parameters(m) == expected + 400 * 400 + 400


# ------------------------------------------------------------------------------------------------
# RawNet2 details
# ------------------------------------------------------------------------------------------------
def test_sinc_filters_are_bandpass_at_initial_cutoffs():
    K, sr = 251, 16000
    conv = SincConv(128, K, sr)
    low, high = (t.detach().double().numpy() for t in conv.cutoffs())
    # initial cut-offs: 129 edges equally spaced in mel between 30 Hz and 8000-100 Hz;
    # low = 50 + edge_i, high = low + 50 + (edge_{i+1} - edge_i)  (SincNet parametrization)
    mel = np.linspace(2595 * np.log10(1 + 30 / 700), 2595 * np.log10(1 + 7900 / 700), 129)
    edges = 700 * (10 ** (mel / 2595) - 1)
    np.testing.assert_allclose(low, 50 + edges[:-1], rtol=1e-5)
    np.testing.assert_allclose(high, np.minimum(edges[1:] + 100, 8000), rtol=1e-5)
    assert np.all(np.diff(low) > 0)  # mel spacing: increasing, wider at high frequency
    assert np.diff(edges)[-1] > 10 * np.diff(edges)[0]

    h = conv.filters().detach().squeeze(1).double().numpy()
    n_fft = 16384
    H = np.abs(np.fft.rfft(h, n_fft, axis=1))
    f = np.fft.rfftfreq(n_fft, 1 / sr)
    peak = f[H.argmax(1)]
    assert np.all((peak >= low) & (peak <= high)), "peak of a filter outside its pass band"
    half_lobe = 2 * sr / K  # Hamming main-lobe half width (Hz)
    for i in range(128):
        stop = (f < low[i] - 2 * half_lobe) | (f > high[i] + 2 * half_lobe)
        att_db = 20 * np.log10(H[i, stop].max() / H[i].max())
        assert att_db < -35, f"filter {i}: only {att_db:.1f} dB attenuation outside the band"
    # wide filters are flat in their pass band (within 1 dB at the centre)
    for i in (100, 127):
        centre = np.argmin(np.abs(f - (low[i] + high[i]) / 2))
        assert 20 * np.log10(H[i, centre] / H[i].max()) > -1.0


def test_sinc_cutoffs_are_learnable():
    conv = SincConv(16, 101)
    y = conv(torch.randn(2, 1, 500))
    y.pow(2).mean().backward()
    assert conv.low_hz_.grad.abs().sum() > 0 and conv.band_hz_.grad.abs().sum() > 0


def test_rawnet2_frame_counts_table1():
    # RawNet2 Table 1 output shapes for 59049 samples: 19683 after the first layer (exact for the
    # strided-conv baseline), 2187 after the 128-filter blocks, 27 before the GRU
    conv = build("rawnet2", first_layer="conv")
    L = torch.tensor([59049])
    assert int(conv.output_lengths(L)) == 27
    assert 59049 // 3 == 19683 and 19683 // 3 ** 2 == 2187
    sinc = build("rawnet2")
    assert int(sinc.output_lengths(L)) == ((59049 - 250) // 3) // 3 ** 6 == 26


@pytest.mark.parametrize("mode", [m for m in FMS_MODES if m != "none"])
def test_fms_equations(mode):
    """RawNet2 eqs. (1)-(4) with a known scale vector s = sigmoid(b) (FC weights zeroed)."""
    fms = FMS(3, mode)
    b = torch.tensor([0.0, 1.0, -2.0])
    with torch.no_grad():
        fms.fc.weight.zero_()
        fms.fc.bias.copy_(b)
        if fms.fc_add is not None:
            fms.fc_add.weight.zero_()
            fms.fc_add.bias.copy_(-b)
    c = torch.arange(12.0).view(1, 3, 4)
    s = (1 / (1 + np.exp(-b.numpy()))).reshape(1, 3, 1)
    s2 = (1 / (1 + np.exp(b.numpy()))).reshape(1, 3, 1)
    cn = c.numpy()
    expected = {"add": cn + s, "mul": cn * s, "add_mul": (cn + s) * s, "mul_add": cn * s + s,
                "mul_add_sep": cn * s + s2}[mode]
    np.testing.assert_allclose(fms(c, None).detach().numpy(), expected, rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# other architecture facts
# ------------------------------------------------------------------------------------------------
def test_frame_counts_of_feature_encoders():
    # voxceleb_trainer ResNetSE34L: 202 input frames -> 51 frames before SAP (time stride 4)
    assert int(build("thin_resnet34").output_lengths(torch.tensor([202]))) == 51
    # x-vector: total context 15 frames (t-7 .. t+7), Kaldi "valid" TDNN
    assert int(build("xvector").output_lengths(torch.tensor([300]))) == 286
    # MLA-SAP Table 2: res4 at L/8
    assert int(build("mla_resnet34").output_lengths(torch.tensor([256]))) == 32


def test_dln_norm_is_alpha():
    """MLA-SAP eq. (5): the embedding has L2 norm alpha, initialised to 10."""
    m = build("mla_resnet34").eval()
    with torch.no_grad():
        e = m(torch.randn(3, 20, 64))
    np.testing.assert_allclose(e.norm(dim=1).numpy(), 10.0, rtol=1e-5)


def test_embedding_vs_training_output():
    """x-vector: eval forward = segment6 affine (pre-ReLU, can be negative); SAEP: eval forward =
    dense2 after ReLU; training forward = the layer above."""
    gen = torch.Generator().manual_seed(3)
    xv = build("xvector")
    x = torch.randn(4, 30, 30, generator=gen)
    xv.train()
    t = xv(x)
    xv.eval()
    e = xv(x)
    assert torch.equal(e, xv.embed(x)) and (e < 0).any()
    manual = xv.segment6(xv.pool(xv.frame_layers(x.transpose(1, 2)).transpose(1, 2)))
    assert torch.allclose(e, manual, atol=1e-6)
    assert t.shape == e.shape and not torch.allclose(t, xv.train_output(x))  # BN eval vs train
    sa = build("saep", d_k=64, d_ff=128).eval()
    x = torch.randn(2, 30, 90, generator=gen)
    e = sa(x)
    assert (e >= 0).all() and torch.equal(e, sa.embed(x))
    assert torch.allclose(sa.train_output(x), torch.relu(sa.dense3(e)))


def test_saep_attention_is_masked():
    """Keys beyond a row's length get no attention: changing padded frames changes nothing."""
    sa = build("saep", d_k=64, d_ff=128).eval()
    x = torch.randn(2, 30, 90)
    y = x.clone()
    y[1, 20:] = 100.0
    L = torch.tensor([30, 20])
    assert torch.allclose(sa(x, L), sa(y, L), atol=1e-5)


# ------------------------------------------------------------------------------------------------
# pooling layers against hand-computed values
# ------------------------------------------------------------------------------------------------
def _np_rows(x, lens):
    return [x[i, :L].astype(np.float64) for i, L in enumerate(lens)]


def test_tap_gap_stats():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(3, 7, 5, generator=gen)
    lens = [7, 4, 1]
    L = torch.tensor(lens)
    rows = _np_rows(x.numpy(), lens)
    np.testing.assert_allclose(P.TemporalAveragePooling(5)(x, L).numpy(),
                               [r.mean(0) for r in rows], rtol=1e-5, atol=1e-6)
    st = P.StatisticsPooling(5)(x, L).numpy()
    exp = [np.concatenate([r.mean(0), np.sqrt(np.maximum(r.var(0), 1e-10))]) for r in rows]
    np.testing.assert_allclose(st, exp, rtol=1e-5, atol=1e-5)
    x4 = torch.randn(3, 2, 4, 7, generator=gen)  # [B, C, F, T]
    exp = [x4[i, :, :, :line].double().mean(dim=(1, 2)).numpy() for i, line in enumerate(lens)]
    np.testing.assert_allclose(P.GlobalAveragePooling(2)(x4, L).numpy(), exp, rtol=1e-5, atol=1e-6)


def _softmax(a):
    e = np.exp(a - a.max())
    return e / e.sum()


def test_sap_and_asp():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 6, 4, generator=gen)
    lens = [6, 3]
    for value in ("input", "hidden"):
        sap = P.SelfAttentivePooling(4, value=value)
        W, b = sap.linear.weight.detach().double().numpy(), sap.linear.bias.detach().double().numpy()
        u = sap.context.detach().double().numpy()[:, 0]
        out = sap(x, torch.tensor(lens)).detach().numpy()
        for i, r in enumerate(_np_rows(x.numpy(), lens)):
            h = np.tanh(r @ W.T + b)
            w = _softmax(h @ u)  # MLA-SAP eq. (2)
            ref = (w[:, None] * (r if value == "input" else h)).sum(0)  # eq. (3) for 'hidden'
            np.testing.assert_allclose(out[i], ref, rtol=1e-5, atol=1e-6)
    asp = P.AttentiveStatisticsPooling(4)
    W, b = asp.linear.weight.detach().double().numpy(), asp.linear.bias.detach().double().numpy()
    u = asp.context.detach().double().numpy()[:, 0]
    out = asp(x, torch.tensor(lens)).detach().numpy()
    for i, r in enumerate(_np_rows(x.numpy(), lens)):
        w = _softmax(np.tanh(r @ W.T + b) @ u)
        mu = (w[:, None] * r).sum(0)
        sd = np.sqrt((w[:, None] * (r - mu) ** 2).sum(0))
        np.testing.assert_allclose(out[i], np.concatenate([mu, sd]), rtol=1e-5, atol=1e-6)


def test_multihead_attentive_pooling():
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, 5, 6, generator=gen)
    lens = [5, 2]
    # SAEP eq. (5): C = softmax(w_c H^T) H  (one head, no scaling)
    p1 = P.MultiHeadAttentivePooling(6, num_heads=1, scale=False)
    wc = p1.query.detach().double().numpy()[0]
    out = p1(x, torch.tensor(lens)).detach().numpy()
    for i, r in enumerate(_np_rows(x.numpy(), lens)):
        np.testing.assert_allclose(out[i], (_softmax(r @ wc)[:, None] * r).sum(0), rtol=1e-5, atol=1e-6)
    # 3 heads of 2 dims, scores scaled by 1/sqrt(2)
    p3 = P.MultiHeadAttentivePooling(6, num_heads=3)
    q = p3.query.detach().double().numpy()
    out = p3(x, torch.tensor(lens)).detach().numpy()
    for i, r in enumerate(_np_rows(x.numpy(), lens)):
        ref = np.concatenate([(_softmax(r[:, 2 * j:2 * j + 2] @ q[j] / math.sqrt(2))[:, None]
                               * r[:, 2 * j:2 * j + 2]).sum(0) for j in range(3)])
        np.testing.assert_allclose(out[i], ref, rtol=1e-5, atol=1e-6)
    assert sum(p.numel() for p in p1.parameters()) == 6  # w_c in R^{d_m}


def test_build_pooling_names():
    for name in P.POOLING_NAMES:
        assert isinstance(P.build_pooling(name, 8), nn.Module)
    with pytest.raises(ValueError, match="nope"):
        P.build_pooling("nope", 8)


def test_thin_resnet34_freq_pool_feature_size():
    """freq_pool='flatten' keeps the last stage's frequency bins as features (ResNetSE34V2 /
    wespeaker layout): 128 channels x ceil(40 / 8) bins, and x ceil(40 / 16) with last_stride 2."""
    assert build("thin_resnet34").pool.in_dim == 128
    assert build("thin_resnet34", freq_pool="flatten", pooling="stats").pool.in_dim == 128 * 5
    assert build("thin_resnet34", freq_pool="flatten", last_stride=2).pool.in_dim == 128 * 3
    m = build("thin_resnet34", freq_pool="flatten", pooling="stats").eval()
    with torch.no_grad():  # the features move with the frequency layout: a shifted spectrum differs
        x = torch.randn(1, 60, 40)
        a, b = m(x), m(torch.roll(x, 8, dims=2))
    assert not torch.allclose(a, b, atol=1e-3)
