"""What the augmentation sets (MUSAN-style noise, room impulse responses) share: optional file lists
in the source folder, and writing a set.

A set ``<name>`` is written as

* ``<data-root>/manifests/<name>_{recordings,supervisions,cuts}.jsonl.gz``: one recording per mono
  file, its supervision and cut carrying the corpus's labels as custom fields (``category`` for
  noise, ``room`` / ``type`` for RIRs); training reads the recordings manifest
  (:func:`pysv.data.waveform_augment.load_audio_list`),
* ``<data-root>/<name>/{wav.scp,utt2spk,spk2utt,utt2dur}`` (each recording its own speaker) and one
  ``utt2<label>`` table per label,
* ``<data-root>/<name>/.done``, last.

Multi-channel files become one mono recording per channel, written as float WAV under
``<data-root>/<name>/audio/`` (so are resampled copies); wav.scp therefore always lists plain mono files.
"""
from __future__ import annotations

import csv
import dataclasses
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional

from tqdm import tqdm

from pysv.data.prepare import (KALDI_FILES, AudioOptions, check_id, export_kaldi_dir, finish_set, make_recording,
                               manifest_paths, materialize_audio, probe_files, raise_errors, rate_error,
                               sets_complete, start_set, write_manifests)
from pysv.utils.io import DataError, read_table, write_table

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class AugItem:
    """One source file of an augmentation set and its labels."""

    rec_id: str
    path: str
    meta: Dict[str, str]  # category (noise) or room / type (RIR)


@dataclasses.dataclass(frozen=True)
class AugmentKind:
    """How a kind of augmentation set is labelled: ``tables`` maps each Kaldi table written next to
    wav.scp to the label it holds; ``count_by`` is the label the summary log counts."""

    label: str
    tables: Mapping[str, str]
    count_by: str


# ----------------------------------------------------------------------------------------------
# file lists in the source folder (wav.list, files.tsv)
# ----------------------------------------------------------------------------------------------
def read_files_tsv(path: Path) -> Dict[str, Dict[str, str]]:
    """Rows of a tab-separated ``files.tsv`` with an ``id`` column, by id."""
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


def files_tsv(root: Path) -> Dict[str, Dict[str, str]]:
    """``root/files.tsv`` by id, or {} when there is none."""
    return read_files_tsv(root / "files.tsv") if (root / "files.tsv").is_file() else {}


def listed_files(root: Path) -> Optional[Dict[str, str]]:
    """``id -> relative path`` from ``wav.list`` or ``files.tsv`` (with a path column), else None.
    Every listed file must exist."""
    listing = None
    if (root / "wav.list").is_file():
        listing = {k: v.split()[0] if v else "" for k, v in read_table(root / "wav.list").items()}
    elif (root / "files.tsv").is_file():
        meta = read_files_tsv(root / "files.tsv")
        if meta and "path" in next(iter(meta.values())):
            listing = {k: r["path"] for k, r in meta.items()}
    if listing is not None:
        missing = [f"{root}: lists '{rel}' (id {rid}), which is missing" for rid, rel in sorted(listing.items())
                   if not rel or not (root / rel).is_file()]
        raise_errors(missing, f"the file list of {root}")
    return listing


# ----------------------------------------------------------------------------------------------
# writing a set
# ----------------------------------------------------------------------------------------------
def prepare_augment_set(kind: AugmentKind, scan: Callable[[], List[AugItem]], data_root, name: str,
                        audio_opts: Optional[AudioOptions], force: bool, **config) -> Path:
    """Validate the options, skip when set ``name`` is complete with the same configuration
    (``config`` plus the audio options and name), else scan the source and write the set."""
    audio_opts = audio_opts or AudioOptions()
    audio_opts.validate()
    check_id("set name", name, "--name")
    fp = dict(config, audio=audio_opts.fingerprint(), name=name)
    if not force and sets_complete(data_root, [name], fp):
        return Path(data_root) / name
    return _write_augment_set(kind, scan(), Path(data_root), name, audio_opts, fp)


def _write_augment_set(kind: AugmentKind, items: List[AugItem], data_root: Path, name: str,
                       audio_opts: AudioOptions, fingerprint: Mapping[str, object]) -> Path:
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet
    from lhotse.audio import AudioSource
    from lhotse.cut import MonoCut

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
    raise_errors(errors, f"the {kind.label} files")
    infos, errors = probe_files([it.path for it in items], audio_opts, name)
    recs, sups, cuts = [], [], []
    copies = []  # (recording, out_path, channel): mono / resampled files to write
    override: Dict[str, str] = {}  # wav.scp entries of those copies
    set_dir = data_root / name
    for it, info in zip(items, infos):
        if info is None:
            continue
        err = rate_error(it.path, info, audio_opts)
        if err:
            errors.append(err)
            continue
        full = make_recording(it.rec_id, it.path, info, audio_opts)
        for c in range(info["channels"]):
            meta = dict(it.meta)
            if info["channels"] == 1:
                rid, rec = it.rec_id, full
                wav = set_dir / "audio" / f"{rid}.wav" if info["sample_rate"] != audio_opts.sample_rate else None
            else:  # one mono file per channel; the manifest points at it
                rid = f"{it.rec_id}-ch{c}"
                wav = set_dir / "audio" / f"{rid}.wav"
                rec = Recording(id=rid, sources=[AudioSource(type="file", channels=[0], source=os.path.abspath(wav))],
                                sampling_rate=full.sampling_rate, num_samples=full.num_samples,
                                duration=full.duration)
                meta.update(source=it.path, channel=str(c))
            if wav is not None:
                copies.append((full, wav, c))
                override[rid] = os.path.abspath(wav)
            sup = SupervisionSegment(id=rid, recording_id=rid, start=0.0, duration=rec.duration, channel=0,
                                     custom=meta)
            recs.append(rec)
            sups.append(sup)
            cuts.append(MonoCut(id=rid, start=0.0, duration=rec.duration, channel=0, recording=rec,
                                supervisions=[sup], custom=dict(meta)))
    raise_errors(errors, f"the {kind.label} audio")

    paths = manifest_paths(data_root, name, None)
    outputs = [*paths.values(), *(set_dir / f for f in (*KALDI_FILES, *kind.tables))]
    start_set(set_dir, [*outputs, *(wav for _, wav, _ in copies)])
    for full, wav, c in tqdm(copies, desc=f"writing mono/resampled copies ({name})",
                             disable=None if audio_opts.progress else True):
        materialize_audio(full, wav, channel=c, subtype="FLOAT")
    write_manifests(paths, RecordingSet.from_recordings(recs), SupervisionSet.from_segments(sups),
                    CutSet.from_cuts(cuts))
    export_kaldi_dir(cuts, set_dir, override)
    for table, label in kind.tables.items():
        write_table(set_dir / table, {s.id: s.custom[label] for s in sups})
    counts = Counter(s.custom[kind.count_by] for s in sups)
    finish_set(set_dir, fingerprint, outputs, recordings=len(recs), **{kind.count_by: dict(sorted(counts.items()))})
    logger.info("wrote %s set %s: %d recordings (%s), %.2f h -> %s", kind.label, name, len(recs),
                ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())),
                sum(r.duration for r in recs) / 3600, set_dir)
    return set_dir
