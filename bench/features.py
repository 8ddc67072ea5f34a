#!/usr/bin/env python
"""Feature-stage throughput: pysv.features vs kaldi-native-fbank, same audio, same options, same process.

For every utterance of the corpus (one at a time, streamed) both pipelines do the whole stage:
read the FLAC with soundfile -> features -> append to a kaldiio ark (uncompressed float32) + scp,
through the same ``ArkWriter`` make_features uses. The two run interleaved (alternating which goes
first) so both see the same machine load; times are process CPU seconds (one thread:
``torch.set_num_threads(1)``) and wall seconds. Throughput = seconds of audio per second per core;
the ratio printed is ours / knf (> 1: ours is faster).

Also: agreement with knf at dither 0 (max |difference| over values above the log floor), peak RSS
at 10 %, 50 % and 100 % of the corpus (flat = memory does not grow with corpus size), optionally
(--precision) both against a float64 evaluation, and (--stage) the real stage
``python -m pysv.bin.make_features`` on 20 % and 100 % of the corpus in a subprocess (time, peak RSS).

    python bench/features.py --corpus ../shared/data/so762_dev [--limit N] [--config fbank40] [--precision] [--stage]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from pysv import features  # noqa: E402
from pysv.bin.make_features import utt_seed  # noqa: E402
from pysv.utils.stage import ArkWriter  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def corpus_items(corpus: Path, limit: int = 0):
    items = []
    with open(corpus / "wav.list", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                utt, rel = line.split()
                items.append((utt, str(corpus / rel)))
    items.sort()
    return items[:limit] if limit else items


def knf_options(cfg):
    import kaldi_native_fbank as knf
    if cfg["type"] != "fbank":
        raise SystemExit("the knf comparison is for fbank configs")
    o = knf.FbankOptions()
    fo = o.frame_opts
    fo.samp_freq = float(cfg["sample_rate"])
    fo.frame_length_ms = cfg["frame_length_ms"]
    fo.frame_shift_ms = cfg["frame_shift_ms"]
    fo.dither = cfg["dither"]
    fo.preemph_coeff = cfg["preemphasis_coefficient"]
    fo.remove_dc_offset = cfg["remove_dc_offset"]
    fo.window_type = cfg["window_type"]
    fo.round_to_power_of_two = cfg["round_to_power_of_two"]
    fo.blackman_coeff = cfg["blackman_coeff"]
    fo.snip_edges = cfg["snip_edges"]
    o.mel_opts.num_bins = cfg["num_mel_bins"]
    o.mel_opts.low_freq = cfg["low_freq"]
    o.mel_opts.high_freq = cfg["high_freq"]
    o.use_energy = cfg["use_energy"]
    o.energy_floor = cfg["energy_floor"]
    o.raw_energy = cfg["raw_energy"]
    o.use_log_fbank = cfg["use_log_fbank"]
    o.use_power = cfg["use_power"]
    return o


def knf_extract(opts, dim, x, scale):
    """kaldi-native-fbank's fastest Python usage we found: list input, preallocated output."""
    import kaldi_native_fbank as knf
    comp = knf.OnlineFbank(opts)
    comp.accept_waveform(opts.frame_opts.samp_freq, (x * scale).tolist())
    comp.input_finished()
    n = comp.num_frames_ready
    out = np.empty((n, dim), dtype=np.float32)
    for i in range(n):
        out[i] = comp.get_frame(i)
    return out


def float64_fbank(x, cfg, ext):
    """Float64 numpy evaluation of Kaldi's fbank (snip_edges, no dither): a precision yardstick for both."""
    L, S, P = ext.frame_length_samples, ext.frame_shift_samples, ext.padded_window
    x = x.astype(np.float64) * cfg["input_scale"]
    T = ext.num_frames(x.size)
    fr = np.lib.stride_tricks.sliding_window_view(x, L)[::S][:T]
    if cfg["remove_dc_offset"]:
        fr = fr - fr.mean(1, keepdims=True)
    c = cfg["preemphasis_coefficient"]
    y = np.empty_like(fr)
    y[:, 1:] = fr[:, 1:] - c * fr[:, :-1]
    y[:, 0] = fr[:, 0] * (1.0 - c)
    y *= features.feature_window(cfg["window_type"], L, cfg["blackman_coeff"])
    power = np.abs(np.fft.rfft(y, n=P, axis=1)) ** 2
    mel = power @ features.mel_banks(cfg["num_mel_bins"], P, cfg["sample_rate"], cfg["low_freq"], cfg["high_freq"])
    return np.log(np.maximum(mel, features.FLOAT_EPS))


def read(path):
    x, sr = sf.read(path, dtype="float32")
    return x, sr


