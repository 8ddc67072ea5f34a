"""Kaldi file formats the back-end exchanges with Kaldi binaries.

* Vectors / matrices (``mean.vec``, ``transform.mat``): Kaldi's binary (``\\0B`` + ``FV``/``FM``)
  or text (``[ ... ]``) format, through kaldiio; readable by ``ivector-subtract-global-mean``,
  ``transform-vec`` and written as ``ivector-mean`` / ``ivector-compute-lda`` write them.
* The PLDA model (``plda``): ``<Plda> mean transform psi </Plda>`` with double-precision members,
  binary (``\\0B<Plda> DV ... DM ... DV ... </Plda> ``) or text, exactly as ``Plda::Write``
  writes it, so ``ivector-plda-scoring`` / ``ivector-copy-plda`` read ours and we read theirs.
* Embedding archives ``xvector.scp`` (1-D float vectors) and ``xvector_crops.scp`` (matrices),
  ``num_utts.ark`` (text ``spk count``), and :func:`archive_signature`, what a stage reading an
  archive fingerprints.
"""
from __future__ import annotations

import io
import re
import struct
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import kaldiio
import numpy as np
from tqdm import tqdm

from pysv.utils.io import DataError, atomic_path, read_table
from pysv.utils.stage import file_signature

PathLike = Union[str, Path]

__all__ = [
    "read_kaldi_vector", "read_kaldi_matrix", "write_kaldi_vector", "write_kaldi_matrix",
    "read_plda_file", "write_plda_file", "load_embeddings", "load_crops", "read_num_utts",
    "archive_signature",
]


# --------------------------------------------------------------------------- vectors / matrices
def _load_mat(path: PathLike):
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing file: {path}")
    try:
        return kaldiio.load_mat(str(path))
    except Exception as e:  # kaldiio raises several types for malformed files
        raise DataError(f"{path}: cannot read as a Kaldi vector/matrix: {e}") from e


def read_kaldi_vector(path: PathLike) -> np.ndarray:
    """Read a Kaldi vector (binary or text) as float64."""
    a = np.asarray(_load_mat(path), dtype=np.float64)
    if a.ndim != 1:
        raise DataError(f"{path}: expected a Kaldi vector, found an array of shape {a.shape}")
    return a


def read_kaldi_matrix(path: PathLike) -> np.ndarray:
    """Read a Kaldi matrix (binary or text) as float64."""
    a = np.asarray(_load_mat(path), dtype=np.float64)
    if a.ndim != 2:
        raise DataError(f"{path}: expected a Kaldi matrix, found an array of shape {a.shape}")
    return a


def _text_vector(v: np.ndarray) -> str:
    return " [ " + "".join(f"{x!r} " for x in v.tolist()) + "]\n"


def _text_matrix(m: np.ndarray) -> str:
    if m.shape[1] == 0 or m.shape[0] == 0:
        return " [ ]\n"
    rows = "".join("\n  " + "".join(f"{x!r} " for x in row) for row in m.tolist())
    return " [" + rows + "]\n"


def write_kaldi_vector(path: PathLike, v, binary: bool = True, dtype=np.float32) -> None:
    """Write a Kaldi vector (``FV`` for float32, ``DV`` for float64) atomically."""
    v = np.asarray(v, dtype=dtype).ravel()
    with atomic_path(path) as tmp:
        if binary:
            kaldiio.save_mat(str(tmp), v)
        else:
            Path(tmp).write_text(_text_vector(v))


def write_kaldi_matrix(path: PathLike, m, binary: bool = True, dtype=np.float32) -> None:
    """Write a Kaldi matrix (``FM`` for float32, ``DM`` for float64) atomically."""
    m = np.asarray(m, dtype=dtype)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {m.shape}")
    with atomic_path(path) as tmp:
        if binary:
            kaldiio.save_mat(str(tmp), np.ascontiguousarray(m))
        else:
            Path(tmp).write_text(_text_matrix(m))


# --------------------------------------------------------------------------- PLDA object
def _bin_token(f: io.BufferedIOBase, path) -> str:
    out = bytearray()
    while True:
        c = f.read(1)
        if not c:
            raise DataError(f"{path}: unexpected end of file while reading a token")
        if c == b" ":
            if out:
                return out.decode("ascii", errors="replace")
            continue
        out += c


def _bin_int32(f, path) -> int:
    size = f.read(1)
    if size != b"\x04":
        raise DataError(f"{path}: expected a 4-byte integer, found size byte {size!r}")
    return struct.unpack("<i", f.read(4))[0]


