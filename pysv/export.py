"""A trained encoder with its front end inside, as one TorchScript or ONNX graph.

    graph = EmbeddingGraph(encoder, cfg)              # nn.Module: waveform [1, samples] -> embedding [1, D]
    export_torchscript(encoder, cfg, "model.pt")      # torch.jit.load("model.pt")(waveform)
    export_onnx(encoder, cfg, "model.onnx")           # onnxruntime.InferenceSession("model.onnx")

``encoder`` is a trained encoder (``pysv.train.checkpoint.load_encoder(exp_dir)`` returns it with
``cfg``, the run's resolved config). The graph takes a mono float32 waveform ``[1, samples]`` in
[-1, 1] at the model's sample rate, any length, and returns the raw embedding ``[1, D]`` -- what
stage 3 computes in its ``full`` mode (the whole utterance, encoder in eval mode). Feature
encoders get the system's own features (``cfg["data"]["feature"]``) computed inside the graph by
:class:`pysv.features.TorchFrontEnd`, the one torch definition of the features, with dither off;
waveform encoders (RawNet2) take the waveform as it is. The graph does not check its input (NaN,
silence, too-short audio) the way :meth:`pysv.features.FeatureExtractor.prepare` does.

Both formats are traced (``torch.jit.trace``): every size in the front end and the encoders is
computed from the input's shape, and each export is checked on two lengths other than the traced
one before it is written. (torch 2.13 marks TorchScript deprecated; trace, save and load work,
and their DeprecationWarnings are silenced here.) ONNX goes through torch's TorchScript-based exporter
(``torch.onnx.export(dynamo=False)``, opset >= 17) with a dynamic ``samples`` axis and four
symbolic functions registered only while it runs: ``aten::fft_rfft`` -> ``DFT``,
``aten::view_as_real`` -> the DFT's real pairs, ``aten::unfold`` with a dynamic length ->
``Gather``, ``aten::sinc`` (RawNet2's filters, folded to constants). The torch.export-based
exporter is not used: it fixes RawNet2's input length (``max_pool1d`` guards it) and takes
minutes where this takes a second. The metadata (:func:`graph_metadata`) is stored in the
ONNX ``metadata_props`` and in the TorchScript extra file ``metadata.json``; :func:`read_metadata`
reads either. See ``docs/export.md``.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import warnings
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch._C import _onnx as _C_onnx
from torch.onnx import register_custom_op_symbolic, unregister_custom_op_symbolic
from torch.onnx import symbolic_helper

import pysv
from pysv import features as features_lib
from pysv.utils.io import atomic_path

try:  # optional: the ONNX format needs onnx (metadata) and uses onnxruntime to check the graph
    import onnx
except ImportError:  # pragma: no cover - exercised where onnx is not installed
    onnx = None
try:
    import onnxruntime
except ImportError:  # pragma: no cover
    onnxruntime = None

__all__ = ["EmbeddingGraph", "export_torchscript", "export_onnx", "graph_metadata", "read_metadata",
           "METADATA_FILE", "DEFAULT_OPSET", "MIN_OPSET", "INPUT_NAME", "OUTPUT_NAME"]

#: name of the TorchScript extra file holding the metadata (json)
METADATA_FILE = "metadata.json"
#: ONNX opset used when ``opset`` is None; ``DFT`` (the FFT of the front end) needs at least 17
DEFAULT_OPSET = 17
MIN_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "waveform", "embedding"
#: the traced input and the two check inputs, in seconds (odd sample counts on purpose)
TRACE_SECONDS = 3.0
CHECK_SECONDS = (1.3, 4.7)
#: cosine an exported graph must reach against the PyTorch graph at the check lengths
CHECK_COSINE = 0.999


class EmbeddingGraph(nn.Module):
    """Front end + encoder: ``forward(waveform [1, samples]) -> embedding [1, D]`` (see the module doc).

    ``feature`` overrides ``cfg["data"]["feature"]`` (a feature name, a yaml path, an option mapping
    or a :class:`~pysv.features.FeatureExtractor`), e.g. the ``feature.yaml`` of a bundle.
    Attributes: ``encoder``, ``front_end`` (a :class:`~pysv.features.TorchFrontEnd`, None for waveform
    encoders), ``sample_rate``, ``embed_dim``, ``metadata`` (:func:`graph_metadata`).
    """

    def __init__(self, encoder: nn.Module, cfg: Mapping[str, Any], feature=None):
        super().__init__()
        kind = getattr(encoder, "input_kind", None)
        if kind not in ("features", "waveform"):
            raise ValueError(f"encoder {type(encoder).__name__} has input_kind {kind!r}; expected "
                             f"'features' or 'waveform' (pysv.models contract)")
        self.encoder = encoder
        self.front_end: Optional[features_lib.TorchFrontEnd] = None
        extractor = None
        if kind == "features":
            feature = feature if feature is not None else (cfg.get("data") or {}).get("feature")
            if not feature:
                raise ValueError("a feature encoder needs its feature config: cfg['data']['feature'] is empty "
                                 "and no feature was given")
            extractor = (feature if isinstance(feature, features_lib.FeatureExtractor)
                         else features_lib.build(feature, dither=0.0))
            if extractor.dim != encoder.feat_dim:
                raise ValueError(f"feature {extractor.name!r} gives {extractor.dim}-dim features but the encoder "
                                 f"takes feat_dim={encoder.feat_dim}")
            self.front_end = features_lib.TorchFrontEnd(extractor)
            self.sample_rate = int(extractor.sample_rate)
        else:
            hparams = (cfg.get("model") or {}).get("hparams") or {}
            self.sample_rate = int(hparams.get("sample_rate", getattr(encoder, "sample_rate", 16000)))
        self.embed_dim = int(encoder.embed_dim)
        self.metadata = graph_metadata(cfg, encoder, extractor, self.sample_rate)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = waveform if self.front_end is None else self.front_end(waveform)
        return self.encoder(x)


def graph_metadata(cfg: Mapping[str, Any], encoder: nn.Module, extractor=None,
                   sample_rate: int = 16000) -> Dict[str, Any]:
    """What an exported graph records about itself: ``format``, ``pysv_version``, ``torch_version``,
    ``system``, ``encoder``, ``input_kind``, ``input``/``output`` (names and shapes), ``sample_rate``,
    ``embed_dim``, ``feature`` (the feature name, ``waveform`` for waveform encoders),
    ``feature_type`` (``fbank`` | ``mfcc`` | ``waveform``), ``feature_dim`` and ``feature_config``
    (every resolved feature option, dither 0; None for waveform encoders)."""
    model = cfg.get("model") or {}
    return {
        "format": "pysv-embedding-graph",
        "pysv_version": str(getattr(pysv, "__version__", "unknown")),
        "torch_version": torch.__version__,
        "system": str(cfg.get("system") or ""),
        "encoder": str(model.get("name") or type(encoder).__name__),
        "input_kind": encoder.input_kind,
        "input": f"{INPUT_NAME}: float32 [1, samples], mono, in [-1, 1], at sample_rate",
        "output": f"{OUTPUT_NAME}: float32 [1, embed_dim]",
        "sample_rate": int(sample_rate),
        "embed_dim": int(encoder.embed_dim),
        "feature": extractor.name if extractor is not None else "waveform",
        "feature_type": extractor.type if extractor is not None else "waveform",
        "feature_dim": int(extractor.dim) if extractor is not None else None,
        "feature_config": dict(extractor.config) if extractor is not None else None,
    }


# ------------------------------------------------------------------------------------------------
# TorchScript
# ------------------------------------------------------------------------------------------------
def export_torchscript(encoder: nn.Module, cfg: Mapping[str, Any], path, *, feature=None,
                       check: bool = True) -> Dict[str, Any]:
    """Write ``encoder`` with its front end as a traced TorchScript module to ``path`` (atomically);
    load it with ``torch.jit.load(path)``. The metadata goes to the extra file ``metadata.json``
    and is returned. ``check`` compares the traced module with the PyTorch graph on two other
    lengths first (RuntimeError when they differ)."""
    graph = _graph(encoder, cfg, feature)
    traced = _trace(graph)
    if check:
        _check(graph, traced, "TorchScript")
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript (still supported)
        torch.jit.save(traced, str(tmp), _extra_files={METADATA_FILE: json.dumps(graph.metadata)})
    return graph.metadata


# ------------------------------------------------------------------------------------------------
# ONNX
# ------------------------------------------------------------------------------------------------
def export_onnx(encoder: nn.Module, cfg: Mapping[str, Any], path, opset: Optional[int] = None, *,
                feature=None, check: bool = True) -> Dict[str, Any]:
    """Write ``encoder`` with its front end as an ONNX model to ``path`` (atomically): input
    ``waveform`` ``[1, samples]`` (dynamic ``samples``), output ``embedding`` ``[1, D]``, opset
    ``opset`` (default :data:`DEFAULT_OPSET`, at least 17), the metadata in ``metadata_props``
    (values as strings, json for the feature config); returns the metadata. Needs the ``onnx``
    package; with ``onnxruntime`` installed and ``check``, the model is run on two other lengths
    against the PyTorch graph before it is written (RuntimeError when they differ)."""
    if onnx is None:
        raise RuntimeError("ONNX export needs the onnx package (pip install onnx; onnxruntime to run the model)")
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is too old: the front end's FFT needs ONNX DFT (opset >= {MIN_OPSET})")
    graph = _graph(encoder, cfg, feature)
    with atomic_path(path) as tmp:
        _onnx_export(graph, _example(graph, TRACE_SECONDS), tmp, opset)
        model = onnx.load(str(tmp))
        for dim, size in zip(model.graph.output[0].type.tensor_type.shape.dim, (1, graph.embed_dim)):
            dim.Clear()
            dim.dim_value = size  # [1, D] (shape inference leaves the batch axis symbolic for some encoders)
        onnx.helper.set_model_props(model, {k: _prop(v) for k, v in graph.metadata.items()})
        model.doc_string = (f"pysv {graph.metadata['system'] or graph.metadata['encoder']}: "
                            f"{graph.metadata['input']} -> {graph.metadata['output']}")
        onnx.save(model, str(tmp))
        if check and onnxruntime is not None:
            session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
            _check(graph, lambda x: torch.from_numpy(session.run(None, {INPUT_NAME: x.numpy()})[0]), "ONNX")
    return graph.metadata


def _prop(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _onnx_export(module: nn.Module, example: torch.Tensor, path, opset: int,
                 output_axes: Optional[Dict[int, str]] = None) -> None:
    """``torch.onnx.export`` (TorchScript-based) of ``module`` traced on ``example`` with the pysv
    symbolics; the input's axis 1 is dynamic (``samples``), and so are ``output_axes``."""
    axes = {INPUT_NAME: {1: "samples"}}
    if output_axes:
        axes[OUTPUT_NAME] = dict(output_axes)
    with _onnx_symbolics(opset), torch.no_grad(), warnings.catch_warnings():
        # the TorchScript-based exporter is deprecated in favour of torch.export (see the module doc);
        # tracer warnings are about Python-side checks, the export is checked on other lengths
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), dynamo=False, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_axes=axes, opset_version=opset,
                          do_constant_folding=True)


