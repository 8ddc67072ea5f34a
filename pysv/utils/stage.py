"""What a re-runnable, parallel stage needs: completion markers, jobs, atomic ark/scp archives.

**Completion markers** mean "complete for these inputs and options". A stage writes its outputs
atomically, then a marker (json) holding

* ``fingerprint``: what the outputs depend on -- input files by :func:`file_signature` (size and
  modification time; small files by content hash), the options, the model file -- as a dict;
* ``outputs``: the size of every output file at write time, so a later truncation is detected;
* ``info``: free-form facts for people and later stages (counts, epochs).

:func:`check` compares a marker with the fingerprint a rerun would write and returns ``None``
when the work is complete, else a sentence saying why it is not (which input or option changed,
which output is missing or has another size). Stages log that sentence and redo the work.
:func:`discard` removes outputs whose marker no longer holds before the files they name are rewritten.

**Jobs** (Kaldi's ``JOB=1:N``): :func:`split` gives job ``j`` of ``nj`` its contiguous share of
the sorted items, as ``split_scp.pl`` does; a :class:`Part` is that share with its files
``<dir>/<name>.<j>.{ark,scp}``, ``<dir>/utt2num_frames.<j>`` and marker ``<dir>/.done.<j>``;
:func:`require_complete` refuses a merge while a part is not complete and :func:`merge` joins the
parts' tables.

**Archives**: :class:`ArkWriter` (and :func:`write_ark`) stream ``key -> float32 array`` into a
kaldiio ark + scp (uncompressed, the scp naming the final ark) that appear only when the writing
succeeds.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

import kaldiio
import numpy as np

from pysv.utils.io import DataError, atomic_write, remove_stale_temp, temp_path

PathLike = Union[str, "os.PathLike[str]"]
T = TypeVar("T")

# ------------------------------------------------------------------------------------------------
# Completion markers
# ------------------------------------------------------------------------------------------------

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


def outputs_intact(marker: PathLike) -> Optional[str]:
    """None if ``marker`` exists and every output it records still has its size, else the reason:
    for stages that compare their inputs themselves (stage 2 compares configs key by key)."""
    record = read(marker)
    if record is None:
        return "not done yet" if not Path(marker).exists() else f"{marker} is not a completion marker of this version"
    return check(marker, record["fingerprint"])


def info(marker: PathLike) -> Dict[str, Any]:
    """The ``info`` facts of a marker ({} when absent)."""
    record = read(marker)
    return dict(record.get("info", {})) if record else {}


def discard(marker: PathLike, fingerprint: Mapping[str, Any], outputs: Iterable[PathLike] = ()) -> Optional[str]:
    """Remove ``marker`` and ``outputs`` when the marker exists but does not hold for
    ``fingerprint`` (an scp must not outlive the archives it names once they are rewritten).
    Returns the reason they were removed, None when nothing was."""
    marker = Path(marker)
    if not marker.exists():
        return None
    reason = check(marker, fingerprint)
    if reason is not None:
        for path in (marker, *outputs):
            Path(path).unlink(missing_ok=True)
    return reason


def items_signature(items: Sequence[Any]) -> Dict[str, Any]:
    """``{"count", "sha1"}`` of a list of json-able items (utterance ids, ``(utt, path)`` pairs)."""
    return {"count": len(items), "sha1": hashlib.sha1(json.dumps(list(items)).encode()).hexdigest()}


# ------------------------------------------------------------------------------------------------
# Jobs
# ------------------------------------------------------------------------------------------------

def split(items: Sequence[T], job: int, nj: int) -> List[T]:
    """Job ``job`` (1-based) of ``nj``: a contiguous part of ``items``; the parts differ in size by
    at most one, the first ``len(items) % nj`` being the longer (Kaldi's ``split_scp.pl``)."""
    if not 1 <= job <= nj:
        raise ValueError(f"--job must be in 1..{nj}, got {job}")
    base, extra = divmod(len(items), nj)
    start = (job - 1) * base + min(job - 1, extra)
    return list(items[start:start + base + (1 if job <= extra else 0)])


@dataclass(frozen=True)
class Part:
    """Job ``job`` of ``nj``: its ``items`` and its files in ``dir`` (archives named ``name``)."""

    dir: Path
    name: str
    job: int
    nj: int
    items: Tuple[Any, ...]

    @classmethod
    def of(cls, dir: PathLike, name: str, items: Sequence[Any], job: int, nj: int) -> "Part":
        """Job ``job`` of ``nj`` with its :func:`split` of ``items``."""
        return cls(Path(dir), name, job, nj, tuple(split(items, job, nj)))

    @property
    def ark(self) -> Path:
        return self.dir / f"{self.name}.{self.job}.ark"

    @property
    def scp(self) -> Path:
        return self.dir / f"{self.name}.{self.job}.scp"

    @property
    def num_frames(self) -> Path:
        return self.dir / f"utt2num_frames.{self.job}"

    @property
    def marker(self) -> Path:
        return self.dir / f".done.{self.job}"

    def fingerprint(self, base: Mapping[str, Any]) -> Dict[str, Any]:
        """``base`` (what the whole stage depends on) plus this part's place and items."""
        return {**base, "part": {"job": self.job, "nj": self.nj, "items": items_signature(self.items)}}

    def writer(self, num_frames: bool = False) -> "ArkWriter":
        """An :class:`ArkWriter` onto this part's ark and scp (and ``utt2num_frames.<job>``)."""
        return ArkWriter(self.ark, self.scp, self.num_frames if num_frames else None)

    def reset(self) -> None:
        """Before (re)computing: remove the marker and the temp files a killed run left."""
        self.marker.unlink(missing_ok=True)
        for path in (self.ark, self.scp, self.num_frames):
            remove_stale_temp(path)


def require_complete(parts: Sequence[Part], base: Mapping[str, Any], what: str) -> None:
    """DataError naming every part whose marker does not hold for ``part.fingerprint(base)``."""
    incomplete = [(p, check(p.marker, p.fingerprint(base))) for p in parts]
    incomplete = [(p, reason) for p, reason in incomplete if reason is not None]
    if incomplete:
        jobs = ", ".join(str(p.job) for p, _ in incomplete)
        why = "; ".join(f"job {p.job} ({p.scp}): {reason}" for p, reason in incomplete)
        raise DataError(f"{what}: job(s) {jobs} of {parts[0].nj} not complete: {why}; "
                        "run them before the merge")


def merge(parts: Sequence[Part], scp: PathLike, ark: Optional[PathLike] = None,
          num_frames: Optional[PathLike] = None, keys: Optional[Sequence[str]] = None) -> List[str]:
    """Join the parts' tables, in job order, into ``scp`` (and ``num_frames``), atomically.

    Without ``ark`` the entries keep naming the parts' archives (Kaldi's ``feats.scp`` over
    ``feats.JOB.ark``); with ``ark`` the parts' archives are concatenated into it byte for byte and
    ``scp`` names it. ``keys``: the entries the result must hold, in this order; otherwise a
    DataError and nothing is written. Returns the merged keys.
    """
    merged: List[str] = []
    with contextlib.ExitStack() as stack:  # files entered last are renamed first: the scp appears last
        f_scp = stack.enter_context(atomic_write(scp, encoding="utf-8"))
        f_num = stack.enter_context(atomic_write(num_frames, encoding="utf-8")) if num_frames else None
        f_ark = stack.enter_context(atomic_write(ark, "wb")) if ark else None
        target = str(Path(ark).resolve()) if ark else None
        for part in parts:
            start = f_ark.tell() if f_ark else 0
            part_ark = str(part.ark.resolve())
            with open(part.scp, encoding="utf-8") as f:
                for line in f:
                    key, location = line.rstrip("\n").split(" ", 1)
                    if f_ark:
                        path, offset = location.rsplit(":", 1)
                        if path != part_ark:
                            raise DataError(f"{part.scp}: entry '{key}' names {path}, "
                                            f"not the part's archive {part_ark}")
                        location = f"{target}:{start + int(offset)}"
                    f_scp.write(f"{key} {location}\n")
                    merged.append(key)
            if f_ark:
                with open(part.ark, "rb") as f:
                    shutil.copyfileobj(f, f_ark)
            if f_num:
                with open(part.num_frames, encoding="utf-8") as f:
                    shutil.copyfileobj(f, f_num)
        if keys is not None and list(keys) != merged:
            missing = sorted(set(keys) - set(merged))
            extra = sorted(set(merged) - set(keys))
            raise DataError(f"{scp}: the {len(parts)} parts hold {len(merged)} entries where {len(keys)} were "
                            f"expected (missing e.g. {missing[:3]}, unexpected {extra[:3]}"
                            f"{', or another order' if not missing and not extra else ''}); not written")
    return merged


# ------------------------------------------------------------------------------------------------
# Archives
# ------------------------------------------------------------------------------------------------

class ArkWriter:
    """Streams ``key -> float32 array`` into ``ark`` + ``scp`` (kaldiio, uncompressed), optionally
    ``num_frames`` (``key rows`` lines, Kaldi's ``utt2num_frames``).

    Writes go to temp files; :meth:`commit` (the end of a ``with`` block) renames them, the ark
    first, so an scp never names a missing ark; :meth:`abort` (an exception in the block) removes
    them. The scp lines name the final ark, never a temp file. ``count``: arrays written;
    ``rows``: their rows (frames of feature matrices; a vector is one row).
    """

    def __init__(self, ark: PathLike, scp: PathLike, num_frames: Optional[PathLike] = None):
        self.ark, self.scp = Path(ark), Path(scp)
        self.num_frames = Path(num_frames) if num_frames is not None else None
        self.count = 0
        self.rows = 0
        self._tmp = {path: temp_path(path) for path in self.outputs}
        self._target = str(self.ark.resolve())
        self._ark = open(self._tmp[self.ark], "wb")
        self._scp = open(self._tmp[self.scp], "w", encoding="utf-8")
        self._num = open(self._tmp[self.num_frames], "w", encoding="utf-8") if self.num_frames else None

    @property
    def outputs(self) -> List[Path]:
        """The files this writer produces, in rename order."""
        return [self.ark] + ([self.num_frames] if self.num_frames else []) + [self.scp]

    def write(self, key: str, array: Any) -> None:
        array = np.ascontiguousarray(array, dtype=np.float32)
        offset = self._ark.tell() + len(key.encode("utf-8")) + 1  # after "key "
        kaldiio.save_ark(self._ark, {key: array})
        self._scp.write(f"{key} {self._target}:{offset}\n")
        if self._num:
            self._num.write(f"{key} {array.shape[0]}\n")
        self.count += 1
        self.rows += int(array.shape[0]) if array.ndim == 2 else 1

    def _close(self) -> None:
        for f in (self._ark, self._scp, self._num):
            if f is not None:
                f.close()

    def commit(self) -> None:
        self._ark.flush()
        os.fsync(self._ark.fileno())
        self._close()
        for path in self.outputs:
            os.replace(self._tmp[path], path)

    def abort(self) -> None:
        self._close()
        for tmp in self._tmp.values():
            tmp.unlink(missing_ok=True)

    def __enter__(self) -> "ArkWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_ark(ark: PathLike, scp: PathLike, items: Iterable[Tuple[str, Any]]) -> List[Path]:
    """Write ``(key, array)`` pairs, in the given order, with an :class:`ArkWriter`; its outputs."""
    with ArkWriter(ark, scp) as writer:
        for key, array in items:
            writer.write(key, array)
    return writer.outputs
