"""Additive-noise set for augmentation: MUSAN, or any folder of noise categories (local directories).

Accepted layouts: MUSAN ``musan/{noise,music,speech}/<source>/*.wav``; a flat
``<category>/<id>.{wav,flac}`` folder; either with an optional ``wav.list`` (``<id> <relative path>``)
and/or ``files.tsv`` (tab-separated, columns ``id``, ``category``, ``path``). When a list is present
it defines the files (a listed file that is missing is an error) and the ids.

Every recording is labelled with its ``category`` (the top folder, or the ``files.tsv`` column);
training draws noise, music and babble by category. Output layout: :mod:`pysv.data.corpora._augment_sets`.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import List, Optional, Sequence

from pysv.data.corpora._augment_sets import AugItem, AugmentKind, files_tsv, listed_files, prepare_augment_set
from pysv.data.prepare import AudioOptions, find_audio_files
from pysv.utils.io import DataError

NOISE = AugmentKind("noise", {"utt2category": "category"}, count_by="category")


def scan_noise_folder(root, categories: Optional[Sequence[str]] = None) -> List[AugItem]:
    """Noise files with their category (MUSAN layout, or a folder of category folders)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"noise directory not found: {root}")
    if (root / "musan").is_dir() and not any((root / c).is_dir() for c in ("noise", "music", "speech")):
        root = root / "musan"
    items: List[AugItem] = []
    listing = listed_files(root)
    if listing is not None:
        meta = files_tsv(root)
        for rid, rel in sorted(listing.items()):
            parts = PurePosixPath(rel).parts
            cat = meta.get(rid, {}).get("category") or (parts[0] if len(parts) > 1 else "noise")
            items.append(AugItem(rid, os.path.abspath(root / rel), {"category": cat}))
    else:
        for cat_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            cat = cat_dir.name
            for rel in find_audio_files(cat_dir):
                stem = rel.stem
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


def prepare_musan(musan_dir, data_root="data", name: str = "musan", categories: Optional[Sequence[str]] = None,
                  audio_opts: Optional[AudioOptions] = None, force: bool = False) -> Path:
    """Noise / music / speech recordings for additive-noise augmentation. Returns the set dir."""
    return prepare_augment_set(NOISE, lambda: scan_noise_folder(musan_dir, categories), data_root, name,
                               audio_opts, force, stage="musan", dir=os.path.abspath(musan_dir),
                               categories=list(categories or []))