def _const(g, value, dtype=torch.int64):
    return g.op("Constant", value_t=torch.tensor(value, dtype=dtype))


@symbolic_helper.parse_args("v", "v", "i", "v")
def _rfft_symbolic(g, x, n, dim, norm):
    """``torch.fft.rfft`` (unnormalised) -> ONNX ``DFT`` with ``onesided``: real pairs ``[..., N/2+1, 2]``."""
    if not symbolic_helper._is_none(norm) and symbolic_helper._maybe_get_const(norm, "s") not in (None, "backward"):
        raise RuntimeError("ONNX export of rfft supports norm='backward' only")
    # in float64, so the DFT adds no rounding of its own to bands ~90 dB below a frame's peak, where the
    # float32 rounding of the rest of the front end already shows at ~1e-3 in the log (docs/export.md)
    signal = g.op("Unsqueeze", g.op("Cast", x, to_i=_C_onnx.TensorProtoDataType.DOUBLE), _const(g, [-1]))
    length = (g.op("Gather", g.op("Shape", x), _const(g, dim), axis_i=0) if symbolic_helper._is_none(n) else n)
    axis = dim - 1 if dim < 0 else dim  # in the unsqueezed signal (a real signal has one component)
    if g.opset >= 20:
        spec = g.op("DFT", signal, length, _const(g, axis), onesided_i=1)
    else:
        spec = g.op("DFT", signal, length, axis_i=axis, onesided_i=1)
    return g.op("Cast", spec, to_i=_C_onnx.TensorProtoDataType.FLOAT)


