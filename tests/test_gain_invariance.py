"""Gain invariance of every system in conf/: a louder or quieter recording of the same speech gives
the same embedding. Each system runs its own feature pipeline (dither 0) and its encoder in eval
mode on a generated utterance and on the same utterance scaled by 0.1 and by 8."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import pysv.features
import pysv.models
from pysv.train.config import list_systems, load_config

from conftest import REPO

SYSTEMS = list_systems(REPO / "conf")
GAINS = (0.1, 8.0)


def voiced_utterance(seconds: float = 2.5, sr: int = 16000, seed: int = 3) -> np.ndarray:
    """A speech-like signal: a harmonic source with a gliding pitch, two moving formant-like
    resonances, syllable-rate amplitude modulation, short pauses and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120.0 + 30.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    src = sum(np.sin(k * phase) / k for k in range(1, 30))
    spec = np.fft.rfft(src)
    freqs = np.fft.rfftfreq(src.size, 1 / sr)
    env = np.exp(-((freqs - 700) / 300) ** 2) + 0.6 * np.exp(-((freqs - 1800) / 500) ** 2) + 0.02
    x = np.fft.irfft(spec * env, n=src.size)
    syllables = 0.5 * (1 + np.sin(2 * np.pi * 4.0 * t)) * (np.sin(2 * np.pi * 0.4 * t) > -0.8)
    x = x * syllables + 0.01 * rng.standard_normal(t.size)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1))


@pytest.fixture(scope="module")
def utterance():
    return voiced_utterance()


@pytest.mark.parametrize("system", SYSTEMS)
def test_embedding_does_not_depend_on_gain(system, utterance):
    cfg = load_config(str(REPO / "conf" / f"{system}.yaml"))
    torch.manual_seed(0)
    model = pysv.models.build(cfg["model"]["name"], **cfg["model"]["hparams"]).eval()
    feature = cfg["data"]["feature"]
    front = None
    if feature is not None:
        front = pysv.features.build(feature, dither=0.0)

    def embed(samples: np.ndarray) -> torch.Tensor:
        x = front(samples, 16000) if front is not None else samples
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None])[0]

    ref = embed(utterance)
    assert torch.isfinite(ref).all()
    for gain in GAINS:
        c = cosine(ref, embed(utterance * np.float32(gain)))
        assert c >= 0.9999, f"{system}: cosine {c:.6f} between gain 1 and gain {gain}"


def test_every_system_is_covered():
    # the parametrisation above comes from the conf/ directory itself, so a new system is tested
    # without editing this file; make sure the discovery found the paper families
    families = {s.split("_")[0] for s in SYSTEMS}
    assert {"thin", "xvector", "saep", "mla", "rawnet2"} <= families
