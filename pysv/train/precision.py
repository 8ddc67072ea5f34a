"""Training precision: ``train.precision: auto | fp32 | bf16 | fp16``.

* ``fp32``: no autocast.
* ``bf16``: ``torch.autocast(dtype=torch.bfloat16)`` on CUDA or CPU; no loss scaling (bf16 has
  fp32's exponent range).
* ``fp16``: ``torch.autocast(dtype=torch.float16)`` with a ``GradScaler``; CUDA only.
* ``auto``: bf16 where the device runs it natively -- a CUDA device with bf16 support
  (``torch.cuda.is_bf16_supported()``), a CPU with AVX-512-BF16 or AMX-BF16 (``/proc/cpuinfo``
  flags ``avx512_bf16`` / ``amx_bf16``) -- else fp32.

What stays in float32 under autocast: every loss (``pysv.losses.LossBase`` runs ``compute`` with
autocast disabled on float32 inputs), the pooling statistics (means, variances, attention
softmax: ``pysv.models.pooling``), the sinc filters of RawNet2 and the input normalisations.
"""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True on CPUs with AVX-512-BF16 or AMX-BF16 (bf16 matmuls/convolutions at full speed)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    if text:
        flags = set()
        for line in text.splitlines():
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
                break
        return bool({"avx512_bf16", "amx_bf16"} & flags)
    probe = getattr(getattr(torch._C, "_cpu", None), "_is_amx_tile_supported", None)
    return bool(probe()) if probe is not None else False


def resolve(precision: str, device: torch.device) -> str:
    """The precision a run uses on ``device``: ``fp32``, ``bf16`` or ``fp16`` (``auto`` resolved);
    ``ValueError`` naming the problem for a choice the device cannot run."""
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"train.precision=fp16 needs a CUDA device (loss scaling), not {device.type}; "
                         "use bf16 or fp32")
    return precision


def autocast(precision: str, device: torch.device):
    """The autocast context of a resolved precision (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler, enabled for fp16 only."""
    return torch.amp.GradScaler(device.type if device.type == "cuda" else "cpu", enabled=precision == "fp16")
