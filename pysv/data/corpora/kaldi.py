"""Existing Kaldi data directories as a corpus: ``wav.scp`` (paths or commands), ``utt2spk`` and an
optional ``segments``, imported with lhotse (:func:`lhotse.kaldi.load_kaldi_data_dir`).

The audio is **materialised in stage 0**, so that every later stage reads plain files:

1. the directory's text files are read and checked (nothing runs before every set passes);
2. each ``wav.scp`` entry an utterance uses is realised once: a command (``... |``) is run once per
   recording (``bash -o pipefail -c``, in the current directory, as Kaldi's ``popen`` would) and its
   WAV output decoded; a plain path is probed;
3. lhotse imports a shadow copy of the directory whose ``wav.scp`` names the realised files and whose
   ``reco2dur`` holds their measured durations (so no command runs a second time), giving the
   recordings and the supervisions (``segments``, ``end = -1`` included);
4. every utterance that is a segment or comes from a command is written as a mono file at
   ``--sample-rate`` (resampled if ``--on-rate-mismatch resample``) to
   ``<data-root>/<set>/audio/<utt>.<flac|wav>``: a whole-recording command's output at the right rate
   as it is decoded in step 2, segments and resampled audio from lhotse cuts with
   :func:`pysv.data.prepare.materialize_audio`; whole-recording utterances of plain files keep their path;
5. the sets are written as every other corpus's (:func:`pysv.data.prepare.write_sets`): manifests,
   a Kaldi dir whose ``wav.scp`` lists plain files, trials, the marker.

Trials of the test set: a given ``--trials`` file (Kaldi ``enroll test target|nontarget`` or
VoxCeleb format), else the test directory's own ``trials`` file, else generated from its speakers
(:func:`pysv.data.trials.make_trials`, as for the folder corpus).

A re-run whose inputs fail keeps the previous outputs: the previous ``audio/`` folder and marker are
put aside while the new audio is made, and put back on failure.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import re
import shutil
import struct
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import soundfile as sf
from lhotse.cut import MonoCut
from lhotse.kaldi import load_kaldi_data_dir
from lhotse.utils import fastcopy
from tqdm import tqdm

from pysv.data.prepare import (MARKER, AudioOptions, SetSpec, Utterance, build_sets, check_id, materialize_audio,
                               probe_audio, raise_errors, sets_complete, write_sets)
from pysv.data.trials import Trial, TrialOptions, trials_for
from pysv.utils.io import DataError, atomic_path, read_trials
from pysv.utils.stage import file_signature, listing_signature

logger = logging.getLogger(__name__)

#: a segment may end this many seconds after its recording (cut at the end), as Kaldi's
#: ``extract-segments --max-overshoot``
MAX_OVERSHOOT = 0.5
AUDIO_FORMATS = ("flac", "wav")
_ARK_RE = re.compile(r"\.ark:\d+$")
#: lines of a failing command's stderr quoted in the error
STDERR_LINES = 5


@dataclasses.dataclass(frozen=True)
class WavEntry:
    """One ``wav.scp`` line: a file (absolute path) or a command (without its trailing ``|``)."""

    rec_id: str
    source: str
    is_command: bool

    def describe(self) -> str:
        return f"command `{self.source} |`" if self.is_command else f"file {self.source}"


@dataclasses.dataclass
class KaldiDir:
    """A checked Kaldi data dir: the recordings its utterances use, speakers, segments."""

    path: Path
    set_name: str
    recordings: Dict[str, WavEntry]
    utt2spk: Dict[str, str]
    #: utt -> (recording, start, end); end -1 = the end of the recording; None: no segments file
    segments: Optional[Dict[str, Tuple[str, float, float]]]
    trials_file: Optional[Path] = None

    @property
    def whole_recordings(self) -> bool:
        return self.segments is None

    def utterances(self) -> List[Tuple[str, str]]:
        """(utterance, speaker), sorted."""
        return sorted(self.utt2spk.items())

    def fingerprint(self) -> Dict[str, Any]:
        files = {n: file_signature(self.path / n) for n in ("wav.scp", "utt2spk", "segments")}
        plain = [e.source for e in self.recordings.values() if not e.is_command]
        return dict(dir=os.path.abspath(self.path), files=files, audio_files=listing_signature(plain),
                    trials=(os.path.abspath(self.trials_file), file_signature(self.trials_file))
                    if self.trials_file else None)


# ----------------------------------------------------------------------------------------------
# reading and checking a data dir
# ----------------------------------------------------------------------------------------------
def _read_lines(path: Path) -> Iterator[Tuple[int, List[str], str]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                yield lineno, line.split(), line.strip()


def parse_wav_scp(path: Path, errors: List[str]) -> Dict[str, WavEntry]:
    """``wav.scp`` entries by recording id; problems are appended to ``errors`` naming the line."""
    entries: Dict[str, WavEntry] = {}
    for lineno, fields, line in _read_lines(path):
        rec = fields[0]
        rest = line[len(rec):].strip()
        where = f"{path}:{lineno}"
        if not rest:
            errors.append(f"{where}: recording '{rec}' has no path or command")
            continue
        if rec in entries:
            errors.append(f"{where}: duplicate recording id '{rec}'")
            continue
        if rest.endswith("|"):
            cmd = rest[:-1].strip()
            if not cmd:
                errors.append(f"{where}: recording '{rec}' has an empty command")
                continue
            entries[rec] = WavEntry(rec, cmd, True)
        elif rest == "-" or _ARK_RE.search(rest):
            errors.append(f"{where}: recording '{rec}': {rest!r} reads from an archive or stdin, which is not "
                          "supported; give a file or a command ending in '|' (e.g. `wav-copy ARK:OFFSET - |`)")
        elif len(fields) != 2:
            errors.append(f"{where}: recording '{rec}': {rest!r} is neither one path (paths cannot hold "
                          "whitespace in wav.scp) nor a command ending in '|'")
        else:
            entries[rec] = WavEntry(rec, os.path.abspath(rest), False)
    return entries


def parse_utt2spk(path: Path, errors: List[str]) -> Dict[str, str]:
    utt2spk: Dict[str, str] = {}
    for lineno, fields, line in _read_lines(path):
        where = f"{path}:{lineno}"
        if len(fields) != 2:
            errors.append(f"{where}: expected 'utterance speaker', got {line!r}")
        elif fields[0] in utt2spk:
            errors.append(f"{where}: duplicate utterance id '{fields[0]}'")
        else:
            utt2spk[fields[0]] = fields[1]
    return utt2spk


def parse_segments(path: Path, recordings: Dict[str, WavEntry],
                   errors: List[str]) -> Dict[str, Tuple[str, float, float]]:
    segs: Dict[str, Tuple[str, float, float]] = {}
    for lineno, fields, line in _read_lines(path):
        where = f"{path}:{lineno}"
        if len(fields) != 4:
            errors.append(f"{where}: expected 'utterance recording start end', got {line!r}")
            continue
        utt, rec = fields[0], fields[1]
        try:
            start, end = float(fields[2]), float(fields[3])
        except ValueError:
            errors.append(f"{where}: segment '{utt}': start and end must be numbers, got {line!r}")
            continue
        if utt in segs:
            errors.append(f"{where}: duplicate utterance id '{utt}'")
        elif rec not in recordings:
            errors.append(f"{where}: segment '{utt}' names recording '{rec}', which is not in "
                          f"{path.parent / 'wav.scp'}")
        elif start < 0 or not (end == -1 or end > start):
            errors.append(f"{where}: segment '{utt}': bad times start={fields[2]} end={fields[3]} "
                          "(need 0 <= start < end, or end = -1 for the end of the recording)")
        else:
            segs[utt] = (rec, start, end)
    return segs


def read_kaldi_dir(path, set_name: str) -> KaldiDir:
    """Read and check a Kaldi data dir (every problem named, with its file and line)."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"Kaldi data dir not found: {path}")
    for name, why in (("wav.scp", "the audio"), ("utt2spk", "the speaker of each utterance")):
        if not (path / name).is_file():
            raise DataError(f"Kaldi data dir {path}: missing {name} ({path / name}), which gives {why}")
    errors: List[str] = []
    recordings = parse_wav_scp(path / "wav.scp", errors)
    utt2spk = parse_utt2spk(path / "utt2spk", errors)
    segments = parse_segments(path / "segments", recordings, errors) if (path / "segments").is_file() else None
    raise_errors(errors, f"Kaldi data dir {path}")
    if not utt2spk:
        raise DataError(f"Kaldi data dir {path}: utt2spk ({path / 'utt2spk'}) is empty")
    utts = set(segments) if segments is not None else set(recordings)
    listing = path / ("segments" if segments is not None else "wav.scp")
    for utt in sorted(utts - set(utt2spk)):
        errors.append(f"{path / 'utt2spk'}: no speaker for utterance '{utt}' (of {listing})")
    for utt in sorted(set(utt2spk) - utts):
        errors.append(f"{path / 'utt2spk'}: utterance '{utt}' is not in {listing}")
    for utt, spk in sorted(utt2spk.items()):
        try:
            check_id("utterance", utt, str(path / "utt2spk"))
            check_id("speaker", spk, str(path / "utt2spk"))
        except DataError as e:
            errors.append(str(e))
            continue
        if not utt.startswith(spk):
            errors.append(f"{path / 'utt2spk'}: utterance id '{utt}' does not start with its speaker id '{spk}' "
                          "(Kaldi's convention, which keeps sorted tables consistent; prefix the ids, e.g. "
                          f"'{spk}-{utt}')")
    raise_errors(errors, f"Kaldi data dir {path}")
    used = {segments[u][0] for u in utt2spk} if segments is not None else set(utt2spk)
    if len(used) < len(recordings):
        logger.info("%s: %d recording(s) of wav.scp are used by no utterance; skipped",
                    path, len(recordings) - len(used))
    return KaldiDir(path, set_name, {r: recordings[r] for r in sorted(used)}, utt2spk, segments)


