"""Speaker-verification back-ends (stage 4) and trial scorers (stage 5).

* :func:`cosine_score` / :func:`cosine_score_trials` — cosine scoring, optionally after
  subtracting a training mean.
* :class:`MeanSubtract`, :class:`LDA`, :class:`LengthNorm` / :func:`length_norm`, :class:`PLDA` —
  Kaldi's ``ivector-mean``, ``ivector-compute-lda --total-covariance-factor=0.0``,
  ``ivector-normalize-length`` and two-covariance PLDA (``ivector-compute-plda`` /
  ``ivector-plda-scoring``); each ``fit(X, labels)`` then ``transform(X)``;
  ``PLDA.score(enroll, test)`` gives one log-likelihood ratio per row pair.
* :class:`PldaBackend` — the whole chain, saved as Kaldi's ``mean.vec``, ``transform.mat``, ``plda``.
* :func:`crop_distance_score` — seed 000 §4.2 mean of 10×10 crop distances (negated).
* :func:`asnorm` / :func:`asnorm_cosine_trials` — adaptive symmetric score normalization.

See docs/backend.md.
"""
from .asnorm import asnorm, asnorm_cosine_trials, cohort_stats
from .cosine import cosine_score, cosine_score_trials, unit_rows
from .crops import crop_distance_score, crop_distance_score_trials
from .kaldi_io import (load_crops, load_embeddings, read_kaldi_matrix, read_kaldi_vector,
                       read_num_utts, read_plda_file, write_kaldi_matrix, write_kaldi_vector,
                       write_plda_file)
from .lda import LDA
from .normalize import LengthNorm, MeanSubtract, length_norm
from .pipeline import BACKEND_FILES, PldaBackend
from .plda import PLDA

cosine_similarity = cosine_score

__all__ = [
    "cosine_score", "cosine_similarity", "cosine_score_trials", "unit_rows",
    "LDA", "PLDA", "LengthNorm", "length_norm", "MeanSubtract", "PldaBackend", "BACKEND_FILES",
    "crop_distance_score", "crop_distance_score_trials",
    "asnorm", "asnorm_cosine_trials", "cohort_stats",
    "load_embeddings", "load_crops", "read_num_utts", "read_kaldi_vector", "read_kaldi_matrix",
    "write_kaldi_vector", "write_kaldi_matrix", "read_plda_file", "write_plda_file",
]
