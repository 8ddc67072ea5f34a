"""Stage 3: speaker embeddings of every utterance of a set, written with kaldiio.

    python -m pysv.bin.extract --exp exp/<system> --data data/<set> [--mode full|crops|tta]
    python -m pysv.bin.extract ... --job J --nj N     # one of N parallel parts (steps/extract_embeddings.sh)
    python -m pysv.bin.extract ... --merge --nj N     # join the parts

Outputs in ``exp/<system>/embeddings/<set>/``, one name per mode so that the protocols never
overwrite each other:
  full   ``xvector.{ark,scp}`` (one 1-D float32 vector per utterance), ``spk_xvector.{ark,scp}``
         (speaker means), ``num_utts.ark`` (``spk count``) -- what cosine / PLDA / AS-norm score;
  crops  ``xvector_crops.{ark,scp}``: a ``[num_crops, D]`` matrix per utterance (seed 000 §4.2);
  tta    ``xvector_tta.{ark,scp}``: the mean over sliding crops with ``overlap`` (seed 004 §4.2).
The defaults of ``--crop-len``, ``--num-crops`` and ``--overlap`` come from the system's
``extract:`` block in ``exp/<system>/config.yaml`` (its ``mode`` is what run.sh extracts besides
full). Feature systems read
``data/<set>_<feature>/feats.scp`` (stage 1), waveform systems ``data/<set>/wav.scp``.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

log = logging.getLogger("pysv.extract")


def out_name(mode: str) -> str:
    """Base name of the embedding archive of ``mode`` (full: ``xvector``, else ``xvector_<mode>``)."""
    return "xvector" if mode == "full" else f"xvector_{mode}"


def resolve_protocol(cfg: dict, mode=None, crop_len=None, num_crops=None, overlap=None) -> dict:
    """The test protocol: explicit arguments over the config's ``extract:`` block (crop null =
    the training crop ``data.crop``); ``mode`` None = the config's mode."""
    ex = cfg.get("extract") or {}
    mode = ex.get("mode", "full") if mode is None else mode
    return {"mode": mode,
            "crop_len": int(crop_len or ex.get("crop") or cfg["data"]["crop"]),
            "num_crops": int(num_crops or ex.get("num_crops", 10)),
            "overlap": float(ex.get("overlap", 0.2) if overlap is None else overlap)}


def split_utts(utts: List[str], nj: int, job: int) -> List[str]:
    """The job-th (1-based) of nj contiguous parts of the sorted utterance list."""
    n = len(utts)
    lo, hi = (job - 1) * n // nj, job * n // nj
    return utts[lo:hi]


