"""Training throughput of each encoder at its paper crop length, data pipeline included; and pysv
against voxceleb_trainer in the same process.

    python bench/training.py [--batch 16] [--steps 4] [--device auto|cpu|cuda] [--workers 2]
                             [--systems thin_resnet34_angleproto,xvector_softmax,...]
    python bench/training.py --vs-voxceleb-trainer DIR [--batch 64] [--steps 5] [--rounds 5]

``--vs-voxceleb-trainer DIR`` imports ``models/ResNetSE34L.py`` and ``loss/angleproto.py`` from a local
checkout of clovaai/voxceleb_trainer at DIR (not shipped with pysv) and alternates, round by round, its
fp32 training step (waveform -> its MelSpectrogram + InstanceNorm front end -> ResNetSE34L (SAP, 512)
-> angular prototypical, SGD; SpeakerNet's reshape for 2 utterances per speaker) with pysv's real
training step (``Trainer.train_step`` of ``conf/thin_resnet34_angleproto.yaml``, with that config's
``train.precision`` and ``train.compile``) on the same batch shape: ``batch`` utterances of 200 frames
(2 s; voxceleb_trainer's 32,240 samples, pysv's 200 x 40 fbank frames from stage 1). It prints both
samples/s (median over rounds) and the ratio, then the same for embedding extraction (eval, no grad,
full 10 s utterances). voxceleb_trainer needs torchaudio for its front end; where no torchaudio wheel
exists for this torch (2.13), a stand-in ``torchaudio.transforms.MelSpectrogram`` built from
``torch.stft`` and an HTK mel filterbank (torchaudio's defaults: centre padding, power 2, no norm) is
installed for the run, with the same cost structure.

For each system it builds the real trainer (pysv.train.Trainer: kaldiio feature crops or audio crops
through a DataLoader with workers, the system's sampler, encoder + loss, optimizer, the config's train.precision) on a
small generated corpus, and times ``steps`` optimizer steps after one warm-up step. In the same process
it times the same steps on batches already in memory (the compute-only reference); the ratio
``pipeline / compute`` (≈ 1.0 when data loading keeps up, < 1 when the loader is the bottleneck) and the
share of step time spent waiting for the loader are printed, with the FLOPs of one training step per
sample (``torch.utils.flop_counter``: matmuls and convolutions of forward + backward). On CUDA it also
prints the peak GPU memory and the model FLOPs utilisation (compute-only samples/s x FLOPs/sample over
the device's dense peak at the run's precision: ``--peak-tflops`` or a table of common GPUs).
"""
from __future__ import annotations

import argparse
import os
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


def make_corpus(root: Path, num_spk: int, utts: int, seconds: float) -> Path:
    import soundfile as sf
    rng = np.random.default_rng(0)
    data = root / "bench"
    data.mkdir(parents=True)
    wav, u2s = [], []
    for s in range(num_spk):
        for u in range(utts):
            utt = f"spk{s:03d}-utt{u:02d}"
            path = root / "wav" / f"{utt}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            x = 0.1 * rng.standard_normal(int(seconds * 16000)) * np.sin(np.linspace(0, 40 + s, int(seconds * 16000)))
            sf.write(path, x.astype(np.float32), 16000)
            wav.append(f"{utt} {path}\n")
            u2s.append(f"{utt} spk{s:03d}\n")
    (data / "wav.scp").write_text("".join(wav))
    (data / "utt2spk").write_text("".join(u2s))
    spk2utt = {}
    for line in u2s:
        u, s = line.split()
        spk2utt.setdefault(s, []).append(u)
    (data / "spk2utt").write_text("".join(f"{s} {' '.join(v)}\n" for s, v in sorted(spk2utt.items())))
    (data / "utt2dur").write_text("".join(f"{line.split()[0]} {seconds}\n" for line in u2s))
    return data


#: dense peak TFLOPS by precision for GPU names (spec sheets), used for the model FLOPs utilisation
PEAK_TFLOPS_BY_NAME = ("H200", "H100", "A100", "L4", "A10")
PEAK_TFLOPS = {"bf16": {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0},
               "fp16": {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0},
               "fp32": {"H200": 67.0, "H100": 67.0, "A100": 19.5, "L4": 30.0, "A10": 31.0}}


