"""Stage 0's --convert-audio: .m4a (AAC) trees converted with ffmpeg to 16 kHz mono FLAC, resumably,
in parallel, for the folder and voxceleb corpora; a clear message when ffmpeg is missing."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pysv.bin.prepare_data import main as prepare_main
from pysv.data import convert_audio
from pysv.data.convert_audio import convert_tree
from pysv.utils.io import DataError, read_table

REPO = Path(__file__).resolve().parents[1]
FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed (apt-get install ffmpeg); "
                                                         "the m4a round trip needs it to encode and decode")


def signal(seconds: float, sr: int, seed: int, channels: int = 1) -> np.ndarray:
    """A voiced-like test signal: a few harmonics with a slow pitch glide, plus a little noise."""
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140 + 40 * seed % 80 + 20 * t
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(0.2 / k * np.sin(k * phase) for k in range(1, 6))
    x = x + 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


def encode_m4a(path: Path, x: np.ndarray, sr: int) -> None:
    """``x`` written as AAC in an .m4a with ffmpeg (as VoxCeleb2 ships)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    wav = path.with_name(f"_{path.stem}_src.wav")
    sf.write(str(wav), x, sr, subtype="PCM_16")
    subprocess.run([FFMPEG, "-nostdin", "-loglevel", "error", "-y", "-i", str(wav), "-c:a", "aac", "-b:a", "96k",
                    str(path)], check=True)
    wav.unlink()


def similarity(a: np.ndarray, b: np.ndarray, max_lag: int = 2048) -> float:
    """Best normalised correlation of ``a`` and ``b`` over small lags (the codec's delay)."""
    n = min(len(a), len(b)) - max_lag
    best = 0.0
    for lag in range(0, max_lag, 16):
        for x, y in ((a[lag:lag + n], b[:n]), (a[:n], b[lag:lag + n])):
            c = float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12))
            best = max(best, c)
    return best


def make_m4a_tree(root: Path, n_spk: int = 3, n_utt: int = 2) -> dict:
    """<root>/<spk>/<session>/<n>.m4a (one stereo 44.1 kHz file), plus one plain .wav; returns the
    16 kHz mono reference signal of each utterance path (relative, without extension)."""
    ref = {}
    for s in range(n_spk):
        for u in range(n_utt):
            rel = f"spk{s}/sess{u % 2}/{u:05d}"
            if s == 0 and u == 0:
                encode_m4a(root / f"{rel}.m4a", signal(1.2, 44100, 1, channels=2), 44100)
                ref[rel] = signal(1.2, 16000, 1) * 0.75  # the down-mix: mean of x and x / 2
            else:
                encode_m4a(root / f"{rel}.m4a", signal(1.0, 16000, s * 10 + u), 16000)
                ref[rel] = signal(1.0, 16000, s * 10 + u)
    sf.write(str(root / "spk1" / "sess0" / "plain.wav"), signal(0.8, 16000, 99), 16000, subtype="PCM_16")
    return ref


@needs_ffmpeg
def test_m4a_tree_converted_resumably_in_parallel(tmp_path, caplog):
    src, out = tmp_path / "aac", tmp_path / "flac"
    ref = make_m4a_tree(src)
    caplog.set_level("INFO")
    rep = convert_tree(src, out, sample_rate=16000, nj=2, progress=False)
    assert (rep.converted, rep.done, rep.linked, rep.failed) == (6, 0, 1, [])
    assert "6 converted, 0 already done, 1 linked, 0 failed" in caplog.text
    for rel, x in ref.items():
        f = out / f"{rel}.flac"
        info = sf.info(str(f))
        assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "FLAC")
        y, _ = sf.read(str(f))
        assert abs(len(y) - len(x)) < 0.05 * 16000, rel  # codec padding at most a few frames
        assert similarity(x, y) > 0.9, rel
    link = out / "spk1" / "sess0" / "plain.wav"
    assert link.is_symlink() and os.readlink(link) == str(src / "spk1" / "sess0" / "plain.wav")
    # done already: nothing converted again
    rep = convert_tree(src, out, nj=2, progress=False)
    assert (rep.converted, rep.done, rep.linked) == (0, 6, 0)
    # a killed run: one output missing, a half-written temp file left behind; a source newer than
    # its output (rewritten since) is converted again
    (out / "spk2" / "sess1" / "00001.flac").unlink()
    stale = out / "spk2" / "sess1" / ".00001.flac.abcd1234.tmp"
    stale.write_bytes(b"half a flac")
    later = time.time() + 5
    os.utime(src / "spk1" / "sess0" / "00000.m4a", (later, later))
    rep = convert_tree(src, out, nj=1, progress=False)
    assert (rep.converted, rep.done) == (2, 4)
    assert not stale.exists() and (out / "spk2" / "sess1" / "00001.flac").is_file()
    assert not [p for p in out.rglob("*.tmp")]


@needs_ffmpeg
def test_undecodable_file_named_and_the_others_converted(tmp_path):
    src, out = tmp_path / "aac", tmp_path / "flac"
    make_m4a_tree(src, n_spk=2, n_utt=2)
    (src / "spk1" / "sess0" / "broken.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A not really")
    with pytest.raises(DataError) as ei:
        convert_tree(src, out, nj=2, progress=False)
    msg = str(ei.value)
    assert "1 file(s)" in msg and "broken.m4a" in msg and "ffmpeg failed" in msg and "run again" in msg
    assert len(list(out.rglob("*.flac"))) == 4 and not (out / "spk1" / "sess0" / "broken.flac").exists()