def run_pair(items, cfg_overrides, config, workdir: Path, tag: str):
    ext = features.build(config, **cfg_overrides)
    cfg = ext.config
    if cfg["cmvn"] != "none" or cfg["delta_order"]:
        raise SystemExit("compare base features: use a config without CMVN/deltas (e.g. fbank40)")
    opts = knf_options(cfg)
    w_ours = ArkWriter(workdir / f"ours_{tag}.ark", workdir / f"ours_{tag}.scp")
    w_knf = ArkWriter(workdir / f"knf_{tag}.ark", workdir / f"knf_{tag}.scp")
    cpu = {"ours": 0.0, "knf": 0.0}
    wall = {"ours": 0.0, "knf": 0.0}
    audio_s = 0.0
    frames = 0
    rss_marks = {}
    marks = {max(1, len(items) // 10): "10%", max(1, len(items) // 2): "50%", len(items): "100%"}
    max_diff = 0.0
    n_vals = n_close = 0
    longest = 0.0

    def do_ours(utt, path):
        x, sr = read(path)
        f = ext(x, sr, seed=utt_seed(utt, cfg["dither_seed"]))
        w_ours.write(utt, f)
        return x, f

    def do_knf(utt, path):
        x, sr = read(path)
        if sr != cfg["sample_rate"]:
            raise SystemExit(f"{path}: {sr} Hz")
        f = knf_extract(opts, ext.dim, x, cfg["input_scale"])
        w_knf.write(utt, f)
        return f

    for i, (utt, path) in enumerate(items, 1):
        order = ("ours", "knf") if i % 2 else ("knf", "ours")
        res = {}
        for who in order:
            c0, t0 = time.process_time(), time.perf_counter()
            res[who] = do_ours(utt, path) if who == "ours" else do_knf(utt, path)
            cpu[who] += time.process_time() - c0
            wall[who] += time.perf_counter() - t0
        x, f_ours = res["ours"]
        f_knf = res["knf"]
        assert f_ours.shape == f_knf.shape, (utt, f_ours.shape, f_knf.shape)
        audio_s += x.shape[0] / cfg["sample_rate"]
        longest = max(longest, x.shape[0] / cfg["sample_rate"])
        frames += f_ours.shape[0]
        if cfg["dither"] == 0.0:  # agreement (outside the timed sections)
            ok = f_knf > np.log(features.FLOAT_EPS) + 5.0
            if ok.any():
                d = np.abs(f_ours - f_knf)[ok]
                max_diff = max(max_diff, float(d.max()))
                n_vals += d.size
                n_close += int((d <= 1e-3).sum())
        if i in marks:
            rss_marks[marks[i]] = (peak_rss_mb(), longest)
    for who, w in (("ours", w_ours), ("knf", w_knf)):
        c0, t0 = time.process_time(), time.perf_counter()
        w.commit()
        cpu[who] += time.process_time() - c0
        wall[who] += time.perf_counter() - t0
    ark_mb = (workdir / f"ours_{tag}.ark").stat().st_size / 2 ** 20
    return dict(cfg=cfg, cpu=cpu, wall=wall, audio_s=audio_s, frames=frames, rss=rss_marks,
                max_diff=max_diff if cfg["dither"] == 0.0 else None, ark_mb=ark_mb, n=len(items),
                close=n_close / max(n_vals, 1))


def report(r, tag):
    cpu, wall, a = r["cpu"], r["wall"], r["audio_s"]
    print(f"\n== {r['cfg']['name']} dither={r['cfg']['dither']} ({tag}): {r['n']} utterances, {a:.1f} s of audio "
          f"({a / 3600:.2f} h), {r['frames']} frames, ark {r['ark_mb']:.1f} MiB each")
    print(f"  {'':6s} {'CPU s':>8s} {'wall s':>8s} {'audio s / CPU s':>16s} {'audio s / wall s':>17s}")
    for who in ("ours", "knf"):
        print(f"  {who:6s} {cpu[who]:8.2f} {wall[who]:8.2f} {a / cpu[who]:16.0f} {a / wall[who]:17.0f}")
    print(f"  ratio ours/knf (throughput, CPU time): {cpu['knf'] / cpu['ours']:.2f}   "
          f"(wall time: {wall['knf'] / wall['ours']:.2f})")
    if r["max_diff"] is not None:
        print(f"  agreement with knf (log-mel values above the log floor): max |ours - knf| = {r['max_diff']:.2e}, "
              f"{100 * r['close']:.3f} % of values within 1e-3")
    print("  peak RSS of this process (MiB, both pipelines) after " +
          ", ".join(f"{k}: {v:.0f} (longest utt so far {d:.1f} s)" for k, (v, d) in r["rss"].items()))


def precision_pass(items, config):
    """Untimed: ours and knf against a float64 evaluation of the same definition, at dither 0."""
    ext = features.build(config, dither=0.0)
    cfg = ext.config
    opts = knf_options(cfg)
    worst = {"ours": 0.0, "knf": 0.0}
    within = {"ours": 0, "knf": 0}
    n = 0
    for utt, path in items:
        x, sr = read(path)
        ref = float64_fbank(x, cfg, ext)
        ok = ref > np.log(features.FLOAT_EPS) + 5.0
        n += int(ok.sum())
        for who, f in (("ours", ext(x, sr)), ("knf", knf_extract(opts, ext.dim, x, cfg["input_scale"]))):
            d = np.abs(f.astype(np.float64) - ref)[ok]
            worst[who] = max(worst[who], float(d.max()))
            within[who] += int((d <= 1e-3).sum())
    print(f"\n== float32 round-off vs a float64 numpy evaluation of Kaldi's fbank ({len(items)} utterances, "
          f"dither 0, values above the log floor)")
    for who in ("ours", "knf"):
        print(f"  {who:5s} max |diff| = {worst[who]:.2e}, {100 * within[who] / max(n, 1):.4f} % within 1e-3")


def run_stage(items, config, workdir: Path, tag: str):
    """The real stage in a subprocess (python -m pysv.bin.make_features --nj 1)."""
    data = workdir / f"data_{tag}"
    data.mkdir(parents=True, exist_ok=True)
    with open(data / "wav.scp", "w") as f:
        for utt, path in items:
            f.write(f"{utt} {path}\n")
    out = workdir / f"data_{tag}_{config}"
    args = ["--data", str(data), "--feat-config", config, "--out", str(out)]
    # The child reports its own peak RSS (VmHWM of its own address space; getrusage's children figure would
    # include this process's pages inherited at fork).
    code = ("import sys, runpy\n"
            f"sys.argv = ['make_features'] + {args!r}\n"
            "try:\n    runpy.run_module('pysv.bin.make_features', run_name='__main__')\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
            "print('VmHWM', hwm)\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    hwm_mb = int(r.stdout.split("VmHWM")[1].split()[0]) / 1024.0
    audio = sum(sf.info(p).duration for _, p in items)
    print(f"  {tag}: {len(items)} utts, {audio:.0f} s of audio: wall {wall:.1f} s, CPU {cpu:.1f} s incl. start-up "
          f"({audio / cpu:.0f} audio s / CPU s), peak RSS {hwm_mb:.0f} MiB")
    shutil.rmtree(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "data" / "so762_dev",
                   help="folder with wav.list (<utt> <relative flac path>)")
    p.add_argument("--config", default="fbank40", help="feature config (fbank, no CMVN/deltas)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N utterances (0 = all)")
    p.add_argument("--dither", default="config,0",
                   help="comma-separated dither settings to measure ('config' = the config's value)")
    p.add_argument("--precision", action="store_true",
                   help="also compare ours and knf with a float64 evaluation (untimed pass, dither 0)")
    p.add_argument("--stage", action="store_true",
                   help="also time python -m pysv.bin.make_features on 20 %% and 100 %% of the corpus")
    p.add_argument("--workdir", type=Path, default=None, help="where arks go (default: a temp dir, removed)")
    args = p.parse_args()
    torch.set_num_threads(1)
    items = corpus_items(args.corpus, args.limit)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pysv_bench_feats_"))
    workdir.mkdir(parents=True, exist_ok=True)
    import kaldi_native_fbank as knf
    print(f"corpus {args.corpus} ({len(items)} utterances); torch {torch.__version__} threads "
          f"{torch.get_num_threads()}; kaldi-native-fbank {getattr(knf, '__version__', '?')}; numpy {np.__version__}")
    print(f"cpu: {os.cpu_count()} cores, load average at start {os.getloadavg()[0]:.2f}")
    try:
        for d in args.dither.split(","):
            ov = {} if d == "config" else {"dither": float(d)}
            tag = f"dither{d}"
            r = run_pair(items, ov, args.config, workdir, tag)
            report(r, tag)
            for f in workdir.glob(f"*_{tag}.*"):
                f.unlink()
        if args.precision:
            precision_pass(items, args.config)
        if args.stage:
            print("\n== the stage itself: python -m pysv.bin.make_features --nj 1 (subprocess, 1 thread, "
                  "config's dither)")
            run_stage(items[: max(1, len(items) // 5)], args.config, workdir, "20pct")
            run_stage(items, args.config, workdir, "100pct")
        print(f"\nload average at end {os.getloadavg()[0]:.2f}")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
