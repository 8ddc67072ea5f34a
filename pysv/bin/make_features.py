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
"""
from __future__ import annotations

import argparse
import hashlib
import json
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
from pysv.utils.io import DataError, atomic_path, atomic_write, is_complete, mark_complete, read_table

log = logging.getLogger("pysv.make_features")

# Text files of the source data dir copied into the feature data dir (when present).
COPY_FILES = ("wav.scp", "utt2spk", "spk2utt", "utt2dur", "text", "spk2gender", "utt2lang", "reco2dur")
COPY_PREFIXES = ("trials",)  # trials, trials_O, trials_E ...


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


def split_items(items: Sequence[Tuple[str, str]], job: int, nj: int) -> List[Tuple[str, str]]:
    """The ``job``-th (1-based) of ``nj`` contiguous, near-equal parts (like Kaldi's split_scp.pl)."""
    if not 1 <= job <= nj:
        raise ValueError(f"--job must be in 1..{nj}, got {job}")
    n = len(items)
    base, extra = divmod(n, nj)
    start = (job - 1) * base + min(job - 1, extra)
    size = base + (1 if job <= extra else 0)
    return list(items[start:start + size])


def fingerprint(cfg: Dict[str, Any], items: Sequence[Tuple[str, str]]) -> str:
    h = hashlib.sha1()
    h.update(json.dumps(cfg, sort_keys=True).encode())
    for utt, path in items:
        h.update(f"{utt} {path}\n".encode())
    return h.hexdigest()


def job_paths(out: Path, job: int) -> Dict[str, Path]:
    d = out / "data"
    return {"ark": d / f"feats.{job}.ark", "scp": d / f"feats.{job}.scp",
            "u2nf": d / f"utt2num_frames.{job}", "done": d / f".done.{job}"}


def _marker_matches(marker: Path, fp: str) -> bool:
    try:
        return json.loads(marker.read_text()).get("fingerprint") == fp
    except (OSError, ValueError):
        return False


def _arks_intact(marker: Path, out: Path) -> bool:
    """Every ark the marker lists still exists with the size it had when it was written (a
    truncated or replaced archive means the features must be recomputed)."""
    try:
        arks = json.loads(marker.read_text()).get("arks")
    except (OSError, ValueError):
        return False
    if not arks:
        return False
    for name, size in arks.items():
        ark = out / "data" / name
        if not ark.is_file() or ark.stat().st_size != size:
            log.info("%s: %s is missing or has another size than when it was written; recomputing", out, ark)
            return False
    return True


def invalidate_stale(out: Path, fp_all: str) -> None:
    """A merged output made from other options/inputs is removed before anything is recomputed."""
    done = out / ".done"
    if done.is_file() and not _marker_matches(done, fp_all):
        log.info("%s: existing features were made with other options or inputs; recomputing", out)
        for name in (".done", "feats.scp", "utt2num_frames", "feat_conf.yaml"):
            try:
                (out / name).unlink()
            except FileNotFoundError:
                pass


# ------------------------------------------------------------------------------------------------
# Audio and archive writing
# ------------------------------------------------------------------------------------------------

def read_audio(utt: str, path: str) -> Tuple[np.ndarray, int]:
    """float32 samples ``[n]`` (mono) or ``[n, channels]`` and the sample rate, via soundfile."""
    import soundfile as sf
    if not os.path.isfile(path):
        raise DataError(f"utterance '{utt}': audio file missing: {path}")
    try:
        x, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError on bad files
        raise DataError(f"utterance '{utt}': cannot read audio {path}: {e}") from None
    return (x[:, 0] if x.shape[1] == 1 else x), int(sr)


def utt_seed(utt: str, base_seed: int) -> int:
    """Dither seed of one utterance: independent of --nj and of the order jobs run in."""
    return (zlib.crc32(utt.encode("utf-8")) + (int(base_seed) << 32)) % (1 << 63)


def extract_utterance(ext: "FeatureExtractor", utt: str, path: str) -> np.ndarray:
    x, sr = read_audio(utt, path)
    try:
        feats = ext(x, sr, seed=utt_seed(utt, ext.config["dither_seed"]))
    except DataError as e:
        raise DataError(f"utterance '{utt}' ({path}): {e}") from None
    return feats


class ArkWriter:
    """Streams ``utt -> float32 matrix`` into a temp ark + scp + utt2num_frames; ``commit`` renames them.

    scp lines point at the final ark path, so nothing refers to the temp file. On an exception or
    without ``commit`` the temp files are removed and no output appears.
    """

    def __init__(self, ark: Path, scp: Path, u2nf: Optional[Path] = None):
        import kaldiio  # noqa: F401  (fail early if missing)
        self.ark, self.scp, self.u2nf = Path(ark), Path(scp), (Path(u2nf) if u2nf else None)
        self.ark.parent.mkdir(parents=True, exist_ok=True)
        self._final_ark = str(self.ark.resolve())
        self._tmp = {k: p.with_name(f".{p.name}.{os.getpid()}.tmp")
                     for k, p in (("ark", self.ark), ("scp", self.scp), ("u2nf", self.u2nf)) if p is not None}
        self._fa = open(self._tmp["ark"], "wb")
        self._fs = open(self._tmp["scp"], "w", encoding="utf-8")
        self._fu = open(self._tmp["u2nf"], "w", encoding="utf-8") if self.u2nf else None
        self.num_utts = 0
        self.num_frames = 0

    def write(self, utt: str, feats: np.ndarray) -> None:
        import kaldiio
        key = f"{utt} ".encode("utf-8")
        offset = self._fa.tell() + len(key)
        kaldiio.save_ark(self._fa, {utt: np.ascontiguousarray(feats, dtype=np.float32)})
        self._fs.write(f"{utt} {self._final_ark}:{offset}\n")
        if self._fu:
            self._fu.write(f"{utt} {feats.shape[0]}\n")
        self.num_utts += 1
        self.num_frames += int(feats.shape[0])

    def _close(self) -> None:
        for f in (self._fa, self._fs, self._fu):
            if f is not None and not f.closed:
                f.close()

    def commit(self) -> None:
        self._fa.flush()
        os.fsync(self._fa.fileno())
        self._close()
        os.replace(self._tmp["ark"], self.ark)
        if self.u2nf:
            os.replace(self._tmp["u2nf"], self.u2nf)
        os.replace(self._tmp["scp"], self.scp)

    def abort(self) -> None:
        self._close()
        for p in self._tmp.values():
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> "ArkWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


# ------------------------------------------------------------------------------------------------
# Job, merge, driver
# ------------------------------------------------------------------------------------------------

def resolve(feat_config: str, overrides: Dict[str, Any]) -> Dict[str, Any]:
    """Resolved feature options (no torch import: cheap for --check / --is-done / --merge)."""
    return resolve_config(load_config(feat_config), overrides)


def run_job(data: Path, out: Path, cfg: Dict[str, Any], job: int, nj: int,
            items: Optional[List[Tuple[str, str]]] = None) -> bool:
    """Compute split ``job`` of ``nj``. Returns False when it was already complete (skipped)."""
    all_items = items if items is not None else read_wav_scp(data)
    invalidate_stale(out, fingerprint(cfg, all_items))
    part = split_items(all_items, job, nj)
    paths = job_paths(out, job)
    fp = fingerprint(cfg, part)
    if (_marker_matches(paths["done"], fp) and _arks_intact(paths["done"], out) and paths["scp"].is_file()
            and paths["u2nf"].is_file()):
        log.info("job %d/%d: outputs complete (%s), skipping", job, nj, paths["scp"])
        return False
    try:
        paths["done"].unlink()
    except FileNotFoundError:
        pass
    for key in ("ark", "scp", "u2nf"):  # temp files left by a killed run of this job
        for stale in paths[key].parent.glob(f".{paths[key].name}.*.tmp"):
            stale.unlink()
    check_files_exist(part, f"{data}/wav.scp (job {job}/{nj})")
    import torch
    from tqdm import tqdm
    torch.set_num_threads(1)  # one job per core, as Kaldi jobs
    ext = FeatureExtractor(cfg)
    t0 = time.perf_counter()
    audio_s = 0.0
    with ArkWriter(paths["ark"], paths["scp"], paths["u2nf"]) as writer:
        for utt, path in tqdm(part, desc=f"{ext.name} job {job}/{nj}", unit="utt", disable=None, leave=False):
            feats = extract_utterance(ext, utt, path)
            writer.write(utt, feats)
            audio_s += feats.shape[0] * ext.frame_shift_seconds
    mark_complete(paths["done"], json.dumps({"fingerprint": fp, "utts": writer.num_utts,
                                             "frames": writer.num_frames,
                                             "arks": {paths["ark"].name: paths["ark"].stat().st_size}}) + "\n")
    dt = time.perf_counter() - t0
    log.info("job %d/%d: %d utterances, %d frames (~%.1f s of audio) in %.1f s (%.0fx real time) -> %s",
             job, nj, writer.num_utts, writer.num_frames, audio_s, dt, audio_s / max(dt, 1e-9), paths["ark"])
    return True


def merge(data: Path, out: Path, cfg: Dict[str, Any], nj: int,
          items: Optional[List[Tuple[str, str]]] = None) -> None:
    """Concatenate the jobs' scp / utt2num_frames, copy the data-dir text files, write feat_conf.yaml and .done."""
    all_items = items if items is not None else read_wav_scp(data)
    invalidate_stale(out, fingerprint(cfg, all_items))
    incomplete = []
    for job in range(1, nj + 1):
        p = job_paths(out, job)
        fp = fingerprint(cfg, split_items(all_items, job, nj))
        if not (_marker_matches(p["done"], fp) and _arks_intact(p["done"], out) and p["scp"].is_file()
                and p["u2nf"].is_file()):
            incomplete.append(job)
    if incomplete:
        raise DataError(f"{out}: job(s) {', '.join(map(str, incomplete))} of {nj} are missing or incomplete "
                        f"(or were made with other options / another --nj); run them before --merge")
    n_scp = 0
    with atomic_write(out / "feats.scp", encoding="utf-8") as fs, \
            atomic_write(out / "utt2num_frames", encoding="utf-8") as fu:
        for job in range(1, nj + 1):
            p = job_paths(out, job)
            with open(p["scp"], encoding="utf-8") as f:
                for line in f:
                    fs.write(line)
                    n_scp += 1
            with open(p["u2nf"], encoding="utf-8") as f:
                shutil.copyfileobj(f, fu)
        if n_scp != len(all_items):
            raise DataError(f"{out}: merged {n_scp} feature entries but wav.scp lists {len(all_items)} utterances")
    for src in sorted(data.iterdir()):
        if src.is_file() and (src.name in COPY_FILES or src.name.startswith(COPY_PREFIXES)):
            with atomic_path(out / src.name) as tmp:
                shutil.copy(src, tmp)  # content and permission bits
    with atomic_write(out / "feat_conf.yaml", encoding="utf-8") as f:
        f.write(f"# resolved feature options of {out} (pysv.features; Kaldi option names in snake_case)\n")
        f.write(config_to_yaml(cfg))
    dim = feature_dim(cfg)
    arks = {job_paths(out, j)["ark"].name: job_paths(out, j)["ark"].stat().st_size for j in range(1, nj + 1)}
    mark_complete(out / ".done", json.dumps({"fingerprint": fingerprint(cfg, all_items),
                                             "utts": n_scp, "dim": dim, "arks": arks}) + "\n")
    log.info("merged %d jobs: %d utterances, dim %d -> %s/feats.scp", nj, n_scp, dim, out)


def is_done(data: Path, out: Path, cfg: Dict[str, Any], items: Optional[List[Tuple[str, str]]] = None) -> bool:
    """``<out>`` holds complete features for these options and this wav.scp."""
    items = items if items is not None else read_wav_scp(data)
    done = out / ".done"
    return (is_complete(done) and _marker_matches(done, fingerprint(cfg, items)) and (out / "feats.scp").is_file()
            and _arks_intact(done, out))


def run_all(data: Path, out: Path, cfg: Dict[str, Any], nj: int = 1) -> None:
    items = read_wav_scp(data)
    if is_done(data, out, cfg, items):
        log.info("%s is complete (%s/.done exists), skipping", out, out)
        return
    check_files_exist(items, f"{data}/wav.scp")
    for job in range(1, nj + 1):
        run_job(data, out, cfg, job, nj, items=items)
    merge(data, out, cfg, nj, items=items)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pysv.bin.make_features",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path,
                   help="input Kaldi data dir with wav.scp (utt2spk, spk2utt, utt2dur, trials are copied if present)")
    p.add_argument("--feat-config", required=True,
                   help="feature config: a name (fbank40, fbank64, mfcc30 -> conf/<name>.yaml) or a yaml file")
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
                   help="exit 0 if <out> is complete for these options and this wav.scp, 3 otherwise (computes nothing)")
    p.add_argument("--log-file", default=None, help="also write the log to this file")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="feature option overrides, e.g. dither=0 snip_edges=false resample=resample channel=0")
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
        cfg = resolve(args.feat_config, parse_overrides(args.overrides))
        if args.is_done:
            return 0 if is_done(args.data, args.out, cfg) else 3
        if args.check:
            items = read_wav_scp(args.data)
            check_files_exist(items, f"{args.data}/wav.scp")
            log.info("%s: %d utterances, all audio files present; %s, dim %d",
                     args.data, len(items), cfg["name"], feature_dim(cfg))
        elif args.job is not None:
            run_job(args.data, args.out, cfg, args.job, args.nj)
        elif args.merge:
            merge(args.data, args.out, cfg, args.nj)
        else:
            run_all(args.data, args.out, cfg, args.nj)
    except (DataError, ValueError, FileNotFoundError) as e:
        log.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