def test_missing_ffmpeg_says_how_to_install(tmp_path, monkeypatch):
    src = tmp_path / "aac" / "spk0"
    src.mkdir(parents=True)
    (src / "a.m4a").write_bytes(b"\x00")
    monkeypatch.setattr(convert_audio.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="needs ffmpeg.*apt-get install ffmpeg"):
        convert_tree(tmp_path / "aac", tmp_path / "out", progress=False)
    # and from the command line: exit status 1, nothing prepared
    assert prepare_main(["folder", "--corpus-dir", str(tmp_path / "aac"), "--convert-audio", str(tmp_path / "out"),
                         "--data-root", str(tmp_path / "data"), "--no-progress"]) == 1
    assert not (tmp_path / "data").exists()


def test_output_inside_the_corpus_refused(tmp_path):
    (tmp_path / "c").mkdir()
    with pytest.raises(DataError, match="inside"):
        convert_tree(tmp_path / "c", tmp_path / "c" / "flac", progress=False)
    with pytest.raises(DataError, match="itself"):
        convert_tree(tmp_path / "c", tmp_path / "c", progress=False)


@needs_ffmpeg
def test_folder_corpus_with_convert_audio(tmp_path):
    src, out, root = tmp_path / "aac", tmp_path / "flac", tmp_path / "data"
    make_m4a_tree(src, n_spk=4, n_utt=2)
    assert prepare_main(["folder", "--corpus-dir", str(src), "--convert-audio", str(out), "--test-fraction", "0.5",
                         "--data-root", str(root), "--no-progress", "--nj", "2"]) == 0
    wav = {**read_table(root / "folder_train" / "wav.scp"), **read_table(root / "folder_test" / "wav.scp")}
    assert len(wav) == 9  # 8 converted + 1 linked wav
    assert all(p.startswith(str(out) + os.sep) for p in wav.values())
    assert wav["spk0-sess0-00000"] == str(out / "spk0" / "sess0" / "00000.flac")
    # without conversion the same tree is refused, pointing at --convert-audio
    assert prepare_main(["folder", "--corpus-dir", str(src), "--data-root", str(tmp_path / "d2"),
                         "--no-progress"]) == 1


@needs_ffmpeg
def test_voxceleb2_m4a_with_convert_audio(tmp_path):
    vox2, vox1, out, root = tmp_path / "vox2", tmp_path / "vox1", tmp_path / "vox2_flac", tmp_path / "data"
    for s in ("id00012", "id00015"):
        for n in (1, 2):
            encode_m4a(vox2 / "dev" / "aac" / s / "21Uxsk56VDQ" / f"{n:05d}.m4a", signal(1.0, 16000, n), 16000)
    for s in ("id10270", "id10271"):
        for n in (1, 2):
            p = vox1 / "wav" / s / "x6uYqmx31kE" / f"{n:05d}.wav"
            p.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(p), signal(1.0, 16000, 5 + n), 16000, subtype="PCM_16")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "veri_test2.txt").write_text("1 id10270/x6uYqmx31kE/00001.wav id10270/x6uYqmx31kE/00002.wav\n"
                                          "0 id10270/x6uYqmx31kE/00001.wav id10271/x6uYqmx31kE/00002.wav\n")
    assert prepare_main(["voxceleb", "--vox1-dir", str(vox1), "--vox2-dir", str(vox2), "--trials-dir", str(lists),
                         "--convert-audio", str(out), "--data-root", str(root), "--no-progress", "--nj", "2"]) == 0
    wav = read_table(root / "vox2_dev" / "wav.scp")
    assert sorted(wav) == [f"{s}-21Uxsk56VDQ-{n:05d}" for s in ("id00012", "id00015") for n in (1, 2)]
    assert wav["id00012-21Uxsk56VDQ-00002"] == str(out / "dev" / "aac" / "id00012" / "21Uxsk56VDQ" / "00002.flac")
    assert (root / "vox1_test" / "trials").is_file()


def test_wrappers_and_run_sh_pass_convert_audio():
    def command(script, *args):
        r = subprocess.run(["bash", "-c", f'python() {{ printf "[%s]" "$@"; echo; }}; export -f python; {script} '
                            + " ".join(args)], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout.splitlines()[-1]
    assert "[--convert-audio][/f l]" in command("local/prepare_folder.sh", "--convert-audio", "'/f l'", "/c", "d")
    assert "[--convert-audio][/x]" in command("local/prepare_voxceleb.sh", "--vox2-dir", "/v", "--convert-audio", "/x")
    r = subprocess.run(["./run.sh", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "--convert-audio=" in r.stdout
    text = (REPO / "run.sh").read_text()
    assert text.count('${convert_audio:+--convert-audio "$convert_audio" --nj "$nj"}') == 2


def test_cli_help_lists_convert_audio(capsys):
    for sub in ("folder", "voxceleb"):
        with pytest.raises(SystemExit):
            prepare_main([sub, "--help"])
        assert "--convert-audio DIR" in capsys.readouterr().out
