"""Training throughput of each encoder at its paper crop length, data pipeline included.

    python bench/training.py [--batch 16] [--steps 4] [--device auto|cpu|cuda] [--workers 2]
                             [--systems thin_resnet34_angleproto,xvector_softmax,...]

For each system it builds the real trainer (pysv.train.Trainer: kaldiio feature crops or audio crops
through a DataLoader with workers, the system's sampler, encoder + loss, optimizer, AMP on GPU) on a
small generated corpus, and times ``steps`` optimizer steps after one warm-up step. In the same process
it times the same steps on batches already in memory (the compute-only reference); the ratio
``pipeline / compute`` (≈ 1.0 when data loading keeps up, < 1 when the loader is the bottleneck) and the
share of step time spent waiting for the loader are printed. On CUDA it also reports GPU utilisation
when the driver exposes it (``torch.cuda.utilization``; needs pynvml).
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
    (data / "utt2dur").write_text("".join(f"{l.split()[0]} {seconds}\n" for l in u2s))
    return data


def run_steps(trainer, batches, steps, device):
    net = trainer.ddp
    opt = trainer.optimizer
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
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=trainer.use_amp):
            loss, _ = net(x, y)
        opt.zero_grad(set_to_none=True)
        trainer.scaler.scale(loss).backward()
        trainer.scaler.step(opt)
        trainer.scaler.update()
        n += x.shape[0]
    sync()
    dt = time.perf_counter() - t0
    return n / dt, wait / dt


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from pysv.bin import make_features
    from pysv.train.config import load_config
    from pysv.train.distributed import DistInfo
    from pysv.train.trainer import Trainer
    from pysv.utils.logging import setup_logging
    import logging
    setup_logging(level=logging.WARNING)

    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu")
    tmp = Path(tempfile.mkdtemp(prefix="pysv_bench_"))
    need = args.batch * (args.steps + 1)
    num_spk = max(8, args.batch // 2 + 2)
    data = make_corpus(tmp, num_spk, utts=max(4, -(-need // num_spk)), seconds=4.5)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else os.cpu_count()} "
          f"{'GPU' if device.type == 'cuda' else 'CPU cores'}), torch threads {torch.get_num_threads()}, "
          f"batch {args.batch}, {args.steps} timed steps, {args.workers} loader workers")
    print("| system | input per sample | params | pipeline samples/s | compute-only samples/s | pipeline/compute | loader wait |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for system in args.systems.split(","):
        cfg = load_config(str(REPO / "conf" / f"{system}.yaml"), [
            f"data.train={data}", f"sampler.batch_size={args.batch}", f"data.num_workers={args.workers}",
            "data.valid_speakers=0", f"train.amp={device.type == 'cuda'}"])
        feat = cfg["data"]["feature"]
        if feat and not (Path(f"{data}_{feat}") / "feats.scp").is_file():
            make_features.main(["--data", str(data), "--feat-config", feat, "--out", f"{data}_{feat}"])
        trainer = Trainer(cfg, str(tmp / "exp" / system), DistInfo(device=device), progress=False)
        trainer.build()
        trainer.sampler.set_epoch(1)
        trainer.train_set.set_epoch(1)
        loader_iter = iter(trainer.loader)
        run_steps(trainer, loader_iter, 1, device)  # warm-up (worker start, allocator, cudnn autotune)
        pipe, wait = run_steps(trainer, loader_iter, min(args.steps, len(trainer.loader) - 1), device)
        cached = [next(iter(trainer.loader))] * args.steps
        comp, _ = run_steps(trainer, iter(cached), args.steps, device)
        util = ""
        if device.type == "cuda":
            try:
                util = f", GPU util {torch.cuda.utilization(device)} %"
            except Exception:
                util = ""
        x, _ = cached[0]
        shape = "×".join(str(d) for d in x.shape[1:])
        print(f"| {system} | {shape} | {trainer.num_params / 1e6:.2f} M | {pipe:.1f} | {comp:.1f} | "
              f"{pipe / comp:.2f} | {100 * wait:.0f} %{util} |", flush=True)


if __name__ == "__main__":
    main()