def _view_as_real_symbolic(g, x):
    """The DFT of :func:`_rfft_symbolic` already gives real pairs (the only complex value in the graph)."""
    return x


@symbolic_helper.parse_args("v", "i", "i", "i")
def _unfold_symbolic(g, x, dim, size, step):
    """``x.unfold(dim, size, step)`` for a dynamic length: a ``Gather`` of the ``[frames, size]``
    index matrix ``step * f + k`` (torch's exporter handles static lengths only)."""
    if dim < 0:
        dim += symbolic_helper._get_tensor_rank(x)
    n = g.op("Gather", g.op("Shape", x), _const(g, dim), axis_i=0)
    frames = g.op("Add", g.op("Div", g.op("Sub", n, _const(g, size)), _const(g, step)), _const(g, 1))
    starts = g.op("Mul", g.op("Range", _const(g, 0), frames, _const(g, 1)), _const(g, step))
    index = g.op("Add", g.op("Unsqueeze", starts, _const(g, [1])), g.op("Range", _const(g, 0), _const(g, size),
                                                                         _const(g, 1)))
    return g.op("Gather", x, index, axis_i=dim)


def _sinc_symbolic(g, x):
    """``torch.sinc``: sin(pi x) / (pi x), 1 at 0."""
    pix = g.op("Mul", x, _const(g, math.pi, torch.float32))
    ratio = g.op("Div", g.op("Sin", pix), pix)
    return g.op("Where", g.op("Equal", x, _const(g, 0.0, torch.float32)), _const(g, 1.0, torch.float32), ratio)


