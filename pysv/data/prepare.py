"""Stage 0 core: corpora become lhotse manifests, exported to Kaldi data directories.

For every set a corpus module (:mod:`pysv.data.corpora`) hands over, this module writes

* lhotse manifests ``<data-root>/manifests/<corpus>_{recordings,supervisions,cuts}_<set>.jsonl.gz``
  (one recording, one supervision with the speaker id and one cut per utterance; ids are equal),
* the Kaldi data dir ``<data-root>/<set>/{wav.scp,utt2spk,spk2utt,utt2dur}`` exported from the cuts,
* for test sets the trial lists (:mod:`pysv.data.trials`), e.g. ``<data-root>/<set>/trials``,
* ``<data-root>/<set>/.done`` last, a :mod:`pysv.utils.stage` marker of the stage's configuration.

A stage first reads and validates all its inputs (every set it prepares) and only then writes, so bad
input raises :class:`~pysv.utils.io.DataError` naming the culprit and leaves nothing behind. Every file
is written atomically; a stage whose markers record the same configuration (and whose outputs are
intact) is skipped, and a stage killed midway has no marker and is redone from the start when re-run.

Also here: the one walker that finds audio files in a directory tree (:func:`find_audio_files`),
audio probing, and the helpers the augmentation sets (:mod:`pysv.data.corpora.musan`,
:mod:`pysv.data.corpora.rirs`) share with the speaker sets.
"""
from __future__ import annotations

import dataclasses
import gzip
import io
import json
import logging
import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
from tqdm import tqdm

from pysv.data.trials import Trial
from pysv.utils import stage
from pysv.utils.io import DataError, atomic_path, remove_stale_temp, utt2spk_to_spk2utt, write_table, write_trials

logger = logging.getLogger(__name__)

AUDIO_EXTS = (".wav", ".flac")
# Formats soundfile (libsndfile) cannot read, or that we do not accept as corpus audio.
UNSUPPORTED_EXTS = (".m4a", ".aac", ".mp4", ".mp3", ".opus", ".webm", ".sph", ".wma")
FFMPEG_HINT = (
    "pass --convert-audio DIR (folder and voxceleb corpora: ffmpeg converts them to mono FLAC under DIR, "
    "in parallel and resumably, and DIR is read instead), or convert the audio to 16 kHz mono WAV first, e.g.\n"
    "  find DIR -name '*.m4a' | while read -r f; do "
    "ffmpeg -nostdin -loglevel error -y -i \"$f\" -ac 1 -ar 16000 -c:a pcm_s16le \"${f%.m4a}.wav\"; done\n"
    "(see docs/data.md for a parallel version that writes to a separate wav/ tree)")
_ID_RE = re.compile(r"^[^\s/]+$")
MAX_LISTED_ERRORS = 20
#: the completion marker of a set, in its directory
MARKER = ".done"
#: the Kaldi data dir of a set (:func:`export_kaldi_dir`)
KALDI_FILES = ("wav.scp", "utt2spk", "spk2utt", "utt2dur")


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


def raise_errors(errors: Sequence[str], what: str) -> None:
    if not errors:
        return
    shown = "\n  ".join(errors[:MAX_LISTED_ERRORS])
    more = f"\n  ... and {len(errors) - MAX_LISTED_ERRORS} more" if len(errors) > MAX_LISTED_ERRORS else ""
    raise DataError(f"{len(errors)} problem(s) with {what}; nothing was written:\n  {shown}{more}")


# ----------------------------------------------------------------------------------------------
# finding audio files
# ----------------------------------------------------------------------------------------------
def find_audio_files(directory, unsupported: Optional[List[str]] = None) -> List[PurePosixPath]:
    """The ``.wav`` / ``.flac`` files under ``directory`` as paths relative to it, in walk order
    (files of a folder by name, then its sub-folders by name; symbolic links followed, hidden files
    and folders skipped).

    Files in a format soundfile cannot read (``.m4a``, ...) without a ``.wav`` / ``.flac`` twin of
    the same name in the same folder are appended to ``unsupported`` (full paths) when it is given.
    """
    found: List[PurePosixPath] = []
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        names = sorted(f for f in filenames if not f.startswith("."))
        stems = {os.path.splitext(f)[0] for f in names if os.path.splitext(f)[1].lower() in AUDIO_EXTS}
        for name in names:
            stem, ext = os.path.splitext(name)
            ext = ext.lower()
            if ext in AUDIO_EXTS:
                found.append(PurePosixPath(Path(dirpath, name).relative_to(directory).as_posix()))
            elif unsupported is not None and ext in UNSUPPORTED_EXTS and stem not in stems:
                unsupported.append(os.path.join(dirpath, name))
    return found