# ----------------------------------------------------------------------------------------------
# realising recordings (runs in worker processes)
# ----------------------------------------------------------------------------------------------
def _fix_streamed_wav(data: bytes) -> bytes:
    """A WAV written to a pipe cannot seek back to fill in its sizes (they are 0 or 0xFFFFFFFF):
    set the RIFF and data chunk sizes from the bytes actually there."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return data
    b = bytearray(data)
    pos = 12
    while pos + 8 <= len(b):
        cid = bytes(b[pos:pos + 4])
        size = struct.unpack("<I", b[pos + 4:pos + 8])[0]
        if cid == b"data":
            avail = len(b) - pos - 8
            if size == 0 or size > avail:
                b[pos + 4:pos + 8] = struct.pack("<I", avail)
                b[4:8] = struct.pack("<I", len(b) - 8)
            break
        pos += 8 + size + (size & 1)
    return bytes(b)


def decode_audio_bytes(data: bytes):
    """``(samples [n, channels] float32, sample_rate, subtype)`` of an audio file's bytes."""
    data = _fix_streamed_wav(data)
    with sf.SoundFile(io.BytesIO(data)) as f:
        x = f.read(dtype="float32", always_2d=True)
        return x, int(f.samplerate), f.subtype


def run_command(cmd: str) -> Tuple[Optional[bytes], Optional[str]]:
    """Run a ``wav.scp`` command once; ``(stdout, None)`` or ``(None, reason)``."""
    shell = shutil.which("bash")
    argv = [shell, "-o", "pipefail", "-c", cmd] if shell else ["/bin/sh", "-c", cmd]
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        return None, f"cannot run the command: {e}"
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-STDERR_LINES:]
        return None, (f"command failed with exit status {proc.returncode}"
                      + (": " + " / ".join(err) if err else " (no output on stderr)"))
    if not proc.stdout:
        return None, "command wrote no audio to stdout"
    return proc.stdout, None


