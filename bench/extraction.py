"""Embedding extraction throughput (stage 3's ``pysv.embed.embed_utterances``), one process.

    python bench/extraction.py [--systems thin_resnet34_angleproto,...] [--utts 48] [--rounds 3]
                               [--device auto|cpu|cuda] [--batch-seconds 120]

For each system's encoder (random weights; speed does not depend on them) and ``--utts`` generated
utterances of 2-8 s (features of the system's dim, or waveforms), it alternates, round by round,
one-utterance-at-a-time extraction (``batch_frames=0``) with length-batched extraction (at most
``--batch-seconds`` of padded audio per forward pass), each in fp32 and in bf16 autocast, and prints
utterances/s (median over rounds) and the ratio against one-at-a-time fp32.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SYSTEMS = ["thin_resnet34_angleproto", "xvector_softmax", "saep_amsoftmax",
           "mla_resnet34_mla_sap_fr_dln_softmax", "rawnet2_mul_add_softmax"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--utts", type=int, default=48)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-seconds", type=float, default=120.0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = p.parse_args()
    from pysv import models
    from pysv.embed import embed_utterances
    from pysv.train.config import load_config
    from pysv.train import precision as precision_lib

    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    bf16 = precision_lib.resolve("auto", device) == "bf16"
    print(f"device {device}, torch threads {torch.get_num_threads()}, {args.utts} utterances of 2-8 s, "
          f"batches of <= {args.batch_seconds:.0f} s padded audio, {args.rounds} alternating rounds"
          + ("" if bf16 else " (no native bf16 on this device: bf16 rows emulated)"))
    print("| system | one at a time fp32 utt/s | batched fp32 | batched bf16 | one at a time bf16 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    rng = np.random.default_rng(0)
    for system in args.systems.split(","):
        cfg = load_config(str(REPO / "conf" / f"{system}.yaml"))
        torch.manual_seed(0)
        model = models.build(cfg["model"]["name"], **cfg["model"]["hparams"]).to(device)
        seconds = rng.uniform(2.0, 8.0, args.utts)
        if model.input_kind == "waveform":
            per_s = 16000
            arrays = {f"u{i:03d}": (0.1 * rng.standard_normal(int(s * per_s))).astype(np.float32)
                      for i, s in enumerate(seconds)}
        else:
            per_s = 100
            arrays = {f"u{i:03d}": rng.standard_normal((int(s * per_s), model.feat_dim)).astype(np.float32)
                      for i, s in enumerate(seconds)}
        utts = sorted(arrays)
        variants = {"one32": (0, "fp32"), "bat32": (int(args.batch_seconds * per_s), "fp32"),
                    "bat16": (int(args.batch_seconds * per_s), "bf16"), "one16": (0, "bf16")}
        rates = {k: [] for k in variants}
        for k, (frames, prec) in variants.items():  # warm-up
            embed_utterances(model, arrays.__getitem__, utts[:4], device, batch_frames=frames, precision=prec)
        for _ in range(args.rounds):
            for k, (frames, prec) in variants.items():
                t0 = time.perf_counter()
                embed_utterances(model, arrays.__getitem__, utts, device, batch_frames=frames, precision=prec)
                rates[k].append(len(utts) / (time.perf_counter() - t0))
        med = {k: float(np.median(v)) for k, v in rates.items()}
        base = med["one32"]
        print(f"| {system} | {base:.1f} | {med['bat32']:.1f} ({med['bat32'] / base:.2f}x) | "
              f"{med['bat16']:.1f} ({med['bat16'] / base:.2f}x) | {med['one16']:.1f} ({med['one16'] / base:.2f}x) |",
              flush=True)


if __name__ == "__main__":
    main()
