"""Stage 0: data preparation with lhotse, exported to Kaldi data directories.

For every set this module writes

* lhotse manifests ``<data-root>/manifests/<corpus>_{recordings,supervisions,cuts}_<set>.jsonl.gz``
  (one recording, one supervision with the speaker id and one cut per utterance; ids are equal),
* the Kaldi data dir ``<data-root>/<set>/{wav.scp,utt2spk,spk2utt,utt2dur}`` exported from the cuts,
* for test sets a trial list ``<data-root>/<set>/trials`` (``enroll test target|nontarget``),
* ``<data-root>/<set>/.done`` last, holding the stage's configuration.

A stage first reads and validates all its inputs (every set it prepares) and only then writes, so bad
input raises :class:`~pysv.utils.io.DataError` naming the culprit and leaves nothing behind. Every file
is written atomically; a stage whose ``.done`` markers record the same configuration is skipped, and a
stage killed midway has no marker and is redone from the start when re-run.

Corpora: ``mini`` (built-in synthetic corpus, :mod:`pysv.data.mini_corpus`), ``folder`` (any
``<speaker>/<utterance>.{wav,flac}`` tree), ``voxceleb`` (:mod:`pysv.data.prep_voxceleb`),
``musan`` / ``rirs`` augmentation sets (:mod:`pysv.data.prep_augment`).
"""
from __future__ import annotations

import dataclasses
import gzip
import io
import itertools
import json
import logging
import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

from pysv.utils.io import (DataError, atomic_path, is_complete, mark_complete, utt2spk_to_spk2utt,
                           write_table, write_trials)
from pysv.utils.stage import file_signature, listing_signature

logger = logging.getLogger(__name__)

AUDIO_EXTS = (".wav", ".flac")
# Formats soundfile (libsndfile) cannot read, or that we do not accept as corpus audio.
UNSUPPORTED_EXTS = (".m4a", ".aac", ".mp4", ".mp3", ".opus", ".webm", ".sph", ".wma")
FFMPEG_HINT = (
    "convert the audio to 16 kHz mono WAV first, e.g.\n"
    "  find DIR -name '*.m4a' | while read -r f; do "
    "ffmpeg -nostdin -loglevel error -y -i \"$f\" -ac 1 -ar 16000 -c:a pcm_s16le \"${f%.m4a}.wav\"; done\n"
    "(see docs/data.md for a parallel version that writes to a separate wav/ tree)")
_ID_RE = re.compile(r"^[^\s/]+$")
MAX_LISTED_ERRORS = 20

Trial = Tuple[str, str, int]


# ----------------------------------------------------------------------------------------------
# options and small data types
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class AudioOptions:
    """How audio files are checked and turned into recordings."""

    sample_rate: int = 16000
    on_rate_mismatch: str = "refuse"  # refuse | resample
    check_audio: bool = True  # read every file fully: catches corrupt and all-zero audio
    nj: int = 1
    progress: bool = True
    #: utterances shorter than this (seconds) are left out of the set and listed in
    #: <set>/short_utts; trials naming them are dropped. 0.5 s = 50 frames, more than any encoder
    #: here needs (RawNet2's receptive field is 2437 samples = 0.15 s)
    min_duration: float = 0.5

    def validate(self) -> None:
        if self.on_rate_mismatch not in ("refuse", "resample"):
            raise DataError(f"--on-rate-mismatch must be 'refuse' or 'resample', got {self.on_rate_mismatch!r}")
        if self.sample_rate <= 0:
            raise DataError(f"--sample-rate must be positive, got {self.sample_rate}")
        if not self.min_duration >= 0:
            raise DataError(f"--min-utt-duration must be >= 0, got {self.min_duration}")

    def fingerprint(self) -> Dict[str, object]:
        return {"sample_rate": self.sample_rate, "on_rate_mismatch": self.on_rate_mismatch,
                "check_audio": self.check_audio, "min_duration": self.min_duration}


@dataclasses.dataclass(frozen=True)
class Utterance:
    utt_id: str
    speaker: str
    path: str  # absolute path


@dataclasses.dataclass
class TrialOptions:
    """Trial generation for sets made from speaker folders (mini, folder)."""

    seed: int = 0
    max_target_trials: int = 0  # 0 = all target pairs
    nontarget_ratio: float = 1.0

    def validate(self) -> None:
        if self.max_target_trials < 0:
            raise DataError(f"--max-target-trials must be >= 0, got {self.max_target_trials}")
        if self.nontarget_ratio < 0:
            raise DataError(f"--nontarget-ratio must be >= 0, got {self.nontarget_ratio}")


