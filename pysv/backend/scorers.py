"""The back-ends of stage 5 by name: how each scores a trial list and what it reads.

A back-end is one :class:`Scorer` in :data:`SCORERS`. ``python -m pysv.bin.score --backend NAME``
loads both sides of the trials from the scorer's stage-3 ``archive``, the further inputs named in
``reads`` (see :data:`INPUTS`), and calls ``scorer.score(sides, inputs, options)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Tuple

import numpy as np

from pysv.calibration import Calibration
from pysv.utils.io import DataError

from .asnorm import asnorm_cosine_trials
from .cosine import cosine_score_trials
from .crop_distance import crop_distance_score_trials
from .kaldi_io import load_crops, load_embeddings, read_kaldi_vector
from .pipeline import BACKEND_FILES, PldaBackend

__all__ = ["FUSION_COMPONENTS", "INPUTS", "SCORERS", "Scorer", "ScoringOptions", "TrialSides", "input_files",
           "load_input", "load_vectors"]

#: inputs a scorer may read besides the two sides of the trials
INPUTS = {
    "train_mean": "mean of the training-set embeddings (stage 3), or stage 4's mean.vec",
    "cohort": "training-speaker embeddings, spk_xvector.scp of the training set (stage 3)",
    "plda": "the stage-4 back-end: mean.vec, transform.mat, plda (a PldaBackend)",
    "fusion": "the linear-fusion weights of the stage-5 calibration, exp/<system>/calibration.json",
}

#: back-ends the ``fusion`` back-end may combine: one archive (xvector), inputs that a bundle has too
FUSION_COMPONENTS = ("cosine", "cosine_mean", "plda")


@dataclass
class TrialSides:
    """The embeddings of both sides of a trial list, each distinct key once, and the row of
    each trial's sides. ``test`` is ``enroll`` itself when both come from one archive."""

    enroll: np.ndarray  # [Ne, D], or [Ne, K, D] for crop archives
    test: np.ndarray
    enroll_idx: np.ndarray  # [trials]
    test_idx: np.ndarray
    num_enroll: Optional[np.ndarray] = None  # utterances averaged into each enrollment row


@dataclass
class ScoringOptions:
    """Options of the scorers (``pysv.bin.score`` flags of the same names)."""

    plda_length_norm: str = "kaldi"  # kaldi | simple | none, applied when the PLDA model is loaded
    plda_smoothing: float = 0.0  # ivector-copy-plda --smoothing, applied when the model is loaded
    crops_normalize: bool = True  # L2-normalize each crop before the distances
    asnorm_top_n: Optional[int] = 300  # highest cohort scores per side; None: whole cohort (S-norm)
    cohort_exclude: FrozenSet[str] = frozenset()  # speakers left out of the AS-norm cohort


ScoreFn = Callable[[TrialSides, Mapping[str, Any], ScoringOptions], np.ndarray]


@dataclass(frozen=True)
class Scorer:
    """A stage-5 back-end: ``score(sides, inputs, options)`` gives one score per trial."""

    score: ScoreFn
    archive: str = "xvector"  # stage-3 archive of both sides: <archive>.scp of the set
    reads: Tuple[str, ...] = ()  # keys of INPUTS that ``score`` finds in ``inputs``
    crops: bool = False  # each key of the archive holds a [K, D] matrix of crop embeddings
    uses_num_enroll: bool = False  # speaker-level enrollment: needs the utterance counts


def _cosine(sides: TrialSides, inputs, options: ScoringOptions) -> np.ndarray:
    """Cosine similarity of the raw embeddings."""
    return cosine_score_trials(sides.enroll, sides.test, sides.enroll_idx, sides.test_idx)


def _cosine_mean(sides: TrialSides, inputs, options: ScoringOptions) -> np.ndarray:
    """Cosine similarity after subtracting the training mean."""
    return cosine_score_trials(sides.enroll, sides.test, sides.enroll_idx, sides.test_idx,
                               mean=inputs["train_mean"])


def _asnorm(sides: TrialSides, inputs, options: ScoringOptions) -> np.ndarray:
    """AS-norm of the ``cosine_mean`` scores with the training speakers as cohort."""
    return asnorm_cosine_trials(sides.enroll, sides.test, sides.enroll_idx, sides.test_idx,
                                inputs["cohort"], top_n=options.asnorm_top_n, mean=inputs["train_mean"])


def _crop_distance(sides: TrialSides, inputs, options: ScoringOptions) -> np.ndarray:
    """Minus the mean of the K x K Euclidean distances between the crops of the two sides."""
    return crop_distance_score_trials(sides.enroll, sides.test, sides.enroll_idx, sides.test_idx,
                                      normalize=options.crops_normalize)


def _plda(sides: TrialSides, inputs, options: ScoringOptions) -> np.ndarray:
    """PLDA log-likelihood ratio after mean subtraction, LDA and length norm."""
    return inputs["plda"].score_trials(sides.enroll, sides.test, sides.enroll_idx, sides.test_idx,
                                       num_enroll=sides.num_enroll)


def _fusion(sides: TrialSides, inputs, options: ScoringOptions) -> np.ndarray:
    """The development trials' linear fusion (pysv.bin.calibrate) of the FUSION_COMPONENTS'
    scores: sum of weight * score (a zero weight's back-end is not scored)."""
    out = np.zeros(len(sides.enroll_idx), dtype=np.float64)
    for backend, weight in inputs["fusion"].items():
        if weight:
            out += weight * np.asarray(SCORERS[backend].score(sides, inputs, options), dtype=np.float64)
    return out


