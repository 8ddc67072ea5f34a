"""Stage 0's ``--convert-audio DIR``: audio that soundfile cannot read (VoxCeleb2's AAC ``.m4a``, and
``.aac``, ``.mp3``, ``.opus``, ...) converted with ffmpeg to mono FLAC at the corpus sample rate.

:func:`convert_tree` mirrors a corpus tree into ``DIR`` with the same relative layout: every such file
without a ``.wav`` / ``.flac`` twin becomes ``DIR/<same path>.flac``, and the ``.wav`` / ``.flac`` files
already there are linked (symbolic links), so ``DIR`` is the whole corpus and is read instead of the
source. The files are the ones :func:`pysv.data.prepare.find_audio_files` walks (hidden ones skipped).

* ``nj`` conversions run at once: a pool of ``nj`` threads inside the calling process, each running
  one ffmpeg process (``-threads 1``) at a time;
* ``part=(k, n)`` does part ``k`` (1-based) of ``n``: only the files whose relative source path hashes
  (:func:`part_of`, a stable hash of the path alone, so the split does not depend on the rest of the
  tree) to part ``k`` are converted or linked. The ``n`` parts are disjoint and together are the whole
  tree, so ``n`` processes, possibly on different machines (``steps/convert_audio.sh`` runs them
  through ``cmd.sh``'s launcher, ``python -m pysv.bin.convert_audio --part K/N``), can convert one tree
  into one ``DIR`` at the same time. A part touches only its own files: it removes the stale
  temporary files of its own targets only, never those another part is writing;
* resumable: each file is written to a temporary name next to its target and renamed when ffmpeg
  succeeded, so a file under its final name is complete; a run that was killed continues with the
  files not yet converted (a target older than its source is converted again), and temporary files
  left behind are removed;
* a progress bar, and a final count (converted, already done, linked, failed); failed files are
  listed with ffmpeg's message after every other file was converted. ``progress_file`` receives
  ``<files processed> <files to convert>`` every few seconds and ``report_file`` the final count as
  ``converted N done N linked N failed N`` (before a failure is raised), for a launcher that follows
  several parts.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import List, Optional, Tuple

import soundfile as sf
from tqdm import tqdm

from pysv.data.prepare import MAX_LISTED_ERRORS, find_audio_files
from pysv.utils.io import DataError, atomic_write, remove_stale_temp, temp_path

logger = logging.getLogger(__name__)

FFMPEG_INSTALL = ("install it, e.g. `apt-get install ffmpeg` (Debian/Ubuntu), `conda install -c conda-forge "
                  "ffmpeg` or `brew install ffmpeg`, or convert the files yourself (docs/data.md)")
#: lines of ffmpeg's stderr quoted for a file that failed
STDERR_LINES = 3
#: seconds between two writes of ``progress_file``
PROGRESS_INTERVAL = 2.0


@dataclasses.dataclass
class ConvertReport:
    """What :func:`convert_tree` did."""

    converted: int = 0
    done: int = 0  # already converted by an earlier run
    linked: int = 0  # .wav / .flac files linked into the output tree
    failed: List[str] = dataclasses.field(default_factory=list)


def part_of(rel: str, n: int) -> int:
    """The part (1..``n``) of the file at relative source path ``rel`` (posix separators): a stable
    hash of the path alone, the same in every process, on every machine and whatever else the tree holds."""
    digest = hashlib.blake2b(rel.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n + 1


def check_part(part: Optional[Tuple[int, int]]) -> Optional[Tuple[int, int]]:
    if part is not None:
        k, n = part
        if not (isinstance(k, int) and isinstance(n, int) and 1 <= k <= n):
            raise ValueError(f"part must be (k, n) with 1 <= k <= n, got {part!r}")
    return part


def find_ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        raise DataError(f"--convert-audio needs ffmpeg, which is not on PATH; {FFMPEG_INSTALL}")
    return path


def ffmpeg_command(ffmpeg: str, src: str, out: str, sample_rate: int) -> List[str]:
    """Decode ``src`` (first audio stream), down-mix to mono, resample, 16-bit FLAC to ``out``."""
    return [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "1", "-y", "-i", src,
            "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(sample_rate), "-sample_fmt", "s16", "-c:a", "flac",
            "-f", "flac", out]


def convert_file(ffmpeg: str, src: str, dst: Path, sample_rate: int) -> Tuple[bool, Optional[str]]:
    """Convert one file unless ``dst`` is there and not older than ``src``.
    Returns ``(converted, None)`` or ``(False, reason)``."""
    try:
        if dst.stat().st_mtime_ns >= os.stat(src).st_mtime_ns:
            return False, None
    except FileNotFoundError:
        pass
    remove_stale_temp(dst)
    tmp = temp_path(dst)
    try:
        proc = subprocess.run(ffmpeg_command(ffmpeg, src, str(tmp), sample_rate), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-STDERR_LINES:]
            return False, f"ffmpeg failed (exit status {proc.returncode}): {' / '.join(err) or 'no message'}"
        try:
            info = sf.info(str(tmp))
        except Exception as e:
            return False, f"ffmpeg wrote no readable audio: {str(e).strip()}"
        if info.frames <= 0:
            return False, "ffmpeg wrote no samples (empty or audio-less file?)"
        os.replace(tmp, dst)
        return True, None
    finally:
        if tmp.exists():
            tmp.unlink()


def _link(src: str, dst: Path) -> bool:
    """Link ``dst`` to ``src``; False when the link is there already."""
    if os.path.islink(dst) and os.readlink(dst) == src:
        return False
    if dst.exists() and not os.path.islink(dst):
        raise DataError(f"--convert-audio: {dst} exists and is not a link to {src}; remove it or give another DIR")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(src, tmp)
    os.replace(tmp, dst)
    return True


def _write_line(path, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text + "\n")


def convert_tree(src_dir, out_dir, sample_rate: int = 16000, nj: int = 1, progress: bool = True,
                 what: str = "corpus", part: Optional[Tuple[int, int]] = None, progress_file=None,
                 report_file=None) -> ConvertReport:
    """Mirror ``src_dir`` into ``out_dir`` (see the module doc), or only part ``part = (k, n)`` of it.
    Raises DataError naming the files that failed (after converting all others) or when ffmpeg is
    missing."""
    check_part(part)
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    if not src_dir.is_dir():
        raise DataError(f"{what} directory not found: {src_dir}")
    if os.path.realpath(src_dir) == os.path.realpath(out_dir):
        raise DataError(f"--convert-audio {out_dir} is the {what} directory itself; give another directory")
    src_real = os.path.realpath(src_dir)
    if os.path.realpath(out_dir).startswith(src_real + os.sep):
        raise DataError(f"--convert-audio {out_dir} lies inside the {what} directory {src_dir}; give a directory "
                        "outside it")
    to_convert: List[str] = []
    readable = [rel.as_posix() for rel in find_audio_files(src_dir, to_convert)]
    to_convert_rel = [Path(os.path.relpath(src, src_dir)).as_posix() for src in to_convert]
    label = ""
    if part is not None:
        k, n = part
        readable = [rel for rel in readable if part_of(rel, n) == k]
        to_convert_rel = [rel for rel in to_convert_rel if part_of(rel, n) == k]
        label = f" (part {k} of {n})"
    report = ConvertReport()
    ffmpeg = find_ffmpeg() if to_convert_rel else ""
    for rel in readable:
        if _link(os.path.abspath(src_dir / rel), out_dir / rel):
            report.linked += 1
    jobs = [(str(src_dir / rel), out_dir / Path(rel).with_suffix(".flac")) for rel in to_convert_rel]
    logger.info("converting %d file(s) of %s%s with ffmpeg to %d Hz mono FLAC under %s (%d at once)",
                len(jobs), src_dir, label, sample_rate, out_dir, nj)
    if progress_file is not None:
        _write_line(progress_file, f"0 {len(jobs)}")
    errors: List[str] = []
    last_write = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, nj)) as ex:
        futures = {ex.submit(convert_file, ffmpeg, src, dst, sample_rate): src for src, dst in jobs}
        for i, fut in enumerate(tqdm(as_completed(futures), total=len(futures), desc=f"converting audio ({what})",
                                     unit="file", disable=None if progress else True, mininterval=1.0), 1):
            converted, err = fut.result()
            if err:
                errors.append(f"{futures[fut]}: {err}")
            elif converted:
                report.converted += 1
            else:
                report.done += 1
            if progress_file is not None and time.monotonic() - last_write >= PROGRESS_INTERVAL:
                _write_line(progress_file, f"{i} {len(jobs)}")
                last_write = time.monotonic()
    report.failed = sorted(errors)
    if progress_file is not None:
        _write_line(progress_file, f"{len(jobs)} {len(jobs)}")
    if report_file is not None:
        _write_line(report_file, f"converted {report.converted} done {report.done} linked {report.linked} "
                                 f"failed {len(report.failed)}")
    logger.info("%s%s: %d converted, %d already done, %d linked, %d failed -> %s", src_dir, label, report.converted,
                report.done, report.linked, len(report.failed), out_dir)
    if report.failed:
        n_fail, n_ok = len(report.failed), report.converted + report.done
        shown = "\n  ".join(report.failed[:MAX_LISTED_ERRORS])
        more = f"\n  ... and {n_fail - MAX_LISTED_ERRORS} more" if n_fail > MAX_LISTED_ERRORS else ""
        raise DataError(f"{n_fail} file(s) of {src_dir}{label} could not be converted (the {n_ok} others are under "
                        f"{out_dir}; run again to retry these):\n  {shown}{more}")
    return report
