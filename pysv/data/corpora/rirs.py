"""Room impulse responses for reverberation augmentation: RIRS_NOISES, or any folder of RIRs.

Accepted layouts: ``RIRS_NOISES/simulated_rirs/<type>/Room*/*.wav`` and
``RIRS_NOISES/real_rirs_isotropic_noises/*.wav`` (the isotropic-noise recordings are skipped; the
``rir_list`` there is used when present); or any folder of ``<id>.{wav,flac}`` (optionally with
``wav.list`` / ``files.tsv`` carrying a ``room`` column).

Every recording is labelled with its ``room`` and ``type`` (simulated | real). Output layout:
:mod:`pysv.data.corpora._augment_sets`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import List, Optional, Sequence

from pysv.data.corpora._augment_sets import AugItem, AugmentKind, files_tsv, listed_files, prepare_augment_set
from pysv.data.prepare import AudioOptions, find_audio_files, raise_errors
from pysv.utils.io import DataError

RIR = AugmentKind("RIR", {"utt2room": "room", "utt2type": "type"}, count_by="type")


def _sanitize(label: str) -> str:
    return re.sub(r"\s+", "_", label.strip()) or "unknown"


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
            for rel in find_audio_files(sim):
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
                files = [real / rel for rel in find_audio_files(real) if "noise" not in rel.name.lower()]
            for p in sorted(set(files)):
                items.append(AugItem(p.stem, os.path.abspath(p), {"room": p.stem, "type": "real"}))
    else:
        listing = listed_files(root)
        meta = files_tsv(root)
        if listing is not None:
            pairs = sorted(listing.items())
        else:
            pairs = [("-".join(rel.with_suffix("").parts), str(rel)) for rel in find_audio_files(root)]
        for rid, rel in pairs:
            parts = PurePosixPath(rel).parts
            room = meta.get(rid, {}).get("room") or (parts[0] if len(parts) > 1 else rid)
            items.append(AugItem(rid, os.path.abspath(root / rel), {"room": _sanitize(room), "type": "real"}))
    if not items:
        raise DataError(f"no RIR .wav/.flac files found under {root}")
    return items


def prepare_rirs(rirs_dir, data_root="data", name: str = "rirs", rir_types: Optional[Sequence[str]] = None,
                 audio_opts: Optional[AudioOptions] = None, force: bool = False) -> Path:
    """Room impulse responses for reverberation augmentation. Returns the set dir."""
    return prepare_augment_set(RIR, lambda: scan_rir_folder(rirs_dir, rir_types), data_root, name,
                               audio_opts, force, stage="rirs", dir=os.path.abspath(rirs_dir),
                               rir_types=list(rir_types or []))