def step_flops(trainer, x, y) -> float:
    """FLOPs of one training step (forward + backward of encoder and loss), counted by
    ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions; elementwise ops are
    not counted, so MFU is a lower bound of the arithmetic done)."""
    from torch.utils.flop_counter import FlopCounterMode
    net = trainer.ddp
    net.train()
    counter = FlopCounterMode(display=False)
    with counter:
        loss, _ = net(x, y)
        loss.backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def run_steps(trainer, batches, steps, device):
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    wait = 0.0
    n = 0
    sync()
    t0 = time.perf_counter()
    it = iter(batches)
    for _ in range(steps):
        tw = time.perf_counter()
        x, y = next(it)
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        wait += time.perf_counter() - tw
        trainer.train_step(x, y)  # the trainer's own step: precision, checks, loss scaling
        n += x.shape[0]
    sync()
    dt = time.perf_counter() - t0
    return n / dt, wait / dt


def _torchaudio_stand_in():
    """A minimal ``torchaudio`` module with ``transforms.MelSpectrogram`` (see the module doc)."""
    import types

    class MelSpectrogram(torch.nn.Module):
        def __init__(self, sample_rate=16000, n_fft=400, win_length=None, hop_length=None, f_min=0.0,
                     f_max=None, n_mels=128, window_fn=torch.hann_window, **_):
            super().__init__()
            self.n_fft, self.win_length = n_fft, win_length or n_fft
            self.hop_length = hop_length or self.win_length // 2
            self.register_buffer("window", window_fn(self.win_length))
            f_max = f_max or sample_rate / 2
            mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731  HTK, torchaudio's default
            pts = 700.0 * (10 ** (np.linspace(mel(f_min), mel(f_max), n_mels + 2) / 2595.0) - 1.0)
            freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
            lo, ce, hi = pts[:-2, None], pts[1:-1, None], pts[2:, None]
            fb = np.maximum(0, np.minimum((freqs - lo) / (ce - lo), (hi - freqs) / (hi - ce)))
            self.register_buffer("fb", torch.tensor(fb.T, dtype=torch.float32))  # [freq, mels]

        def forward(self, x):
            spec = torch.stft(x, self.n_fft, self.hop_length, self.win_length, self.window, center=True,
                              pad_mode="reflect", return_complex=True).abs().pow(2)  # [B, freq, T]
            return torch.matmul(spec.transpose(-1, -2), self.fb).transpose(-1, -2)  # [B, mels, T]

    mod = types.ModuleType("torchaudio")
    mod.transforms = types.SimpleNamespace(MelSpectrogram=MelSpectrogram)
    return mod


