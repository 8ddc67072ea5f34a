"""The ``pysv`` command: use a trained system (``exp/<system>`` or an exported bundle).

    pysv embed  --model M a.wav [b.wav ...]                   # one line per file: path and embedding
    pysv embed  --model M --wav-scp S --out ark,scp:emb.ark,emb.scp
    pysv verify --model M a.wav b.wav                         # score and accept/reject decision
    pysv score  --model M --wav-scp S --trials T --out scores [--backend plda]
    pysv export --model M --format bundle|torchscript|onnx --out P

Every sub-command takes ``--device`` (cpu, cuda, ...) and ``--resample`` (audio at another sample
rate is refused otherwise); ``--channel N`` picks a channel of multi-channel audio.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from pysv.utils.cli import run_cli
from pysv.utils.io import DataError, read_table, read_trials, write_scores

log = logging.getLogger("pysv.cli")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="exp/<system> (after stages 2-5) or an exported bundle")
    p.add_argument("--device", default="cpu")
    p.add_argument("--resample", action="store_true", help="resample audio at another rate (else refused)")
    p.add_argument("--channel", type=int, default=None, help="channel of multi-channel audio")
    p.add_argument("--vad", default=None, choices=("energy",),
                   help="keep only voiced frames (Kaldi compute-vad; for models trained with run.sh --vad energy)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pysv", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("embed", help="embeddings of audio files", description="Embeddings of audio files.")
    _common(e)
    e.add_argument("wavs", nargs="*", help="audio files")
    e.add_argument("--wav-scp", help="Kaldi wav.scp (utterance-id path) instead of files")
    e.add_argument("--out", help="ark,scp:<ark>,<scp> to write (default: text lines on stdout)")
    e.add_argument("--mode", default="full", choices=("full", "crops", "tta"), help="embedding protocol")
    v = sub.add_parser("verify", help="score two recordings and decide", description="Score two recordings "
                       "and decide at the stored threshold (calibration, else the EER threshold).")
    _common(v)
    v.add_argument("a")
    v.add_argument("b")
    s = sub.add_parser("score", help="score a trial list", description="Score a trial list of a wav.scp.")
    _common(s)
    s.add_argument("--wav-scp", required=True)
    s.add_argument("--trials", required=True, help="trial list: enroll test [target|nontarget|1|0]")
    s.add_argument("--out", required=True, help="score file: enroll test score")
    s.add_argument("--backend", default=None, help="back-end (default: the best of the run's results)")
    x = sub.add_parser("export", help="export the model", description="Export a bundle (self-contained "
                       "directory), or a TorchScript / ONNX graph that takes a waveform [1, samples].")
    x.add_argument("--model", required=True)
    x.add_argument("--format", required=True, choices=("bundle", "torchscript", "onnx"))
    x.add_argument("--out", required=True)
    return p


def _wav_scp(path: str) -> dict:
    table = read_table(path)
    bad = [u for u, p in table.items() if p.rstrip().endswith("|")]
    if bad:
        raise DataError(f"{path}: utterance '{bad[0]}' is a command (pipe); pysv reads audio files only")
    return table


def _parse_wspecifier(spec: str):
    if not spec.startswith("ark,scp:") or spec.count(",") != 2:
        raise DataError(f"--out {spec!r}: expected ark,scp:<file.ark>,<file.scp>")
    ark, scp = spec[len("ark,scp:"):].split(",")
    return ark, scp


def run(args: argparse.Namespace) -> int:
    from pysv.inference import load, write_bundle
    from pysv.utils.stage import write_ark

    if args.command == "export":
        model = load(args.model)
        if args.format == "bundle":
            write_bundle(model, args.out)
        else:
            from pysv import export
            fn = export.export_onnx if args.format == "onnx" else export.export_torchscript
            feature = model.root / "feature.yaml" if model.is_bundle and model.features is not None else None
            meta = fn(model.encoder, model.cfg, args.out, feature=feature)
            print(f"pysv export: {args.format} graph: waveform [1, samples] at {meta['sample_rate']} Hz -> "
                  f"embedding [1, {meta['embed_dim']}]", file=sys.stderr)
        print(f"pysv export: wrote {args.out}")
        return 0
    model = load(args.model, device=args.device, vad=args.vad)
    kw = dict(resample=args.resample, channel=args.channel)
    if args.command == "verify":
        score, accept = model.verify(args.a, args.b, **kw)
        backend, thr, what = model.threshold()
        print(f"{args.a} {args.b} {score:.6f} {'accept' if accept else 'reject'}")
        llr = f", LLR {model.llr(score):.4f}" if model.calibration is not None else ""
        print(f"pysv verify: back-end {backend}{llr}, threshold {thr:.6f} ({what})", file=sys.stderr)
        return 0
    if args.command == "embed":
        if bool(args.wavs) == bool(args.wav_scp):
            raise DataError("pysv embed: give audio files or --wav-scp (one of them)")
        items = sorted(_wav_scp(args.wav_scp).items()) if args.wav_scp else [(w, w) for w in args.wavs]
        vectors = ((key, model.embed(path, mode=args.mode, **kw)) for key, path in items)
        if args.out:
            ark, scp = _parse_wspecifier(args.out)
            write_ark(ark, scp, vectors)
            print(f"pysv embed: wrote {len(items)} embeddings to {scp}", file=sys.stderr)
        else:
            for key, vec in vectors:
                print(key, " ".join(f"{v:.6g}" for v in vec.ravel()))
        return 0
    if args.command == "score":
        table = _wav_scp(args.wav_scp)
        trials = read_trials(args.trials)
        missing = sorted({u for a, b, _ in trials for u in (a, b) if u not in table})
        if missing:
            raise DataError(f"{args.trials}: utterance '{missing[0]}' is not in {args.wav_scp} "
                            f"({len(missing)} missing)")
        backend = args.backend or model.default_backend
        mode = model.mode_for(backend)
        emb = {u: model.embed(table[u], mode=mode, **kw) for u in sorted({u for a, b, _ in trials for u in (a, b)})}
        write_scores(args.out, ((a, b, model.score(emb[a], emb[b], backend=backend)) for a, b, _ in trials))
        print(f"pysv score: {len(trials)} trials scored with back-end {backend} -> {args.out}", file=sys.stderr)
        return 0
    raise AssertionError(args.command)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_cli(run, args, "pysv", log)


if __name__ == "__main__":
    sys.exit(main())
