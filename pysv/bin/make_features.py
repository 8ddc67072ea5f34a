"""Stage 1: compute Kaldi-compatible features for a Kaldi data dir (fbank40, fbank64, mfcc30, or a yaml).

Input: a data dir ``data/<set>/`` with ``wav.scp`` (``utt-id /path/to/audio.{wav,flac}``, plain paths).
Output: a data dir ``data/<set>_<feat>/`` = copy of the input text files + ``feats.scp`` + ``utt2num_frames``
+ ``feat_conf.yaml`` (resolved options) + ``.done``; archives ``<out>/data/feats.<job>.ark`` (kaldiio,
uncompressed float32 ``[frames, dim]``).

Modes::

    # everything in this process (jobs run one after the other), then merge
    python -m pysv.bin.make_features --data data/dev --feat-config fbank40 --out data/dev_fbank40 [--nj N]
    # one job of N (what steps/make_features.sh launches with $cmd JOB=1:N ...)
    python -m pysv.bin.make_features --data data/dev --feat-config fbank40 --out data/dev_fbank40 --job 2 --nj 4
    # merge the N jobs' outputs
    python -m pysv.bin.make_features --data data/dev --feat-config fbank40 --out data/dev_fbank40 --merge --nj 4
    # validate the data dir and the options only
    python -m pysv.bin.make_features --data data/dev --feat-config fbank40 --out data/dev_fbank40 --check

Trailing ``key=value`` arguments override feature options (``dither=0 snip_edges=false``).

``--vad energy`` keeps only the voiced frames of every utterance (Kaldi ``compute-vad`` with the
VoxCeleb recipe's options, then ``select-voiced-frames`` after deltas and CMVN; see :mod:`pysv.vad`);
``vad_<option>=value`` overrides one of its options (``vad_energy_threshold=5.0``). The VAD options
enter the completion markers and ``feat_conf.yaml`` (key ``vad``, absent without VAD).
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

from pysv.features import FeatureExtractor, config_to_yaml, feature_dim, load_config, resolve_config
from pysv.utils import stage
from pysv.utils.io import DataError, atomic_path, atomic_write, read_audio, read_table
from pysv.vad import VAD_DEFAULTS, VAD_METHODS, compute_with_vad, select_voiced, vad_options

log = logging.getLogger("pysv.make_features")

# Text files of the source data dir copied into the feature data dir (when present).
COPY_FILES = ("wav.scp", "utt2spk", "spk2utt", "utt2dur", "text", "spk2gender", "utt2lang", "reco2dur")
COPY_PREFIXES = ("trials",)  # trials, trials_O, trials_E ...
# Merged outputs: they name the jobs' archives, so they go when a job is redone for other inputs.
MERGED = ("feats.scp", "utt2num_frames", "feat_conf.yaml")


# ------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------

def parse_overrides(items: Sequence[str]) -> Dict[str, Any]:
    """``key=value`` strings -> dict; values are parsed as yaml scalars (``0``, ``false``, ``null``)."""
    out: Dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        out[key.strip().lstrip("-")] = yaml.safe_load(value) if value != "" else ""
    return out


def read_wav_scp(data_dir: Path) -> List[Tuple[str, str]]:
    """Sorted ``(utt, path)`` pairs of ``<data>/wav.scp``; duplicate ids and pipes are errors."""
    if not data_dir.is_dir():
        raise DataError(f"data dir not found: {data_dir}")
    if (data_dir / "segments").is_file():
        raise DataError(f"{data_dir}/segments exists: segmented recordings are not supported; "
                        "wav.scp must list one audio file per utterance")
    table = read_table(data_dir / "wav.scp")  # raises DataError on a duplicate utterance id
    if not table:
        raise DataError(f"{data_dir}/wav.scp is empty")
    items = sorted(table.items())  # Kaldi C-locale order
    for utt, path in items:
        if not path:
            raise DataError(f"{data_dir}/wav.scp: utterance '{utt}' has no path")
        if path.rstrip().endswith("|"):
            raise DataError(f"{data_dir}/wav.scp: utterance '{utt}' is a command pipe ({path!r}); "
                            "only plain paths to audio files are supported")
    return items


def check_files_exist(items: Sequence[Tuple[str, str]], what: str) -> None:
    missing = [(u, p) for u, p in items if not os.path.isfile(p)]
    if missing:
        shown = "\n".join(f"  {u} {p}" for u, p in missing[:20])
        more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise DataError(f"{len(missing)} audio file(s) listed in {what} are missing:\n{shown}{more}")


def copied_files(data: Path) -> List[Path]:
    """The text files of ``data`` that the feature data dir holds copies of."""
    return [p for p in sorted(data.iterdir())
            if p.is_file() and (p.name in COPY_FILES or p.name.startswith(COPY_PREFIXES))]


def split_vad_overrides(overrides: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(feature overrides, VAD overrides)``: ``vad_<option>=value`` keys are VAD options."""
    vad = {k[4:]: v for k, v in overrides.items() if k.startswith("vad_")}
    feats = {k: v for k, v in overrides.items() if not k.startswith("vad_")}
    return feats, vad


