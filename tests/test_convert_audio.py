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


# ---- parts (--part K/N) and steps/convert_audio.sh: the conversion through cmd.sh's launcher

def copy_tree_of(root: Path, names) -> Path:
    """``root/<name>.m4a`` for each relative name: copies of one short encoded file (encoding once
    keeps these tests fast), plus one plain ``.wav`` to link."""
    first = root / "_one.m4a"
    encode_m4a(first, signal(0.3, 16000, 3), 16000)
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(first, root / f"{name}.m4a")
    first.unlink()
    sf.write(str(root / "spk0" / "plain.wav"), signal(0.3, 16000, 4), 16000, subtype="PCM_16")
    return root


NAMES = [f"spk{s}/{u:05d}" for s in range(2) for u in range(4)]


def files_under(root: Path):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def test_part_of_is_a_stable_partition():
    paths = [f"id{i:05d}/vid/{j:05d}.m4a" for i in range(50) for j in range(20)]
    for n in (1, 2, 3, 8):
        parts = [convert_audio.part_of(p, n) for p in paths]
        assert set(parts) == set(range(1, n + 1))
        counts = np.bincount(parts)[1:]
        assert counts.min() > 0.7 * len(paths) / n  # balanced
    assert convert_audio.part_of("spk0/00001.m4a", 4) == convert_audio.part_of("spk0/00001.m4a", 4)
    with pytest.raises(ValueError, match="1 <= k <= n"):
        convert_tree("/nonexistent", "/x", part=(3, 2))


@needs_ffmpeg
def test_parts_are_disjoint_and_together_the_whole_run(tmp_path):
    src = copy_tree_of(tmp_path / "aac", NAMES)
    whole = convert_tree(src, tmp_path / "all", nj=2, progress=False)
    assert (whole.converted, whole.linked) == (8, 1)
    reps, listed = [], []
    for k in (1, 2):
        reps.append(convert_tree(src, tmp_path / f"part{k}", part=(k, 2), nj=2, progress=False,
                                 report_file=tmp_path / f"r{k}", progress_file=tmp_path / f"p{k}"))
        listed.append(set(files_under(tmp_path / f"part{k}")))
    assert listed[0] and listed[1] and not listed[0] & listed[1]  # both parts do something, disjoint
    assert sorted(listed[0] | listed[1]) == files_under(tmp_path / "all")
    assert sum(r.converted for r in reps) == 8 and sum(r.linked for r in reps) == 1
    r1 = reps[0]
    assert (tmp_path / "r1").read_text() == f"converted {r1.converted} done 0 linked {r1.linked} failed 0\n"
    assert (tmp_path / "p1").read_text() == f"{r1.converted} {r1.converted}\n"
    # the same parts again in one output tree: each finds only its own files, all done
    for k in (1, 2):
        convert_tree(src, tmp_path / "both", part=(k, 2), nj=2, progress=False)
    rep = convert_tree(src, tmp_path / "both", progress=False)
    assert (rep.converted, rep.done, rep.linked) == (0, 8, 0)


@needs_ffmpeg
def test_a_part_removes_only_its_own_stale_temp_files(tmp_path):
    src = copy_tree_of(tmp_path / "aac", NAMES)
    out = tmp_path / "flac"
    names = NAMES[:4]  # one folder: spk0
    mine = next(n for n in names if convert_audio.part_of(f"{n}.m4a", 2) == 1)
    other = next(n for n in names if convert_audio.part_of(f"{n}.m4a", 2) == 2)
    (out / "spk0").mkdir(parents=True)
    stale_mine = out / "spk0" / f".{Path(mine).name}.flac.abcd1234.tmp"
    in_progress = out / "spk0" / f".{Path(other).name}.flac.efgh5678.tmp"  # part 2 is writing it
    for p in (stale_mine, in_progress):
        p.write_bytes(b"half a flac")
    convert_tree(src, out, part=(1, 2), progress=False)
    assert not stale_mine.exists() and in_progress.read_bytes() == b"half a flac"
    assert (out / f"{mine}.flac").is_file() and not (out / f"{other}.flac").exists()
    convert_tree(src, out, part=(2, 2), progress=False)
    assert not in_progress.exists() and (out / f"{other}.flac").is_file()


