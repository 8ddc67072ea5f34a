"""Stage 0 from existing Kaldi data dirs: plain paths, command pipes, segments, bad input, the
command line, the shell wrapper and run.sh's --corpus kaldi; stage 1 on the prepared sets."""
from __future__ import annotations

import io
import os
import shlex
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf

from pysv.data.corpora.kaldi import _fix_streamed_wav, decode_audio_bytes, prepare_kaldi
from pysv.data.prepare import AudioOptions
from pysv.utils.io import DataError, read_table, read_trials

REPO = Path(__file__).resolve().parents[1]
SR = 16000
QUIET = AudioOptions(progress=False, nj=1)
PY = shlex.quote(sys.executable)


def write_wav(path: Path, seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = (np.random.default_rng(seed).uniform(-0.3, 0.3, int(seconds * sr)) * 32767).astype(np.int16)
    sf.write(str(path), x, sr, subtype="PCM_16")
    return x


def write_dir(d: Path, wav_scp: dict, utt2spk: dict, segments: dict = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "wav.scp").write_text("".join(f"{k} {v}\n" for k, v in wav_scp.items()))
    (d / "utt2spk").write_text("".join(f"{k} {v}\n" for k, v in utt2spk.items()))
    if segments is not None:
        (d / "segments").write_text("".join(f"{k} {' '.join(map(str, v))}\n" for k, v in segments.items()))
    return d


def plain_dir(root: Path, n_spk: int = 3, n_utt: int = 2, prefix: str = "spk", seed: int = 0):
    """A Kaldi dir of whole-file utterances with plain paths; returns (dir, {utt: samples})."""
    wav, u2s, audio = {}, {}, {}
    for s in range(n_spk):
        for u in range(n_utt):
            utt = f"{prefix}{s}-u{u}"
            p = root / "audio" / f"{utt}.wav"
            audio[utt] = write_wav(p, 0.8 + 0.1 * u, seed=seed + 10 * s + u)
            wav[utt], u2s[utt] = str(p), f"{prefix}{s}"
    return write_dir(root / f"{prefix}_dir", wav, u2s), audio


def read_int16(path) -> np.ndarray:
    x, sr = sf.read(str(path), dtype="int16")
    assert sr == SR
    return x


def check_set(set_dir: Path, utt2spk: dict) -> dict:
    """The prepared Kaldi dir lists plain files whose durations are in utt2dur; returns wav.scp."""
    wav = read_table(set_dir / "wav.scp")
    assert read_table(set_dir / "utt2spk") == utt2spk
    assert set(wav) == set(utt2spk) and (set_dir / ".done").is_file()
    utt2dur = read_table(set_dir / "utt2dur")
    for utt, path in wav.items():
        assert os.path.isabs(path) and os.path.isfile(path) and "|" not in path
        info = sf.info(path)
        assert info.channels == 1 and info.samplerate == SR
        assert abs(float(utt2dur[utt]) - info.frames / SR) < 1e-3
    return wav


# ----------------------------------------------------------------------------------------------
# plain paths
# ----------------------------------------------------------------------------------------------
def test_plain_paths_kept_and_trials_generated_given_or_own(tmp_path, caplog):
    train, _ = plain_dir(tmp_path / "in", 4, 2, "a")
    test, _ = plain_dir(tmp_path / "in", 3, 3, "t", seed=100)
    root = tmp_path / "data"
    dirs = prepare_kaldi(train, test, root, audio_opts=QUIET)
    assert dirs == [root / "kaldi_train", root / "kaldi_test"]
    wav = check_set(root / "kaldi_train", read_table(train / "utt2spk"))
    assert wav == read_table(train / "wav.scp")  # whole plain files are read where they are
    assert not (root / "kaldi_train" / "audio").exists()
    check_set(root / "kaldi_test", read_table(test / "utt2spk"))
    trials = read_trials(root / "kaldi_test" / "trials")
    assert sum(lab for *_, lab in trials) == 3 * 3  # every target pair of 3 speakers x 3 utterances
    assert len(trials) == 18
    assert (root / "manifests" / "kaldi_cuts_kaldi_test.jsonl.gz").is_file()
    # a given trial list, then the test dir's own trials file
    given = tmp_path / "given_trials"
    given.write_text("t0-u0 t0-u1 target\nt0-u0 t1-u0 nontarget\n")
    prepare_kaldi(train, test, root, trials=str(given), audio_opts=QUIET)
    assert read_trials(root / "kaldi_test" / "trials") == [("t0-u0", "t0-u1", 1), ("t0-u0", "t1-u0", 0)]
    (test / "trials").write_text("1 t2-u0 t2-u2\n")
    prepare_kaldi(train, test, root, audio_opts=QUIET)
    assert read_trials(root / "kaldi_test" / "trials") == [("t2-u0", "t2-u2", 1)]
    # the same inputs: skipped; a rewritten audio file: prepared again
    caplog.set_level("INFO")
    prepare_kaldi(train, test, root, audio_opts=QUIET)
    assert "already prepared" in caplog.text
    write_wav(Path(read_table(train / "wav.scp")["a1-u0"]), 1.5, seed=77)
    caplog.clear()
    prepare_kaldi(train, test, root, audio_opts=QUIET)
    assert "preparing kaldi_train, kaldi_test again" in caplog.text
    assert read_table(root / "kaldi_train" / "utt2dur")["a1-u0"] == "1.5"


# ----------------------------------------------------------------------------------------------
# commands
# ----------------------------------------------------------------------------------------------
def streamed_wav_writer(path: Path) -> str:
    """A command writing ``path`` as a pipe would (RIFF and data sizes left 0)."""
    code = ("import sys; b = bytearray(open(sys.argv[1], 'rb').read()); i = b.find(b'data'); "
            "b[4:8] = b[i + 4:i + 8] = bytes(4); sys.stdout.buffer.write(b)")
    return f"{PY} -c {shlex.quote(code)} {shlex.quote(str(path))} |"


def test_command_pipes_run_once_and_materialised(tmp_path):
    src = tmp_path / "src"
    log = tmp_path / "runs.log"
    wav, u2s, audio = {}, {}, {}
    for s in range(3):
        for u in range(2):
            utt = f"spk{s}-u{u}"
            audio[utt] = write_wav(src / f"{utt}.wav", 0.9, seed=s * 7 + u)
            u2s[utt] = f"spk{s}"
            if u == 0:  # cat, with a record of every run
                wav[utt] = f"echo {utt} >> {shlex.quote(str(log))}; cat {shlex.quote(str(src / (utt + '.wav')))} |"
            else:
                wav[utt] = streamed_wav_writer(src / f"{utt}.wav")
    d = write_dir(tmp_path / "train", wav, u2s)
    root = tmp_path / "data"
    prepare_kaldi(d, None, root, audio_opts=AudioOptions(progress=False, nj=2))
    out = check_set(root / "kaldi_train", u2s)
    for utt, path in out.items():
        assert path == str(root / "kaldi_train" / "audio" / f"{utt}.flac")
        np.testing.assert_array_equal(read_int16(path), audio[utt])
    assert sorted(log.read_text().split()) == ["spk0-u0", "spk1-u0", "spk2-u0"]  # each pipe ran once
    assert not (root / "kaldi_train" / "audio" / ".staged").exists()
    # the same inputs again: skipped, nothing runs
    prepare_kaldi(d, None, root, audio_opts=QUIET)
    assert len(log.read_text().split()) == 3
    # --audio-format wav
    prepare_kaldi(d, None, tmp_path / "d2", audio_format="wav", audio_opts=QUIET)
    assert all(p.endswith(".wav") for p in read_table(tmp_path / "d2" / "kaldi_train" / "wav.scp").values())


def test_streamed_wav_header_is_fixed():
    x = (np.arange(1000) % 200 - 100).astype(np.int16)
    buf = io.BytesIO()
    sf.write(buf, x, 8000, format="WAV", subtype="PCM_16")
    good = buf.getvalue()
    assert _fix_streamed_wav(good) == good
    bad = bytearray(good)
    i = bad.find(b"data")
    bad[4:8] = bad[i + 4:i + 8] = struct.pack("<I", 0)
    y, sr, subtype = decode_audio_bytes(bytes(bad))
    assert sr == 8000 and subtype == "PCM_16"
    np.testing.assert_array_equal((y[:, 0] * 32768).round().astype(np.int16), x)


def test_command_at_another_rate_resampled_or_refused(tmp_path):
    src = tmp_path / "src"
    wav, u2s = {}, {}
    for s in range(2):
        for u in range(2):
            utt = f"s{s}-u{u}"
            write_wav(src / f"{utt}.wav", 1.0, sr=8000, seed=s + u)
            wav[utt], u2s[utt] = f"cat {src / (utt + '.wav')} |", f"s{s}"
    d = write_dir(tmp_path / "train", wav, u2s)
    with pytest.raises(DataError, match="sample rate 8000 Hz") as ei:
        prepare_kaldi(d, None, tmp_path / "refused", audio_opts=QUIET)
    assert "s0-u0" in str(ei.value) and "cat " in str(ei.value)
    assert not (tmp_path / "refused").exists()
    prepare_kaldi(d, None, tmp_path / "data", audio_opts=AudioOptions(progress=False, on_rate_mismatch="resample"))
    out = check_set(tmp_path / "data" / "kaldi_train", u2s)
    assert all(abs(sf.info(p).frames - SR) <= 1 for p in out.values())


# ----------------------------------------------------------------------------------------------
# segments
# ----------------------------------------------------------------------------------------------
def segmented_dir(tmp_path: Path, pipe: bool = True):
    """Three 4-s recordings (through a command when ``pipe``), two segments each; the second runs
    to the end (-1), the third speaker's first overshoots its recording by 0.2 s."""
    src = tmp_path / "src"
    wav, segs, u2s, audio = {}, {}, {}, {}
    for s in range(3):
        rec = f"rec{s}"
        audio[rec] = write_wav(src / f"{rec}.wav", 4.0, seed=50 + s)
        wav[rec] = f"cat {src / (rec + '.wav')} |" if pipe else str(src / f"{rec}.wav")
        segs[f"tspk{s}-seg0"] = (rec, 0.5, 2.0)
        segs[f"tspk{s}-seg1"] = (rec, 2.5, -1) if s < 2 else (rec, 2.5, 4.2)
        u2s[f"tspk{s}-seg0"] = u2s[f"tspk{s}-seg1"] = f"tspk{s}"
    return write_dir(tmp_path / "test", wav, u2s, segs), audio, u2s


@pytest.mark.parametrize("pipe", [True, False], ids=["commands", "plain"])
def test_segments_cut_into_files(tmp_path, pipe):
    d, audio, u2s = segmented_dir(tmp_path, pipe)
    root = tmp_path / "data"
    prepare_kaldi(None, d, root, audio_opts=QUIET)
    out = check_set(root / "kaldi_test", u2s)
    durs = read_table(root / "kaldi_test" / "utt2dur")
    for s in range(3):
        x = audio[f"rec{s}"]
        np.testing.assert_array_equal(read_int16(out[f"tspk{s}-seg0"]), x[8000:32000])
        np.testing.assert_array_equal(read_int16(out[f"tspk{s}-seg1"]), x[40000:])  # -1 / overshoot: to the end
        assert float(durs[f"tspk{s}-seg0"]) == 1.5 and float(durs[f"tspk{s}-seg1"]) == 1.5
    assert len(read_trials(root / "kaldi_test" / "trials")) == 6  # 3 target + 3 non-target
    assert not (root / "kaldi_test" / "audio" / ".staged").exists()


def test_features_computed_on_prepared_sets(tmp_path):
    from pysv.bin import make_features
    d, _, u2s = segmented_dir(tmp_path)
    train, _ = plain_dir(tmp_path / "in", 3, 2, "a")
    root = tmp_path / "data"
    prepare_kaldi(train, d, root, audio_opts=QUIET)
    for name in ("kaldi_train", "kaldi_test"):
        out = root / f"{name}_fbank40"
        rc = make_features.main(["--data", str(root / name), "--feat-config", "fbank40", "--out", str(out)])
        assert rc in (0, None)
        feats = dict(kaldiio.load_scp(str(out / "feats.scp")))
        assert set(feats) == set(read_table(root / name / "utt2spk"))
        frames = read_table(out / "utt2num_frames")
        for utt, m in feats.items():
            assert m.shape[1] == 40 and m.shape[0] == int(frames[utt]) and np.isfinite(m).all()
    # 1.5 s segments -> 148 frames (25 ms windows, 10 ms shift, snip_edges)
    assert read_table(root / "kaldi_test_fbank40" / "utt2num_frames")["tspk0-seg0"] == "148"


# ----------------------------------------------------------------------------------------------
# bad input: named culprits, nothing written (or the previous outputs kept)
# ----------------------------------------------------------------------------------------------
def test_failing_command_names_recording_and_command(tmp_path):
    train, _ = plain_dir(tmp_path / "in", 3, 2, "a")
    wav = read_table(train / "wav.scp")
    wav["a1-u1"] = f"cat {tmp_path / 'missing.wav'} |"
    wav["a2-u0"] = "exit 3 |"
    write_dir(train, wav, read_table(train / "utt2spk"))
    root = tmp_path / "data"
    with pytest.raises(DataError) as ei:
        prepare_kaldi(train, None, root, audio_opts=QUIET)
    msg = str(ei.value)
    assert "2 problem(s)" in msg
    assert "recording 'a1-u1'" in msg and f"cat {tmp_path / 'missing.wav'}" in msg and "No such file" in msg
    assert "recording 'a2-u0'" in msg and "exit 3" in msg and "exit status 3" in msg
    assert not root.exists()


def test_failing_command_in_a_pipeline_and_non_audio_output(tmp_path):
    train, _ = plain_dir(tmp_path / "in", 2, 2, "a")
    wav = read_table(train / "wav.scp")
    wav["a0-u0"] = "false | cat |"  # pipefail: the first command's failure counts
    wav["a0-u1"] = "echo hello |"
    write_dir(train, wav, read_table(train / "utt2spk"))
    with pytest.raises(DataError) as ei:
        prepare_kaldi(train, None, tmp_path / "data", audio_opts=QUIET)
    assert "'a0-u0'" in str(ei.value) and "exit status 1" in str(ei.value)
    assert "'a0-u1'" in str(ei.value) and "must write WAV" in str(ei.value)


@pytest.mark.parametrize("case, expect", [
    ("no_utt2spk", "missing utt2spk"),
    ("no_wav", "missing wav.scp"),
    ("unlisted", "no speaker for utterance 'a0-u1'"),
    ("extra", "utterance 'a9-u9' is not in"),
    ("prefix", "does not start with its speaker id"),
    ("ark", "not supported"),
    ("bad_segment", "names recording 'nope'"),
    ("bad_times", "bad times"),
    ("trials", "not in"),
])
def test_bad_dirs_named(tmp_path, case, expect):
    train, _ = plain_dir(tmp_path / "in", 2, 2, "a")
    test, _ = plain_dir(tmp_path / "in", 2, 2, "t", seed=9)
    u2s = read_table(train / "utt2spk")
    wav = read_table(train / "wav.scp")
    trials = None
    culprit = train / "utt2spk"
    if case == "no_utt2spk":
        (train / "utt2spk").unlink()
    elif case == "no_wav":
        (train / "wav.scp").unlink()
        culprit = train / "wav.scp"
    elif case == "unlisted":
        del u2s["a0-u1"]
    elif case == "extra":
        u2s["a9-u9"] = "a9"
    elif case == "prefix":
        u2s["a0-u1"] = "someone"
    elif case == "ark":
        wav["a0-u1"] = "/x/feats.ark:1234"
        culprit = train / "wav.scp"
    elif case in ("bad_segment", "bad_times"):
        segs = {u: (u, 0.0, -1) for u in wav}
        segs["a0-u1"] = ("nope", 0.0, 0.5) if case == "bad_segment" else ("a0-u1", 0.6, 0.2)
        write_dir(train, wav, u2s, segs)
        culprit = train / "segments"
    elif case == "trials":
        trials = tmp_path / "trials"
        trials.write_text("t0-u0 zz-u0 target\n")
        culprit = trials
    if case not in ("no_utt2spk", "no_wav", "bad_segment", "bad_times"):
        write_dir(train, wav, u2s)
    with pytest.raises(DataError, match=expect) as ei:
        prepare_kaldi(train, test, tmp_path / "data", trials=trials and str(trials), audio_opts=QUIET)
    assert str(culprit) in str(ei.value)
    assert not (tmp_path / "data").exists()


def test_failed_rerun_keeps_previous_outputs(tmp_path):
    d, _, u2s = segmented_dir(tmp_path)
    root = tmp_path / "data"
    prepare_kaldi(None, d, root, audio_opts=QUIET)
    before = {p: p.read_bytes() for p in sorted((root / "kaldi_test").rglob("*")) if p.is_file()}
    wav = read_table(d / "wav.scp")
    wav["rec1"] = "exit 1 |"
    (d / "wav.scp").write_text("".join(f"{k} {v}\n" for k, v in wav.items()))
    with pytest.raises(DataError, match="rec1"):
        prepare_kaldi(None, d, root, audio_opts=QUIET)
    after = {p: p.read_bytes() for p in sorted((root / "kaldi_test").rglob("*")) if p.is_file()}
    assert after == before
    assert not (root / "kaldi_test" / ".audio.old").exists()


def test_speakers_shared_by_train_and_test_refused(tmp_path):
    train, _ = plain_dir(tmp_path / "a", 2, 2, "s")
    test, _ = plain_dir(tmp_path / "b", 2, 2, "s")
    with pytest.raises(DataError, match="appear in both"):
        prepare_kaldi(train, test, tmp_path / "data", audio_opts=QUIET)


# ----------------------------------------------------------------------------------------------
# command line, wrapper, run.sh
# ----------------------------------------------------------------------------------------------
def test_cli_and_shell_wrapper(tmp_path):
    from pysv.bin.prepare_data import main
    train, _ = plain_dir(tmp_path / "in", 3, 2, "a")
    test, _ = plain_dir(tmp_path / "in", 2, 2, "t", seed=3)
    assert main(["kaldi", "--train-data-dir", str(train), "--test-data-dir", str(test), "--name", "k",
                 "--data-root", str(tmp_path / "d"), "--no-progress", "--nj", "1"]) == 0
    assert (tmp_path / "d" / "k_test" / "trials").is_file()
    assert main(["kaldi", "--train-data-dir", str(tmp_path / "nope"), "--data-root", str(tmp_path / "x")]) == 1
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    r = subprocess.run([str(REPO / "local" / "prepare_kaldi.sh"), "--nj", "1", "--no-progress", str(train), str(test),
                        str(tmp_path / "w")], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "w" / "kaldi_train" / ".done").is_file()
    r = subprocess.run([str(REPO / "local" / "prepare_kaldi.sh"), "--help"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "--train-data-dir=" in r.stdout and "--trials=" in r.stdout
    assert "usage: python -m pysv.bin.prepare_data kaldi" in r.stdout
    assert r.stdout.startswith((REPO / "local" / "prepare_kaldi.sh").read_text().splitlines()[1].lstrip("# "))
    r = subprocess.run([str(REPO / "local" / "prepare_kaldi.sh"), "--bogus-option", "1"], capture_output=True,
                       text=True, env=env)
    assert r.returncode != 0 and "invalid option --bogus-option" in r.stderr
    # what run.sh passes, as prepare_data arguments (python stubbed)
    stub = ('python() { printf "[%s]" "$@"; echo; }; export -f python; local/prepare_kaldi.sh --data-root data '
            "--name kd --train-data-dir '/a b' --test-data-dir /t --trials /tr --nontarget-ratio 1.0 "
            "--on-rate-mismatch refuse --min-utt-duration 0.5 --force")
    r = subprocess.run(["bash", "-c", stub], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == (
        "[-m][pysv.bin.prepare_data][kaldi][--train-data-dir][/a b][--test-data-dir][/t][--trials][/tr][--name][kd]"
        "[--nontarget-ratio][1.0][--on-rate-mismatch][refuse][--min-utt-duration][0.5][--force][--check-audio]"
        "[--data-root][data]")


def test_run_sh_corpus_kaldi_stage0(tmp_path):
    """run.sh --corpus kaldi (stage 0) in a copy of the recipe's scripts (bootstrap stubbed)."""
    work = tmp_path / "recipe"
    work.mkdir()
    for f in ("run.sh", "path.sh", "cmd.sh"):
        shutil.copy2(REPO / f, work / f)
    for d in ("utils", "local"):
        shutil.copytree(REPO / d, work / d)
    (work / "conf").symlink_to(REPO / "conf")
    (work / "steps").mkdir()
    (work / "steps" / "bootstrap.sh").write_text("#!/usr/bin/env bash\nexit 0\n")
    (work / "steps" / "bootstrap.sh").chmod(0o755)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=str(REPO))
    r = subprocess.run(["./run.sh", "--corpus", "kaldi", "--train-data-dir", "/x"], cwd=work, capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode != 0 and "needs --train-data-dir and --test-data-dir" in r.stderr
    train, _ = plain_dir(tmp_path / "in", 3, 2, "a")
    test, _ = segmented_dir(tmp_path)[:2]
    trials = tmp_path / "my_trials"
    trials.write_text("tspk0-seg0 tspk0-seg1 target\ntspk0-seg0 tspk1-seg1 nontarget\n")
    r = subprocess.run(["./run.sh", "--corpus", "kaldi", "--train-data-dir", str(train), "--test-data-dir", str(test),
                        "--trials", str(trials), "--name", "kd", "--stage", "0", "--stop-stage", "0"],
                       cwd=work, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "train kd_train, test kd_test" in r.stdout
    assert read_trials(work / "data" / "kd_test" / "trials") == read_trials(trials)
    assert (work / "data" / "kd_train" / ".done").is_file()
    assert len(read_table(work / "data" / "kd_test" / "wav.scp")) == 6
