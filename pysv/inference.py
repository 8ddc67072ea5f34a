"""Using a trained system outside the recipe: ``pysv.load(path)`` → :class:`SpeakerModel`.

``path`` is a run directory ``exp/<system>`` (after stages 2–5) or a bundle written by
``pysv export --format bundle`` (:func:`write_bundle`). The model computes embeddings exactly as
stage 3 does for the same audio: the system's own features (with dither off, as stage 1 computes
the features of the sets it tests on), its test protocol (``extract:`` block: full, crops or TTA),
the encoder in eval mode. Scores come from the stage-5 scorers (:data:`pysv.backend.SCORERS`)
with the stage-4 back-end and the training-set cohort; decisions use the stored calibration
(``calibration.json``, see :mod:`pysv.calibration`) or, without one, the EER threshold of the
chosen back-end on the run's test trials.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

import pysv
from pysv import features as features_lib
from pysv import models as model_lib
from pysv.backend import SCORERS, ScoringOptions, TrialSides, read_kaldi_matrix, write_kaldi_matrix, write_kaldi_vector
from pysv.backend.pipeline import BACKEND_FILES
from pysv.backend.scorers import input_files, load_input
from pysv.calibration import Calibration
from pysv.embed import MODES, archive_name, embed_one, resolve_protocol
from pysv.train import checkpoint
from pysv.utils.io import DataError, atomic_write, read_audio
from pysv.vad import apply_energy_vad, vad_options

Audio = Union[str, Path, np.ndarray, torch.Tensor]

#: the protocol (embedding mode) of each stage-3 archive
_MODE_OF_ARCHIVE = {archive_name(mode): mode for mode in MODES}


def load(path: Union[str, Path], device: str = "cpu", vad: Optional[str] = None) -> "SpeakerModel":
    """The trained system at ``path`` (``exp/<system>`` or an exported bundle); ``vad="energy"``
    keeps only the voiced frames (Kaldi's compute-vad, :mod:`pysv.vad`), as stage 1 with ``--vad energy``."""
    return SpeakerModel(path, device=device, vad=vad)


class SpeakerModel:
    """A trained speaker-embedding system with its back-ends; see the module doc."""

    def __init__(self, path: Union[str, Path], device: str = "cpu", vad: Optional[str] = None):
        self.root = Path(path)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: not a directory (expected exp/<system> or an exported bundle)")
        self.is_bundle = (self.root / "model.json").is_file()
        weights = self.root / ("model.pt" if self.is_bundle else "final.pt")
        if not weights.is_file():
            raise DataError(f"missing trained model {weights}" + ("" if self.is_bundle else " (run stage 2)"))
        state = checkpoint.load(weights)
        self.cfg = checkpoint.config_from_state(state, weights)
        self.device = torch.device(device)
        self.encoder = checkpoint.encoder_from_state(state, self.cfg, self.device)
        self.system = self.cfg["system"]
        self.input_kind = model_lib.input_kind(self.cfg["model"]["name"])
        self.protocol = resolve_protocol(self.cfg)
        self.features = None
        if self.input_kind == "features":
            feature = self.root / "feature.yaml" if self.is_bundle else self.cfg["data"]["feature"]
            self.features = features_lib.build(str(feature), dither=0.0)
            self.sample_rate = self.features.sample_rate
        else:
            self.sample_rate = int(self.cfg["model"]["hparams"].get("sample_rate", 16000))
        self.vad = vad_options(vad)
        if self.vad is not None and self.features is None:
            raise ValueError(f"vad={vad!r}: {self.system} takes waveforms, there are no feature frames to select")
        self.embed_dim = int(self.encoder.embed_dim)
        self.train_set = Path(self.cfg["data"]["train"]).name
        self.results = self._read_results()
        cal = self.root / "calibration.json"
        self.calibration = Calibration.load(cal) if cal.is_file() else None
        self._inputs: Dict[str, Any] = {}

    # ------------------------------------------------------------------------------- embeddings
    def _samples(self, x: Audio, sample_rate: Optional[int], resample: bool, channel: Optional[int]) -> np.ndarray:
        what = "input"
        if isinstance(x, (str, Path)):
            what = str(x)
            x, file_rate = read_audio(x)
            if sample_rate is not None and sample_rate != file_rate:
                raise DataError(f"{what}: the file is at {file_rate} Hz, sample_rate={sample_rate} was given")
            sample_rate = file_rate
        elif isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 2:
            if channel is None:
                raise DataError(f"{what}: {x.shape[1]} channels; choose one with channel=<index>")
            if not 0 <= channel < x.shape[1]:
                raise DataError(f"{what}: channel {channel} does not exist ({x.shape[1]} channels)")
            x = x[:, channel]
        elif x.ndim != 1:
            raise DataError(f"{what}: expected a 1-D waveform (or [samples, channels]), got shape {x.shape}")
        rate = self.sample_rate if sample_rate is None else int(sample_rate)
        if rate != self.sample_rate:
            if not resample:
                raise DataError(f"{what}: sample rate {rate} Hz, the model takes {self.sample_rate} Hz; "
                                "pass resample=True to resample")
            x = features_lib.resample(x, rate, self.sample_rate)
        if not np.isfinite(x).all():
            raise DataError(f"{what}: the waveform holds NaN or inf")
        return x

    def _model_input(self, samples: np.ndarray) -> np.ndarray:
        if self.features is None:
            return samples
        if self.vad is not None:
            return apply_energy_vad(samples, self.sample_rate, self.features,
                                    **{k: v for k, v in self.vad.items() if k != "method"})
        return self.features(samples, self.sample_rate)

    @torch.no_grad()
    def embed(self, x: Union[Audio, Sequence[Audio]], sample_rate: Optional[int] = None, mode: str = "full",
              resample: bool = False, channel: Optional[int] = None) -> np.ndarray:
        """Embedding of a file path or a 1-D float waveform (``[D]``), or of a list of them
        (``[N, D]``); ``mode`` crops gives ``[num_crops, D]`` per input (the distance back-end's input)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        single = isinstance(x, (str, Path, torch.Tensor)) or (isinstance(x, np.ndarray) and x.ndim >= 1
                                                               and np.issubdtype(x.dtype, np.number))
        items = [x] if single else list(x)
        p = self.protocol
        out = [embed_one(self.encoder, self._model_input(self._samples(i, sample_rate, resample, channel)),
                         self.device, mode=mode, crop_len=p["crop_len"], num_crops=p["num_crops"],
                         overlap=p["overlap"]).astype(np.float32) for i in items]
        return out[0] if single else np.stack(out)

    # ------------------------------------------------------------------------------- scoring
    def _read_results(self) -> Dict[str, Dict[str, Any]]:
        """Back-end -> metrics of the run's test trials (first trial list), from stage 5 or the bundle."""
        if self.is_bundle:
            return json.loads((self.root / "model.json").read_text())["results"]
        out: Dict[str, Dict[str, Any]] = {}
        for f in sorted((self.root / "scores").glob("*.metrics")):
            m = json.loads(f.read_text())
            if m.get("trials_name", "").endswith("_dev"):
                continue  # calibration trials
            out.setdefault(m["backend"], {k: m[k] for k in ("eer", "eer_threshold", "trials_name")})
        return out

    @property
    def default_backend(self) -> str:
        """The back-end with the lowest EER on the run's test trials (cosine without results)."""
        if self.calibration is not None:
            return self.calibration.backend
        if not self.results:
            return "cosine"
        return min(self.results, key=lambda b: self.results[b]["eer"])

    def _input(self, name: str, backend: str) -> Any:
        if name not in self._inputs:
            if self.is_bundle and name == "cohort":
                self._inputs[name] = read_kaldi_matrix(self.root / "cohort.mat").astype(np.float32)
            else:
                files = {"train_mean": [self.root / "train_mean.vec"],
                         "plda": [self.root / "backend" / f for f in BACKEND_FILES],
                         "fusion": [self.root / "calibration.json"]}[name] if self.is_bundle \
                    else input_files(name, backend, self.root, self.train_set)
                self._inputs[name] = load_input(name, files, self.embed_dim, ScoringOptions())
        return self._inputs[name]

    def _as_embedding(self, x, mode: str, **kw) -> np.ndarray:
        arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
        if isinstance(arr, np.ndarray):
            shape = (self.protocol["num_crops"], self.embed_dim) if mode == "crops" else (self.embed_dim,)
            if arr.shape == shape:
                return arr.astype(np.float32)
        return self.embed(x, mode=mode, **kw)

    def mode_for(self, backend: str) -> str:
        """The embedding mode (:meth:`embed`) whose embeddings back-end ``backend`` scores."""
        if backend not in SCORERS:
            raise ValueError(f"unknown back-end {backend!r}; choose one of {', '.join(SCORERS)}")
        return _MODE_OF_ARCHIVE[SCORERS[backend].archive]

    def score(self, a, b, backend: Optional[str] = None, **kw) -> float:
        """Score of two inputs (paths, waveforms, or embeddings of :meth:`embed` in the mode the
        back-end needs) with a stage-5 back-end (default: :attr:`default_backend`)."""
        backend = backend or self.default_backend
        scorer = SCORERS[backend]
        mode = self.mode_for(backend)
        ea, eb = self._as_embedding(a, mode, **kw), self._as_embedding(b, mode, **kw)
        inputs = {name: self._input(name, backend) for name in scorer.reads}
        sides = TrialSides(ea[None], eb[None], np.zeros(1, np.int64), np.zeros(1, np.int64))
        return float(scorer.score(sides, inputs, ScoringOptions())[0])

    def threshold(self) -> Tuple[str, float, str]:
        """``(back-end, threshold on its raw scores, what it is)`` the accept decisions use."""
        if self.calibration is not None:
            c = self.calibration
            return c.backend, c.raw_threshold, f"calibration, LLR {c.threshold:.4f} ({c.threshold_rule})"
        backend = self.default_backend
        if backend not in self.results:
            raise DataError(f"{self.root}: no stage-5 results for back-end {backend} and no calibration; "
                            "cannot decide (run stage 5, or pass a back-end that was scored)")
        return backend, float(self.results[backend]["eer_threshold"]), "EER threshold of the test trials"

    def verify(self, a, b, **kw) -> Tuple[float, bool]:
        """``(score, accept)``: the score of the decision back-end and whether it reaches the stored
        threshold (:meth:`threshold`); :meth:`llr` gives the calibrated log-likelihood ratio."""
        backend, thr, _ = self.threshold()
        s = self.score(a, b, backend=backend, **kw)
        return s, bool(s >= thr)

    def llr(self, score: float) -> float:
        """The calibrated log-likelihood ratio of a score of the calibrated back-end."""
        if self.calibration is None:
            raise DataError(f"{self.root}: no calibration.json (stage 5 writes it: pysv.bin.calibrate)")
        return float(self.calibration.llr(score))

    # ------------------------------------------------------------------------------- bundle
    def describe(self) -> Dict[str, Any]:
        """What ``model.json`` of a bundle records."""
        return {"system": self.system, "sample_rate": self.sample_rate, "embed_dim": self.embed_dim,
                "input_kind": self.input_kind, "feature": self.features.config["name"] if self.features else None,
                "protocol": self.protocol, "pysv_version": pysv.__version__,
                "training_data": {"train": self.cfg["data"]["train"],
                                  "speakers": _count_lines(self.root / "embeddings" / self.train_set / "spk2utt")
                                  if not self.is_bundle else None},
                "results": self.results}


def _count_lines(path: Path) -> Optional[int]:
    return sum(1 for _ in open(path)) if path.is_file() else None


#: what an exported bundle's model.pt keeps of final.pt
BUNDLE_WEIGHT_KEYS = ("model", "config", "num_params", "averaged_epochs")


def write_bundle(model: SpeakerModel, out: Union[str, Path]) -> Path:
    """A self-contained directory: weights (``model.pt``, ``weights_only`` loadable), the resolved
    config, the feature config, the stage-4 back-end, the training mean and the AS-norm cohort (Kaldi
    formats), the calibration and ``model.json``."""
    if model.is_bundle:
        raise DataError(f"{model.root} is already a bundle")
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "backend").mkdir(parents=True)
    # the encoder only: the training objective and the training speakers' names stay in the run
    final = checkpoint.load(model.root / "final.pt")
    checkpoint.save({k: final[k] for k in BUNDLE_WEIGHT_KEYS if k in final}, tmp / "model.pt")
    shutil.copy2(model.root / "config.yaml", tmp / "config.yaml")
    if model.features is not None:
        (tmp / "feature.yaml").write_text(features_lib.config_to_yaml(model.features.config))
    for f in BACKEND_FILES:
        src = model.root / "backend" / f
        if src.is_file():
            shutil.copy2(src, tmp / "backend" / f)
    spk = model.root / "embeddings" / model.train_set / "spk_xvector.scp"
    if spk.is_file():
        mean = model._input("train_mean", "cosine_mean")
        write_kaldi_vector(tmp / "train_mean.vec", mean, dtype=np.float64)  # the float64 mean stage 5 uses
        # one matrix (rows: training speakers): a bundle must not name paths outside itself
        write_kaldi_matrix(tmp / "cohort.mat", model._input("cohort", "asnorm"))
    if model.calibration is not None:
        shutil.copy2(model.root / "calibration.json", tmp / "calibration.json")
    with atomic_write(tmp / "model.json") as f:
        json.dump(model.describe(), f, indent=1)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out

