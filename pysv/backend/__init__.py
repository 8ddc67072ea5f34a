"""Speaker-verification back-ends (stage 4) and trial scorers (stage 5).

* :func:`cosine_score` / :func:`cosine_score_trials` / :func:`cosine_trial_scores` — cosine
  scoring, optionally after subtracting a training mean (``cosine.py``).
* :class:`MeanSubtract`, :class:`LDA`, :class:`LengthNorm` / :func:`length_norm`, :class:`PLDA` —
  Kaldi's ``ivector-mean``, ``ivector-compute-lda --total-covariance-factor=0.0``,
  ``ivector-normalize-length`` and two-covariance PLDA (``ivector-compute-plda`` /
  ``ivector-plda-scoring``); each ``fit(X, labels)`` then ``transform(X)``;
  ``PLDA.score(enroll, test)`` gives one log-likelihood ratio per row pair.
* :class:`PldaBackend` — the whole chain, saved as Kaldi's ``mean.vec``, ``transform.mat``, ``plda``.
* :func:`crop_distance_score` — MP-2021 §4.2 mean of 10×10 crop distances
  (negated, ``crop_distance.py``).
* :func:`asnorm` / :func:`asnorm_cosine_trials` — adaptive symmetric score normalization.
* :data:`SCORERS` — the stage-5 back-ends by name (``scorers.py``); :func:`index_trials` maps a
  trial list to embedding rows; ``sampled_matmul.paired_dot`` is the trial-list dot product
  under cosine and PLDA scoring; ``kaldi_io.py`` the Kaldi file formats.

See docs/backend.md.
"""
from .asnorm import asnorm, asnorm_cosine_trials, cohort_stats
from .cosine import cosine_score, cosine_score_trials, cosine_trial_scores, unit_rows
from .crop_distance import crop_distance_score, crop_distance_score_trials
from .kaldi_io import (archive_signature, load_crops, load_embeddings, read_kaldi_matrix,
                       read_kaldi_vector, read_num_utts, read_plda_file, write_kaldi_matrix,
                       write_kaldi_vector, write_plda_file)
from .lda import LDA
from .normalize import LengthNorm, MeanSubtract, length_norm
from .pipeline import BACKEND_FILES, PldaBackend
from .plda import PLDA
from .scorers import INPUTS, SCORERS, Scorer, ScoringOptions, TrialSides
from .trials import index_trials

cosine_similarity = cosine_score

__all__ = [
    "cosine_score", "cosine_similarity", "cosine_score_trials", "cosine_trial_scores", "unit_rows",
    "LDA", "PLDA", "LengthNorm", "length_norm", "MeanSubtract", "PldaBackend", "BACKEND_FILES",
    "crop_distance_score", "crop_distance_score_trials",
    "asnorm", "asnorm_cosine_trials", "cohort_stats",
    "SCORERS", "INPUTS", "Scorer", "ScoringOptions", "TrialSides", "index_trials",
    "load_embeddings", "load_crops", "read_num_utts", "archive_signature", "read_kaldi_vector",
    "read_kaldi_matrix", "write_kaldi_vector", "write_kaldi_matrix", "read_plda_file", "write_plda_file",
]