def options(cfg: Dict[str, Any], vad: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The options the outputs depend on: the feature options, plus the VAD options when VAD is on
    (markers written without VAD stay valid)."""
    return {"options": cfg} if vad is None else {"options": cfg, "vad": vad}


def fingerprint(data: Path, cfg: Dict[str, Any], items: Sequence[Tuple[str, str]],
                vad: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """What ``<out>`` depends on: the options, the ``wav.scp`` entries and the copied text files."""
    return {**options(cfg, vad), "wav.scp": stage.items_signature(items),
            "copied": {p.name: stage.file_signature(p) for p in copied_files(data)}}


def job_part(out: Path, items: Sequence[Tuple[str, str]], job: int, nj: int) -> stage.Part:
    """Job ``job`` of ``nj``: its share of ``wav.scp`` and its files ``<out>/data/feats.<job>.{ark,scp}``,
    ``utt2num_frames.<job>``, ``.done.<job>``."""
    return stage.Part.of(out / "data", "feats", items, job, nj)


def discard_stale(data: Path, out: Path, cfg: Dict[str, Any], items: Sequence[Tuple[str, str]],
                  vad: Optional[Dict[str, Any]] = None) -> None:
    """A merged output made from other options or inputs is removed before any job is redone."""
    reason = stage.discard(out / ".done", fingerprint(data, cfg, items, vad), [out / name for name in MERGED])
    if reason is not None:
        log.info("%s: %s; recomputing", out, reason)


# ------------------------------------------------------------------------------------------------
# Audio
# ------------------------------------------------------------------------------------------------

def utt_seed(utt: str, base_seed: int) -> int:
    """Dither seed of one utterance: independent of --nj and of the order jobs run in."""
    return (zlib.crc32(utt.encode("utf-8")) + (int(base_seed) << 32)) % (1 << 63)


def extract_utterance(ext: "FeatureExtractor", utt: str, path: str,
                      vad: Optional[Dict[str, Any]] = None) -> Tuple[np.ndarray, int]:
    """Features of one utterance (only its voiced frames with ``vad``; all of them when none is
    voiced) and its number of frames before VAD."""
    x, sr = read_audio(path, utt)
    try:
        feats, mask = compute_with_vad(ext, x, sr, vad, seed=utt_seed(utt, ext.config["dither_seed"]))
    except DataError as e:
        raise DataError(f"utterance '{utt}' ({path}): {e}") from None
    if vad is not None and not mask.any():
        log.warning("utterance '%s' (%s): no voiced frame; keeping all %d frames", utt, path, mask.size)
    return select_voiced(feats, mask), mask.size


# ------------------------------------------------------------------------------------------------
# Job, merge, driver
# ------------------------------------------------------------------------------------------------

def resolve(feat_config: str, overrides: Dict[str, Any]) -> Dict[str, Any]:
    """Resolved feature options (no torch import: cheap for --check / --is-done / --merge)."""
    return resolve_config(load_config(feat_config), overrides)


def run_job(data: Path, out: Path, cfg: Dict[str, Any], job: int, nj: int,
            items: Optional[List[Tuple[str, str]]] = None, vad: Optional[Dict[str, Any]] = None) -> bool:
    """Compute split ``job`` of ``nj``. Returns False when it was already complete (skipped)."""
    items = items if items is not None else read_wav_scp(data)
    discard_stale(data, out, cfg, items, vad)
    part = job_part(out, items, job, nj)
    fp = part.fingerprint(options(cfg, vad))
    reason = stage.check(part.marker, fp)
    if reason is None:
        log.info("job %d/%d: outputs complete (%s), skipping", job, nj, part.scp)
        return False
    log.info("job %d/%d: computing (%s)", job, nj, reason)
    part.reset()
    check_files_exist(part.items, f"{data}/wav.scp (job {job}/{nj})")
    import torch
    from tqdm import tqdm
    torch.set_num_threads(1)  # one job per core, as Kaldi jobs
    ext = FeatureExtractor(cfg)
    t0 = time.perf_counter()
    total = 0
    with part.writer(num_frames=True) as writer:
        for utt, path in tqdm(part.items, desc=f"{ext.name} job {job}/{nj}", unit="utt", disable=None, leave=False):
            feats, n = extract_utterance(ext, utt, path, vad)
            writer.write(utt, feats)
            total += n
    info = {} if vad is None else {"frames_before_vad": total}
    stage.write(part.marker, fp, outputs=writer.outputs, utts=writer.count, frames=writer.rows, **info)
    dt = time.perf_counter() - t0
    if vad is not None:
        log.info("job %d/%d: energy VAD kept %d of %d frames (%.1f %%)", job, nj, writer.rows, total,
                 100.0 * writer.rows / max(total, 1))
    audio_s = total * ext.frame_shift_seconds
    log.info("job %d/%d: %d utterances, %d frames (~%.1f s of audio) in %.1f s (%.0fx real time) -> %s",
             job, nj, writer.count, writer.rows, audio_s, dt, audio_s / max(dt, 1e-9), part.ark)
    return True


def merge(data: Path, out: Path, cfg: Dict[str, Any], nj: int,
          items: Optional[List[Tuple[str, str]]] = None, vad: Optional[Dict[str, Any]] = None) -> None:
    """Join the jobs' scp / utt2num_frames, copy the data-dir text files, write feat_conf.yaml and .done."""
    items = items if items is not None else read_wav_scp(data)
    discard_stale(data, out, cfg, items, vad)
    fp = fingerprint(data, cfg, items, vad)
    parts = [job_part(out, items, job, nj) for job in range(1, nj + 1)]
    stage.require_complete(parts, options(cfg, vad), what=str(out))
    stage.merge(parts, out / "feats.scp", num_frames=out / "utt2num_frames", keys=[utt for utt, _ in items])
    for src in copied_files(data):
        with atomic_path(out / src.name) as tmp:
            shutil.copy(src, tmp)  # content and permission bits
    with atomic_write(out / "feat_conf.yaml", encoding="utf-8") as f:
        f.write(f"# resolved feature options of {out} (pysv.features; Kaldi option names in snake_case)\n")
        f.write(config_to_yaml(cfg))
        if vad is not None:
            f.write("# voice activity detection (pysv.vad: compute-vad, then select-voiced-frames after CMVN);\n"
                    "# not a feature option: remove this key before pysv.features.resolve_config\n")
            f.write(config_to_yaml({"vad": vad}))
    dim = feature_dim(cfg)
    stage.write(out / ".done", fp, outputs=[out / "utt2num_frames", out / "feat_conf.yaml", *(p.ark for p in parts)],
                utts=len(items), dim=dim)
    log.info("merged %d jobs: %d utterances, dim %d -> %s/feats.scp", nj, len(items), dim, out)


def is_done(data: Path, out: Path, cfg: Dict[str, Any], items: Optional[List[Tuple[str, str]]] = None,
            vad: Optional[Dict[str, Any]] = None) -> bool:
    """``<out>`` holds complete features for these options, this wav.scp and these text files."""
    items = items if items is not None else read_wav_scp(data)
    # feats.scp is not size-checked: it names the arks by path, and a moved dir's scp may be rewritten
    return (stage.check(out / ".done", fingerprint(data, cfg, items, vad)) is None
            and (out / "feats.scp").is_file())


def run_all(data: Path, out: Path, cfg: Dict[str, Any], nj: int = 1, vad: Optional[Dict[str, Any]] = None) -> None:
    items = read_wav_scp(data)
    if is_done(data, out, cfg, items, vad):
        log.info("%s is complete for these options and inputs (%s/.done), skipping", out, out)
        return
    check_files_exist(items, f"{data}/wav.scp")
    for job in range(1, nj + 1):
        run_job(data, out, cfg, job, nj, items=items, vad=vad)
    merge(data, out, cfg, nj, items=items, vad=vad)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pysv.bin.make_features",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path,
                   help="input Kaldi data dir with wav.scp (utt2spk, spk2utt, utt2dur, trials are copied if present)")
    p.add_argument("--feat-config", required=True,
                   help="feature config: a name of pysv/feature_configs/ (fbank40, fbank64, mfcc30) or a yaml file")
    p.add_argument("--out", required=True, type=Path,
                   help="output data dir, e.g. data/<set>_<feat>; arks go to <out>/data/feats.<job>.ark")
    p.add_argument("--nj", type=int, default=1,
                   help="number of contiguous splits of the sorted wav.scp (default 1)")
    p.add_argument("--job", type=int, default=None,
                   help="compute only split JOB (1-based) of --nj into <out>/data/feats.JOB.{ark,scp} and "
                        "<out>/data/utt2num_frames.JOB; a job whose outputs are complete is skipped")
    p.add_argument("--merge", action="store_true",
                   help="merge the --nj jobs' outputs into <out>/feats.scp, <out>/utt2num_frames, copy the data dir "
                        "text files, write <out>/feat_conf.yaml and <out>/.done")
    p.add_argument("--check", action="store_true",
                   help="only validate the data dir (wav.scp, duplicate ids, missing audio files) and the options")
    p.add_argument("--is-done", action="store_true",
                   help="exit 0 if <out> is complete for these options, this wav.scp and the text files it copies, "
                        "3 otherwise (computes nothing)")
    p.add_argument("--vad", default="none", choices=VAD_METHODS,
                   help="energy: keep only the voiced frames (Kaldi compute-vad with the VoxCeleb recipe's options "
                        "+ select-voiced-frames after deltas and CMVN); vad_<option>=value overrides an option of "
                        f"{sorted(VAD_DEFAULTS)} (default none)")
    p.add_argument("--log-file", default=None, help="also write the log to this file")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="feature option overrides, e.g. dither=0 snip_edges=false resample=resample channel=0; "
                        "with --vad energy also vad_energy_threshold=5.0 ...")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    from pysv.utils.logging import setup_logging
    args = get_parser().parse_args(argv)
    setup_logging(args.log_file)
    if args.nj < 1:
        log.error("--nj must be >= 1")
        return 2
    if args.job is not None and args.merge:
        log.error("--job and --merge are exclusive")
        return 2
    try:
        feat_overrides, vad_overrides = split_vad_overrides(parse_overrides(args.overrides))
        cfg = resolve(args.feat_config, feat_overrides)
        vad = vad_options(args.vad, **vad_overrides)
        if args.is_done:
            return 0 if is_done(args.data, args.out, cfg, vad=vad) else 3
        if args.check:
            items = read_wav_scp(args.data)
            check_files_exist(items, f"{args.data}/wav.scp")
            log.info("%s: %d utterances, all audio files present; %s, dim %d%s",
                     args.data, len(items), cfg["name"], feature_dim(cfg), "" if vad is None else ", energy VAD")
        elif args.job is not None:
            run_job(args.data, args.out, cfg, args.job, args.nj, vad=vad)
        elif args.merge:
            merge(args.data, args.out, cfg, args.nj, vad=vad)
        else:
            run_all(args.data, args.out, cfg, args.nj, vad=vad)
    except (DataError, ValueError, FileNotFoundError) as e:
        log.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
