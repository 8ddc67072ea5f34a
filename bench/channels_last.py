"""Does channels-last help the 2-D CNN encoders on this CPU? One training step of thin_resnet34 +
angular prototypical (batch 64 x 200 frames x 40), contiguous against channels-last weights, in fp32
and bf16 autocast, alternating; samples/s (median of 3 timings of 3 steps each), two repetitions.

    python bench/channels_last.py [--threads 2]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def samples_per_s(channels_last: bool, precision: str) -> float:
    import pysv.losses as L
    import pysv.models as M
    torch.manual_seed(0)
    model = M.build("thin_resnet34")
    loss = L.build("angleproto", 512, None)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(list(model.parameters()) + list(loss.parameters()), lr=0.1)
    x = torch.randn(64, 200, 40)
    y = torch.arange(32).repeat_interleave(2)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            value = loss(model(x), y)
        opt.zero_grad()
        value.backward()
        opt.step()

    step()
    rates = []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(3):
            step()
        rates.append(3 * 64 / (time.perf_counter() - t0))
    return sorted(rates)[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print("| precision | contiguous samples/s | channels-last samples/s | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for precision in ("fp32", "bf16"):
        for _ in range(2):
            a, b = samples_per_s(False, precision), samples_per_s(True, precision)
            print(f"| {precision} | {a:.1f} | {b:.1f} | {b / a:.2f} |", flush=True)


if __name__ == "__main__":
    main()