def write_vectors(path_prefix: Path, vectors: Dict[str, np.ndarray]) -> None:
    """Write ``<prefix>.ark`` + ``<prefix>.scp`` (sorted keys) atomically; the scp names the final ark."""
    import kaldiio
    from pysv.utils.io import atomic_path
    ark = Path(f"{path_prefix}.ark")
    scp = Path(f"{path_prefix}.scp")
    with atomic_path(ark) as tmp_ark, atomic_path(scp) as tmp_scp:
        with kaldiio.WriteHelper(f"ark,scp:{tmp_ark},{tmp_scp}") as w:
            for key in sorted(vectors):
                w(key, np.asarray(vectors[key], dtype=np.float32))
        text = Path(tmp_scp).read_text().replace(str(tmp_ark), str(ark.resolve()))
        Path(tmp_scp).write_text(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp", required=True, help="experiment dir with final.pt (stage 2)")
    p.add_argument("--data", required=True, help="Kaldi data dir of the set, e.g. data/mini_test")
    p.add_argument("--mode", default="full", choices=["full", "crops", "tta"],
                   help="full (default), crops or tta; a system's own protocol is extract.mode in its config")
    p.add_argument("--num-crops", type=int, default=0, help="crops per utterance in --mode crops (0 = config)")
    p.add_argument("--crop-len", type=int, default=0,
                   help="crop length (frames/samples); 0 = config extract.crop, else the training crop")
    p.add_argument("--overlap", type=float, default=None, help="crop overlap in --mode tta (default: config)")
    p.add_argument("--job", type=int, default=0, help="1-based part index (with --nj)")
    p.add_argument("--nj", type=int, default=1)
    p.add_argument("--merge", action="store_true", help="merge the --nj parts")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)

    import torch
    from pysv.embed import UtteranceReader, embed_utterances
    from pysv.train.trainer import features_dir, load_encoder
    from pysv.utils.io import DataError, is_complete, mark_complete
    from pysv.utils.logging import setup_logging

    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    exp = Path(args.exp)
    set_name = Path(args.data).name
    out = exp / "embeddings" / set_name
    name = out_name(args.mode)
    done = out / f".done_{name}"
    if is_complete(done):
        log.info("%s/%s.scp is complete; skipping", out, name)
        return 0
    split = out / f"split_{name}"
    try:
        if args.merge:
            return merge(out, split, name, args.nj, args.data, done)
        device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu")
        model, cfg = load_encoder(exp, device)
        from pysv import models as model_lib
        kind = model_lib.input_kind(cfg["model"]["name"])
        data_dir = features_dir(args.data, cfg["data"]["feature"]) if kind == "features" else args.data
        reader = UtteranceReader(data_dir, kind=kind)
        utts = reader.utts
        part = f".{args.job}" if args.job else ""
        prefix = (split / f"{name}{part}") if args.job else (out / name)
        if args.job:
            utts = split_utts(utts, args.nj, args.job)
            if (split / f".done{part}").is_file():
                log.info("part %d of %d complete; skipping", args.job, args.nj)
                return 0
        proto = resolve_protocol(cfg, args.mode, args.crop_len, args.num_crops, args.overlap)
        emb = embed_utterances(model, reader, utts, device, mode=args.mode, crop_len=proto["crop_len"],
                               num_crops=proto["num_crops"], overlap=proto["overlap"], progress=True,
                               desc=f"{exp.name}:{set_name}:{args.mode}")
        write_vectors(prefix, emb)
        if args.job:
            mark_complete(split / f".done{part}")
            return 0
        finish(out, name, emb, args.data, done)
    except DataError as e:
        log.error("%s", e)
        return 2
    return 0


def merge(out: Path, split: Path, name: str, nj: int, data: str, done: Path) -> int:
    import kaldiio
    from pysv.utils.io import DataError
    emb: Dict[str, np.ndarray] = {}
    for j in range(1, nj + 1):
        scp = split / f"{name}.{j}.scp"
        if not (split / f".done.{j}").is_file():
            raise DataError(f"extraction part {j} of {nj} is incomplete: {scp}")
        for k, v in kaldiio.load_scp(str(scp)).items():
            emb[k] = np.asarray(v)
    write_vectors(out / name, emb)
    finish(out, name, emb, data, done)
    shutil.rmtree(split, ignore_errors=True)
    return 0


def finish(out: Path, name: str, emb: Dict[str, np.ndarray], data: str, done: Path) -> None:
    from pysv.utils.io import atomic_write, mark_complete, read_table
    if name == "xvector":
        utt2spk = read_table(Path(data) / "utt2spk")
        spk: Dict[str, List[np.ndarray]] = {}
        for utt, vec in emb.items():
            spk.setdefault(utt2spk[utt], []).append(vec)
        write_vectors(out / "spk_xvector", {s: np.mean(v, axis=0) for s, v in spk.items()})
        with atomic_write(out / "num_utts.ark") as f:
            for s in sorted(spk):
                f.write(f"{s} {len(spk[s])}\n")
    mark_complete(done, f"{len(emb)} utterances\n")
    log.info("wrote %d embeddings to %s/%s.scp", len(emb), out, name)


if __name__ == "__main__":
    sys.exit(main())
