"""Kaldi x-vector back-end chain: mean subtraction → LDA → length norm → PLDA.

Mirrors ``egs/voxceleb/v2/run.sh`` (stage 10-11):

    ivector-mean scp:train/xvector.scp mean.vec
    ivector-compute-lda --total-covariance-factor=0.0 --dim=200 \\
        "ark:ivector-subtract-global-mean scp:train/xvector.scp ark:- |" ark:utt2spk transform.mat
    ivector-compute-plda ark:spk2utt "ark:ivector-subtract-global-mean scp:train/xvector.scp ark:- |
        transform-vec transform.mat ark:- ark:- | ivector-normalize-length ark:- ark:- |" plda
    ivector-plda-scoring --normalize-length=true "ivector-copy-plda --smoothing=0.0 plda - |" \\
        "ark:ivector-subtract-global-mean mean.vec scp:enroll.scp ark:- | transform-vec transform.mat
         ark:- ark:- | ivector-normalize-length ark:- ark:- |" (same for test) trials scores
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Union

import numpy as np

from pysv.utils.io import DataError

from .lda import LDA
from .normalize import MeanSubtract, length_norm
from .plda import PLDA

log = logging.getLogger(__name__)

__all__ = ["PldaBackend", "BACKEND_FILES"]

BACKEND_FILES = ("mean.vec", "transform.mat", "plda")


class PldaBackend:
    """Mean → LDA(``lda_dim``) → ``sqrt(dim)`` length norm → PLDA, fitted on training embeddings."""

    def __init__(self, lda_dim: int = 200, num_em_iters: int = 10, total_covariance_factor: float = 0.0,
                 covariance_floor: float = 1e-6, plda_length_norm: str = "kaldi",
                 smoothing: float = 0.0):
        self.lda_dim = lda_dim
        self.mean = MeanSubtract()
        self.lda = LDA(lda_dim, total_covariance_factor, covariance_floor)
        self.plda = PLDA(num_em_iters, length_norm=plda_length_norm)
        self.smoothing = smoothing

    def fit(self, X, labels) -> "PldaBackend":
        X = np.asarray(X)  # float32 archives stay float32; statistics accumulate in float64
        labels = np.asarray(labels)
        n_spk = np.unique(labels).size
        if n_spk <= self.lda_dim:
            raise ValueError(
                f"PLDA needs more training speakers than the LDA dimension: {n_spk} speakers for "
                f"dim {self.lda_dim} (the between-class covariance has rank at most {n_spk - 1}). "
                f"Use a smaller dim, e.g. --lda-dim {max(1, n_spk - 1)} or less.")
        self.mean.fit(X)
        Xm = self.mean.transform(X)
        log.info("LDA: %d utterances, %d speakers, %d -> %d dims", X.shape[0], n_spk, X.shape[1], self.lda_dim)
        self.lda.fit(Xm, labels)
        Y = length_norm(self.lda.transform(Xm))
        log.info("PLDA: %d EM iterations", self.plda.num_em_iters)
        self.plda.fit(Y, labels)
        if self.smoothing:
            self.plda.smooth_within_class_covariance(self.smoothing)
        return self

    def preprocess(self, X) -> np.ndarray:
        """``ivector-subtract-global-mean | transform-vec | ivector-normalize-length``
        (float32 in, float32 out, as Kaldi's BaseFloat archives; float64 stays float64)."""
        return length_norm(self.lda.transform(self.mean.transform(np.asarray(X))))

    transform = preprocess

    def score_trials(self, enroll, test, enroll_idx, test_idx, num_enroll=None) -> np.ndarray:
        E = self.preprocess(enroll)
        T = E if test is enroll else self.preprocess(test)
        return self.plda.score_trials(E, T, enroll_idx, test_idx, num_enroll=num_enroll)

    def score(self, enroll, test, num_enroll=None) -> np.ndarray:
        return self.plda.score(self.preprocess(enroll), self.preprocess(test), num_enroll)

    def save(self, directory: Union[str, Path], binary: bool = True) -> None:
        d = Path(directory)
        self.mean.write(d / "mean.vec", binary=binary)
        self.lda.write(d / "transform.mat", binary=binary)
        self.plda.write(d / "plda", binary=binary)

    @classmethod
    def load(cls, directory: Union[str, Path], plda_length_norm: str = "kaldi",
             smoothing: float = 0.0) -> "PldaBackend":
        d = Path(directory)
        missing = [str(d / f) for f in BACKEND_FILES if not (d / f).is_file()]
        if missing:
            raise DataError("back-end model incomplete, missing: " + ", ".join(missing)
                            + " (run stage 4: python -m pysv.bin.backend)")
        obj = cls.__new__(cls)
        obj.mean = MeanSubtract.read(d / "mean.vec")
        obj.lda = LDA.read(d / "transform.mat")
        obj.lda_dim = obj.lda.dim
        obj.plda = PLDA.read(d / "plda", length_norm=plda_length_norm)
        obj.smoothing = smoothing
        if smoothing:
            obj.plda.smooth_within_class_covariance(smoothing)
        if obj.plda.dim != obj.lda.dim:
            raise DataError(f"{d}: PLDA dimension {obj.plda.dim} does not match the LDA output "
                            f"dimension {obj.lda.dim}")
        return obj
