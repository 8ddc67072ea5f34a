"""The audio of the built-in "mini" corpus: synthetic speakers made by source-filter voice synthesis.

Generated locally and deterministically (no network), so the whole recipe can run end to end in
minutes on a laptop. Each speaker is a small set of voice parameters drawn once from a seeded
random generator; each utterance is a fresh random sequence of syllables spoken with that voice,
then passed through a random channel and mixed with background noise. Speaker identity therefore
lives in the voice (as in real speech), while content, channel and noise change from utterance to
utterance.

Voice model (per speaker; see docs/data.md for the full table):

* glottal source: Rosenberg glottal-flow pulses (open quotient, speed quotient) at an F0 contour
  built from the speaker's mean F0, declination, pitch accents (intonation range), vibrato and
  cycle-to-cycle jitter, with shimmer (cycle amplitude jitter); radiation = the flow derivative;
* spectral tilt: a one-pole low-pass on the source (speaker coefficient, per-utterance jitter);
* breathiness: aspiration noise gated by the glottal flow, mixed into the source;
* vocal tract: a cascade of five Klatt formant resonators (second-order sections run with
  scipy's ``sosfilt`` kernel; formants hold their targets over the centre of each vowel / nasal and
  glide linearly between targets in 10 ms steps, filter state carried across blocks); F1-F3 targets from a vowel table
  (Peterson & Barney 1952 adult-male averages) scaled by the speaker's vocal-tract-length factor
  and per-formant / per-vowel idiosyncratic factors, F4/F5 speaker constants, bandwidth scale;
* consonants: nasals (low formants, weak voicing), voiceless/voiced fricatives and plosive bursts
  (band-pass noise with speaker-scaled centre frequencies), closures and pauses;
* speaking rate: a speaker factor on all segment durations (per-utterance jitter).

Within-speaker variability (per utterance): F0 offset, rate, formant-scale and tilt jitter, random
channel (2-3 peaking-EQ sections, tilt, sometimes a telephone band), sometimes a synthetic room
reverberation, background noise (coloured noise, sometimes mains hum) at an SNR drawn from
``snr_range`` and a random level.

Everything is numpy / scipy.signal; speakers are generated in parallel processes. Every random draw
comes from ``numpy.random.default_rng([seed, speaker_index(, utterance_index)])``, so the audio is
identical for any number of worker processes.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
from scipy.signal import fftconvolve, lfilter, sosfilt
from tqdm import tqdm

from pysv.utils import stage
from pysv.utils.io import DataError, atomic_path, atomic_write

logger = logging.getLogger(__name__)

# Peterson & Barney (1952), average adult male F1-F3 in Hz.
VOWELS: Dict[str, Tuple[float, float, float]] = {
    "iy": (270.0, 2290.0, 3010.0),
    "ih": (390.0, 1990.0, 2550.0),
    "eh": (530.0, 1840.0, 2480.0),
    "ae": (660.0, 1720.0, 2410.0),
    "aa": (730.0, 1090.0, 2440.0),
    "ao": (570.0, 840.0, 2410.0),
    "uh": (440.0, 1020.0, 2240.0),
    "uw": (300.0, 870.0, 2240.0),
    "ah": (640.0, 1190.0, 2390.0),
    "er": (490.0, 1350.0, 1690.0),
}
VOWEL_NAMES = list(VOWELS)
_VOWEL_TABLE = np.array([VOWELS[v] for v in VOWEL_NAMES])  # [10, 3]
# Nasal murmurs (adult male): F1-F3.
NASALS: Dict[str, Tuple[float, float, float]] = {"m": (250.0, 1000.0, 2200.0), "n": (250.0, 1600.0, 2500.0)}
# Fricative / burst noise: (centre Hz, relative bandwidth, level, voiced)
FRICATIVES: Dict[str, Tuple[float, float, float, bool]] = {
    "s": (5500.0, 0.35, 0.35, False), "sh": (2900.0, 0.4, 0.35, False), "f": (4500.0, 1.2, 0.10, False),
    "z": (5200.0, 0.35, 0.22, True), "v": (4000.0, 1.2, 0.08, True), "h": (1500.0, 1.5, 0.08, False),
}
PLOSIVES: Dict[str, Tuple[float, float, bool]] = {  # burst centre Hz, relative bandwidth, voiced
    "p": (900.0, 1.5, False), "t": (4200.0, 0.6, False), "k": (2100.0, 0.5, False),
    "b": (800.0, 1.5, True), "d": (3800.0, 0.6, True), "g": (1900.0, 0.5, True),
}
MARKER = ".done"
_BLOCK = 160  # samples per vocal-tract coefficient update during formant transitions (10 ms at 16 kHz)


@dataclasses.dataclass
class MiniConfig:
    """Size and randomisation of the mini corpus (defaults = the recipe's mini corpus)."""

    num_speakers: int = 48
    utts_per_speaker: int = 12
    min_duration: float = 2.0
    max_duration: float = 6.0
    sample_rate: int = 16000
    seed: int = 777
    snr_range: Tuple[float, float] = (10.0, 30.0)
    reverb_prob: float = 0.3
    audio_format: str = "flac"  # flac | wav
    speaker_prefix: str = "mini"

    def validate(self) -> None:
        if self.num_speakers < 1:
            raise DataError(f"mini corpus: num_speakers must be >= 1, got {self.num_speakers}")
        if self.utts_per_speaker < 1:
            raise DataError(f"mini corpus: utts_per_speaker must be >= 1, got {self.utts_per_speaker}")
        if not (0.5 <= self.min_duration <= self.max_duration):
            raise DataError(f"mini corpus: need 0.5 <= min_duration <= max_duration, got "
                            f"{self.min_duration}..{self.max_duration}")
        if self.sample_rate < 8000:
            raise DataError(f"mini corpus: sample_rate must be >= 8000, got {self.sample_rate}")
        if self.audio_format not in ("flac", "wav"):
            raise DataError(f"mini corpus: audio_format must be flac or wav, got {self.audio_format!r}")
        if self.snr_range[0] > self.snr_range[1]:
            raise DataError(f"mini corpus: bad snr_range {self.snr_range}")

    def speaker_id(self, index: int) -> str:
        return f"{self.speaker_prefix}{index + 1:03d}"

    def utt_id(self, spk_index: int, utt_index: int) -> str:
        return f"{self.speaker_id(spk_index)}-utt{utt_index + 1:02d}"

    def fingerprint(self) -> Dict[str, object]:
        """What the generated audio depends on (the configuration and the generator's version)."""
        d = dataclasses.asdict(self)
        d["snr_range"] = list(self.snr_range)
        d["generator_version"] = GENERATOR_VERSION
        return d

    def audio_paths(self, out_dir) -> List[Path]:
        """The files :func:`generate_mini_corpus` writes under ``out_dir/wav``."""
        return [Path(out_dir) / "wav" / self.speaker_id(s) / f"{self.utt_id(s, u)}.{self.audio_format}"
                for s in range(self.num_speakers) for u in range(self.utts_per_speaker)]


GENERATOR_VERSION = 1


@dataclasses.dataclass
class SpeakerVoice:
    """Speaker-level voice parameters (drawn once per speaker)."""

    sex: str
    f0_mean: float            # Hz
    vtl_factor: float         # formant scale: >1 = shorter vocal tract (higher formants)
    formant_factors: np.ndarray  # [3] idiosyncratic F1..F3 multipliers
    vowel_shifts: np.ndarray  # [10, 3] per-vowel ("accent") multipliers
    f4: float
    f5: float
    bw_scale: float
    tilt: float               # one-pole low-pass coefficient on the source (spectral tilt)
    open_quotient: float
    speed_quotient: float
    jitter: float             # relative cycle-to-cycle F0 perturbation (std)
    shimmer: float            # relative cycle amplitude perturbation (std)
    vibrato_rate: float       # Hz
    vibrato_depth: float      # semitones
    intonation_range: float   # semitones (std of pitch accents)
    declination: float        # semitones per second
    rate: float               # duration multiplier (>1 = slower)
    breathiness: float        # aspiration-noise level relative to voicing
    fricative_scale: float    # multiplier on fricative / burst centre frequencies
    nasal_level: float

    def summary(self) -> Dict[str, object]:
        return {
            "sex": self.sex, "f0_mean": round(self.f0_mean, 1), "vtl_factor": round(self.vtl_factor, 3),
            "f4": round(self.f4), "f5": round(self.f5), "bw_scale": round(self.bw_scale, 2),
            "tilt": round(self.tilt, 3), "open_quotient": round(self.open_quotient, 2),
            "jitter": round(self.jitter, 4), "shimmer": round(self.shimmer, 3),
            "vibrato_rate": round(self.vibrato_rate, 2), "vibrato_depth": round(self.vibrato_depth, 2),
            "intonation_range": round(self.intonation_range, 2), "rate": round(self.rate, 3),
            "breathiness": round(self.breathiness, 3),
        }


def draw_speaker(rng: np.random.Generator) -> SpeakerVoice:
    female = rng.random() < 0.5
    f0_mean = float(np.exp(rng.normal(np.log(210.0 if female else 118.0), 0.14)))
    vtl = float((1.16 if female else 1.0) * np.exp(rng.normal(0.0, 0.05)))
    return SpeakerVoice(
        sex="f" if female else "m",
        f0_mean=f0_mean,
        vtl_factor=vtl,
        formant_factors=np.exp(rng.normal(0.0, 0.05, size=3)),
        vowel_shifts=np.exp(rng.normal(0.0, 0.04, size=(len(VOWEL_NAMES), 3))),
        f4=float(3450.0 * vtl * np.exp(rng.normal(0.0, 0.05))),
        f5=float(4400.0 * vtl * np.exp(rng.normal(0.0, 0.05))),
        bw_scale=float(np.exp(rng.normal(0.0, 0.25))),
        tilt=float(rng.uniform(0.55, 0.95)),
        open_quotient=float(rng.uniform(0.4, 0.8)),
        speed_quotient=float(rng.uniform(1.5, 3.5)),
        jitter=float(rng.uniform(0.003, 0.02)),
        shimmer=float(rng.uniform(0.02, 0.10)),
        vibrato_rate=float(rng.uniform(4.0, 7.0)),
        vibrato_depth=float(rng.uniform(0.0, 0.4)),
        intonation_range=float(rng.uniform(0.5, 3.0)),
        declination=float(rng.uniform(0.3, 1.5)),
        rate=float(np.exp(rng.normal(0.0, 0.2))),
        breathiness=float(rng.uniform(0.0, 0.35)),
        fricative_scale=float(vtl * np.exp(rng.normal(0.0, 0.08))),
        nasal_level=float(rng.uniform(0.2, 0.5)),
    )


# ----------------------------------------------------------------------------------------------
# utterance synthesis
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Segment:
    kind: str        # vowel | nasal | fric | closure | burst | pause
    start: int
    length: int
    label: str
    accent: float = 0.0


def _plan_segments(rng: np.random.Generator, n: int, sr: int, rate: float) -> List[_Segment]:
    """A random syllable sequence (C)(C)V(C) with word pauses, filling ``n`` samples."""
    segs: List[_Segment] = []
    pos = int(rng.uniform(0.08, 0.25) * sr)
    end = n - int(rng.uniform(0.08, 0.25) * sr)
    segs.append(_Segment("pause", 0, pos, "sil"))

    def add(kind: str, dur_s: float, label: str, accent: float = 0.0) -> None:
        nonlocal pos
        length = max(int(dur_s * rate * sr), 16)
        segs.append(_Segment(kind, pos, length, label, accent))
        pos += length

    while pos < end:
        # onset
        r = rng.random()
        if r < 0.3:
            p = str(rng.choice(list(PLOSIVES)))
            add("closure", rng.uniform(0.03, 0.07), p)
            add("burst", rng.uniform(0.01, 0.025), p)
        elif r < 0.55:
            add("fric", rng.uniform(0.06, 0.13), str(rng.choice(list(FRICATIVES))))
        elif r < 0.75:
            add("nasal", rng.uniform(0.04, 0.08), str(rng.choice(list(NASALS))))
        # nucleus
        stressed = rng.random() < 0.35
        add("vowel", rng.uniform(0.08, 0.16) * (1.4 if stressed else 1.0), str(rng.choice(VOWEL_NAMES)),
            accent=float(rng.normal(1.0, 0.5)) if stressed else 0.0)
        # coda
        r = rng.random()
        if r < 0.2:
            add("nasal", rng.uniform(0.04, 0.08), str(rng.choice(list(NASALS))))
        elif r < 0.35:
            add("fric", rng.uniform(0.05, 0.11), str(rng.choice(list(FRICATIVES))))
        # word boundary
        if rng.random() < 0.22:
            add("pause", rng.uniform(0.06, 0.3), "sil")
    # cut at the end of the speech region, then trailing silence
    segs = [s for s in segs if s.start < end]
    last = segs[-1]
    last.length = max(min(last.length, end - last.start), 1)
    segs.append(_Segment("pause", last.start + last.length, n - (last.start + last.length), "sil"))
    return segs


def _smooth(x: np.ndarray, sr: float, ms: float) -> np.ndarray:
    """Zero-phase one-pole smoothing with time constant ``ms``."""
    a = math.exp(-1.0 / (ms * 1e-3 * sr))
    y = lfilter([1.0 - a], [1.0, -a], x)
    return lfilter([1.0 - a], [1.0, -a], y[::-1])[::-1]


def _resonator_sos(freq: np.ndarray, bw: np.ndarray, sr: int) -> np.ndarray:
    """Klatt resonators (unity gain at DC) as second-order sections; shapes [..., 6]."""
    freq = np.minimum(freq, 0.45 * sr)
    c = -np.exp(-2.0 * np.pi * bw / sr)
    b = 2.0 * np.exp(-np.pi * bw / sr) * np.cos(2.0 * np.pi * freq / sr)
    a = 1.0 - b - c
    zeros = np.zeros_like(a)
    return np.stack([a, zeros, zeros, np.ones_like(a), -b, -c], axis=-1)


try:  # the compiled kernel behind scipy.signal.sosfilt, without its per-call argument checks
    from scipy.signal._sosfilt import _sosfilt as _sosfilt_kernel
except ImportError:  # pragma: no cover - other scipy layouts
    _sosfilt_kernel = None


def time_varying_sosfilt(sos_blocks: np.ndarray, bounds: Sequence[int], x: np.ndarray,
                         fast: bool = True) -> np.ndarray:
    """Filter ``x`` with SOS coefficients ``sos_blocks[b]`` on ``x[bounds[b]:bounds[b+1]]``.

    The filter state is carried across blocks, so this is a cascade of resonators whose
    coefficients change at the block boundaries. ``fast`` calls scipy's compiled kernel directly
    (the per-call checks of ``sosfilt`` dominate for short blocks); results are identical.
    """
    nsec = sos_blocks.shape[1]
    if fast and _sosfilt_kernel is not None:
        y = np.array(x, dtype=np.float64, order="C").reshape(1, -1)
        zi = np.zeros((1, nsec, 2))
        sos_blocks = np.ascontiguousarray(sos_blocks, dtype=np.float64)
        for b in range(len(bounds) - 1):
            if bounds[b + 1] > bounds[b]:
                seg = np.ascontiguousarray(y[:, bounds[b]:bounds[b + 1]])
                _sosfilt_kernel(sos_blocks[b], seg, zi)
                y[:, bounds[b]:bounds[b + 1]] = seg
        return y[0]
    y = np.empty(len(x))
    zi = np.zeros((nsec, 2))
    for b in range(len(bounds) - 1):
        if bounds[b + 1] > bounds[b]:
            y[bounds[b]:bounds[b + 1]], zi = sosfilt(sos_blocks[b], x[bounds[b]:bounds[b + 1]], zi=zi)
    return y


def _bandpass_noise(rng: np.random.Generator, n: int, centre: float, rel_bw: float, sr: int) -> np.ndarray:
    noise = rng.standard_normal(n)
    centre = min(centre, 0.42 * sr)
    bw = max(rel_bw * centre, 200.0)
    sos = _resonator_sos(np.array([centre]), np.array([bw]), sr)
    sos[..., :3] = [1.0, 0.0, -1.0]  # band-pass: zeros at DC and Nyquist
    y = sosfilt(sos, noise)
    return y / (np.std(y) + 1e-9)


def _peaking_eq(f0: float, gain_db: float, q: float, sr: int) -> np.ndarray:
    """RBJ peaking equaliser biquad as one SOS row."""
    a_lin = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * np.pi * f0 / sr
    alpha = np.sin(w0) / (2.0 * q)
    b = np.array([1 + alpha * a_lin, -2 * np.cos(w0), 1 - alpha * a_lin])
    a = np.array([1 + alpha / a_lin, -2 * np.cos(w0), 1 - alpha / a_lin])
    return np.concatenate([b / a[0], a / a[0]])


def synthesize_utterance(voice: SpeakerVoice, rng: np.random.Generator, duration: float,
                         sr: int = 16000, snr_range: Tuple[float, float] = (10.0, 30.0),
                         reverb_prob: float = 0.3) -> np.ndarray:
    """One utterance of ``duration`` seconds spoken by ``voice``; float32 samples in [-1, 1]."""
    n = int(round(duration * sr))
    t = np.arange(n) / sr
    # --- per-utterance perturbations (within-speaker variability)
    rate = voice.rate * float(np.exp(rng.normal(0.0, 0.08)))
    f0_base = voice.f0_mean * 2.0 ** (rng.normal(0.0, 1.0) / 12.0)
    vtl = voice.vtl_factor * float(np.exp(rng.normal(0.0, 0.012)))
    tilt = float(np.clip(voice.tilt + rng.normal(0.0, 0.03), 0.3, 0.98))
    breath = voice.breathiness * float(np.exp(rng.normal(0.0, 0.25)))

    segs = _plan_segments(rng, n, sr, rate)

    # --- control tracks
    voice_amp = np.zeros(n)
    accents: List[Tuple[float, float]] = []  # pitch accents: (centre sample, size)
    knots_t: List[float] = []  # formant targets: centre, steady-state width (samples), F1-F3
    knots_w: List[float] = []
    knots_f: List[np.ndarray] = []
    fmt_scale = vtl * voice.formant_factors
    for s in segs:
        sl = slice(s.start, s.start + s.length)
        centre = s.start + s.length / 2.0
        if s.kind == "vowel":
            vi = VOWEL_NAMES.index(s.label)
            voice_amp[sl] = 1.0 + 0.25 * s.accent
            knots_t.append(centre)
            knots_w.append(0.5 * s.length)
            knots_f.append(_VOWEL_TABLE[vi] * fmt_scale * voice.vowel_shifts[vi])
            if s.accent:
                accents.append((centre, s.accent))
        elif s.kind == "nasal":
            voice_amp[sl] = voice.nasal_level
            knots_t.append(centre)
            knots_w.append(0.6 * s.length)
            knots_f.append(np.array(NASALS[s.label]) * fmt_scale)
        elif s.kind == "fric" and FRICATIVES[s.label][3]:
            voice_amp[sl] = 0.25
        elif s.kind == "closure" and PLOSIVES[s.label][2]:
            voice_amp[sl] = 0.06  # voice bar
    voice_amp = np.maximum(_smooth(voice_amp, sr, 6.0), 0.0)

    # --- F0 contour (computed at a 1 kHz control rate, then interpolated): mean, declination,
    # pitch accents, vibrato, slow drift and cycle-to-cycle jitter
    step = max(sr // 1000, 1)
    kc = np.arange(0, n + step, step)
    tc = kc / sr
    semitones = -voice.declination * (tc - t[-1] / 2.0)
    for centre, amp in accents:
        semitones += voice.intonation_range * amp * np.exp(-0.5 * ((tc - centre / sr) / 0.12) ** 2)
    semitones += voice.vibrato_depth * np.sin(2 * np.pi * voice.vibrato_rate * tc + rng.uniform(0, 2 * np.pi))
    ctl_sr = sr / step
    drift = _smooth(rng.standard_normal(len(kc)), ctl_sr, 60.0)
    semitones += 0.6 * drift / (np.std(drift) + 1e-9)
    f0c = f0_base * 2.0 ** (semitones / 12.0)
    jit = _smooth(rng.standard_normal(len(kc)), ctl_sr, 1000.0 / f0_base / 2)
    f0c = np.clip(f0c * (1.0 + voice.jitter * jit / (np.std(jit) + 1e-9)), 50.0, 500.0)
    f0 = np.interp(np.arange(n), kc, f0c)

    # --- glottal source: Rosenberg flow pulses, shimmer, derivative (radiation), tilt
    phase = np.cumsum(f0) / sr + rng.random()
    cycle = np.floor(phase).astype(np.int64)
    frac = phase - cycle
    oq, sq = voice.open_quotient, voice.speed_quotient
    tp = oq * sq / (1.0 + sq)
    tn = oq / (1.0 + sq)
    grid = np.linspace(0.0, 1.0, 2049)  # one pulse tabulated, then looked up (cos is costly)
    pulse = np.where(grid < tp, 0.5 * (1.0 - np.cos(np.pi * grid / tp)),
                     np.where(grid < tp + tn, np.cos(0.5 * np.pi * np.minimum(grid - tp, tn) / tn), 0.0))
    flow = pulse[(frac * 2048.0).astype(np.int64)]
    cycle -= cycle[0]
    shimmer = 1.0 + voice.shimmer * rng.standard_normal(int(cycle[-1]) + 1)
    flow = flow * shimmer[cycle]
    source = np.diff(flow, prepend=flow[0]) * (sr / f0_base)  # roughly F0-independent level
    source = lfilter([1.0 - tilt], [1.0, -tilt], source) * 4.0
    aspiration = rng.standard_normal(n) * (0.2 + flow) * breath * 0.6
    excitation = (source + aspiration) * voice_amp

    # --- vocal tract: cascade of 5 formant resonators. Formants hold their targets over the
    # central part of each vowel / nasal and glide linearly in between; the filter coefficients are
    # updated per block (one block per steady state, ~10 ms blocks in transitions, state carried).
    if not knots_t:  # no voiced segment (cannot happen for >= 0.5 s, but be safe)
        knots_t, knots_w, knots_f = [n / 2.0], [float(n)], [_VOWEL_TABLE[0] * fmt_scale]
    bounds: List[int] = [0]
    blk_f: List[np.ndarray] = []
    prev_end, prev_f = 0, knots_f[0]
    for c, w, fk in zip(knots_t, knots_w, knots_f):
        s0, s1 = int(max(c - w / 2.0, prev_end)), int(min(c + w / 2.0, n))
        if s0 > prev_end:  # transition from the previous target to this one
            k = max(1, int(round((s0 - prev_end) / _BLOCK)))
            edges = np.linspace(prev_end, s0, k + 1).astype(int)
            for j in range(k):
                frac = (j + 0.5) / k
                bounds.append(int(edges[j + 1]))
                blk_f.append(prev_f + frac * (fk - prev_f))
        if s1 > s0:
            bounds.append(s1)
            blk_f.append(fk)
        prev_end, prev_f = max(s1, prev_end), fk
    if prev_end < n:
        bounds.append(n)
        blk_f.append(prev_f)
    f123 = np.stack(blk_f)  # [nblk, 3]
    nblk = len(blk_f)
    freqs = np.concatenate([f123, np.full((nblk, 1), voice.f4), np.full((nblk, 1), voice.f5)], axis=1)
    bws = np.array([70.0, 100.0, 140.0, 220.0, 280.0]) * voice.bw_scale * (1.0 + 0.15 * (freqs / 1000.0) ** 0.5)
    sos_all = _resonator_sos(freqs, bws, sr)  # [nblk, 5, 6]
    speech = time_varying_sosfilt(sos_all, bounds, excitation)

    # --- frication and bursts (parallel noise branch)
    for s in segs:
        if s.kind not in ("fric", "burst"):
            continue
        if s.kind == "fric":
            centre, rel_bw, level, _ = FRICATIVES[s.label]
        else:
            centre, rel_bw, _ = PLOSIVES[s.label]
            level = 0.5
        env = np.hanning(s.length + 2)[1:-1] if s.kind == "fric" else np.exp(-np.arange(s.length) / (0.004 * sr))
        noise = _bandpass_noise(rng, s.length, centre * voice.fricative_scale, rel_bw, sr)
        end = min(s.start + s.length, n)
        speech[s.start:end] += (level * env * noise)[: end - s.start]

    # --- channel: random peaking EQs, tilt, sometimes telephone band; sometimes reverberation
    eq = [_peaking_eq(float(np.exp(rng.uniform(np.log(150), np.log(6000)))), float(rng.uniform(-5, 5)),
                      float(rng.uniform(0.7, 2.5)), sr) for _ in range(int(rng.integers(1, 4)))]
    speech = sosfilt(np.stack(eq), speech)
    c = float(rng.uniform(-0.25, 0.25))
    speech = lfilter([1.0, -c], [1.0], speech)
    if rng.random() < 0.1:  # band-limited (telephone-like) channel
        lo, hi = rng.uniform(200, 400), rng.uniform(3200, 4000)
        bp = _resonator_sos(np.array([np.sqrt(lo * hi)]), np.array([hi - lo]), sr)
        bp[..., :3] = [1.0, 0.0, -1.0]
        speech = sosfilt(bp, speech)
    if rng.random() < reverb_prob:
        rt60 = rng.uniform(0.15, 0.6)
        m = int(rt60 * sr)
        rir = rng.standard_normal(m) * np.exp(-6.9 * np.arange(m) / m)
        rir[0] = 4.0 * np.abs(rir).max() + 1.0
        speech = fftconvolve(speech, rir / np.sqrt(np.sum(rir ** 2)))[:n]

    # --- level, background noise at a random SNR (relative to active speech)
    active = voice_amp > 0.1
    p_speech = float(np.mean(speech[active] ** 2)) if active.any() else float(np.mean(speech ** 2))
    speech = speech / math.sqrt(p_speech + 1e-12)
    white = rng.standard_normal(n)
    colour = float(rng.uniform(0.0, 0.98))  # 0 = white ... ~1 = brown-ish
    noise = lfilter([1.0], [1.0, -colour], white)
    if rng.random() < 0.2:  # mains hum with harmonics
        hz = 50.0 if rng.random() < 0.5 else 60.0
        grid = np.arange(1024) / 1024.0
        period = sum(np.sin(2 * np.pi * k * grid + rng.uniform(0, 6.3)) / k for k in range(1, 6))
        noise = noise / np.std(noise) + 2.0 * period[((hz * t) % 1.0 * 1024).astype(np.int64)]
    snr_db = float(rng.uniform(*snr_range))
    noise = noise / math.sqrt(float(np.mean(noise ** 2)) + 1e-12) * 10.0 ** (-snr_db / 20.0)
    y = speech + noise
    level_db = float(rng.uniform(-32.0, -20.0))  # active-speech RMS in dBFS
    y = y * 10.0 ** (level_db / 20.0)
    peak = float(np.max(np.abs(y)))
    if peak > 0.97:
        y = y * (0.97 / peak)
    return y.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# corpus generation
# ----------------------------------------------------------------------------------------------
def _utt_duration(cfg: MiniConfig, rng: np.random.Generator) -> float:
    return float(rng.uniform(cfg.min_duration, cfg.max_duration))


def _generate_speaker(args: Tuple[MiniConfig, int, str]) -> Tuple[int, Dict[str, object], List[Tuple[str, str, float]]]:
    cfg, spk_index, wav_dir = args
    voice = draw_speaker(np.random.default_rng([cfg.seed, spk_index]))
    spk = cfg.speaker_id(spk_index)
    out_dir = Path(wav_dir) / spk
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for u in range(cfg.utts_per_speaker):
        rng = np.random.default_rng([cfg.seed, spk_index, u + 1])
        dur = _utt_duration(cfg, rng)
        y = synthesize_utterance(voice, rng, dur, cfg.sample_rate, tuple(cfg.snr_range), cfg.reverb_prob)
        utt = cfg.utt_id(spk_index, u)
        path = out_dir / f"{utt}.{cfg.audio_format}"
        with atomic_path(path) as tmp:
            sf.write(str(tmp), y, cfg.sample_rate, format=cfg.audio_format.upper(), subtype="PCM_16")
        rows.append((utt, str(path.resolve()), len(y) / cfg.sample_rate))
    return spk_index, voice.summary(), rows


def generate_mini_corpus(out_dir, cfg: Optional[MiniConfig] = None, nj: int = 1, force: bool = False,
                         progress: bool = True) -> Path:
    """Write the corpus to ``out_dir/wav/<spk>/<utt>.<fmt>`` (+ ``speakers.tsv``, ``.done``).

    Skips the work if ``out_dir/.done`` (a :mod:`pysv.utils.stage` marker) records the same
    configuration and every file is intact. Returns the wav directory.
    """
    cfg = cfg or MiniConfig()
    cfg.validate()
    out_dir = Path(out_dir)
    wav_dir = out_dir / "wav"
    done = out_dir / MARKER
    reason = check_generated(out_dir, cfg)
    if not force and reason is None:
        logger.info("mini corpus already generated in %s (same configuration); skipping", out_dir)
        return wav_dir
    if done.exists():
        logger.info("generating the mini corpus in %s again: %s", out_dir, "forced" if force else reason)
        done.unlink()  # configuration changed or forced: the old corpus is no longer complete
    if wav_dir.is_dir():  # remove generated files of an earlier, different configuration (only ours)
        keep = {p.name for p in cfg.audio_paths(out_dir)}
        ours = re.compile(rf"^\.?{re.escape(cfg.speaker_prefix)}\d{{3}}-utt\d{{2}}\.(flac|wav)(\..*\.tmp)?$")
        for p in wav_dir.glob("*/*"):
            if p.is_file() and p.name not in keep and ours.match(p.name):
                p.unlink()
        for p in sorted(wav_dir.iterdir()):
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
    t0 = time.time()
    jobs = [(cfg, i, str(wav_dir)) for i in range(cfg.num_speakers)]
    results = []
    bar = tqdm(total=cfg.num_speakers, desc="mini corpus (speakers)", unit="spk",
               disable=None if progress else True)
    if nj > 1 and cfg.num_speakers > 1:
        with ProcessPoolExecutor(max_workers=min(nj, cfg.num_speakers)) as ex:
            for res in ex.map(_generate_speaker, jobs, chunksize=1):
                results.append(res)
                bar.update(1)
    else:
        for job in jobs:
            results.append(_generate_speaker(job))
            bar.update(1)
    bar.close()
    results.sort(key=lambda r: r[0])
    keys = list(results[0][1]) if results else []
    with atomic_write(out_dir / "speakers.tsv", encoding="utf-8") as f:
        f.write("speaker\t" + "\t".join(keys) + "\n")
        for i, summary, _ in results:
            f.write(cfg.speaker_id(i) + "\t" + "\t".join(str(summary[k]) for k in keys) + "\n")
    n_utts = sum(len(r[2]) for r in results)
    stage.write(done, cfg.fingerprint(), outputs=[out_dir / "speakers.tsv", *cfg.audio_paths(out_dir)],
                speakers=cfg.num_speakers, utterances=n_utts)
    hours = sum(d for r in results for _, _, d in r[2]) / 3600
    logger.info("generated mini corpus: %d speakers, %d utterances, %.2f h in %.1f s (%d jobs) -> %s",
                cfg.num_speakers, n_utts, hours, time.time() - t0, nj, wav_dir)
    return wav_dir


def check_generated(out_dir, cfg: MiniConfig) -> Optional[str]:
    """None when ``out_dir`` holds the complete corpus of ``cfg``, else why it does not."""
    return stage.check(Path(out_dir) / MARKER, cfg.fingerprint())