def scan_speaker_tree(root: Path, speakers: Iterable[str],
                      utt_id: Callable[[str, PurePosixPath], Optional[str]], what: str, layout: str,
                      progress: bool = True) -> List[Utterance]:
    """The utterances in the speaker folders ``root/<speaker>`` (sorted by utterance id).

    ``utt_id(speaker, relative path)`` names each audio file found there, or returns None for a file
    outside the corpus layout (``layout`` describes it in messages). Invalid and duplicate ids and
    audio soundfile cannot read are reported together, naming the files.
    """
    root = Path(root)
    utts: List[Utterance] = []
    unsupported: List[str] = []
    seen: Dict[str, str] = {}
    errors: List[str] = []
    for spk in tqdm(list(speakers), desc=f"scanning {what}", unit="spk", disable=None if progress else True,
                    mininterval=1.0):
        spk_dir = root / spk
        n_unsupported = len(unsupported)
        rels = find_audio_files(spk_dir, unsupported)
        if not rels and len(unsupported) == n_unsupported:
            logger.warning("%s: speaker folder %s has no .wav/.flac files; ignored", what, spk_dir)
        for rel in rels:
            utt = utt_id(spk, rel)
            if utt is None:
                continue
            path = os.path.abspath(spk_dir / rel)
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
    if unsupported:
        errors.insert(0, f"{len(unsupported)} audio file(s) in a format soundfile cannot read (e.g. .m4a/AAC) "
                         f"without a .wav/.flac twin, e.g. {unsupported[0]}; {FFMPEG_HINT}")
    raise_errors(errors, f"{what} directory {root}")
    if not utts:
        raise DataError(f"{what} directory {root} has no {layout} files")
    return sorted(utts, key=lambda u: u.utt_id)


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


def probe_files(paths: Sequence[str], opts: AudioOptions,
                what: str) -> Tuple[List[Optional[Dict[str, int]]], List[str]]:
    """Probe every file (in parallel with ``opts.nj`` processes); returns infos and error lines."""
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
# building sets
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


# ----------------------------------------------------------------------------------------------
# writing sets
# ----------------------------------------------------------------------------------------------
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


def write_manifests(paths: Mapping[str, Path], recordings, supervisions, cuts) -> None:
    """The three manifests of a set, at the ``paths`` of :func:`manifest_paths`."""
    write_manifest(recordings, paths["recordings"])
    write_manifest(supervisions, paths["supervisions"])
    write_manifest(cuts, paths["cuts"])


def start_set(set_dir: Path, files: Iterable[Path]) -> None:
    """Before a set is (re)written: its marker goes first, then the temporary files that a killed
    run left behind of ``files`` (the set's outputs and audio copies)."""
    (set_dir / MARKER).unlink(missing_ok=True)
    for f in files:
        remove_stale_temp(f)


def materialize_audio(rec, out_path: Path, channel: Optional[int] = None, subtype: str = "PCM_16") -> None:
    """Write ``rec``'s audio (after its transforms; optionally one channel) to ``out_path`` atomically."""
    audio = rec.load_audio()  # [channels, samples] float32
    x = audio[channel if channel is not None else 0]
    if subtype.startswith("PCM"):
        x = np.clip(x, -1.0, 1.0 - 1.0 / 32768)
    fmt = "FLAC" if out_path.suffix == ".flac" else "WAV"
    with atomic_path(out_path) as tmp:
        sf.write(str(tmp), x, rec.sampling_rate, format=fmt, subtype=subtype)


def format_duration(seconds: float) -> str:
    """utt2dur's number: at most 4 decimals, no trailing zeros."""
    return f"{seconds:.4f}".rstrip("0").rstrip(".")