@dataclasses.dataclass(frozen=True)
class Realised:
    """A recording as a plain file: ``path`` at ``sample_rate``; ``final``: already the utterance's
    output file (a whole-recording command at the right rate)."""

    path: str
    sample_rate: int
    num_samples: int
    final: bool = False

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate


def _realise(job: Tuple[WavEntry, str, Optional[str], int]) -> Tuple[Optional[Realised], Optional[str]]:
    """Run a command once (output to ``staged``, or to ``final`` when it is a whole utterance at the
    right rate) or probe a file. Returns ``(Realised, None)`` or ``(None, reason)``."""
    entry, staged, final, sample_rate = job
    if not entry.is_command:
        info, err = probe_audio(entry.source, check_audio=False)
        if err:
            return None, err
        if info["channels"] != 1:
            return None, f"{info['channels']} channels; speaker corpora must be mono"
        return Realised(entry.source, info["sample_rate"], info["num_samples"]), None
    data, err = run_command(entry.source)
    if err:
        return None, err
    try:
        x, sr, subtype = decode_audio_bytes(data)
    except Exception as e:  # libsndfile's errors
        return None, f"its output is not audio soundfile can read ({str(e).strip()}); it must write WAV to stdout"
    if x.shape[1] != 1:
        return None, f"its output has {x.shape[1]} channels; speaker corpora must be mono (select one in the command)"
    if len(x) == 0:
        return None, "its output has no samples"
    if final is not None and sr == sample_rate:
        out, fmt, sub = Path(final), ("FLAC" if final.endswith(".flac") else "WAV"), "PCM_16"
    else:
        out, fmt, sub = Path(staged), "WAV", ("PCM_16" if subtype == "PCM_16" else "FLOAT")
    y = x[:, 0]
    if sub == "PCM_16":
        y = y.clip(-1.0, 1.0 - 1.0 / 32768)
    with atomic_path(out) as tmp:
        sf.write(str(tmp), y, sr, format=fmt, subtype=sub)
    return Realised(str(out), sr, len(x), final=out == Path(final) if final else False), None


