"""Stage 3: speaker embeddings of every utterance of a set, written with kaldiio.

    python -m pysv.bin.extract --exp exp/<system> --data data/<set> [--mode full|crops|tta]
    python -m pysv.bin.extract ... --job J --nj N     # one of N parallel parts (steps/extract_embeddings.sh)
    python -m pysv.bin.extract ... --merge --nj N     # join the parts

Outputs in ``exp/<system>/embeddings/<set>/``, one name per mode so that the protocols never
overwrite each other:
  full   ``xvector.{ark,scp}`` (one 1-D float32 vector per utterance), ``spk_xvector.{ark,scp}``
         (speaker means), ``num_utts.ark`` (``spk count``) -- what cosine / PLDA / AS-norm score;
  crops  ``xvector_crops.{ark,scp}``: a ``[num_crops, D]`` matrix per utterance (MP-2021 §4.2);
  tta    ``xvector_tta.{ark,scp}``: the mean over sliding crops with ``overlap`` (RawNet2 §4.2).
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
from typing import Dict, List, Optional

import numpy as np

from pysv.utils import stage

log = logging.getLogger("pysv.extract")


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
    p.add_argument("--batch-seconds", type=float, default=None,
                   help="full mode: batch utterances of similar length, at most this much padded audio per "
                        "forward pass (0 = one utterance at a time; default: 120 on CUDA, 0 on CPU, where "
                        "padded batches measured slower than one utterance at a time: bench/extraction.py)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"],
                   help="autocast of the forward pass (default fp32: embeddings to float rounding; bf16 is "
                        "faster where native and changes them by ~1e-2 relative)")
    p.add_argument("--is-done", action="store_true",
                   help="exit 0 if the embeddings are complete for this model, data and protocol, 3 otherwise "
                        "(prints why; computes nothing)")
    p.add_argument("--force", action="store_true", help="recompute even if the outputs are complete")
    args = p.parse_args(argv)

    import torch
    from pysv.utils.io import DataError
    from pysv.utils.logging import setup_logging

    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        job = Job.plan(args)
        reason = None if args.force else stage.check(job.done, job.fingerprint)
        if args.is_done:
            print(f"{job.out}/{job.name}.scp: " + ("complete" if reason is None else f"not complete: {reason}"))
            return 0 if reason is None and not args.force else 3
        if reason is None:
            log.info("%s/%s.scp is complete for this model, data and protocol; skipping", job.out, job.name)
            return 0
        if args.merge:
            return job.merge(args.nj)
        log.info("%s/%s.scp: computing (%s)", job.out, job.name, reason)
        return job.run(args.job, args.nj, args.device, args.batch_seconds)
    except DataError as e:
        log.error("%s", e)
        return 2


class Job:
    """One set's embeddings under one protocol: what they depend on and where they go."""

    def __init__(self, exp: Path, data: Path, cfg: dict, proto: dict, model_epochs, precision: str = "fp32",
                 state: Optional[dict] = None):
        from pysv import models as model_lib
        from pysv.data.loader import features_dir
        from pysv.embed import archive_name
        self.exp, self.data, self.cfg, self.proto = exp, data, cfg, proto
        self.mode = proto["mode"]
        self.name = archive_name(self.mode)
        self.out = exp / "embeddings" / data.name
        self.done = self.out / f".done_{self.name}"
        self.split = self.out / f"split_{self.name}"
        self.kind = model_lib.input_kind(cfg["model"]["name"])
        self.source = Path(features_dir(str(data), cfg["data"]["feature"]) if self.kind == "features" else data)
        self.model_epochs = model_epochs
        self.precision = precision
        self.state = state  # the loaded final.pt: read once, for the fingerprint and the model
        table = self.source / ("feats.scp" if self.kind == "features" else "wav.scp")
        protocol = {"mode": self.mode} if self.mode == "full" else dict(proto)
        if self.mode == "crops":
            protocol.pop("overlap")
        elif self.mode == "tta":
            protocol.pop("num_crops")
        self.fingerprint = {"model": stage.file_signature(exp / "final.pt"),
                            "utt2spk": stage.file_signature(data / "utt2spk"),
                            "source": {"path": str(table.resolve()), **stage.file_signature(table)},
                            # stage 1's marker holds its options' fingerprint: recomputed features with
                            # other options change it even where feats.scp reads the same
                            "features": (stage.file_signature(self.source / ".done")
                                         if self.kind == "features" else None),
                            "protocol": protocol, "precision": precision}
        # batching (--batch-seconds) changes the embeddings by float rounding only: not fingerprinted

    @classmethod
    def plan(cls, args) -> "Job":
        from pysv.train import checkpoint
        from pysv.utils.io import DataError
        exp, data = Path(args.exp), Path(args.data)
        final = exp / "final.pt"
        if not final.is_file():
            raise DataError(f"missing trained model {final} (run stage 2 for this system)")
        if not (data / "utt2spk").is_file():
            raise DataError(f"missing {data / 'utt2spk'} (run stage 0 for this set)")
        state = checkpoint.load(final)
        cfg = checkpoint.config_from_state(state, final)
        from pysv.embed import resolve_protocol
        proto = resolve_protocol(cfg, args.mode, args.crop_len, args.num_crops, args.overlap)
        epochs = state.get("averaged_epochs") or []
        return cls(exp, data, cfg, proto, max(epochs) if epochs else None, getattr(args, "precision", "fp32"),
                   state)

    @property
    def utts(self) -> List[str]:
        """The set's utterances, sorted (as the reader orders them)."""
        from pysv.utils.io import read_table
        return sorted(read_table(self.source / "utt2spk"))

    def part(self, job: int, nj: int) -> stage.Part:
        """Job ``job`` of ``nj``: its utterances and its files in ``split_<name>/``."""
        return stage.Part.of(self.split, self.name, self.utts, job, nj)

    def run(self, job: int, nj: int, device_name: str, batch_seconds=None) -> int:
        """Embed part ``job`` of ``nj`` (0: the whole set, then :meth:`finish`)."""
        import torch
        from pysv.embed import UtteranceReader, default_batch_seconds, embed_utterances, units_per_second
        from pysv.train.checkpoint import encoder_from_state
        part = self.part(job, nj) if job else None
        if part:
            if stage.check(part.marker, part.fingerprint(self.fingerprint)) is None:
                log.info("part %d of %d complete; skipping", job, nj)
                return 0
            part.reset()
        device = torch.device("cuda" if device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
                              else "cpu")
        model = encoder_from_state(self.state, self.cfg, device)
        if batch_seconds is None:
            batch_seconds = default_batch_seconds(device)
        reader = UtteranceReader(self.source, kind=self.kind)
        p = self.proto
        emb = embed_utterances(model, reader, part.items if part else reader.utts, device, mode=self.mode,
                               crop_len=p["crop_len"], num_crops=p["num_crops"], overlap=p["overlap"], progress=True,
                               desc=f"{self.exp.name}:{self.data.name}:{self.mode}",
                               batch_frames=int(units_per_second(self.cfg, self.kind) * batch_seconds),
                               precision=self.precision)
        if part:
            outputs = stage.write_ark(part.ark, part.scp, sorted(emb.items()))
            stage.write(part.marker, part.fingerprint(self.fingerprint), outputs=outputs, utterances=len(emb))
            return 0
        stage.write_ark(self.out / f"{self.name}.ark", self.out / f"{self.name}.scp", sorted(emb.items()))
        self.finish(emb)
        return 0

    def merge(self, nj: int) -> int:
        """Join the ``nj`` complete parts (their arks byte for byte), then :meth:`finish`."""
        import kaldiio
        parts = [self.part(job, nj) for job in range(1, nj + 1)]
        stage.require_complete(parts, self.fingerprint, what=f"{self.out}/{self.name}.scp")
        scp = self.out / f"{self.name}.scp"
        stage.merge(parts, scp, ark=self.out / f"{self.name}.ark", keys=self.utts)
        self.finish({k: np.asarray(v) for k, v in kaldiio.load_scp(str(scp)).items()})
        shutil.rmtree(self.split, ignore_errors=True)
        return 0

    def finish(self, emb: Dict[str, np.ndarray]) -> None:
        """Speaker means (full mode), then the marker -- only when every utterance of utt2spk has
        its embedding."""
        from pysv.utils.io import DataError, atomic_write, read_table
        utt2spk = read_table(self.data / "utt2spk")
        missing = sorted(set(utt2spk) - set(emb))
        if missing or len(emb) != len(utt2spk):
            extra = sorted(set(emb) - set(utt2spk))
            raise DataError(f"{self.out}/{self.name}.scp: {len(emb)} embeddings for the {len(utt2spk)} utterances "
                            f"of {self.data / 'utt2spk'} (missing e.g. {missing[:3]}, unexpected {extra[:3]}); "
                            "not marked complete")
        outputs = [self.out / f"{self.name}.ark", self.out / f"{self.name}.scp"]
        if self.mode == "full":
            spk: Dict[str, List[np.ndarray]] = {}
            for utt, vec in emb.items():
                spk.setdefault(utt2spk[utt], []).append(vec)
            stage.write_ark(self.out / "spk_xvector.ark", self.out / "spk_xvector.scp",
                            sorted((s, np.mean(v, axis=0)) for s, v in spk.items()))
            with atomic_write(self.out / "num_utts.ark") as f:
                for s in sorted(spk):
                    f.write(f"{s} {len(spk[s])}\n")
            outputs += [self.out / "spk_xvector.ark", self.out / "spk_xvector.scp", self.out / "num_utts.ark"]
        stage.write(self.done, self.fingerprint, outputs=outputs, utterances=len(emb),
                    model_epochs=self.model_epochs)
        log.info("wrote %d embeddings to %s/%s.scp (model of epoch %s)", len(emb), self.out, self.name,
                 self.model_epochs)


if __name__ == "__main__":
    sys.exit(main())