@dataclasses.dataclass
class SetSpec:
    """One set to prepare: its utterances and (for test sets) trial lists to write."""

    name: str
    corpus: str
    utts: List[Utterance]
    trials: Dict[str, List[Trial]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class BuiltSet:
    """A validated set, ready to be written."""

    spec: SetSpec
    recordings: object  # lhotse RecordingSet
    supervisions: object  # lhotse SupervisionSet
    cuts: object  # lhotse CutSet
    materialize: Dict[str, str]  # utt -> path (relative to the set dir) of an audio copy to write
    short: Dict[str, float] = dataclasses.field(default_factory=dict)  # utt -> duration (s), left out


def default_nj() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def check_id(kind: str, ident: str, culprit: str) -> None:
    if not ident or not _ID_RE.match(ident):
        raise DataError(f"{culprit}: {kind} id {ident!r} is empty or contains whitespace or '/'; "
                        "Kaldi tables need ids without whitespace")


def make_utt_id(speaker: str, rel: PurePosixPath) -> str:
    """``<spk>-<path parts joined by '-'>``; a file name already starting with ``<spk>-`` is kept."""
    parts = rel.with_suffix("").parts
    if len(parts) == 1 and parts[0].startswith(speaker + "-"):
        return parts[0]
    return "-".join((speaker,) + tuple(parts))


# ----------------------------------------------------------------------------------------------
# audio probing / validation
# ----------------------------------------------------------------------------------------------
def probe_audio(path: str, check_audio: bool = True) -> Tuple[Optional[Dict[str, int]], Optional[str]]:
    """Return ``(info, None)`` or ``(None, reason)`` for one file (runs in worker processes)."""
    if not os.path.exists(path):
        return None, "file is missing"
    try:
        info = sf.info(path)
    except Exception as e:  # libsndfile raises RuntimeError / LibsndfileError / TypeError
        return None, f"cannot read audio (corrupt or unsupported format): {str(e).strip()}"
    res = {"sample_rate": int(info.samplerate), "num_samples": int(info.frames), "channels": int(info.channels)}
    if info.frames <= 0:
        return None, "empty audio (0 samples)"
    if check_audio:
        nonzero = False
        n = 0
        try:
            for block in sf.blocks(path, blocksize=1 << 16, dtype="float32", always_2d=True):
                n += len(block)
                if not nonzero and np.any(block):
                    nonzero = True
        except Exception as e:
            return None, f"cannot decode audio (corrupt or truncated): {str(e).strip()}"
        if n == 0:
            return None, "empty audio (0 samples decoded)"
        if not nonzero:
            return None, "all-zero (silent) audio"
    return res, None


def _probe_job(args: Tuple[str, bool]):
    return probe_audio(*args)


def raise_errors(errors: Sequence[str], what: str) -> None:
    if not errors:
        return
    shown = "\n  ".join(errors[:MAX_LISTED_ERRORS])
    more = f"\n  ... and {len(errors) - MAX_LISTED_ERRORS} more" if len(errors) > MAX_LISTED_ERRORS else ""
    raise DataError(f"{len(errors)} problem(s) with {what}; nothing was written:\n  {shown}{more}")


def probe_files(paths: Sequence[str], opts: AudioOptions, what: str) -> Tuple[List[Optional[Dict[str, int]]], List[str]]:
    """Probe every file (in parallel with ``opts.nj`` processes); returns infos and error lines."""
    from tqdm import tqdm

    jobs = [(p, opts.check_audio) for p in paths]
    bar = dict(total=len(jobs), desc=f"checking audio ({what})", unit="file",
               disable=None if opts.progress else True, mininterval=1.0)
    if opts.nj > 1 and len(jobs) >= 64:
        with ProcessPoolExecutor(max_workers=opts.nj) as ex:
            results = list(tqdm(ex.map(_probe_job, jobs, chunksize=32), **bar))
    else:
        results = [_probe_job(j) for j in tqdm(jobs, **bar)]
    errors = [f"{p}: {err}" for p, (_, err) in zip(paths, results) if err]
    return [info for info, _ in results], errors


def make_recording(rec_id: str, path: str, info: Dict[str, int], opts: AudioOptions):
    """A lhotse Recording for a probed file; resampled (transform recorded) when allowed."""
    from lhotse import Recording
    from lhotse.audio import AudioSource

    rec = Recording(id=rec_id, sources=[AudioSource(type="file", channels=list(range(info["channels"])),
                                                    source=path)],
                    sampling_rate=info["sample_rate"], num_samples=info["num_samples"],
                    duration=info["num_samples"] / info["sample_rate"])
    if info["sample_rate"] != opts.sample_rate:
        rec = rec.resample(opts.sample_rate)
    return rec


def rate_error(path: str, info: Dict[str, int], opts: AudioOptions) -> Optional[str]:
    if info["sample_rate"] != opts.sample_rate and opts.on_rate_mismatch == "refuse":
        return (f"{path}: sample rate {info['sample_rate']} Hz, expected {opts.sample_rate} Hz "
                "(convert it, or pass --on-rate-mismatch resample)")
    return None


# ----------------------------------------------------------------------------------------------
# building and writing sets
# ----------------------------------------------------------------------------------------------
def build_sets(specs: Sequence[SetSpec], opts: AudioOptions) -> List[BuiltSet]:
    """Validate every utterance of every set and build the lhotse manifests (nothing is written)."""
    from lhotse import CutSet, RecordingSet, SupervisionSegment, SupervisionSet
    from lhotse.cut import MonoCut

    errors: List[str] = []
    for spec in specs:
        seen: Dict[str, str] = {}
        for u in spec.utts:
            check_id("utterance", u.utt_id, u.path)
            check_id("speaker", u.speaker, u.path)
            if not u.utt_id.startswith(u.speaker):
                errors.append(f"{u.path}: utterance id '{u.utt_id}' does not start with its speaker id "
                              f"'{u.speaker}'")
            if u.utt_id in seen:
                errors.append(f"duplicate utterance id '{u.utt_id}' in set '{spec.name}': {seen[u.utt_id]} "
                              f"and {u.path}")
            seen[u.utt_id] = u.path
        if not spec.utts:
            errors.append(f"set '{spec.name}' has no utterances")
    raise_errors(errors, "the input lists")

    built: List[BuiltSet] = []
    for spec in specs:
        infos, errors = probe_files([u.path for u in spec.utts], opts, spec.name)
        recs, sups, cuts = [], [], []
        materialize: Dict[str, str] = {}
        short: Dict[str, float] = {}
        for u, info in zip(spec.utts, infos):
            if info is None:
                continue
            duration = info["num_samples"] / info["sample_rate"]
            if duration < opts.min_duration:
                short[u.utt_id] = duration
                continue
            if info["channels"] != 1:
                errors.append(f"{u.path}: {info['channels']} channels; speaker corpora must be mono "
                              "(convert with e.g. `sox in.wav -c 1 out.wav` or ffmpeg -ac 1)")
                continue
            err = rate_error(u.path, info, opts)
            if err:
                errors.append(err)
                continue
            rec = make_recording(u.utt_id, u.path, info, opts)
            if info["sample_rate"] != opts.sample_rate:
                materialize[u.utt_id] = f"wav{opts.sample_rate // 1000}k/{u.utt_id}.flac"
            sup = SupervisionSegment(id=u.utt_id, recording_id=u.utt_id, start=0.0, duration=rec.duration,
                                     channel=0, speaker=u.speaker)
            recs.append(rec)
            sups.append(sup)
            cuts.append(MonoCut(id=u.utt_id, start=0.0, duration=rec.duration, channel=0, recording=rec,
                                supervisions=[sup]))
        raise_errors(errors, f"the audio of set '{spec.name}'")
        if short:
            spec = drop_short_utterances(spec, short, opts.min_duration)
        known = {u.utt_id for u in spec.utts}
        terr = []
        for fname, trials in spec.trials.items():
            for a, b, _ in trials:
                for x in (a, b):
                    if x not in known:
                        terr.append(f"{spec.name}/{fname}: utterance '{x}' is not in set '{spec.name}'")
        raise_errors(sorted(set(terr)), f"the trials of set '{spec.name}'")
        if not recs:
            raise DataError(f"set '{spec.name}': every utterance is shorter than {opts.min_duration} s")
        built.append(BuiltSet(spec, RecordingSet.from_recordings(recs), SupervisionSet.from_segments(sups),
                              CutSet.from_cuts(cuts), materialize, short))
    return built


def drop_short_utterances(spec: SetSpec, short: Dict[str, float], min_duration: float) -> SetSpec:
    """The set without the utterances in ``short`` and without the trials that name them (the
    documented rule: such utterances are neither trained on nor tested)."""
    trials = {f: [t for t in ts if t[0] not in short and t[1] not in short] for f, ts in spec.trials.items()}
    dropped = sum(len(ts) for ts in spec.trials.values()) - sum(len(ts) for ts in trials.values())
    logger.warning("set %s: %d utterance(s) shorter than %.2f s left out (listed in %s/short_utts)%s",
                   spec.name, len(short), min_duration, spec.name,
                   f", with the {dropped} trial(s) naming them" if dropped else "")
    return dataclasses.replace(spec, utts=[u for u in spec.utts if u.utt_id not in short], trials=trials)


def write_manifest(manifest, path: Path) -> None:
    """Write a lhotse manifest as ``.jsonl.gz`` atomically (gzip with mtime 0: reproducible bytes)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            with io.TextIOWrapper(gz, encoding="utf-8") as f:
                for item in manifest.to_dicts():
                    f.write(json.dumps(item, ensure_ascii=False) + "\n")


def manifest_paths(data_root: Path, corpus: str, set_name: Optional[str]) -> Dict[str, Path]:
    suffix = f"_{set_name}" if set_name else ""
    return {k: Path(data_root) / "manifests" / f"{corpus}_{k}{suffix}.jsonl.gz"
            for k in ("recordings", "supervisions", "cuts")}


def remove_stale_tmp(d: Path, names: Optional[Iterable[str]] = None) -> None:
    """Remove temp files a killed earlier run left behind (``.<name>.XXXX.tmp``) in ``d``: all of
    them, or only those of the files ``names`` (for directories other stages write to as well)."""
    if not d.is_dir():
        return
    patterns = [".*.tmp"] if names is None else [f".{n}.*.tmp" for n in names]
    for pat in patterns:
        for p in d.glob(pat):
            p.unlink(missing_ok=True)


def materialize_audio(rec, out_path: Path, channel: Optional[int] = None, subtype: str = "PCM_16") -> None:
    """Write ``rec``'s audio (after its transforms; optionally one channel) to ``out_path`` atomically."""
    audio = rec.load_audio()  # [channels, samples] float32
    x = audio[channel if channel is not None else 0]
    if subtype.startswith("PCM"):
        x = np.clip(x, -1.0, 1.0 - 1.0 / 32768)
    fmt = "FLAC" if out_path.suffix == ".flac" else "WAV"
    with atomic_path(out_path) as tmp:
        sf.write(str(tmp), x, rec.sampling_rate, format=fmt, subtype=subtype)


def export_kaldi_dir(cuts, out_dir: Path, wav_override: Optional[Dict[str, str]] = None) -> None:
    """Kaldi data dir from a CutSet: wav.scp (plain absolute paths), utt2spk, spk2utt, utt2dur."""
    wav_override = wav_override or {}
    wav, utt2spk, utt2dur = {}, {}, {}
    for cut in cuts:
        src = cut.recording.sources[0].source
        wav[cut.id] = wav_override.get(cut.id, src)
        utt2spk[cut.id] = cut.supervisions[0].speaker
        utt2dur[cut.id] = f"{cut.duration:.4f}".rstrip("0").rstrip(".")
    write_table(out_dir / "wav.scp", wav)
    write_table(out_dir / "utt2spk", utt2spk)
    write_table(out_dir / "spk2utt", utt2spk_to_spk2utt(utt2spk))
    write_table(out_dir / "utt2dur", utt2dur)


def write_sets(built: Sequence[BuiltSet], data_root: Path, fingerprint: str, progress: bool = True) -> None:
    from tqdm import tqdm

    data_root = Path(data_root)
    for b in built:
        set_dir = data_root / b.spec.name
        done = set_dir / ".done"
        if done.exists():
            done.unlink()
        paths = manifest_paths(data_root, b.spec.corpus, b.spec.name)
        remove_stale_tmp(set_dir)
        remove_stale_tmp(data_root / "manifests", [p.name for p in paths.values()])
        override = {}
        if b.materialize:
            logger.info("writing %d resampled copies (%d Hz) under %s", len(b.materialize),
                        b.recordings[next(iter(b.materialize))].sampling_rate, set_dir)
        for utt, rel in tqdm(sorted(b.materialize.items()), desc=f"resampling ({b.spec.name})",
                             disable=None if progress else True):
            out = set_dir / rel
            materialize_audio(b.recordings[utt], out)
            override[utt] = os.path.abspath(out)
        write_manifest(b.recordings, paths["recordings"])
        write_manifest(b.supervisions, paths["supervisions"])
        write_manifest(b.cuts, paths["cuts"])
        export_kaldi_dir(b.cuts, set_dir, override)
        for fname, trials in sorted(b.spec.trials.items()):
            write_trials(set_dir / fname, trials)
        with atomic_path(set_dir / "short_utts") as tmp:
            Path(tmp).write_text("".join(f"{u} {d:.3f}\n" for u, d in sorted(b.short.items())), encoding="utf-8")
        mark_complete(done, fingerprint)
        nspk = len({u.speaker for u in b.spec.utts})
        ntr = {k: len(v) for k, v in b.spec.trials.items()}
        logger.info("wrote set %s: %d speakers, %d utterances, %.2f h%s -> %s", b.spec.name, nspk,
                    len(b.spec.utts), sum(c.duration for c in b.cuts) / 3600,
                    "".join(f", {k}: {v} trials" for k, v in ntr.items()), set_dir)


def stage_complete(data_root: Path, set_names: Iterable[str], fingerprint: str) -> bool:
    """True when every set has a ``.done`` that records exactly this configuration."""
    for name in set_names:
        done = Path(data_root) / name / ".done"
        if not is_complete(done) or done.read_text(encoding="utf-8") != fingerprint:
            return False
    return True


def make_fingerprint(**kwargs) -> str:
    return json.dumps(kwargs, sort_keys=True, default=str)


def run_sets(specs: Sequence[SetSpec], data_root: Path, opts: AudioOptions, fingerprint: str) -> List[Path]:
    built = build_sets(specs, opts)
    write_sets(built, data_root, fingerprint, opts.progress)
    return [Path(data_root) / s.name for s in specs]


# ----------------------------------------------------------------------------------------------
# trials
# ----------------------------------------------------------------------------------------------
def check_trial_speakers(spk2utt: Dict[str, List[str]], set_name: str) -> None:
    if len(spk2utt) < 2:
        raise DataError(f"test set '{set_name}' has {len(spk2utt)} speaker(s); non-target trials need at "
                        "least 2 speakers")
    for spk in sorted(spk2utt):
        if len(spk2utt[spk]) < 2:
            raise DataError(f"speaker '{spk}' has only {len(spk2utt[spk])} utterance in test set "
                            f"'{set_name}'; target trials need at least 2 utterances per test speaker")


def make_trials(spk2utt: Dict[str, List[str]], opts: TrialOptions, set_name: str = "test") -> List[Trial]:
    """All (or a seeded sample of ``max_target_trials``) same-speaker pairs + a seeded sample of
    ``round(nontarget_ratio * #target)`` different-speaker pairs, drawn uniformly without replacement.

    Each unordered pair appears once, as ``(a, b)`` with ``a < b``; the list is sorted.
    """
    opts.validate()
    check_trial_speakers(spk2utt, set_name)
    rng = np.random.default_rng(opts.seed)
    speakers = sorted(spk2utt)
    targets = [(a, b) for s in speakers for a, b in itertools.combinations(sorted(spk2utt[s]), 2)]
    if opts.max_target_trials and len(targets) > opts.max_target_trials:
        keep = np.sort(rng.choice(len(targets), opts.max_target_trials, replace=False))
        targets = [targets[i] for i in keep]
    utts = sorted(u for s in speakers for u in spk2utt[s])
    spk_of = {u: s for s in speakers for u in spk2utt[s]}
    sid = {s: i for i, s in enumerate(speakers)}
    spk_idx = np.array([sid[spk_of[u]] for u in utts], dtype=np.int64)
    n = len(utts)
    sizes = np.bincount(spk_idx)
    total_non = n * (n - 1) // 2 - int(np.sum(sizes * (sizes - 1) // 2))
    want = int(round(opts.nontarget_ratio * len(targets)))
    if want > total_non:
        logger.warning("set %s: only %d non-target pairs exist; asked for %d", set_name, total_non, want)
        want = total_non
    if want == 0:
        pairs = np.zeros((0, 2), dtype=np.int64)
    elif n * (n - 1) // 2 <= 4_000_000:  # enumerate every non-target pair, then sample
        i, j = np.triu_indices(n, k=1)
        m = spk_idx[i] != spk_idx[j]
        i, j = i[m], j[m]
        pick = np.sort(rng.choice(len(i), want, replace=False))
        pairs = np.stack([i[pick], j[pick]], axis=1)
    else:  # rejection sampling for large sets (few pairs wanted out of very many)
        chosen: Dict[Tuple[int, int], None] = {}
        while len(chosen) < want:
            k = max(1024, 2 * (want - len(chosen)))
            a = rng.integers(0, n, k)
            b = rng.integers(0, n, k)
            ok = spk_idx[a] != spk_idx[b]
            for x, y in zip(np.minimum(a, b)[ok], np.maximum(a, b)[ok]):
                chosen.setdefault((int(x), int(y)), None)
                if len(chosen) == want:
                    break
        pairs = np.array(sorted(chosen), dtype=np.int64).reshape(-1, 2)
    trials = [(a, b, 1) for a, b in targets] + [(utts[x], utts[y], 0) for x, y in pairs]
    trials.sort()
    return trials


# ----------------------------------------------------------------------------------------------
# speaker-folder corpora
# ----------------------------------------------------------------------------------------------
def scan_speaker_dirs(root, what: str = "corpus") -> List[Utterance]:
    """Utterances of a ``<root>/<speaker>/<utterance>.{wav,flac}`` tree (deeper nesting allowed:
    ``<speaker>/<session>/<utt>.wav`` becomes ``<speaker>-<session>-<utt>``)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{what} directory not found: {root}")
    utts: List[Utterance] = []
    unsupported: List[str] = []
    seen: Dict[str, str] = {}
    errors: List[str] = []
    for spk_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        spk = spk_dir.name
        found = 0
        for dirpath, dirnames, filenames in os.walk(spk_dir, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            stems = {os.path.splitext(f)[0] for f in filenames if os.path.splitext(f)[1].lower() in AUDIO_EXTS}
            for fname in sorted(filenames):
                if fname.startswith("."):
                    continue
                stem, ext = os.path.splitext(fname)
                ext = ext.lower()
                full = os.path.join(dirpath, fname)
                if ext in UNSUPPORTED_EXTS:
                    if stem not in stems:
                        unsupported.append(full)
                    continue
                if ext not in AUDIO_EXTS:
                    continue
                rel = PurePosixPath(Path(full).relative_to(spk_dir).as_posix())
                utt = make_utt_id(spk, rel)
                path = os.path.abspath(full)
                try:
                    check_id("utterance", utt, path)
                    check_id("speaker", spk, path)
                except DataError as e:
                    errors.append(str(e))
                    continue
                if utt in seen:
                    errors.append(f"duplicate utterance id '{utt}': {seen[utt]} and {path}")
                    continue
                seen[utt] = path
                utts.append(Utterance(utt, spk, path))
                found += 1
        if not found and not any(u.startswith(str(spk_dir)) for u in unsupported):
            logger.warning("%s: speaker folder %s has no .wav/.flac files; ignored", what, spk_dir)
    if unsupported:
        errors.insert(0, f"{len(unsupported)} audio file(s) in a format soundfile cannot read, e.g. "
                         f"{unsupported[0]}; {FFMPEG_HINT}")
    raise_errors(errors, f"{what} directory {root}")
    if not utts:
        raise DataError(f"{what} directory {root} has no <speaker>/<utterance>.wav|.flac files")
    return sorted(utts, key=lambda u: u.utt_id)


def group_by_speaker(utts: Iterable[Utterance]) -> Dict[str, List[Utterance]]:
    out: Dict[str, List[Utterance]] = {}
    for u in utts:
        out.setdefault(u.speaker, []).append(u)
    return out


def trials_for(utts: Sequence[Utterance], topts: TrialOptions, set_name: str) -> List[Trial]:
    spk2utt = {s: [u.utt_id for u in us] for s, us in group_by_speaker(utts).items()}
    return make_trials(spk2utt, topts, set_name)


def read_speaker_list(path) -> List[str]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing test-speaker list: {path}")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if parts and not parts[0].startswith("#"):
            out.append(parts[0])
    if not out:
        raise DataError(f"test-speaker list {path} is empty")
    return out


def split_speakers(speakers: Sequence[str], test_fraction: float, seed: int,
                   test_speakers_file: Optional[str] = None) -> Tuple[List[str], List[str]]:
    """Speaker-disjoint split: the listed speakers, or a seeded choice of ``test_fraction`` of them."""
    speakers = sorted(speakers)
    if test_speakers_file:
        listed = read_speaker_list(test_speakers_file)
        missing = [s for s in listed if s not in set(speakers)]
        if missing:
            raise DataError(f"{test_speakers_file}: speaker(s) not found in the corpus: {', '.join(missing[:20])}")
        test = sorted(set(listed))
    else:
        if not 0.0 <= test_fraction < 1.0:
            raise DataError(f"--test-fraction must be in [0, 1), got {test_fraction}")
        if test_fraction == 0.0:
            return speakers, []
        n_test = max(2, int(round(test_fraction * len(speakers))))
        if n_test >= len(speakers):
            raise DataError(f"cannot hold out {n_test} test speakers out of {len(speakers)} and keep "
                            "training speakers; lower --test-fraction or add speakers")
        rng = np.random.default_rng(seed)
        test = sorted(rng.choice(speakers, n_test, replace=False).tolist())
    train = [s for s in speakers if s not in set(test)]
    if not train:
        raise DataError("every speaker is a test speaker; nothing left for training")
    return train, test


def prepare_folder(corpus_dir, data_root="data", name: str = "folder", test_corpus_dir=None,
                   test_speakers: Optional[str] = None, test_fraction: float = 0.2,
                   trial_opts: Optional[TrialOptions] = None, audio_opts: Optional[AudioOptions] = None,
                   force: bool = False) -> List[Path]:
    """Prepare ``<name>_train`` and ``<name>_test`` from speaker folders. Returns the set dirs."""
    trial_opts = trial_opts or TrialOptions()
    audio_opts = audio_opts or AudioOptions()
    audio_opts.validate()
    trial_opts.validate()
    check_id("set name", name, "--name")
    if test_corpus_dir and test_speakers:
        raise DataError("give either --test-corpus-dir or --test-speakers, not both")
    has_test = bool(test_corpus_dir or test_speakers or test_fraction > 0)
    set_names = [f"{name}_train"] + ([f"{name}_test"] if has_test else [])
    utts = scan_speaker_dirs(corpus_dir, "corpus")
    test_scan = scan_speaker_dirs(test_corpus_dir, "test corpus") if test_corpus_dir else []
    # the listing (names, sizes, modification times of every audio file) is part of the
    # configuration: an added, removed or rewritten file makes stage 0 run again
    fp = make_fingerprint(stage="folder", corpus_dir=os.path.abspath(corpus_dir),
                          test_corpus_dir=os.path.abspath(test_corpus_dir) if test_corpus_dir else None,
                          test_speakers=os.path.abspath(test_speakers) if test_speakers else None,
                          test_speakers_file=file_signature(test_speakers) if test_speakers else None,
                          test_fraction=test_fraction if not (test_corpus_dir or test_speakers) else None,
                          trials=dataclasses.asdict(trial_opts), audio=audio_opts.fingerprint(), name=name,
                          audio_files=listing_signature(u.path for u in utts + test_scan))
    if not force and stage_complete(data_root, set_names, fp):
        logger.info("sets %s already prepared in %s (same configuration, same audio files); skipping",
                    ", ".join(set_names), data_root)
        return [Path(data_root) / s for s in set_names]

    if test_corpus_dir:
        train_utts = utts
        test_utts = test_scan
        overlap = sorted({u.speaker for u in train_utts} & {u.speaker for u in test_utts})
        if overlap:
            raise DataError(f"speaker(s) {', '.join(overlap[:20])} appear in both {corpus_dir} and "
                            f"{test_corpus_dir}; train and test speakers must be disjoint")
    else:
        train_spk, test_spk = split_speakers(sorted({u.speaker for u in utts}), test_fraction,
                                             trial_opts.seed, test_speakers)
        tset = set(test_spk)
        train_utts = [u for u in utts if u.speaker not in tset]
        test_utts = [u for u in utts if u.speaker in tset]
    specs = [SetSpec(f"{name}_train", name, train_utts)]
    _warn_single_utt_speakers(train_utts, f"{name}_train")
    if has_test:
        specs.append(SetSpec(f"{name}_test", name, test_utts,
                             {"trials": trials_for(test_utts, trial_opts, f"{name}_test")}))
    return run_sets(specs, Path(data_root), audio_opts, fp)


def _warn_single_utt_speakers(utts: Sequence[Utterance], set_name: str) -> None:
    single = sorted(s for s, us in group_by_speaker(utts).items() if len(us) < 2)
    if single:
        logger.warning("training set %s: %d speaker(s) with a single utterance (e.g. %s); samplers that "
                       "need 2 utterances per speaker will skip them", set_name, len(single), single[0])


# ----------------------------------------------------------------------------------------------
# the built-in mini corpus
# ----------------------------------------------------------------------------------------------
def prepare_mini(data_root="data", corpus_dir=None, num_test_speakers: int = 16, mini_cfg=None,
                 trial_opts: Optional[TrialOptions] = None, audio_opts: Optional[AudioOptions] = None,
                 name: str = "mini", force: bool = False) -> List[Path]:
    """Generate the synthetic corpus (if needed), then ``<name>_train`` (the first speakers) and
    ``<name>_test`` (the last ``num_test_speakers``, unseen in training) with all target trials."""
    from pysv.data.mini_corpus import MiniConfig, generate_mini_corpus

    cfg = mini_cfg or MiniConfig()
    cfg.validate()
    audio_opts = audio_opts or AudioOptions()
    audio_opts.validate()
    trial_opts = trial_opts or TrialOptions(seed=cfg.seed)
    trial_opts.validate()
    check_id("set name", name, "--name")
    if cfg.sample_rate != audio_opts.sample_rate:
        raise DataError(f"mini corpus sample rate {cfg.sample_rate} differs from --sample-rate "
                        f"{audio_opts.sample_rate}")
    if num_test_speakers < 0 or num_test_speakers >= cfg.num_speakers:
        raise DataError(f"--num-test-speakers must be in [0, {cfg.num_speakers}) for {cfg.num_speakers} "
                        f"speakers, got {num_test_speakers}")
    if num_test_speakers == 1:
        raise DataError("--num-test-speakers 1: non-target trials need at least 2 test speakers")
    if num_test_speakers and cfg.utts_per_speaker < 2:
        raise DataError(f"--utts-per-speaker {cfg.utts_per_speaker}: target trials need at least 2 "
                        "utterances per test speaker")
    corpus_dir = Path(corpus_dir) if corpus_dir else Path(data_root) / "mini_corpus"
    set_names = [f"{name}_train"] + ([f"{name}_test"] if num_test_speakers else [])
    fp = make_fingerprint(stage="mini", corpus=json.loads(cfg.to_json()), corpus_dir=os.path.abspath(corpus_dir),
                          num_test_speakers=num_test_speakers, trials=dataclasses.asdict(trial_opts),
                          audio=audio_opts.fingerprint(), name=name)
    corpus_done = corpus_dir / ".done"
    if (not force and stage_complete(data_root, set_names, fp) and is_complete(corpus_done)
            and corpus_done.read_text(encoding="utf-8") == cfg.to_json()):
        logger.info("sets %s already prepared in %s (same configuration); skipping", ", ".join(set_names), data_root)
        return [Path(data_root) / s for s in set_names]
    wav_dir = generate_mini_corpus(corpus_dir, cfg, nj=audio_opts.nj, force=force, progress=audio_opts.progress)
    utts = scan_speaker_dirs(wav_dir, "mini corpus")
    speakers = [cfg.speaker_id(i) for i in range(cfg.num_speakers)]
    test_spk = set(speakers[cfg.num_speakers - num_test_speakers:])
    train_utts = [u for u in utts if u.speaker not in test_spk]
    test_utts = [u for u in utts if u.speaker in test_spk]
    specs = [SetSpec(f"{name}_train", name, train_utts)]
    if num_test_speakers:
        specs.append(SetSpec(f"{name}_test", name, test_utts,
                             {"trials": trials_for(test_utts, trial_opts, f"{name}_test")}))
    return run_sets(specs, Path(data_root), audio_opts, fp)
