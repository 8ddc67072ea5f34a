"""Augmentation sets: additive noise (MUSAN or any folder of noise categories) and room impulse
responses (RIRS_NOISES or any folder of RIRs), from local directories.

Writes ``<data-root>/manifests/<name>_recordings.jsonl.gz`` (+ ``_supervisions`` / ``_cuts`` with a
custom ``category`` field for noise sets, ``room`` / ``type`` for RIRs) and a Kaldi-style list
``<data-root>/<name>/{wav.scp,utt2dur,utt2spk,spk2utt}`` + ``utt2category`` (noise) or ``utt2room``
(RIRs), then ``<data-root>/<name>/.done``.

Accepted layouts

* noise: MUSAN ``musan/{noise,music,speech}/<source>/*.wav``; a flat ``<category>/<id>.{wav,flac}``
  folder; either with an optional ``wav.list`` (``<id> <relative path>``) and/or ``files.tsv``
  (tab-separated, columns ``id``, ``category``, ``path``). When a list is present it defines the
  files (a listed file that is missing is an error) and the ids.
* RIRs: ``RIRS_NOISES/simulated_rirs/<type>/Room*/*.wav`` and
  ``RIRS_NOISES/real_rirs_isotropic_noises/*.wav`` (the isotropic-noise recordings are skipped; the
  ``rir_list`` there is used when present); or any folder of ``<id>.{wav,flac}`` (optionally with
  ``wav.list`` / ``files.tsv`` carrying a ``room`` column).

Multi-channel files (e.g. the REVERB-challenge RIRs) become one mono recording per channel, written
as float WAV under ``<data-root>/<name>/audio/``; wav.scp therefore always lists plain mono files.
"""
from __future__ import annotations

import csv
import dataclasses
import logging
import os
import re
from pathlib import Path, PurePosixPath
from typing import Callable, Dict, List, Optional, Sequence

from pysv.data.prepare import (AUDIO_EXTS, AudioOptions, check_id, make_fingerprint, make_recording,
                               manifest_paths, materialize_audio, probe_files, raise_errors, rate_error,
                               remove_stale_tmp, stage_complete, write_manifest)
from pysv.utils.io import DataError, mark_complete, read_table, utt2spk_to_spk2utt, write_table

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class AugItem:
    rec_id: str
    path: str
    meta: Dict[str, str]  # category (noise) or room / type (RIR)