def export_kaldi_dir(cuts, out_dir: Path, wav_override: Optional[Dict[str, str]] = None) -> None:
    """Kaldi data dir from a CutSet: wav.scp (plain absolute paths), utt2spk, spk2utt, utt2dur.

    A cut whose supervision names no speaker (augmentation sets) is its own speaker."""
    wav_override = wav_override or {}
    wav, utt2spk, utt2dur = {}, {}, {}
    for cut in cuts:
        wav[cut.id] = wav_override.get(cut.id, cut.recording.sources[0].source)
        utt2spk[cut.id] = cut.supervisions[0].speaker or cut.id
        utt2dur[cut.id] = format_duration(cut.duration)
    write_table(out_dir / "wav.scp", wav)
    write_table(out_dir / "utt2spk", utt2spk)
    write_table(out_dir / "spk2utt", utt2spk_to_spk2utt(utt2spk))
    write_table(out_dir / "utt2dur", utt2dur)


def finish_set(set_dir: Path, fingerprint: Mapping[str, Any], outputs: Iterable[Path], **info: Any) -> None:
    """Write the set's marker, last: the configuration, the sizes of ``outputs`` and ``info``."""
    stage.write(set_dir / MARKER, fingerprint, outputs=outputs, **info)


def write_sets(built: Sequence[BuiltSet], data_root: Path, fingerprint: Mapping[str, Any],
               progress: bool = True) -> None:
    data_root = Path(data_root)
    for b in built:
        set_dir = data_root / b.spec.name
        paths = manifest_paths(data_root, b.spec.corpus, b.spec.name)
        copies = {utt: set_dir / rel for utt, rel in sorted(b.materialize.items())}
        outputs = [*paths.values(), *(set_dir / f for f in (*KALDI_FILES, *sorted(b.spec.trials), "short_utts"))]
        start_set(set_dir, [*outputs, *copies.values()])
        if copies:
            logger.info("writing %d resampled copies (%d Hz) under %s", len(copies),
                        b.recordings[next(iter(copies))].sampling_rate, set_dir)
        for utt, out in tqdm(copies.items(), desc=f"resampling ({b.spec.name})", disable=None if progress else True):
            materialize_audio(b.recordings[utt], out)
        write_manifests(paths, b.recordings, b.supervisions, b.cuts)
        export_kaldi_dir(b.cuts, set_dir, {utt: os.path.abspath(out) for utt, out in copies.items()})
        for fname, trials in sorted(b.spec.trials.items()):
            write_trials(set_dir / fname, trials)
        with atomic_path(set_dir / "short_utts") as tmp:
            Path(tmp).write_text("".join(f"{u} {d:.3f}\n" for u, d in sorted(b.short.items())), encoding="utf-8")
        nspk = len({u.speaker for u in b.spec.utts})
        ntr = {k: len(v) for k, v in b.spec.trials.items()}
        finish_set(set_dir, fingerprint, outputs, speakers=nspk, utterances=len(b.spec.utts), trials=ntr)
        logger.info("wrote set %s: %d speakers, %d utterances, %.2f h%s -> %s", b.spec.name, nspk,
                    len(b.spec.utts), sum(c.duration for c in b.cuts) / 3600,
                    "".join(f", {k}: {v} trials" for k, v in ntr.items()), set_dir)


def sets_complete(data_root, set_names: Sequence[str], fingerprint: Mapping[str, Any]) -> bool:
    """True when the marker of every set records ``fingerprint`` and its outputs are intact (logged
    as a skip); otherwise False, logging why a set that was prepared before is made again."""
    for name in set_names:
        marker = Path(data_root) / name / MARKER
        reason = stage.check(marker, fingerprint)
        if reason is not None:
            if marker.exists():
                logger.info("preparing %s again: %s", ", ".join(set_names), reason)
            return False
    logger.info("sets %s already prepared in %s (same configuration); skipping", ", ".join(set_names), data_root)
    return True


def run_sets(specs: Sequence[SetSpec], data_root: Path, opts: AudioOptions,
             fingerprint: Mapping[str, Any]) -> List[Path]:
    """Build (validate) every set, then write them all. Returns the set dirs."""
    built = build_sets(specs, opts)
    write_sets(built, data_root, fingerprint, opts.progress)
    return [Path(data_root) / s.name for s in specs]
