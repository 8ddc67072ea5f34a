"""Stage 0's ``--convert-audio DIR``: audio that soundfile cannot read (VoxCeleb2's AAC ``.m4a``, and
``.aac``, ``.mp3``, ``.opus``, ...) converted with ffmpeg to mono FLAC at the corpus sample rate.

:func:`convert_tree` mirrors a corpus tree into ``DIR`` with the same relative layout: every such file
without a ``.wav`` / ``.flac`` twin becomes ``DIR/<same path>.flac``, and the ``.wav`` / ``.flac`` files
already there are linked (symbolic links), so ``DIR`` is the whole corpus and is read instead of the
source. The files are the ones :func:`pysv.data.prepare.find_audio_files` walks (hidden ones skipped).

* ``nj`` conversions run at once: a pool of ``nj`` threads inside the stage-0 call, each running one
  ffmpeg process (``-threads 1``) at a time;
* resumable: each file is written to a temporary name next to its target and renamed when ffmpeg
  succeeded, so a file under its final name is complete; a run that was killed continues with the
  files not yet converted (a target older than its source is converted again), and temporary files
  left behind are removed;
* a progress bar, and a final count (converted, already done, linked, failed); failed files are
  listed with ffmpeg's message after every other file was converted.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import List, Optional, Tuple

import soundfile as sf
from tqdm import tqdm

from pysv.data.prepare import MAX_LISTED_ERRORS, find_audio_files
from pysv.utils.io import DataError, remove_stale_temp, temp_path

logger = logging.getLogger(__name__)

FFMPEG_INSTALL = ("install it, e.g. `apt-get install ffmpeg` (Debian/Ubuntu), `conda install -c conda-forge "
                  "ffmpeg` or `brew install ffmpeg`, or convert the files yourself (docs/data.md)")
#: lines of ffmpeg's stderr quoted for a file that failed
STDERR_LINES = 3


@dataclasses.dataclass
class ConvertReport:
    """What :func:`convert_tree` did."""

    converted: int = 0
    done: int = 0  # already converted by an earlier run
    linked: int = 0  # .wav / .flac files linked into the output tree
    failed: List[str] = dataclasses.field(default_factory=list)


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


def convert_tree(src_dir, out_dir, sample_rate: int = 16000, nj: int = 1, progress: bool = True,
                 what: str = "corpus") -> ConvertReport:
    """Mirror ``src_dir`` into ``out_dir`` (see the module doc). Raises DataError naming the files
    that failed (after converting all others) or when ffmpeg is missing."""
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
    readable = find_audio_files(src_dir, to_convert)
    report = ConvertReport()
    ffmpeg = find_ffmpeg() if to_convert else ""
    for rel in readable:
        if _link(os.path.abspath(src_dir / rel), out_dir / rel):
            report.linked += 1
    jobs = [(src, out_dir / Path(os.path.relpath(src, src_dir)).with_suffix(".flac")) for src in to_convert]
    logger.info("converting %d file(s) of %s with ffmpeg to %d Hz mono FLAC under %s (%d at once)",
                len(jobs), src_dir, sample_rate, out_dir, nj)
    errors: List[str] = []
    with ThreadPoolExecutor(max_workers=max(1, nj)) as ex:
        futures = {ex.submit(convert_file, ffmpeg, src, dst, sample_rate): src for src, dst in jobs}
        for fut in tqdm(as_completed(futures), total=len(futures), desc=f"converting audio ({what})", unit="file",
                        disable=None if progress else True, mininterval=1.0):
            converted, err = fut.result()
            if err:
                errors.append(f"{futures[fut]}: {err}")
            elif converted:
                report.converted += 1
            else:
                report.done += 1
    report.failed = sorted(errors)
    logger.info("%s: %d converted, %d already done, %d linked, %d failed -> %s", src_dir, report.converted,
                report.done, report.linked, len(report.failed), out_dir)
    if report.failed:
        n_fail, n_ok = len(report.failed), report.converted + report.done
        shown = "\n  ".join(report.failed[:MAX_LISTED_ERRORS])
        more = f"\n  ... and {n_fail - MAX_LISTED_ERRORS} more" if n_fail > MAX_LISTED_ERRORS else ""
        raise DataError(f"{n_fail} file(s) of {src_dir} could not be converted (the {n_ok} others are under "
                        f"{out_dir}; run again to retry these):\n  {shown}{more}")
    return report
