"""Real-time factor of ``pysv.load(...).embed`` on one CPU thread, PyTorch and ONNX Runtime.

    python bench/inference.py [--systems thin_resnet34_angleproto,...] [--seconds 10] [--rounds 5]

For each system (its config's encoder with random weights, written as a run directory so that
``pysv.load`` opens it as it would a trained one) it embeds a generated ``--seconds`` waveform:
``SpeakerModel.embed`` (features + encoder, full-utterance protocol) and, where ``pysv.export`` can
export the encoder, the ONNX graph with the front end inside under onnxruntime. Both run on one
thread, interleaved round by round; the median time over ``--rounds`` divided by the audio length
is the RTF (lower is faster).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SYSTEMS = ["thin_resnet34_angleproto", "xvector_softmax", "saep_amsoftmax",
           "mla_resnet34_mla_sap_fr_dln_softmax", "rawnet2_mul_add_softmax"]


def _run_dir(system: str, root: Path) -> Path:
    from pysv import models
    from pysv.train import checkpoint
    from pysv.train.config import load_config, save_config
    cfg = load_config(str(REPO / "conf" / f"{system}.yaml"))
    cfg["model"]["hparams"] = models.resolve_hparams(cfg["model"]["name"], cfg["model"]["hparams"])
    enc = models.build(cfg["model"]["name"], **cfg["model"]["hparams"])
    exp = root / system
    exp.mkdir(parents=True)
    save_config(cfg, exp / "config.yaml")
    checkpoint.save({"model": enc.state_dict(), "config": checkpoint.config_to_text(cfg)}, exp / "final.pt")
    return exp


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    import pysv
    torch.set_num_threads(1)
    try:
        import onnxruntime as ort

        from pysv import export
    except ImportError as e:  # the ONNX column needs pysv.export and onnxruntime
        ort, export = None, None
        print(f"(ONNX column skipped: {e})")
    rng = np.random.default_rng(0)
    print("| system | PyTorch RTF (1 thread) | ONNX Runtime RTF (1 thread) | ratio |\n| --- | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for system in args.systems.split(","):
            exp = _run_dir(system, Path(tmp))
            model = pysv.load(exp)
            x = (0.1 * rng.standard_normal(int(args.seconds * model.sample_rate))).astype(np.float32)
            sess = None
            if export is not None:
                try:
                    from pysv.train.checkpoint import load_encoder
                    enc, cfg = load_encoder(exp)
                    path = Path(tmp) / f"{system}.onnx"
                    export.export_onnx(enc, cfg, path)
                    opts = ort.SessionOptions()
                    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
                    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
                    name = sess.get_inputs()[0].name
                except Exception as e:  # report, keep the PyTorch column
                    print(f"({system}: ONNX export failed: {type(e).__name__}: {e})")
            model.embed(x)  # warm-up
            if sess is not None:
                sess.run(None, {name: x[None]})
            t_pt, t_ox = [], []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                model.embed(x)
                t_pt.append(time.perf_counter() - t0)
                if sess is not None:
                    t0 = time.perf_counter()
                    sess.run(None, {name: x[None]})
                    t_ox.append(time.perf_counter() - t0)
            rtf_pt = float(np.median(t_pt)) / args.seconds
            rtf_ox = float(np.median(t_ox)) / args.seconds if t_ox else float("nan")
            print(f"| {system} | {rtf_pt:.4f} | {rtf_ox:.4f} | {rtf_pt / rtf_ox:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