def _materialise(job: Tuple[List[Dict[str, Any]], List[str], int, Optional[str]]) -> Optional[str]:
    """Write the cuts of one recording to their files (resampled to ``sample_rate``); then remove the
    staged copy of the recording. Returns None or the reason of a failure."""
    cut_dicts, outs, sample_rate, staged = job
    for d, out in zip(cut_dicts, outs):
        try:
            cut = MonoCut.from_dict(d)
            if cut.sampling_rate != sample_rate:
                cut = cut.resample(sample_rate)
            materialize_audio(cut, Path(out))
        except Exception as e:
            return f"utterance '{d['id']}': cannot cut its audio: {e}"
    if staged:
        Path(staged).unlink(missing_ok=True)
    return None


def _run_jobs(fn: Callable, jobs: Sequence[Any], nj: int, desc: str, progress: bool) -> List[Any]:
    bar = dict(total=len(jobs), desc=desc, unit="rec", disable=None if progress else True, mininterval=1.0)
    if nj > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=nj) as ex:
            return list(tqdm(ex.map(fn, jobs, chunksize=max(1, min(16, len(jobs) // (4 * nj)))), **bar))
    return [fn(j) for j in tqdm(jobs, **bar)]


# ----------------------------------------------------------------------------------------------
# lhotse import and the cuts to write
# ----------------------------------------------------------------------------------------------
def import_with_lhotse(kd: KaldiDir, realised: Dict[str, Realised], sample_rate: int):
    """Recordings (at their real rates) and supervisions of ``kd`` through lhotse's Kaldi import of a
    shadow dir: the realised files in ``wav.scp``, their measured durations in ``reco2dur``."""
    with tempfile.TemporaryDirectory(prefix="pysv_kaldi_") as tmp:
        t = Path(tmp)
        with open(t / "wav.scp", "w", encoding="utf-8") as f, open(t / "reco2dur", "w", encoding="utf-8") as g:
            for rec, r in realised.items():
                f.write(f"{rec} {r.path}\n")
                g.write(f"{rec} {r.duration!r}\n")
        with open(t / "utt2spk", "w", encoding="utf-8") as f:
            f.writelines(f"{u} {s}\n" for u, s in kd.utterances())
        if kd.segments is not None:
            # lhotse reads 'text' whenever there is a segments file; transcripts play no part here
            (t / "text").write_text("".join(f"{u}\n" for u, _ in kd.utterances()), encoding="utf-8")
            with open(t / "segments", "w", encoding="utf-8") as f:
                for utt, _ in kd.utterances():
                    rec, start, end = kd.segments[utt]
                    f.write(f"{utt} {rec} {start!r} {'-1' if end == -1 else repr(end)}\n")
        recordings, supervisions, _ = load_kaldi_data_dir(t, sampling_rate=sample_rate, use_reco2dur=True)
    recs = {}
    for rec in recordings:  # lhotse assumes one rate for the whole dir: set each file's own
        r = realised[rec.id]
        recs[rec.id] = fastcopy(rec, sampling_rate=r.sample_rate, num_samples=r.num_samples, duration=r.duration)
    return recs, supervisions


def segment_cut(sup, rec, errors: List[str], kd: KaldiDir) -> Optional[MonoCut]:
    """The cut of a supervision; a segment ending at most MAX_OVERSHOOT after its recording is cut
    at the end, others outside the recording are errors."""
    start, end = sup.start, sup.end
    if start >= rec.duration:
        errors.append(f"{kd.path / 'segments'}: segment '{sup.id}' starts at {start:g} s, after the end of "
                      f"recording '{rec.id}' ({rec.duration:.3f} s)")
        return None
    if end > rec.duration + MAX_OVERSHOOT:
        errors.append(f"{kd.path / 'segments'}: segment '{sup.id}' ends at {end:g} s, more than "
                      f"{MAX_OVERSHOOT} s after the end of recording '{rec.id}' ({rec.duration:.3f} s)")
        return None
    duration = min(end, rec.duration) - start
    return MonoCut(id=sup.id, start=start, duration=duration, channel=0, recording=rec, supervisions=[])


# ----------------------------------------------------------------------------------------------
# the stage
# ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _audio_areas(data_root: Path, set_dirs: Sequence[Path]) -> Iterator[Callable[[], None]]:
    """While new audio is made in ``<set>/audio``, the previous folder and marker are put aside; on
    a failure before the sets are written they are put back (and folders this run created removed).
    Yields a function to call when the writing of the sets starts."""
    created = [p for p in (data_root, *set_dirs) if not p.exists()]
    saved = []
    for d in set_dirs:
        old = d / ".audio.old"
        if old.exists():  # left by a killed run, whose set has no marker
            shutil.rmtree(old)
        marker = d / MARKER
        saved.append(marker.read_bytes() if marker.is_file() else None)
        marker.unlink(missing_ok=True)
        if (d / "audio").exists():
            os.replace(d / "audio", old)
    state = {"writing": False}

    def writing() -> None:
        state["writing"] = True

    try:
        yield writing
    except BaseException:
        if not state["writing"]:
            for d, mk in zip(set_dirs, saved):
                shutil.rmtree(d / "audio", ignore_errors=True)
                if (d / ".audio.old").exists():
                    os.replace(d / ".audio.old", d / "audio")
                if mk is not None:
                    with atomic_path(d / MARKER) as tmp:
                        tmp.write_bytes(mk)
            for p in reversed(created):
                with contextlib.suppress(OSError):
                    p.rmdir()
        raise
    for d in set_dirs:
        shutil.rmtree(d / ".audio.old", ignore_errors=True)


def _test_trials(kd: KaldiDir, utts: List[Utterance], trial_opts: TrialOptions) -> List[Trial]:
    if kd.trials_file is not None:
        trials = read_trials(kd.trials_file)
        if not trials:
            raise DataError(f"trial list {kd.trials_file} is empty")
        unknown = sorted({x for a, b, _ in trials for x in (a, b) if x not in kd.utt2spk})
        if unknown:
            raise DataError(f"trial list {kd.trials_file}: {len(unknown)} utterance(s) not in "
                            f"{kd.path / 'utt2spk'}, e.g. {', '.join(unknown[:5])}")
        logger.info("set %s: %d trials from %s", kd.set_name, len(trials), kd.trials_file)
        return trials
    return trials_for(utts, trial_opts, kd.set_name)


def prepare_kaldi(train_dir=None, test_dir=None, data_root="data", name: str = "kaldi",
                  trials: Optional[str] = None, trial_opts: Optional[TrialOptions] = None,
                  audio_opts: Optional[AudioOptions] = None, audio_format: str = "flac",
                  force: bool = False) -> List[Path]:
    """Prepare ``<name>_train`` from ``train_dir`` and ``<name>_test`` (with trials) from ``test_dir``
    (either may be left out). Returns the set dirs."""
    trial_opts = trial_opts or TrialOptions()
    audio_opts = audio_opts or AudioOptions()
    audio_opts.validate()
    trial_opts.validate()
    check_id("set name", name, "--name")
    if audio_format not in AUDIO_FORMATS:
        raise DataError(f"--audio-format must be one of {', '.join(AUDIO_FORMATS)}, got {audio_format!r}")
    if not train_dir and not test_dir:
        raise DataError("nothing to prepare: give --train-data-dir and/or --test-data-dir")
    if trials and not test_dir:
        raise DataError("--trials needs --test-data-dir")
    if trials and not Path(trials).is_file():
        raise DataError(f"missing trial list: {trials}")
    data_root = Path(data_root)
    dirs: List[KaldiDir] = []
    for d, kind in ((train_dir, "train"), (test_dir, "test")):
        if not d:
            continue
        set_name = f"{name}_{kind}"
        if os.path.realpath(d) == os.path.realpath(data_root / set_name):
            raise DataError(f"Kaldi data dir {d} is the output set dir {data_root / set_name}; give another "
                            "--name or --data-root")
        kd = read_kaldi_dir(d, set_name)
        if kind == "test":
            own = Path(d) / "trials"
            kd.trials_file = Path(trials) if trials else (own if own.is_file() else None)
        dirs.append(kd)
    if len(dirs) == 2:
        overlap = sorted(set(dirs[0].utt2spk.values()) & set(dirs[1].utt2spk.values()))
        if overlap:
            raise DataError(f"speaker(s) {', '.join(overlap[:20])} appear in both {train_dir} and {test_dir}; "
                            "train and test speakers must be disjoint")
    set_names = [kd.set_name for kd in dirs]
    fp = dict(stage="kaldi", dirs={kd.set_name: kd.fingerprint() for kd in dirs}, name=name,
              audio_format=audio_format, trials=dataclasses.asdict(trial_opts), audio=audio_opts.fingerprint())
    if not force and sets_complete(data_root, set_names, fp):
        return [data_root / s for s in set_names]
    # trials that cannot be drawn (a single-utterance test speaker, ...) or that name unknown
    # utterances stop the stage before any audio is read
    set_trials: Dict[str, List[Trial]] = {}
    if test_dir:
        kd = dirs[-1]
        set_trials[kd.set_name] = _test_trials(kd, [Utterance(u, s, "") for u, s in kd.utterances()], trial_opts)

    set_dirs = [data_root / s for s in set_names]
    with _audio_areas(data_root, set_dirs) as start_writing:
        specs, outs = [], {}
        for kd in dirs:
            utts, outs[kd.set_name] = _make_audio(kd, data_root / kd.set_name, audio_opts, audio_format)
            specs.append(SetSpec(kd.set_name, name, utts, {"trials": set_trials[kd.set_name]}
                                 if kd.set_name in set_trials else {}))
        built = build_sets(specs, audio_opts)
        start_writing()
        for b in built:  # materialised copies of utterances left out as too short
            for utt in b.short:
                if utt in outs[b.spec.name]:
                    Path(outs[b.spec.name][utt]).unlink(missing_ok=True)
        write_sets(built, data_root, fp, audio_opts.progress)
    return set_dirs


def _make_audio(kd: KaldiDir, set_dir: Path, opts: AudioOptions,
                audio_format: str) -> Tuple[List[Utterance], Dict[str, str]]:
    """Realise and materialise the audio of one dir; returns its utterances (with the files they read)
    and the materialised files by utterance."""
    audio_dir = set_dir / "audio"
    staged_dir = audio_dir / ".staged"
    out_of = {utt: str(audio_dir / f"{utt}.{audio_format}") for utt in kd.utt2spk}
    jobs = []
    for rec, entry in kd.recordings.items():
        final = out_of[rec] if kd.whole_recordings else None
        jobs.append((entry, str(staged_dir / f"{rec}.wav"), final, opts.sample_rate))
    if any(e.is_command for e in kd.recordings.values()):
        staged_dir.mkdir(parents=True, exist_ok=True)
    results = _run_jobs(_realise, jobs, opts.nj, f"reading recordings ({kd.set_name})", opts.progress)
    errors, realised = [], {}
    for (entry, *_), (res, err) in zip(jobs, results):
        where = f"{kd.path / 'wav.scp'}: recording '{entry.rec_id}' ({entry.describe()})"
        if err:
            errors.append(f"{where}: {err}")
        elif res.sample_rate != opts.sample_rate and opts.on_rate_mismatch == "refuse":
            errors.append(f"{where}: sample rate {res.sample_rate} Hz, expected {opts.sample_rate} Hz (convert it, "
                          "or pass --on-rate-mismatch resample)")
        else:
            realised[entry.rec_id] = res
    raise_errors(errors, f"the recordings of Kaldi data dir {kd.path}")

    recs, sups = import_with_lhotse(kd, realised, opts.sample_rate)
    utts: List[Utterance] = []
    materialised: Dict[str, str] = {}
    by_rec: Dict[str, Tuple[List[Dict[str, Any]], List[str]]] = {}
    for sup in sorted(sups, key=lambda s: s.id):
        rec_id = sup.recording_id
        entry, res = kd.recordings[rec_id], realised[rec_id]
        if kd.whole_recordings and not entry.is_command:  # a plain file, read where it is
            utts.append(Utterance(sup.id, sup.speaker, entry.source))
            continue
        out = out_of[sup.id]
        utts.append(Utterance(sup.id, sup.speaker, os.path.abspath(out)))
        materialised[sup.id] = out
        if res.final:
            continue
        cut = segment_cut(sup, recs[rec_id], errors, kd)
        if cut is not None:
            cds, paths = by_rec.setdefault(rec_id, ([], []))
            cds.append(cut.to_dict())
            paths.append(out)
    raise_errors(errors, f"the segments of Kaldi data dir {kd.path}")
    if by_rec:
        mjobs = [(cds, paths, opts.sample_rate, realised[r].path if kd.recordings[r].is_command else None)
                 for r, (cds, paths) in by_rec.items()]
        n = sum(len(j[0]) for j in mjobs)
        logger.info("set %s: writing %d utterance(s) of %d recording(s) to %s", kd.set_name, n, len(mjobs), audio_dir)
        errs = _run_jobs(_materialise, mjobs, opts.nj, f"writing audio ({kd.set_name})", opts.progress)
        raise_errors([f"{kd.path}: {e}" for e in errs if e], f"the audio of Kaldi data dir {kd.path}")
    shutil.rmtree(staged_dir, ignore_errors=True)
    return utts, materialised
