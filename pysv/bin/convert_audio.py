"""Convert a corpus tree's .m4a (.aac, .mp3, .opus, ...) with ffmpeg to mono FLAC, or one part of it.

    python -m pysv.bin.convert_audio SRC DIR [--nj THREADS] [--part K/N] [--sample-rate 16000]

Mirrors SRC into DIR with the same relative layout (pysv.data.convert_audio.convert_tree, the
conversion of stage 0's --convert-audio DIR): every file soundfile cannot read that has no .wav/.flac
twin becomes DIR/<same path>.flac (first audio stream, down-mixed to mono, resampled to --sample-rate,
16-bit FLAC); the .wav/.flac files are linked. Resumable: a file is written to a temporary name and
renamed when complete, so a killed run continues where it stopped when run again.

--part K/N converts only part K (1..N) of the files (a stable hash of their relative path), so that
N jobs, possibly on N machines, convert one tree together: steps/convert_audio.sh runs them through
cmd.sh's launcher (`$cmd JOB=1:N ... --part JOB/N`). --progress-file and --report-file let it follow
the jobs: the first receives '<processed> <to convert>' every few seconds, the second the final
count 'converted N done N linked N failed N'.

Exit status 1 with a message when ffmpeg is missing or files could not be converted (they are
listed, after every other file was converted; run again to retry them).
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from typing import List, Optional, Tuple

from pysv.utils.cli import run_cli

log = logging.getLogger("pysv.convert_audio")


def part_arg(text: str) -> Tuple[int, int]:
    """argparse type of --part: K/N with 1 <= K <= N."""
    from pysv.data.convert_audio import check_part

    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    try:
        if not m:
            raise ValueError
        return check_part((int(m.group(1)), int(m.group(2))))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N with 1 <= K <= N, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pysv.bin.convert_audio", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", metavar="SRC", help="corpus tree to convert (its .wav/.flac files are linked)")
    p.add_argument("dir", metavar="DIR", help="output tree (outside SRC), read instead of SRC afterwards")
    p.add_argument("--nj", type=int, default=1, help="ffmpeg processes at once in this call (default: 1)")
    p.add_argument("--part", type=part_arg, default=None, metavar="K/N",
                   help="convert only part K of N (default: everything)")
    p.add_argument("--sample-rate", type=int, default=16000, help="output sample rate in Hz (default: 16000)")
    p.add_argument("--what", default="corpus", help="what SRC is, in messages (default: corpus)")
    p.add_argument("--progress-file", default=None, help="write '<processed> <to convert>' here every few seconds")
    p.add_argument("--report-file", default=None,
                   help="write the final count here: 'converted N done N linked N failed N'")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--log-file", default=None, help="also write the log to this file")
    return p


def run(args: argparse.Namespace) -> int:
    from pysv.data.convert_audio import convert_tree

    if args.nj < 1:
        raise ValueError(f"--nj must be at least 1, got {args.nj}")
    rep = convert_tree(args.src, args.dir, sample_rate=args.sample_rate, nj=args.nj, progress=not args.no_progress,
                       what=args.what, part=args.part, progress_file=args.progress_file,
                       report_file=args.report_file)
    part = f" (part {args.part[0]}/{args.part[1]})" if args.part else ""
    print(f"{args.src} -> {args.dir}{part}: {rep.converted} converted, {rep.done} already done, {rep.linked} linked, "
          f"{len(rep.failed)} failed")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    from pysv.utils.logging import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.log_file)
    return run_cli(run, args, "pysv.bin.convert_audio", log)


if __name__ == "__main__":
    sys.exit(main())