def test_convert_audio_cli_errors(tmp_path, monkeypatch, capsys):
    from pysv.bin import convert_audio as cli

    src = tmp_path / "aac" / "spk0"
    src.mkdir(parents=True)
    (src / "a.m4a").write_bytes(b"\x00")
    monkeypatch.setattr(convert_audio.shutil, "which", lambda name: None)
    assert cli.main([str(tmp_path / "aac"), str(tmp_path / "out"), "--part", "1/1", "--no-progress"]) == 1
    assert "pysv.bin.convert_audio: error: --convert-audio needs ffmpeg" in capsys.readouterr().err
    for bad in ("0/2", "3/2", "x"):
        with pytest.raises(SystemExit):
            cli.main([str(tmp_path / "aac"), str(tmp_path / "out"), "--part", bad])
    assert cli.part_arg("2/3") == (2, 3)


def convert_sh(*args):
    return subprocess.run(["steps/convert_audio.sh", "--cmd", "steps/launch/local.sh", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


@needs_ffmpeg
def test_convert_audio_sh_runs_parts_through_the_launcher(tmp_path):
    src = copy_tree_of(tmp_path / "aac", NAMES)
    out = tmp_path / "flac"
    r = convert_sh("--nj", 2, src, out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{src} -> {out}: 8 converted, 0 already done, 1 linked, 0 failed (2 jobs" in r.stdout
    assert files_under(out) == sorted([f"{n}.flac" for n in NAMES] + ["spk0/plain.wav"])
    for k in (1, 2):
        log = (out / ".log" / f"convert.{k}.log").read_text()
        assert f"--part {k}/2" in log and "# Ended (code 0)" in log
    # a killed run: one output missing, a half-written temp file; the re-run (other --nj) finishes it
    (out / "spk1" / "00002.flac").unlink()
    (out / "spk1" / ".00002.flac.abcd1234.tmp").write_bytes(b"half")
    r = convert_sh("--nj", 3, src, out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 converted, 7 already done, 0 linked, 0 failed (3 jobs" in r.stdout
    assert not list(out.rglob("*.tmp")) and sf.info(str(out / "spk1" / "00002.flac")).frames > 0
    # a file ffmpeg cannot read: its job fails, named with its log and the error; the rest is done
    (src / "spk1" / "broken.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A not really")
    k = convert_audio.part_of("spk1/broken.m4a", 2)
    r = convert_sh("--nj", 2, src, out)
    assert r.returncode == 1
    assert "0 converted, 8 already done, 0 linked, 1 failed (2 jobs" in r.stdout
    assert f"job {k} of 2 failed; see {out}/.log/convert.{k}.log" in r.stderr
    assert "broken.m4a: ffmpeg failed" in r.stderr


def test_convert_audio_sh_checks_its_arguments(tmp_path):
    (tmp_path / "c").mkdir()
    r = convert_sh(tmp_path / "c", tmp_path / "c" / "flac")
    assert r.returncode == 1 and "inside" in r.stderr
    r = convert_sh("--nj", 0, tmp_path / "c", tmp_path / "o")
    assert r.returncode == 1 and "--nj must be a positive integer" in r.stderr
    r = convert_sh(tmp_path / "missing", tmp_path / "o")
    assert r.returncode == 1 and "not found" in r.stderr
    r = subprocess.run(["steps/convert_audio.sh", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--nj=4" in r.stdout and "--cmd=" in r.stdout


def test_run_sh_converts_through_steps_convert_audio_sh():
    text = (REPO / "run.sh").read_text()
    assert text.count('steps/convert_audio.sh --nj "$nj" --cmd "$cpu_cmd"') == 3
    assert '"$corpus_dir" "$ca"' in text and '"$test_corpus_dir" "${ca}_test"' in text
    assert '"$vox2_dir" "$ca"' in text
