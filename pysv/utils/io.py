"""Atomic output and Kaldi-style text tables (wav.scp, utt2spk, spk2utt, utt2dur, trials).

Every stage writes through :func:`atomic_write` / :func:`atomic_path` so a killed stage never
leaves a file that looks complete.
"""
from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
import soundfile as sf

PathLike = Union[str, os.PathLike]


_UMASK = os.umask(0)
os.umask(_UMASK)


class DataError(ValueError):
    """Bad or missing input data; the message names the file / utterance / speaker at fault."""


def temp_path(path: PathLike) -> Path:
    """A new empty temporary file ``.<name>.<random>.tmp`` next to ``path`` (parent dirs created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs get the usual permissions
    return Path(tmp)


def remove_stale_temp(path: PathLike) -> None:
    """Remove the temporary files of ``path`` (:func:`temp_path`) that killed writes left behind."""
    path = Path(path)
    prefix = f".{path.name}."
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        if "." not in tmp.name[len(prefix):-len(".tmp")]:  # not the temp file of a longer name
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w", **kwargs):
    """Open a temporary file for writing; it replaces ``path`` only if the block succeeds."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f


def read_table(path: PathLike, unique: bool = True) -> Dict[str, str]:
    """Read a Kaldi ``key rest-of-line`` table. Duplicate keys are an error naming the key."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing file: {path}")
    table: Dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(maxsplit=1)
            key = parts[0]
            value = parts[1] if len(parts) > 1 else ""
            if unique and key in table:
                raise DataError(f"{path}:{lineno}: duplicate key '{key}'")
            table[key] = value
    return table


def write_table(path: PathLike, rows: Union[Dict[str, object], Iterable[Tuple[str, object]]]) -> None:
    """Write ``key value`` lines sorted by key (Kaldi's C-locale order), atomically."""
    items = list(rows.items()) if isinstance(rows, dict) else list(rows)
    items.sort(key=lambda kv: kv[0])
    with atomic_write(path, encoding="utf-8") as f:
        for key, value in items:
            if isinstance(value, (list, tuple)):
                value = " ".join(str(v) for v in value)
            f.write(f"{key} {value}\n")


def utt2spk_to_spk2utt(utt2spk: Dict[str, str]) -> Dict[str, List[str]]:
    spk2utt: Dict[str, List[str]] = {}
    for utt in sorted(utt2spk):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    return spk2utt


def _nonblank_lines(path: Path, what: str) -> Iterator[Tuple[int, str, List[str]]]:
    """``(line number, line, fields)`` of the non-blank lines of a whitespace-separated text file."""
    if not path.is_file():
        raise DataError(f"missing {what}: {path}")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if parts:
                yield lineno, line, parts


def read_trials(path: PathLike) -> List[Tuple[str, str, int]]:
    """Read a trial list in Kaldi (``enroll test target|nontarget``) or VoxCeleb (``1 a b``) format.

    Returns ``(enroll, test, label)`` with label 1 for target, 0 for non-target.
    """
    path = Path(path)
    trials: List[Tuple[str, str, int]] = []
    for lineno, line, parts in _nonblank_lines(path, "trial list"):
        if len(parts) != 3:
            raise DataError(f"{path}:{lineno}: expected 3 fields, got {len(parts)}: {line.strip()!r}")
        a, b, c = parts
        if c in ("target", "nontarget"):
            trials.append((a, b, 1 if c == "target" else 0))
        elif a in ("0", "1"):
            trials.append((b, c, int(a)))
        else:
            raise DataError(f"{path}:{lineno}: cannot parse trial {line.strip()!r}: "
                            "expected 'enroll test target|nontarget' or '1|0 enroll test'")
    return trials


def write_trials(path: PathLike, trials: Iterable[Tuple[str, str, int]]) -> None:
    """Write a Kaldi-format trial list (``enroll test target|nontarget``), atomically."""
    with atomic_write(path, encoding="utf-8") as f:
        for a, b, lab in trials:
            f.write(f"{a} {b} {'target' if lab else 'nontarget'}\n")


def write_scores(path: PathLike, rows: Iterable[Tuple[str, str, float]]) -> None:
    """Write a score file (``enroll test score``, six decimals, Kaldi's format), atomically."""
    with atomic_write(path, encoding="utf-8") as f:
        f.write("".join(f"{a} {b} {float(s):.6f}\n" for a, b, s in rows))


def read_scores(path: PathLike) -> List[Tuple[str, str, float]]:
    """Read a score file (``enroll test score`` per line); a malformed line is named by number."""
    path = Path(path)
    rows: List[Tuple[str, str, float]] = []
    for lineno, line, parts in _nonblank_lines(path, "score file"):
        try:
            a, b, s = parts
            rows.append((a, b, float(s)))
        except ValueError:
            raise DataError(f"{path}:{lineno}: expected 'enroll test score', got {line.strip()!r}") from None
    return rows


def read_audio(path: PathLike, utt: Optional[str] = None) -> Tuple[np.ndarray, int]:
    """float32 samples ``[n]`` (mono) or ``[n, channels]`` and the sample rate, via soundfile;
    errors name ``utt`` (when given) and the file."""
    who = f"utterance '{utt}': " if utt else ""
    if not os.path.isfile(path):
        raise DataError(f"{who}audio file missing: {path}")
    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError on bad files
        raise DataError(f"{who}cannot read audio {path}: {e}") from None
    return (x[:, 0] if x.shape[1] == 1 else x), int(sr)


def load_yaml(path: PathLike, error=DataError):
    """``yaml.safe_load`` of a file; a syntax error becomes ``error`` naming the file, line and
    column and what is wrong (never a bare parser traceback)."""
    import yaml
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).strip().splitlines()[0]
        raise error(f"{where}: yaml syntax error: {problem}") from None