_SYMBOLICS = (("aten::fft_rfft", _rfft_symbolic), ("aten::view_as_real", _view_as_real_symbolic),
              ("aten::unfold", _unfold_symbolic), ("aten::sinc", _sinc_symbolic))


@contextlib.contextmanager
def _onnx_symbolics(opset: int) -> Iterator[None]:
    """The pysv symbolic functions, registered for ``opset`` only while the block runs."""
    done = []
    try:
        for name, fn in _SYMBOLICS:
            register_custom_op_symbolic(name, fn, opset)
            done.append(name)
        yield
    finally:
        for name in done:
            unregister_custom_op_symbolic(name, opset)


# ------------------------------------------------------------------------------------------------
# metadata
# ------------------------------------------------------------------------------------------------
def read_metadata(path) -> Dict[str, Any]:
    """The metadata of an exported graph (TorchScript or ONNX file), values decoded from json."""
    path = Path(path)
    if zipfile.is_zipfile(path):  # TorchScript archives are zip files
        extra = {METADATA_FILE: ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        if not extra[METADATA_FILE]:
            raise ValueError(f"{path}: TorchScript file without {METADATA_FILE} (not written by pysv.export)")
        return json.loads(extra[METADATA_FILE])
    if onnx is None:
        raise RuntimeError("reading ONNX metadata needs the onnx package")
    out: Dict[str, Any] = {}
    for prop in onnx.load(str(path), load_external_data=False).metadata_props:
        try:
            out[prop.key] = json.loads(prop.value)
        except ValueError:
            out[prop.key] = prop.value
    return out


# ------------------------------------------------------------------------------------------------
# shared steps
# ------------------------------------------------------------------------------------------------
def _graph(encoder: nn.Module, cfg: Mapping[str, Any], feature) -> EmbeddingGraph:
    """The graph of a frozen CPU copy of ``encoder`` in eval mode (the caller's module is left as it
    is). Without gradients the traced module also runs outside ``torch.no_grad()``: TorchScript's
    optimised re-runs otherwise fail on in-place ops next to parameters that require grad."""
    frozen = copy.deepcopy(encoder).cpu().eval().requires_grad_(False)
    return EmbeddingGraph(frozen, cfg, feature).eval()


def _example(graph: EmbeddingGraph, seconds: float) -> torch.Tensor:
    """A deterministic test waveform ``[1, samples]``: a chirp in noise (odd sample count)."""
    n = int(round(seconds * graph.sample_rate)) | 1
    t = np.arange(n) / graph.sample_rate
    chirp = np.sin(2 * np.pi * (100.0 * t + 0.5 * (0.4 * graph.sample_rate - 100.0) / seconds * t * t))
    noise = np.random.default_rng(n).standard_normal(n)
    return torch.from_numpy((0.3 * chirp + 0.03 * noise).astype(np.float32))[None]


def _trace(graph: EmbeddingGraph) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # Python-side checks; checked on other lengths
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript (still supported)
        return torch.jit.trace(graph, _example(graph, TRACE_SECONDS), check_trace=False)


def _check(graph: EmbeddingGraph, run, what: str, seconds: Sequence[float] = CHECK_SECONDS) -> None:
    """Raise RuntimeError unless ``run(waveform)`` gives the PyTorch graph's embedding on inputs of
    other lengths than the traced one: cosine >= :data:`CHECK_COSINE`, and a difference within 5 %
    of the distance between the check inputs' own embeddings (an off-by-one frame count is ~20 %)."""
    inputs = [_example(graph, s) for s in seconds]
    with torch.no_grad():
        refs = [graph(x).double() for x in inputs]
    spread = min(float((a - b).norm()) for i, a in enumerate(refs) for b in refs[i + 1:])
    for x, ref in zip(inputs, refs):
        try:
            out = run(x).detach().double()
        except Exception as e:
            raise RuntimeError(f"the exported {what} graph fails on a {x.shape[1]}-sample input: {e}") from e
        if tuple(out.shape) != tuple(ref.shape):
            raise RuntimeError(f"the exported {what} graph gives shape {tuple(out.shape)} on a {x.shape[1]}-sample "
                               f"input, the PyTorch model {tuple(ref.shape)}")
        cos = float(nn.functional.cosine_similarity(ref, out).min())
        err = float((out - ref).norm())
        if not (cos >= CHECK_COSINE and err <= 0.05 * spread + 1e-5 * float(ref.norm())):
            raise RuntimeError(f"the exported {what} graph differs from the PyTorch model on a {x.shape[1]}-sample "
                               f"input (cosine {cos:.6f}, distance {err:.3g}; other inputs are {spread:.3g} apart): "
                               f"it is not valid for every length")