def _median_rate(fn, samples: int, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return samples * steps / (time.perf_counter() - t0)


def vs_voxceleb_trainer(vt_dir: str, batch: int, steps: int, rounds: int) -> None:
    """voxceleb_trainer's ResNetSE34L + angleproto against pysv's Trainer.train_step (module doc)."""
    import importlib
    import logging
    from pysv.bin import make_features
    from pysv.train.config import load_config
    from pysv.train.distributed import DistInfo
    from pysv.train.trainer import Trainer
    from pysv.utils.logging import setup_logging
    setup_logging(level=logging.WARNING)
    threads = torch.get_num_threads()
    vt_dir = str(Path(vt_dir).resolve())
    if not (Path(vt_dir) / "models" / "ResNetSE34L.py").is_file():
        raise SystemExit(f"{vt_dir}: no models/ResNetSE34L.py (a clovaai/voxceleb_trainer checkout?)")
    stand_in = ""
    try:
        import torchaudio  # noqa: F401
    except ImportError:
        sys.modules["torchaudio"] = _torchaudio_stand_in()
        stand_in = " (torchaudio stand-in: torch.stft + HTK mel filterbank)"
    sys.path.insert(0, vt_dir)
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):  # its constructors print
        vt_model = importlib.import_module("models.ResNetSE34L").MainModel(nOut=512, encoder_type="SAP", n_mels=40)
        vt_loss = importlib.import_module("loss.angleproto").LossFunction()
    vt_params = list(vt_model.parameters()) + list(vt_loss.parameters())
    vt_opt = torch.optim.SGD(vt_params, lr=0.2, momentum=0.9, weight_decay=5e-5)
    device = torch.device("cpu")

    # pysv: the real trainer of the config, on a tiny generated corpus (only to build it)
    tmp = Path(tempfile.mkdtemp(prefix="pysv_vs_vt_"))
    data = make_corpus(tmp, max(8, batch // 2 + 2), utts=2, seconds=2.5)
    make_features.main(["--data", str(data), "--feat-config", "fbank40", "--out", f"{data}_fbank40"])
    cfg = load_config(str(REPO / "conf" / "thin_resnet34_angleproto.yaml"), [
        f"data.train={data}", f"sampler.batch_size={batch}", "data.num_workers=0", "data.valid_speakers=0"])
    trainer = Trainer(cfg, str(tmp / "exp"), DistInfo(device=device), progress=False)
    trainer.build()
    torch.set_num_threads(threads)  # feature extraction jobs run single-threaded and leave it so
    config_precision = trainer.precision

    g = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(batch, 200 * 160 + 240, generator=g)  # voxceleb_trainer's max_frames*160+240
    feats = torch.randn(batch, 200, 40, generator=g)
    labels = torch.arange(batch // 2).repeat_interleave(2)  # 2 utterances per speaker, pairs adjacent

    def vt_step():
        vt_model.train()
        out = vt_model(wav)  # SpeakerNet: [spk*2, D] -> [spk, 2, D]
        out = out.reshape(batch // 2, 2, -1)
        loss, _ = vt_loss(out)
        vt_opt.zero_grad(set_to_none=True)
        loss.backward()
        vt_opt.step()

    def pv_step():
        trainer.ddp.train()
        trainer.train_step(feats, labels)

    def pv_fp32_step():  # the same step in fp32: what the precision setting contributes
        trainer.precision = "fp32"
        try:
            pv_step()
        finally:
            trainer.precision = config_precision

    for f in (vt_step, pv_step, pv_fp32_step):  # warm-up
        f()
    vt_rates, pv_rates, pv32_rates = [], [], []
    for _ in range(rounds):
        vt_rates.append(_median_rate(vt_step, batch, steps))
        pv_rates.append(_median_rate(pv_step, batch, steps))
        pv32_rates.append(_median_rate(pv_fp32_step, batch, steps))
    vt, pv, pv32 = (float(np.median(r)) for r in (vt_rates, pv_rates, pv32_rates))
    print(f"training, batch {batch} x 2 s, {rounds} alternating rounds of {steps} steps, torch threads "
          f"{torch.get_num_threads()}{stand_in}")
    print("| step | precision | samples/s (median) |")
    print("| --- | --- | ---: |")
    print(f"| voxceleb_trainer ResNetSE34L + angleproto | fp32 | {vt:.1f} |")
    print(f"| pysv thin_resnet34_angleproto (Trainer.train_step), the config's settings | {trainer.precision}"
          f"{', compiled' if cfg['train']['compile'] else ''} | {pv:.1f} |")
    print(f"| pysv, same step with train.precision=fp32 | fp32 | {pv32:.1f} |")
    print(f"ratio pysv / voxceleb_trainer: {pv / vt:.2f}x (fp32 pysv: {pv32 / vt:.2f}x)")

    # extraction: full 10 s utterances, eval mode, no grad, batch of 8
    wav10 = 0.1 * torch.randn(8, 160000, generator=g)
    feats10 = torch.randn(8, 998, 40, generator=g)
    encoder = trainer.net.encoder

    @torch.no_grad()
    def vt_embed():
        vt_model.eval()
        vt_model(wav10)

    @torch.no_grad()
    def pv_embed():
        encoder.eval()
        from pysv.train import precision as precision_lib
        with precision_lib.autocast(trainer.precision, device):
            encoder(feats10)

    for f in (vt_embed, pv_embed):
        f()
    ve, pe = [], []
    for _ in range(rounds):
        ve.append(_median_rate(vt_embed, 8, 2))
        pe.append(_median_rate(pv_embed, 8, 2))
    ve, pe = float(np.median(ve)), float(np.median(pe))
    print(f"extraction, 10 s utterances, batch 8: voxceleb_trainer {ve:.1f} utt/s (fp32), pysv {pe:.1f} utt/s "
          f"({trainer.precision}); ratio {pe / ve:.2f}x")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vs-voxceleb-trainer", metavar="DIR", default=None,
                   help="compare with voxceleb_trainer's ResNetSE34L from a checkout at DIR (see above)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (--vs-voxceleb-trainer)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--peak-tflops", type=float, default=0.0,
                   help="CUDA: the device's dense peak TFLOPS at the run's precision, for MFU (default: "
                        "a table of common GPUs)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.vs_voxceleb_trainer:
        return vs_voxceleb_trainer(args.vs_voxceleb_trainer, args.batch, args.steps, args.rounds)
    from pysv.bin import make_features
    from pysv.train.config import load_config
    from pysv.train.distributed import DistInfo
    from pysv.train.trainer import Trainer
    from pysv.utils.logging import setup_logging
    import logging
    setup_logging(level=logging.WARNING)

    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    tmp = Path(tempfile.mkdtemp(prefix="pysv_bench_"))
    need = args.batch * (args.steps + 1)
    num_spk = max(8, args.batch // 2 + 2)
    data = make_corpus(tmp, num_spk, utts=max(4, -(-need // num_spk)), seconds=4.5)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else os.cpu_count()} "
          f"{'GPU' if device.type == 'cuda' else 'CPU cores'}), torch threads {torch.get_num_threads()}, "
          f"batch {args.batch}, {args.steps} timed steps, {args.workers} loader workers")
    print("| system | input per sample | params | GFLOP/sample (train step) | pipeline samples/s | "
          "compute-only samples/s | pipeline/compute | loader wait |"
          + (" peak GPU memory | MFU |" if device.type == "cuda" else ""))
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
          + (" ---: | ---: |" if device.type == "cuda" else ""))
    for system in args.systems.split(","):
        cfg = load_config(str(REPO / "conf" / f"{system}.yaml"), [
            f"data.train={data}", f"sampler.batch_size={args.batch}", f"data.num_workers={args.workers}",
            "data.valid_speakers=0", "train.precision=auto"])
        feat = cfg["data"]["feature"]
        if feat and not (Path(f"{data}_{feat}") / "feats.scp").is_file():
            make_features.main(["--data", str(data), "--feat-config", feat, "--out", f"{data}_{feat}"])
        trainer = Trainer(cfg, str(tmp / "exp" / system), DistInfo(device=device), progress=False)
        trainer.build()
        trainer.data.sampler.set_epoch(1)
        trainer.data.train_set.set_epoch(1)
        loader_iter = iter(trainer.data.loader)
        run_steps(trainer, loader_iter, 1, device)  # warm-up (worker start, allocator, cudnn autotune)
        pipe, wait = run_steps(trainer, loader_iter, min(args.steps, len(trainer.data.loader) - 1), device)
        cached = [next(iter(trainer.data.loader))] * args.steps
        comp, _ = run_steps(trainer, iter(cached), args.steps, device)
        x, y = cached[0]
        flops = step_flops(trainer, x.to(device), y.to(device)) / x.shape[0]
        gpu = ""
        if device.type == "cuda":
            peak = args.peak_tflops or PEAK_TFLOPS.get(trainer.precision, {}).get(
                next((k for k in PEAK_TFLOPS_BY_NAME if k in torch.cuda.get_device_name(device)), ""), None)
            mfu = f"{100 * flops * comp / (peak * 1e12):.1f} %" if peak else "n/a (give --peak-tflops)"
            gpu = f" {torch.cuda.max_memory_allocated(device) / 2 ** 30:.2f} GiB | {mfu} |"
        shape = "×".join(str(d) for d in x.shape[1:])
        print(f"| {system} | {shape} | {trainer.num_params / 1e6:.2f} M | {flops / 1e9:.2f} | "
              f"{pipe:.1f} | {comp:.1f} | "
              f"{pipe / comp:.2f} | {100 * wait:.0f} % |{gpu}", flush=True)


if __name__ == "__main__":
    main()
