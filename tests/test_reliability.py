"""Completion means "complete for these inputs and options": stale or partial results are redone,
never reused; changed configs are refused by name; every remedy a message suggests exists."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import kaldiio
import numpy as np
import pytest

from pysv.bin import extract as extract_bin
from pysv.bin import make_features
from pysv.bin import results_table
from pysv.bin import score as score_bin
from pysv.bin import train as train_bin
from pysv.utils import stage

REPO = Path(__file__).resolve().parents[1]
FAST = ["sampler.batch_size=10", "data.crop=100", "data.num_workers=0", "data.valid_speakers=2",
        "train.log_interval=1", "optim.lr=0.05", "model.hparams.embed_dim=32"]


def train(tiny, exp, *extra, resume=True):
    args = ["--config", str(REPO / "conf" / "thin_resnet34_angleproto.yaml"), "--exp-dir", str(exp),
            "--threads", "2", f"data.train={tiny['train']}", *FAST, *extra]
    return train_bin.main(args + (["--resume"] if resume else []))


def extract(exp, data, *extra):
    return extract_bin.main(["--exp", str(exp), "--data", str(data), *extra])


def test_more_epochs_then_stages_3_to_5_use_the_new_model(tiny_recipe, tmp_path, capsys):
    exp = tmp_path / "exp" / "sys"
    test = tiny_recipe["test"]
    trials = tmp_path / "trials"
    utts = sorted(line.split()[0] for line in (test / "utt2spk").read_text().splitlines())
    u2s = dict(line.split() for line in (test / "utt2spk").read_text().splitlines())
    trials.write_text("".join(f"{a} {b} {'target' if u2s[a] == u2s[b] else 'nontarget'}\n"
                              for i, a in enumerate(utts) for b in utts[i + 1:]))

    def score():
        return score_bin.main(["--exp", str(exp), "--trials", str(trials), "--test-set", test.name,
                               "--backend", "cosine", "--no-plot"])

    assert train(tiny_recipe, exp, "train.epochs=1") == 0
    assert extract(exp, test) == 0 and score() == 0
    emb_dir = exp / "embeddings" / test.name
    assert stage.info(emb_dir / ".done_xvector")["model_epochs"] == 1
    first = dict(kaldiio.load_scp(str(emb_dir / "xvector.scp")))
    first = {k: np.asarray(v) for k, v in first.items()}
    # the same command again: everything is complete
    assert train(tiny_recipe, exp, "train.epochs=1") == 0
    assert "skipping" in capsys.readouterr().err
    # more epochs: the finished run continues from its last epoch ...
    assert train(tiny_recipe, exp, "train.epochs=2") == 0
    hist = json.loads((exp / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2]
    # ... and stage 3 sees the new final.pt, stage 5 the new embeddings
    reason = stage.check(emb_dir / ".done_xvector", extract_bin.Job.plan(_args(exp, test)).fingerprint)
    assert reason is not None and reason.startswith("model")
    assert extract(exp, test) == 0
    assert stage.info(emb_dir / ".done_xvector")["model_epochs"] == 2
    second = {k: np.asarray(v) for k, v in kaldiio.load_scp(str(emb_dir / "xvector.scp")).items()}
    assert not np.allclose(first[utts[0]], second[utts[0]])
    assert score() == 0
    metrics = json.loads(next((exp / "scores").glob("*_cosine.metrics")).read_text())
    assert metrics["model_epochs"] == 2
    rows = results_table.collect(tmp_path / "exp")
    assert [r["epochs"] for r in rows] == [2]


def _args(exp, data, mode="full"):
    import argparse
    return argparse.Namespace(exp=str(exp), data=str(data), mode=mode, crop_len=0, num_crops=0, overlap=None)


@pytest.fixture(scope="module")
def trained(tiny_recipe, tmp_path_factory):
    exp = tmp_path_factory.mktemp("trained") / "sys"
    assert train(tiny_recipe, exp, "train.epochs=1") == 0
    return exp


def test_changed_config_is_refused_by_name_and_allowed_keys_may_change(tiny_recipe, trained, capsys):
    # another learning rate for a finished run: refused, naming the key and the remedy
    assert train(tiny_recipe, trained, "train.epochs=1", "optim.lr=0.5") == 2
    err = capsys.readouterr().err
    assert "optim.lr: 0.05 -> 0.5" in err and "--overwrite" in err
    assert train(tiny_recipe, trained, "train.epochs=1", "model.hparams.pooling=tap") == 2
    assert "model.hparams.pooling" in capsys.readouterr().err
    # keys that only change how long or how verbosely a run trains are accepted
    assert train(tiny_recipe, trained, "train.epochs=1", "train.log_interval=5") == 0
    assert "skipping" in capsys.readouterr().err


def test_stage3_never_marks_a_partial_set_done(tiny_recipe, trained, tmp_path):
    test = tiny_recipe["test"]
    exp = tmp_path / "sys"
    shutil.copytree(trained, exp)
    n = len((test / "utt2spk").read_text().splitlines())
    # a killed 3-job run left only part 1; a merge of those parts is refused
    assert extract(exp, test, "--job", "1", "--nj", "3") == 0
    assert extract(exp, test, "--merge", "--nj", "3") == 2
    assert not (exp / "embeddings" / test.name / ".done_xvector").exists()
    # rerun with another --nj: part 1 of 3 is not taken for part 1 of 2, and the merge is complete
    for j in (1, 2):
        assert extract(exp, test, "--job", str(j), "--nj", "2") == 0
    assert extract(exp, test, "--merge", "--nj", "2") == 0
    emb = kaldiio.load_scp(str(exp / "embeddings" / test.name / "xvector.scp"))
    assert len(emb) == n
    # a merge whose parts do not cover utt2spk is refused: drop an utterance from a part
    job = extract_bin.Job.plan(_args(exp, test))
    some = {k: np.asarray(v) for k, v in list(emb.items())[:-1]}
    with pytest.raises(Exception, match=f"{n - 1} embeddings for the {n} utterances"):
        job.finish(some)


def test_truncated_embedding_and_feature_archives_are_redone(tiny_recipe, trained, tmp_path, caplog):
    test = tiny_recipe["test"]
    exp = tmp_path / "sys"
    shutil.copytree(trained, exp)
    assert extract(exp, test) == 0
    ark = exp / "embeddings" / test.name / "xvector.ark"
    size = ark.stat().st_size
    with open(ark, "r+b") as f:
        f.truncate(size // 2)
    reason = stage.check(ark.parent / ".done_xvector", extract_bin.Job.plan(_args(exp, test)).fingerprint)
    assert reason is not None and "truncated" in reason
    assert extract(exp, test) == 0
    assert ark.stat().st_size == size
    # features: a truncated ark of a complete feature dir is found by --is-done and recomputed
    feats = tmp_path / "feats"
    shutil.copytree(tiny_recipe["test_feats"], feats)
    scp = feats / "feats.scp"
    scp.write_text(scp.read_text().replace(str(tiny_recipe["test_feats"]), str(feats)))
    args = ["--data", str(test), "--feat-config", "fbank40", "--out", str(feats)]
    assert make_features.main(args + ["--is-done"]) == 0
    part = sorted((feats / "data").glob("feats.*.ark"))[0]
    with open(part, "r+b") as f:
        f.truncate(part.stat().st_size - 100)
    assert make_features.main(args + ["--is-done"]) == 3
    assert make_features.main(args) in (0, None)
    assert make_features.main(args + ["--is-done"]) == 0


def write_corpus(root: Path, n_spk: int, n_utt: int, samples=lambda s, u: 8000, seed: int = 0) -> Path:
    """A ``<spk>/<utt>.wav`` tree of noise (16 kHz), ``samples(s, u)`` samples per utterance."""
    import soundfile as sf
    rng = np.random.default_rng(seed)
    for s in range(n_spk):
        (root / f"spk{s}").mkdir(parents=True, exist_ok=True)
        for u in range(n_utt):
            x = 0.1 * rng.standard_normal(samples(s, u)).astype(np.float32)
            sf.write(root / f"spk{s}" / f"u{u}.wav", x, 16000)
    return root


def test_stage0_folder_corpus_redone_after_a_speaker_is_added(tmp_path):
    from pysv.data.corpora.folder import prepare_folder
    corpus = write_corpus(tmp_path / "corpus", 6, 3)
    data = tmp_path / "data"
    prepare_folder(corpus, data_root=str(data), name="c", test_fraction=0.34)
    before = sum(len((data / f"c_{x}" / "spk2utt").read_text().splitlines()) for x in ("train", "test"))
    shutil.copytree(corpus / "spk0", corpus / "spk9")
    prepare_folder(corpus, data_root=str(data), name="c", test_fraction=0.34)
    after = sum(len((data / f"c_{x}" / "spk2utt").read_text().splitlines()) for x in ("train", "test"))
    assert (before, after) == (6, 7)


def test_every_remedy_a_message_suggests_is_an_option_of_run_sh():
    # messages of the Python stages say "use --X" / "pass --X" / "or --X"; a run.sh user must be able
    # to follow them. --resume: run.sh always passes it to training (its help says so).
    help_text = subprocess.run(["./run.sh", "--help"], cwd=REPO, capture_output=True, text=True,
                               timeout=60).stdout
    suggested = set()
    for path in (REPO / "pysv").rglob("*.py"):
        for line in path.read_text().splitlines():
            if "add_argument" in line or "help=" in line:
                continue
            for m in re.finditer(r"(?:[Uu]se|pass) (--[a-z][a-z0-9-]+)|or (--[a-z][a-z0-9-]+) to ", line):
                suggested.add(m.group(1) or m.group(2))
    suggested -= {"--resume", "--help"}
    assert {"--force", "--overwrite", "--on-rate-mismatch", "--skip-missing"} <= suggested
    missing = sorted(opt for opt in suggested if f"  {opt}=" not in help_text)
    assert not missing, f"messages suggest options run.sh does not have: {missing}"
    assert "--resume" in (REPO / "run.sh").read_text()


def test_short_utterances_are_left_out_and_listed(tmp_path):
    from pysv.data.corpora.folder import prepare_folder
    from pysv.data.prepare import AudioOptions
    corpus = write_corpus(tmp_path / "corpus", 4, 3, seed=1,  # 4800 samples = 0.3 s: too short
                          samples=lambda s, u: 4800 if (s, u) in ((0, 0), (3, 1)) else 16000)
    data = tmp_path / "data"
    prepare_folder(corpus, data_root=str(data), name="c", test_fraction=0.5, audio_opts=AudioOptions(nj=1))
    listed, kept, trial_utts = {}, set(), set()
    for x in ("train", "test"):
        d = data / f"c_{x}"
        listed.update(dict(line.split() for line in (d / "short_utts").read_text().splitlines()))
        kept |= {line.split()[0] for line in (d / "utt2spk").read_text().splitlines()}
        if (d / "trials").exists():
            trial_utts |= {w for line in (d / "trials").read_text().splitlines() for w in line.split()[:2]}
    assert sorted(listed) == ["spk0-u0", "spk3-u1"] and listed["spk0-u0"] == "0.300"
    assert not set(listed) & kept and not set(listed) & trial_utts and len(kept) == 10


def test_bad_inputs_get_messages_not_tracebacks(tiny_recipe, tmp_path, capsys):
    from pysv.train.config import ConfigError, load_config
    bad = tmp_path / "bad.yaml"
    bad.write_text("system: x\nmodel: name: thin_resnet34\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:2:\d+: yaml syntax error: mapping values"):
        load_config(str(bad))
    # yaml 1.1 reads 1e-4 as a string: a float key takes it as the number it is
    assert load_config(str(REPO / "conf" / "xvector_softmax.yaml"), ["optim.lr=1e-4"])["optim"]["lr"] == 1e-4
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(str(REPO / "conf" / "xvector_softmax.yaml"), ["optim.lr=fast"])
    # a feature yaml with a value of the wrong type: the message names the option
    import pysv.features
    fyaml = tmp_path / "feat.yaml"
    fyaml.write_text("name: f\ntype: fbank\nnum_mel_bins: forty\n")
    with pytest.raises(ValueError, match="feature option num_mel_bins must be an integer, got 'forty'"):
        pysv.features.build(str(fyaml))
    fyaml.write_text("name: f\ntype: fbank\nnum_mel_bins: [40\n")
    with pytest.raises(ValueError, match=r"feat\.yaml:\d+:\d+: yaml syntax error"):
        pysv.features.build(str(fyaml))
    # an invalid loss hparam value and too few speakers for the batch: exit 2 with a message
    exp = tmp_path / "e1"
    assert train(tiny_recipe, exp, "train.epochs=1", "loss.hparams.init_w=-1", resume=False) == 2
    assert "loss.hparams" in (exp / "train.log").read_text() and "init_w must be > 0" in (exp / "train.log").read_text()
    exp = tmp_path / "e2"
    assert train(tiny_recipe, exp, "train.epochs=1", "sampler.batch_size=40", resume=False) == 2
    log_text = (exp / "train.log").read_text()
    assert "distinct speakers" in log_text and "5 training speakers" in log_text


# --------------------------------------------------------------------------------------------
# The stage toolkit (pysv.utils.stage): job splitting, atomic archives, merging parts
# --------------------------------------------------------------------------------------------

def test_split_is_kaldis_split_scp():
    items = [f"u{i}" for i in range(11)]
    for nj in (1, 2, 3, 4, 11):
        parts = [stage.split(items, j, nj) for j in range(1, nj + 1)]
        assert sum(parts, []) == items  # contiguous, in order, every item once
        sizes = [len(p) for p in parts]
        # split_scp.pl: floor(n / nj) each, the first n % nj parts one longer
        assert sizes == [11 // nj + (1 if j < 11 % nj else 0) for j in range(nj)]
    assert [len(stage.split(items[:5], j, 2)) for j in (1, 2)] == [3, 2]
    assert stage.split(items[:2], 3, 3) == []
    with pytest.raises(ValueError, match="--job must be in 1..2"):
        stage.split(items, 3, 2)


def _arrays(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return {f"utt{i}": rng.standard_normal((3 + i, 4)).astype(np.float32) for i in range(n)}


def test_ark_writer_writes_what_kaldiio_writes(tmp_path):
    arrays = {**_arrays(), "vec": np.arange(6, dtype=np.float64)}  # float64 is stored as float32
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path}/ref.ark,{tmp_path}/ref.scp") as w:
        for k, v in arrays.items():
            w(k, np.asarray(v, dtype=np.float32))
    with stage.ArkWriter(tmp_path / "out" / "a.ark", tmp_path / "out" / "a.scp", tmp_path / "out" / "u2nf") as writer:
        for k, v in arrays.items():
            writer.write(k, v)
    assert (tmp_path / "out" / "a.ark").read_bytes() == (tmp_path / "ref.ark").read_bytes()
    ark = str((tmp_path / "out" / "a.ark").resolve())
    assert (tmp_path / "out" / "a.scp").read_text() == (tmp_path / "ref.scp").read_text().replace(
        str(tmp_path / "ref.ark"), ark)
    assert (tmp_path / "out" / "u2nf").read_text().splitlines()[:2] == ["utt0 3", "utt1 4"]
    assert (writer.count, writer.rows) == (6, sum(3 + i for i in range(5)) + 1)
    loaded = kaldiio.load_scp(str(tmp_path / "out" / "a.scp"))
    for k, v in arrays.items():
        np.testing.assert_array_equal(loaded[k], np.asarray(v, dtype=np.float32))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.ark", "a.scp", "u2nf"]


def test_ark_writer_leaves_nothing_when_it_fails(tmp_path):
    with pytest.raises(RuntimeError):
        with stage.ArkWriter(tmp_path / "a.ark", tmp_path / "a.scp") as writer:
            writer.write("utt0", np.zeros((2, 3)))
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    # an earlier complete archive stays as it was
    stage.write_ark(tmp_path / "a.ark", tmp_path / "a.scp", [("x", np.ones((2, 2)))])
    before = (tmp_path / "a.ark").read_bytes()
    with pytest.raises(RuntimeError):
        with stage.ArkWriter(tmp_path / "a.ark", tmp_path / "a.scp") as writer:
            writer.write("y", np.zeros((5, 2)))
            raise RuntimeError("killed")
    assert (tmp_path / "a.ark").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ark", "a.scp"]


def test_a_killed_writer_leaves_no_half_file_and_its_temp_files_are_reset(tmp_path):
    import signal
    import sys
    code = ("import sys, time, numpy as np\n"
            "from pysv.utils import stage\n"
            "part = stage.Part.of(sys.argv[1], 'feats', ['a', 'b'], 1, 1)\n"
            "w = part.writer(num_frames=True)\n"
            "w.write('a', np.zeros((100, 40)))\n"
            "print('written', flush=True)\n"
            "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "written"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names and all(n.startswith(".") and n.endswith(".tmp") for n in names), names  # temp files only
    part = stage.Part.of(tmp_path, "feats", ["a", "b"], 1, 1)
    (tmp_path / "feats.10.ark").write_bytes(b"another job's archive")
    part.reset()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feats.10.ark"]


def _write_parts(tmp_path, arrays, nj):
    keys = sorted(arrays)
    parts = [stage.Part.of(tmp_path / "split", "xvector", keys, j, nj) for j in range(1, nj + 1)]
    for part in parts:
        with part.writer(num_frames=True) as writer:
            for k in part.items:
                writer.write(k, arrays[k])
    return keys, parts


def test_merge_joins_parts_into_one_table_or_one_archive(tmp_path):
    arrays = _arrays(7)
    keys, parts = _write_parts(tmp_path, arrays, 3)
    # scp only: the entries keep naming the parts' archives (Kaldi's feats.scp over feats.JOB.ark)
    assert stage.merge(parts, tmp_path / "feats.scp", num_frames=tmp_path / "utt2num_frames", keys=keys) == keys
    assert (tmp_path / "feats.scp").read_text() == "".join(p.scp.read_text() for p in parts)
    assert (tmp_path / "utt2num_frames").read_text() == "".join(p.num_frames.read_text() for p in parts)
    # one archive: byte for byte what a single writer of all the entries writes
    stage.merge(parts, tmp_path / "all.scp", ark=tmp_path / "all.ark", keys=keys)
    stage.write_ark(tmp_path / "ref.ark", tmp_path / "ref.scp", sorted(arrays.items()))
    assert (tmp_path / "all.ark").read_bytes() == (tmp_path / "ref.ark").read_bytes()
    assert (tmp_path / "all.scp").read_text() == (tmp_path / "ref.scp").read_text().replace("ref.ark", "all.ark")
    for scp in ("feats.scp", "all.scp"):
        loaded = kaldiio.load_scp(str(tmp_path / scp))
        assert list(loaded) == keys
        for k in keys:
            np.testing.assert_array_equal(loaded[k], arrays[k])
    # entries other than the expected ones: refused, nothing written
    with pytest.raises(Exception, match=r"7 entries where 8 were expected \(missing e.g. \['zzz'\]"):
        stage.merge(parts, tmp_path / "bad.scp", ark=tmp_path / "bad.ark", keys=keys + ["zzz"])
    assert not list(tmp_path.glob("bad*")) and not list(tmp_path.glob(".bad*"))


def test_require_complete_names_the_missing_parts_and_discard_removes_stale_outputs(tmp_path):
    arrays = _arrays(4)
    keys, parts = _write_parts(tmp_path, arrays, 2)
    base = {"options": {"dither": 0}}
    stage.write(parts[0].marker, parts[0].fingerprint(base), outputs=[parts[0].ark, parts[0].scp])
    with pytest.raises(Exception, match=r"job\(s\) 2 of 2 not complete: job 2 \(.*xvector.2.scp\): not done yet"):
        stage.require_complete(parts, base, what="x")
    stage.write(parts[1].marker, parts[1].fingerprint(base), outputs=[parts[1].ark, parts[1].scp])
    stage.require_complete(parts, base, what="x")
    # another split is another fingerprint, even where job 1 gets the same items
    other = stage.Part.of(tmp_path / "split", "xvector", keys, 1, 3)
    assert other.items == parts[0].items
    assert stage.check(other.marker, other.fingerprint(base)).startswith("part.nj changed")
    other = stage.Part.of(tmp_path / "split", "xvector", keys[1:], 1, 2)
    assert stage.check(other.marker, other.fingerprint(base)).startswith("part.items.sha1 changed")
    # a merged table whose marker no longer holds goes with its marker; a valid one stays
    stage.merge(parts, tmp_path / "feats.scp")
    stage.write(tmp_path / ".done", base, outputs=[p.ark for p in parts])
    assert stage.discard(tmp_path / ".done", base, [tmp_path / "feats.scp"]) is None
    assert (tmp_path / "feats.scp").is_file()
    reason = stage.discard(tmp_path / ".done", {"options": {"dither": 1}}, [tmp_path / "feats.scp"])
    assert reason.startswith("options.dither changed")
    assert not (tmp_path / ".done").exists() and not (tmp_path / "feats.scp").exists()