def _bin_array(f, path, expect_matrix: bool) -> np.ndarray:
    tok = _bin_token(f, path)
    kinds = {"FV": (np.float32, False), "DV": (np.float64, False),
             "FM": (np.float32, True), "DM": (np.float64, True)}
    if tok not in kinds or kinds[tok][1] != expect_matrix:
        raise DataError(f"{path}: expected a Kaldi {'matrix' if expect_matrix else 'vector'}, "
                        f"found token {tok!r}")
    dtype, _ = kinds[tok]
    if expect_matrix:
        rows, cols = _bin_int32(f, path), _bin_int32(f, path)
        n = rows * cols
    else:
        rows, cols = _bin_int32(f, path), None
        n = rows
    data = f.read(n * np.dtype(dtype).itemsize)
    if len(data) != n * np.dtype(dtype).itemsize:
        raise DataError(f"{path}: truncated data in a Kaldi {tok} object")
    a = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).astype(np.float64)
    return a.reshape(rows, cols) if expect_matrix else a


def _text_parse_plda(text: str, path) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    toks = re.findall(r"\n|[^\s]+", text)
    pos = 0

    def skip_nl():
        nonlocal pos
        while pos < len(toks) and toks[pos] == "\n":
            pos += 1

    def expect(tok):
        nonlocal pos
        skip_nl()
        if pos >= len(toks) or toks[pos] != tok:
            found = toks[pos] if pos < len(toks) else "end of file"
            raise DataError(f"{path}: expected {tok!r}, found {found!r}")
        pos += 1

    def vector():
        nonlocal pos
        expect("[")
        vals = []
        while True:
            skip_nl()
            if pos >= len(toks):
                raise DataError(f"{path}: unterminated vector")
            if toks[pos] == "]":
                pos += 1
                return np.array(vals, dtype=np.float64)
            vals.append(float(toks[pos]))
            pos += 1

    def matrix():
        nonlocal pos
        expect("[")
        rows, cur = [], []
        while True:
            if pos >= len(toks):
                raise DataError(f"{path}: unterminated matrix")
            t = toks[pos]
            pos += 1
            if t == "\n":
                if cur:
                    rows.append(cur)
                    cur = []
            elif t == "]":
                if cur:
                    rows.append(cur)
                break
            else:
                cur.append(float(t))
        if len({len(r) for r in rows}) > 1:
            raise DataError(f"{path}: matrix rows have different lengths")
        return np.array(rows, dtype=np.float64).reshape(len(rows), len(rows[0]) if rows else 0)

    expect("<Plda>")
    mean = vector()
    transform = matrix()
    psi = vector()
    expect("</Plda>")
    return mean, transform, psi


def read_plda_file(path: PathLike) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a Kaldi PLDA model (binary or text): returns ``(mean, transform, psi)``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing PLDA model: {path}")
    raw = path.read_bytes()
    if raw.startswith(b"\x00B"):
        f = io.BytesIO(raw[2:])
        tok = _bin_token(f, path)
        if tok != "<Plda>":
            raise DataError(f"{path}: not a Kaldi PLDA model (first token {tok!r})")
        mean = _bin_array(f, path, False)
        transform = _bin_array(f, path, True)
        psi = _bin_array(f, path, False)
        tok = _bin_token(f, path)
        if tok != "</Plda>":
            raise DataError(f"{path}: expected '</Plda>', found {tok!r}")
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not a Kaldi PLDA model (neither binary nor text)") from e
        try:
            mean, transform, psi = _text_parse_plda(text, path)
        except ValueError as e:
            if isinstance(e, DataError):
                raise
            raise DataError(f"{path}: malformed text PLDA model: {e}") from e
    d = mean.size
    if transform.shape != (d, d) or psi.shape != (d,):
        raise DataError(f"{path}: inconsistent PLDA dimensions: mean {mean.shape}, "
                        f"transform {transform.shape}, psi {psi.shape}")
    return mean, transform, psi


def write_plda_file(path: PathLike, mean, transform, psi, binary: bool = True) -> None:
    """Write a Kaldi PLDA model as ``Plda::Write`` does (double precision), atomically."""
    mean = np.asarray(mean, dtype="<f8").ravel()
    transform = np.ascontiguousarray(np.asarray(transform, dtype="<f8"))
    psi = np.asarray(psi, dtype="<f8").ravel()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            if binary:
                i32 = lambda n: b"\x04" + struct.pack("<i", int(n))  # noqa: E731
                f.write(b"\x00B<Plda> ")
                f.write(b"DV " + i32(mean.size) + mean.tobytes())
                f.write(b"DM " + i32(transform.shape[0]) + i32(transform.shape[1]) + transform.tobytes())
                f.write(b"DV " + i32(psi.size) + psi.tobytes())
                f.write(b"</Plda> ")
            else:
                f.write(("<Plda> " + _text_vector(mean) + _text_matrix(transform)
                         + _text_vector(psi) + "</Plda> ").encode())


# --------------------------------------------------------------------------- archives
def _iter_scp(scp: Path):
    try:
        yield from kaldiio.load_scp_sequential(str(scp))
    except FileNotFoundError as e:
        raise DataError(f"{scp}: an archive it names is missing: {e.filename or e}") from e
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{scp}: cannot read the archive: {e}") from e


