"""Completion markers that mean "complete for these inputs and options".

A stage writes its outputs atomically, then a marker (json) holding

* ``fingerprint``: what the outputs depend on -- input files by :func:`file_signature` (size and
  modification time; small files by content hash), the options, the model file -- as a dict;
* ``outputs``: the size of every output file at write time, so a later truncation is detected;
* ``info``: free-form facts for people and later stages (counts, epochs).

:func:`check` compares a marker with the fingerprint a rerun would write and returns ``None``
when the work is complete, else a sentence saying why it is not (which input or option changed,
which output is missing or has another size). Stages log that sentence and redo the work.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Union

from pysv.utils.io import atomic_write

PathLike = Union[str, "os.PathLike[str]"]

#: files up to this size are fingerprinted by content (stable across copies and touch)
HASH_LIMIT = 1 << 20


def file_signature(path: PathLike) -> Dict[str, Any]:
    """``{"size", "sha1"}`` for a small file, ``{"size", "mtime_ns"}`` for a large one, or
    ``{"missing": True}``."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        return {"missing": True}
    if st.st_size <= HASH_LIMIT:
        return {"size": st.st_size, "sha1": hashlib.sha1(p.read_bytes()).hexdigest()}
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def listing_signature(paths: Iterable[PathLike]) -> Dict[str, Any]:
    """One digest over the names, sizes and modification times of many files (e.g. a corpus's
    audio files): any added, removed, resized or rewritten file changes it."""
    h = hashlib.sha1()
    n = 0
    for p in sorted(str(x) for x in paths):
        try:
            st = os.stat(p)
            h.update(f"{p}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            h.update(f"{p}\tmissing\n".encode())
        n += 1
    return {"files": n, "sha1": h.hexdigest()}


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def write(marker: PathLike, fingerprint: Mapping[str, Any], outputs: Iterable[PathLike] = (),
          **info: Any) -> None:
    """Write ``marker`` (last, after every output): fingerprint, output sizes and ``info``."""
    marker = Path(marker)
    sizes = {}
    for o in outputs:
        o = Path(o)
        key = os.path.relpath(o, marker.parent)
        sizes[key] = o.stat().st_size
    record = {"fingerprint": _jsonable(dict(fingerprint)), "outputs": sizes, "info": _jsonable(info)}
    with atomic_write(marker, encoding="utf-8") as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.write("\n")


def read(marker: PathLike) -> Optional[Dict[str, Any]]:
    """The marker's record, or None when it is absent or not a marker of this kind."""
    try:
        record = json.loads(Path(marker).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "fingerprint" in record else None


def _first_difference(old: Any, new: Any, prefix: str = "") -> Optional[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            if k not in old or k not in new:
                return f"{prefix}{k}"
            d = _first_difference(old[k], new[k], f"{prefix}{k}.")
            if d is not None:
                return d
        return None
    return None if old == new else prefix.rstrip(".") or "(value)"


def check(marker: PathLike, fingerprint: Mapping[str, Any]) -> Optional[str]:
    """None if ``marker`` records this fingerprint and every recorded output still has its size;
    else the reason the work must be redone."""
    marker = Path(marker)
    record = read(marker)
    if record is None:
        return "not done yet" if not marker.exists() else f"{marker} is not a completion marker of this version"
    diff = _first_difference(record["fingerprint"], _jsonable(dict(fingerprint)))
    if diff is not None:
        return f"{diff} changed since {marker} was written"
    for rel, size in record.get("outputs", {}).items():
        path = marker.parent / rel
        if not path.is_file():
            return f"output {path} is missing"
        if path.stat().st_size != size:
            return f"output {path} has {path.stat().st_size} bytes, {size} when it was written (truncated?)"
    return None


def info(marker: PathLike) -> Dict[str, Any]:
    """The ``info`` facts of a marker ({} when absent)."""
    record = read(marker)
    return dict(record.get("info", {})) if record else {}