#: back-end name -> scorer, in the order of the results table
SCORERS: Dict[str, Scorer] = {
    "cosine": Scorer(_cosine),
    "cosine_mean": Scorer(_cosine_mean, reads=("train_mean",)),
    "asnorm": Scorer(_asnorm, reads=("train_mean", "cohort")),
    # MP-2021 §4.2: crop embeddings from stage 3 in crops mode
    "crops": Scorer(_crop_distance, archive="xvector_crops", crops=True),
    # RawNet2 §4.2: cosine of the test-time-augmented embeddings (tta mode)
    "tta": Scorer(_cosine, archive="xvector_tta"),
    "plda": Scorer(_plda, reads=("plda",), uses_num_enroll=True),
    # FoCal-style linear fusion of cosine / cosine_mean / plda, weights fitted on stage 5's development trials
    "fusion": Scorer(_fusion, reads=("train_mean", "plda", "fusion"), uses_num_enroll=True),
}


# ------------------------------------------------------------------ the inputs, from an exp dir
def load_vectors(scp: Path, what: str, crops: bool = False):
    """``(keys, array)`` of a stage-3 archive (``[N, D]``, or ``[N, K, D]`` for crop archives)."""
    if not Path(scp).is_file():
        raise DataError(f"missing {what}: {scp} (run stage 3, embedding extraction, for this set and protocol)")
    return load_crops(scp) if crops else load_embeddings(scp, what=what)


def input_files(name: str, backend: str, exp: Path, train_set: Optional[str]) -> List[Path]:
    """The files behind input ``name`` (a key of :data:`INPUTS`) in ``exp/<system>``."""
    exp = Path(exp)
    if name == "train_mean":
        if train_set:
            return [exp / "embeddings" / train_set / "xvector.scp"]
        if (exp / "backend" / "mean.vec").is_file():
            return [exp / "backend" / "mean.vec"]
        raise DataError(f"--backend {backend} needs --train-set or {exp / 'backend' / 'mean.vec'} (stage 4)")
    if name == "cohort":
        if not train_set:
            raise DataError(f"--backend {backend} needs --train-set (its speakers are the cohort)")
        return [exp / "embeddings" / train_set / "spk_xvector.scp"]
    if name == "plda":
        return [exp / "backend" / f for f in BACKEND_FILES]
    if name == "fusion":
        return [exp / "calibration.json"]
    raise ValueError(f"unknown scorer input '{name}'")


def load_input(name: str, files: List[Path], dim: int, options: ScoringOptions) -> Any:
    """Input ``name`` read from ``files``, checked against the embedding dimension ``dim``."""
    if name == "train_mean":
        f = files[0]
        if f.suffix == ".scp":
            mean = load_vectors(f, "training embeddings")[1].mean(axis=0, dtype=np.float64)
        else:
            mean = read_kaldi_vector(f)
        if mean.size != dim:
            raise DataError(f"training mean has dimension {mean.size}, embeddings {dim}")
        return mean
    if name == "cohort":
        if not files[0].is_file():
            raise DataError(f"missing cohort: {files[0]} (stage 3 writes it with the embeddings of the training set)")
        speakers, cohort = load_embeddings(files[0], what="cohort speaker embedding")
        if options.cohort_exclude:  # e.g. the speakers of development trials scored against this cohort
            keep = np.array([s not in options.cohort_exclude for s in speakers], dtype=bool)
            if keep.sum() < 2:
                raise DataError(f"{files[0]}: fewer than 2 cohort speakers remain after leaving out "
                                f"{len(options.cohort_exclude)} speakers")
            cohort = cohort[keep]
        if cohort.shape[1] != dim:
            raise DataError(f"cohort dimension {cohort.shape[1]} differs from the embeddings' {dim}")
        return cohort
    if name == "plda":
        be = PldaBackend.load(files[0].parent, plda_length_norm=options.plda_length_norm,
                              smoothing=options.plda_smoothing)
        if be.mean.mean_.size != dim:
            raise DataError(f"back-end in {files[0].parent} expects dimension {be.mean.mean_.size}, "
                            f"embeddings have {dim}")
        return be
    if name == "fusion":
        fitted_by = f"pysv.bin.calibrate --backends with fusion and two of {', '.join(FUSION_COMPONENTS)}"
        if not files[0].is_file():
            raise DataError(f"missing {files[0]}: the fusion back-end's weights are fitted by stage 5's "
                            f"calibration ({fitted_by})")
        weights = Calibration.load(files[0]).fusion_weights
        if not weights:
            raise DataError(f"{files[0]} holds no fusion weights (its calibration did not fit the fusion: "
                            f"{fitted_by})")
        unknown = sorted(set(weights) - set(FUSION_COMPONENTS))
        if unknown:
            raise DataError(f"{files[0]}: fusion weight of back-end '{unknown[0]}', which the fusion cannot "
                            f"score (it combines {', '.join(FUSION_COMPONENTS)})")
        return {b: float(w) for b, w in weights.items()}
    raise ValueError(f"unknown scorer input '{name}'")