def _read_files_tsv(path: Path) -> Dict[str, Dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if rows and "id" not in rows[0]:
        raise DataError(f"{path}: expected a tab-separated header with an 'id' column")
    out: Dict[str, Dict[str, str]] = {}
    for i, r in enumerate(rows, 2):
        if r["id"] in out:
            raise DataError(f"{path}:{i}: duplicate id '{r['id']}'")
        out[r["id"]] = r
    return out


def _listed_files(root: Path) -> Optional[Dict[str, str]]:
    """``id -> relative path`` from ``wav.list`` or ``files.tsv`` (with a path column), else None."""
    if (root / "wav.list").is_file():
        return {k: v.split()[0] if v else "" for k, v in read_table(root / "wav.list").items()}
    if (root / "files.tsv").is_file():
        meta = _read_files_tsv(root / "files.tsv")
        if meta and "path" in next(iter(meta.values())):
            return {k: r["path"] for k, r in meta.items()}
    return None


def _check_listed(root: Path, listing: Dict[str, str]) -> None:
    missing = [f"{root}: lists '{rel}' (id {rid}), which is missing" for rid, rel in sorted(listing.items())
               if not rel or not (root / rel).is_file()]
    raise_errors(missing, f"the file list of {root}")


def _sanitize(label: str) -> str:
    return re.sub(r"\s+", "_", label.strip()) or "unknown"


def _scan_audio(root: Path) -> List[PurePosixPath]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in AUDIO_EXTS:
                out.append(PurePosixPath(Path(dirpath, f).relative_to(root).as_posix()))
    return out


def scan_noise_folder(root, categories: Optional[Sequence[str]] = None) -> List[AugItem]:
    """Noise files with their category (MUSAN layout, or a folder of category folders)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"noise directory not found: {root}")
    if (root / "musan").is_dir() and not any((root / c).is_dir() for c in ("noise", "music", "speech")):
        root = root / "musan"
    items: List[AugItem] = []
    listing = _listed_files(root)
    if listing is not None:
        _check_listed(root, listing)
        meta = _read_files_tsv(root / "files.tsv") if (root / "files.tsv").is_file() else {}
        for rid, rel in sorted(listing.items()):
            cat = meta.get(rid, {}).get("category") or (PurePosixPath(rel).parts[0]
                                                         if len(PurePosixPath(rel).parts) > 1 else "noise")
            items.append(AugItem(rid, os.path.abspath(root / rel), {"category": cat}))
    else:
        for cat_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            cat = cat_dir.name
            for rel in _scan_audio(cat_dir):
                stem = "-".join(rel.with_suffix("").parts[-1:])
                rid = stem if stem.startswith(cat + "-") else f"{cat}-{'-'.join(rel.with_suffix('').parts)}"
                items.append(AugItem(rid, os.path.abspath(cat_dir / rel), {"category": cat}))
    if not items:
        raise DataError(f"no .wav/.flac noise files found under {root} (expected <category>/.../<file>.wav)")
    found = sorted({it.meta["category"] for it in items})
    if categories:
        unknown = [c for c in categories if c not in found]
        if unknown:
            raise DataError(f"category(ies) {', '.join(unknown)} not found under {root} (found: {', '.join(found)})")
        items = [it for it in items if it.meta["category"] in set(categories)]
    return items


def _parse_rir_list(path: Path, base: Path) -> List[Path]:
    """Files named in a Kaldi RIRS_NOISES ``rir_list`` (``--rir-id X --room-id Y <path>`` lines)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        for tok in line.split():
            if tok.lower().endswith(".wav"):
                p = Path(tok)
                # paths in the list are relative to the directory above RIRS_NOISES
                cand = [base.parent / p, base / p, path.parent / p.name]
                out.append(next((c for c in cand if c.is_file()), cand[0]))
    return out


def scan_rir_folder(root, rir_types: Optional[Sequence[str]] = None) -> List[AugItem]:
    """RIR files with room and type (RIRS_NOISES layout, or a folder of RIR files)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"RIR directory not found: {root}")
    if (root / "RIRS_NOISES").is_dir():
        root = root / "RIRS_NOISES"
    items: List[AugItem] = []
    sim, real = root / "simulated_rirs", root / "real_rirs_isotropic_noises"
    if sim.is_dir() or real.is_dir():
        want = set(rir_types or ["simulated", "real"])
        bad = want - {"simulated", "real"}
        if bad:
            raise DataError(f"unknown RIR type(s) {', '.join(sorted(bad))}; expected simulated and/or real")
        if "simulated" in want and sim.is_dir():
            for rel in _scan_audio(sim):
                parts = rel.with_suffix("").parts  # <type>/<RoomNNN>/<RoomNNN-NNNNN>
                room = "-".join(parts[:-1]) if len(parts) > 1 else parts[0]
                rid = f"{parts[0]}-{parts[-1]}" if len(parts) > 1 else parts[0]
                items.append(AugItem(rid, os.path.abspath(sim / rel), {"room": room, "type": "simulated"}))
        if "real" in want and real.is_dir():
            if (real / "rir_list").is_file():
                files = _parse_rir_list(real / "rir_list", root)
                missing = [f"{real / 'rir_list'}: lists {p}, which is missing" for p in files if not p.is_file()]
                raise_errors(missing, f"{real / 'rir_list'}")
            else:
                files = [real / rel for rel in _scan_audio(real) if "noise" not in rel.name.lower()]
            for p in sorted(set(files)):
                items.append(AugItem(p.stem, os.path.abspath(p), {"room": p.stem, "type": "real"}))
    else:
        listing = _listed_files(root)
        meta = _read_files_tsv(root / "files.tsv") if (root / "files.tsv").is_file() else {}
        if listing is not None:
            _check_listed(root, listing)
            pairs = sorted(listing.items())
        else:
            pairs = [("-".join(rel.with_suffix("").parts), str(rel)) for rel in _scan_audio(root)]
        for rid, rel in pairs:
            room = meta.get(rid, {}).get("room") or (PurePosixPath(rel).parts[0]
                                                     if len(PurePosixPath(rel).parts) > 1 else rid)
            items.append(AugItem(rid, os.path.abspath(root / rel), {"room": _sanitize(room), "type": "real"}))
    if not items:
        raise DataError(f"no RIR .wav/.flac files found under {root}")
    return items


def _prepare_aug(kind: str, items: List[AugItem], data_root, name: str, audio_opts: AudioOptions,
                 fp: str) -> Path:
    from lhotse import CutSet, RecordingSet, SupervisionSegment, SupervisionSet
    from lhotse.cut import MonoCut
    from tqdm import tqdm

    data_root = Path(data_root)
    errors: List[str] = []
    seen: Dict[str, str] = {}
    for it in items:
        try:
            check_id("recording", it.rec_id, it.path)
        except DataError as e:
            errors.append(str(e))
        if it.rec_id in seen:
            errors.append(f"duplicate recording id '{it.rec_id}': {seen[it.rec_id]} and {it.path}")
        seen[it.rec_id] = it.path
    raise_errors(errors, f"the {kind} files")
    infos, errors = probe_files([it.path for it in items], audio_opts, name)
    recs, sups, cuts, kaldi = [], [], [], []
    to_write = []  # (rec, out_path, channel)
    set_dir = data_root / name
    for it, info in zip(items, infos):
        if info is None:
            continue
        err = rate_error(it.path, info, audio_opts)
        if err:
            errors.append(err)
            continue
        full = make_recording(it.rec_id, it.path, info, audio_opts)
        chans = range(info["channels"])
        for c in chans:
            rid = it.rec_id if info["channels"] == 1 else f"{it.rec_id}-ch{c}"
            if info["channels"] == 1:
                rec = full
                wav = set_dir / "audio" / f"{rid}.wav" if info["sample_rate"] != audio_opts.sample_rate else None
            else:  # one mono file per channel; the manifest points at it
                wav = set_dir / "audio" / f"{rid}.wav"
                from lhotse import Recording
                from lhotse.audio import AudioSource
                rec = Recording(id=rid, sources=[AudioSource(type="file", channels=[0], source=os.path.abspath(wav))],
                                sampling_rate=full.sampling_rate, num_samples=full.num_samples,
                                duration=full.duration)
            if wav is not None:
                to_write.append((full, wav, c))
            meta = dict(it.meta)
            if info["channels"] > 1:
                meta.update(source=it.path, channel=str(c))
            sup = SupervisionSegment(id=rid, recording_id=rid, start=0.0, duration=rec.duration, channel=0,
                                     custom=meta)
            recs.append(rec)
            sups.append(sup)
            cuts.append(MonoCut(id=rid, start=0.0, duration=rec.duration, channel=0, recording=rec,
                                supervisions=[sup], custom=dict(meta)))
            kaldi.append((rid, os.path.abspath(wav) if wav is not None else it.path, rec.duration, meta))
    raise_errors(errors, f"the {kind} audio")

    done = set_dir / ".done"
    if done.exists():
        done.unlink()
    paths = manifest_paths(data_root, name, None)
    remove_stale_tmp(set_dir)
    remove_stale_tmp(data_root / "manifests", [p.name for p in paths.values()])
    for full, wav, c in tqdm(to_write, desc=f"writing mono/resampled copies ({name})",
                             disable=None if audio_opts.progress else True):
        materialize_audio(full, wav, channel=c, subtype="FLOAT")
    write_manifest(RecordingSet.from_recordings(recs), paths["recordings"])
    write_manifest(SupervisionSet.from_segments(sups), paths["supervisions"])
    write_manifest(CutSet.from_cuts(cuts), paths["cuts"])
    write_table(set_dir / "wav.scp", {rid: p for rid, p, _, _ in kaldi})
    write_table(set_dir / "utt2dur", {rid: f"{d:.4f}".rstrip("0").rstrip(".") for rid, _, d, _ in kaldi})
    utt2spk = {rid: rid for rid, _, _, _ in kaldi}
    write_table(set_dir / "utt2spk", utt2spk)
    write_table(set_dir / "spk2utt", utt2spk_to_spk2utt(utt2spk))
    if kind == "noise":
        write_table(set_dir / "utt2category", {rid: m["category"] for rid, _, _, m in kaldi})
    else:
        write_table(set_dir / "utt2room", {rid: m["room"] for rid, _, _, m in kaldi})
        write_table(set_dir / "utt2type", {rid: m["type"] for rid, _, _, m in kaldi})
    mark_complete(done, fp)
    counts: Dict[str, int] = {}
    for _, _, _, m in kaldi:
        key = m.get("category") or m.get("type")
        counts[key] = counts.get(key, 0) + 1
    logger.info("wrote %s set %s: %d recordings (%s), %.2f h -> %s", kind, name, len(kaldi),
                ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())),
                sum(d for _, _, d, _ in kaldi) / 3600, set_dir)
    return set_dir


def prepare_musan(musan_dir, data_root="data", name: str = "musan", categories: Optional[Sequence[str]] = None,
                  audio_opts: Optional[AudioOptions] = None, force: bool = False) -> Path:
    """Noise / music / speech recordings for additive-noise augmentation."""
    return _run_aug_stage("noise", data_root, name, audio_opts, force, lambda: scan_noise_folder(musan_dir, categories),
                          stage="musan", dir=os.path.abspath(musan_dir), categories=list(categories or []))


def prepare_rirs(rirs_dir, data_root="data", name: str = "rirs", rir_types: Optional[Sequence[str]] = None,
                 audio_opts: Optional[AudioOptions] = None, force: bool = False) -> Path:
    """Room impulse responses for reverberation augmentation."""
    return _run_aug_stage("rir", data_root, name, audio_opts, force, lambda: scan_rir_folder(rirs_dir, rir_types),
                          stage="rirs", dir=os.path.abspath(rirs_dir), rir_types=list(rir_types or []))


def _run_aug_stage(kind: str, data_root, name: str, audio_opts: Optional[AudioOptions], force: bool,
                   scan: Callable[[], List[AugItem]], **config) -> Path:
    """Validate the options, skip when set ``name`` is complete with the same configuration (``config``
    plus the audio options and name), else scan the source and write the set."""
    audio_opts = audio_opts or AudioOptions()
    audio_opts.validate()
    check_id("set name", name, "--name")
    fp = make_fingerprint(**config, audio=audio_opts.fingerprint(), name=name)
    if not force and stage_complete(data_root, [name], fp):
        logger.info("%s set %s already prepared (same configuration); skipping",
                    "RIR" if kind == "rir" else kind, name)
        return Path(data_root) / name
    return _prepare_aug(kind, scan(), data_root, name, audio_opts, fp)
