"""EER of a test set scored with the exported ONNX graph against the PyTorch model (cosine).

    python bench/export_eer.py --model exp/thin_resnet34_angleproto --data data/mini_test

Exports the run's encoder with its front end (``pysv.export.export_onnx``), embeds every utterance
of ``<data>/wav.scp`` with onnxruntime and with ``pysv.load(model).embed``, scores ``<data>/trials``
by cosine both ways and prints the two EERs, their difference and the smallest embedding cosine.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="exp/<system> or a bundle")
    p.add_argument("--data", required=True, help="Kaldi data dir with wav.scp and trials")
    args = p.parse_args()
    import onnxruntime as ort
    import soundfile as sf

    import pysv
    from pysv import export
    from pysv.backend import cosine_trial_scores
    from pysv.metrics import compute_eer
    from pysv.utils.io import read_table, read_trials

    model = pysv.load(args.model)
    wavs = read_table(Path(args.data) / "wav.scp")
    trials = read_trials(Path(args.data) / "trials")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export.export_onnx(model.encoder, model.cfg, path)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        onnx_emb, torch_emb = {}, {}
        for utt, wav in sorted(wavs.items()):
            x, _ = sf.read(wav, dtype="float32")
            onnx_emb[utt] = sess.run(None, {name: x[None]})[0][0]
            torch_emb[utt] = model.embed(x)
    labels = np.array([t for *_, t in trials])
    eer_onnx = compute_eer(cosine_trial_scores(onnx_emb, trials), labels)[0]
    eer_torch = compute_eer(cosine_trial_scores(torch_emb, trials), labels)[0]
    cos = min(float(onnx_emb[u] @ torch_emb[u] / np.linalg.norm(onnx_emb[u]) / np.linalg.norm(torch_emb[u]))
              for u in wavs)
    print(f"{model.system} on {args.data} ({len(trials)} trials, {len(wavs)} utterances): cosine EER "
          f"PyTorch {eer_torch:.3f} %, ONNX {eer_onnx:.3f} %, difference {abs(eer_onnx - eer_torch):.4f}; "
          f"lowest embedding cosine {cos:.7f}")


if __name__ == "__main__":
    main()