def archive_signature(scp: PathLike) -> Dict[str, Any]:
    """:func:`pysv.utils.stage.file_signature` of an scp and of every ark file it names."""
    scp = Path(scp)
    arks = set()
    if scp.is_file():
        with open(scp, encoding="utf-8") as f:
            for line in f:
                parts = line.split(maxsplit=1)
                if len(parts) == 2:
                    arks.add(re.sub(r":\d+$", "", parts[1].strip()))
    return {"scp": file_signature(scp), "ark": {a: file_signature(a) for a in sorted(arks)}}


def load_embeddings(scp: PathLike, keys: Optional[Iterable[str]] = None, what: str = "embedding",
                    progress: bool = True) -> Tuple[List[str], np.ndarray]:
    """Load 1-D vectors from a kaldiio ``scp`` as ``(keys, float32 [N, D])``.

    ``keys`` restricts loading to those entries (others are skipped without reading the data
    when the scp is read sequentially). Vectors with NaN/inf or a different dimension are
    rejected with a :class:`DataError` naming the utterance.
    """
    scp = Path(scp)
    if not scp.is_file():
        raise DataError(f"missing {what} list: {scp}")
    wanted = set(keys) if keys is not None else None
    out_keys: List[str] = []
    rows: List[np.ndarray] = []
    dim = None
    seen = set()
    it = _iter_scp(scp) if wanted is None else _iter_scp_subset(scp, wanted)
    for key, v in tqdm(it, desc=f"loading {scp}", unit="vec", disable=None if progress else True,
                       leave=False):
        v = np.asarray(v)
        if v.ndim == 2 and 1 in v.shape:
            v = v.ravel()
        if v.ndim != 1:
            raise DataError(f"{scp}: {what} of '{key}' has shape {v.shape}, expected a vector")
        if dim is None:
            dim = v.shape[0]
        elif v.shape[0] != dim:
            raise DataError(f"{scp}: {what} of '{key}' has dimension {v.shape[0]}, expected {dim}")
        if not np.isfinite(v).all():
            raise DataError(f"{scp}: {what} of '{key}' contains NaN or infinite values")
        if key in seen:
            raise DataError(f"{scp}: duplicate key '{key}'")
        seen.add(key)
        out_keys.append(key)
        rows.append(v.astype(np.float32, copy=False))
    if not rows:
        raise DataError(f"{scp}: no {what}s found" + (" for the requested keys" if wanted else ""))
    return out_keys, np.stack(rows)


def _iter_scp_subset(scp: Path, wanted: set):
    """Read only the scp lines whose key is wanted (keeps the archive open between reads)."""
    lines = []
    with open(scp, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split(maxsplit=1)
            if not parts:
                continue
            if len(parts) != 2:
                raise DataError(f"{scp}:{lineno}: malformed line {line.strip()!r}")
            if parts[0] in wanted:
                lines.append(line)
    if not lines:
        return
    buf = io.StringIO("".join(lines))
    try:
        yield from kaldiio.load_scp_sequential(buf)
    except FileNotFoundError as e:
        raise DataError(f"{scp}: an archive it names is missing: {e.filename or e}") from e
    except Exception as e:
        raise DataError(f"{scp}: cannot read the archive: {e}") from e


def load_crops(scp: PathLike, keys: Optional[Iterable[str]] = None,
               progress: bool = True) -> Tuple[List[str], np.ndarray]:
    """Load per-utterance crop embeddings ``[K, D]`` (xvector_crops.scp) as ``[N, K, D]`` float32."""
    scp = Path(scp)
    if not scp.is_file():
        raise DataError(f"missing crop-embedding list: {scp}")
    wanted = set(keys) if keys is not None else None
    it = _iter_scp(scp) if wanted is None else _iter_scp_subset(scp, wanted)
    out_keys, mats, shape = [], [], None
    for key, m in tqdm(it, desc=f"loading {scp}", unit="utt", disable=None if progress else True,
                       leave=False):
        m = np.asarray(m)
        if m.ndim != 2:
            raise DataError(f"{scp}: crops of '{key}' have shape {m.shape}, expected [crops, dim]")
        if shape is None:
            shape = m.shape
        elif m.shape != shape:
            raise DataError(f"{scp}: crops of '{key}' have shape {m.shape}, expected {shape} "
                            "(every utterance must have the same number of crops)")
        if not np.isfinite(m).all():
            raise DataError(f"{scp}: crops of '{key}' contain NaN or infinite values")
        out_keys.append(key)
        mats.append(m.astype(np.float32, copy=False))
    if not mats:
        raise DataError(f"{scp}: no crop embeddings found")
    return out_keys, np.stack(mats)


def read_num_utts(path: PathLike) -> Dict[str, int]:
    """Read ``num_utts.ark`` (text ``spk count``)."""
    table = read_table(path)
    out = {}
    for spk, val in table.items():
        try:
            n = int(val)
        except ValueError as e:
            raise DataError(f"{path}: count of speaker '{spk}' is not an integer: {val!r}") from e
        if n <= 0:
            raise DataError(f"{path}: count of speaker '{spk}' must be positive, got {n}")
        out[spk] = n
    return out
