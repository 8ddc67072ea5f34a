"""Stage 4 (pysv.bin.backend), stage 5 (pysv.bin.score) and the results table on tiny kaldiio archives."""
import json
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest

from pysv.backend import LDA, PLDA, SCORERS, PldaBackend, asnorm_cosine_trials, cosine_score, read_kaldi_vector
from pysv.bin import backend as backend_cli
from pysv.bin import results_table
from pysv.bin import score as score_cli
from pysv.metrics import compute_eer, compute_min_dcf
from pysv.utils import io

D = 8


def write_set(root: Path, name: str, n_spk: int, n_utt: int, seed: int, crops: bool = False, nan_utt=None):
    rng = np.random.default_rng(seed)
    spk_means = rng.normal(size=(n_spk, D)) * 2
    emb_dir = root / "exp" / "sys" / "embeddings" / name
    emb_dir.mkdir(parents=True, exist_ok=True)
    data_dir = root / "data" / name
    data_dir.mkdir(parents=True, exist_ok=True)
    utts = []
    vecs = {}
    with kaldiio.WriteHelper(f"ark,scp:{emb_dir}/xvector.ark,{emb_dir}/xvector.scp") as w:
        for s in range(n_spk):
            for u in range(n_utt):
                key = f"{name}{s:02d}-u{u}"
                x = (spk_means[s] + rng.normal(size=D)).astype(np.float32)
                if key == nan_utt:
                    x[3] = np.nan
                w(key, x)
                vecs[key] = x
                utts.append((key, f"{name}{s:02d}"))
    if crops:
        with kaldiio.WriteHelper(f"ark,scp:{emb_dir}/xvector_crops.ark,{emb_dir}/xvector_crops.scp") as w:
            for key, _ in utts:
                w(key, (vecs[key] + 0.3 * rng.normal(size=(10, D))).astype(np.float32))
        with kaldiio.WriteHelper(f"ark,scp:{emb_dir}/xvector_tta.ark,{emb_dir}/xvector_tta.scp") as w:
            for key, _ in utts:
                w(key, (vecs[key] + 0.3 * rng.normal(size=D)).astype(np.float32))
    (data_dir / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in utts))
    # the speaker means stage 3 writes next to the utterance embeddings
    with kaldiio.WriteHelper(f"ark,scp:{emb_dir}/spk_xvector.ark,{emb_dir}/spk_xvector.scp") as w:
        for s in range(n_spk):
            spk = f"{name}{s:02d}"
            w(spk, np.mean([vecs[u] for u, su in utts if su == spk], axis=0))
    return utts, vecs


def write_trials(path: Path, utts, voxceleb=False, only_nontarget=False):
    lines = []
    for i, (a, sa) in enumerate(utts):
        for b, sb in utts[i + 1:]:
            tgt = sa == sb
            if only_nontarget and tgt:
                continue
            lines.append(f"{int(tgt)} {a} {b}\n" if voxceleb else f"{a} {b} {'target' if tgt else 'nontarget'}\n")
    path.write_text("".join(lines))
    return len(lines)


@pytest.fixture
def recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_set(tmp_path, "train", 30, 4, seed=1)
    test_utts, test_vecs = write_set(tmp_path, "test", 5, 3, seed=2, crops=True)
    n = write_trials(tmp_path / "data" / "test" / "trials", test_utts)
    return {"root": tmp_path, "utts": test_utts, "vecs": test_vecs, "n_trials": n}


def run_backend(*extra, train="train"):
    return backend_cli.main(["--exp", "exp/sys", "--train-set", train, "--utt2spk", f"data/{train}/utt2spk",
                             "--lda-dim", "6", *extra])


def run_score(backend, *extra, trials="data/test/trials"):
    return score_cli.main(["--exp", "exp/sys", "--trials", trials, "--test-set", "test",
                           "--backend", backend, *extra])


def read_scores(path):
    rows = io.read_scores(path)
    return [(a, b) for a, b, _ in rows], np.array([s for _, _, s in rows])


def test_backend_stage_writes_kaldi_models_and_skips(recipe, capsys):
    assert run_backend() == 0
    out = recipe["root"] / "exp" / "sys" / "backend"
    for f in ("mean.vec", "transform.mat", "plda", ".done"):
        assert (out / f).is_file()
    assert read_kaldi_vector(out / "mean.vec").shape == (D,)
    assert LDA.read(out / "transform.mat").matrix_.shape == (6, D + 1)
    plda = PLDA.read(out / "plda")
    assert plda.dim == 6 and np.all(np.diff(plda.psi_) <= 0)
    assert (out / "plda").read_bytes().startswith(b"\x00B<Plda> ")
    capsys.readouterr()
    assert run_backend() == 0
    assert "already complete" in capsys.readouterr().out
    # changed options re-fit
    assert run_backend("--num-em-iters", "3") == 0
    assert "already complete" not in capsys.readouterr().out
    # so do changed training embeddings
    write_set(recipe["root"], "train", 30, 4, seed=5)
    assert run_backend("--num-em-iters", "3") == 0
    assert "already complete" not in capsys.readouterr().out
    assert run_backend("--num-em-iters", "3") == 0
    assert "already complete" in capsys.readouterr().out


def test_backend_stage_errors(recipe, capsys):
    # the utt2spk is an explicit argument
    with pytest.raises(SystemExit):
        backend_cli.main(["--exp", "exp/sys", "--train-set", "train"])
    assert "--utt2spk" in capsys.readouterr().err
    # missing embeddings of the named training set
    assert backend_cli.main(["--exp", "exp/sys", "--train-set", "nosuch", "--utt2spk", "data/train/utt2spk"]) == 1
    err = capsys.readouterr().err
    assert "exp/sys/embeddings/nosuch/xvector.scp" in err
    # missing utt2spk
    assert backend_cli.main(["--exp", "exp/sys", "--train-set", "train", "--utt2spk", "data/x/utt2spk"]) == 1
    assert "data/x/utt2spk" in capsys.readouterr().err
    # more LDA dims than speakers allow -> suggestion of a smaller dim
    write_set(recipe["root"], "few", 5, 4, seed=3)
    assert run_backend(train="few") == 1
    err = capsys.readouterr().err
    assert "--lda-dim 4" in err and "smaller dim" in err
    # NaN embedding in the training archive is rejected naming the utterance
    write_set(recipe["root"], "bad", 30, 4, seed=4, nan_utt="bad03-u1")
    assert run_backend(train="bad") == 1
    err = capsys.readouterr().err
    assert "bad03-u1" in err and "NaN" in err


def test_backend_cap_lda_dim(recipe, capsys):
    """--cap-lda-dim (run.sh stage 4) lowers --lda-dim to #speakers - 1 and to the embedding dimension."""
    write_set(recipe["root"], "few", 5, 4, seed=3)
    assert run_backend("--cap-lda-dim", train="few") == 0
    out = recipe["root"] / "exp" / "sys" / "backend"
    assert LDA.read(out / "transform.mat").matrix_.shape == (4, D + 1)
    assert "LDA dimension capped at 4" in (out / "backend.log").read_text()
    # more dims asked than the embedding has: capped at the embedding dimension, not refused
    assert backend_cli.main(["--exp", "exp/sys", "--train-set", "train", "--utt2spk", "data/train/utt2spk",
                             "--lda-dim", str(D + 5), "--cap-lda-dim"]) == 0
    assert LDA.read(out / "transform.mat").matrix_.shape == (D, D + 1)
    # without the flag the same request is refused, naming the embedding dimension
    assert backend_cli.main(["--exp", "exp/sys", "--train-set", "train", "--utt2spk", "data/train/utt2spk",
                             "--lda-dim", str(D + 5), "--force"]) == 1
    assert f"exceeds the embedding dimension {D}" in capsys.readouterr().err


def test_score_cosine_outputs_and_metrics(recipe, capsys):
    assert run_score("cosine") == 0
    out = capsys.readouterr().out
    assert "EER" in out and "minDCF(p=0.01)" in out
    sdir = recipe["root"] / "exp" / "sys" / "scores"
    pairs, scores = read_scores(sdir / "test_cosine")
    assert len(pairs) == recipe["n_trials"]
    v = recipe["vecs"]
    ref = cosine_score(np.stack([v[a] for a, _ in pairs]), np.stack([v[b] for _, b in pairs]))
    np.testing.assert_allclose(scores, ref, atol=2e-6)
    labels = np.array([a.split("-")[0] == b.split("-")[0] for a, b in pairs], dtype=int)
    m = json.loads((sdir / "test_cosine.metrics").read_text())
    assert m["num_trials"] == recipe["n_trials"] and m["num_skipped"] == 0
    assert m["eer"] == pytest.approx(compute_eer(scores, labels)[0], abs=1e-3)
    assert m["min_dcf_p0.01"] == pytest.approx(compute_min_dcf(scores, labels, 0.01), abs=1e-3)
    assert m["min_dcf_p0.05"] == pytest.approx(compute_min_dcf(scores, labels, 0.05), abs=1e-3)
    assert (sdir / "test_cosine_det.png").read_bytes()[:4] == b"\x89PNG"
    # complete -> skipped on re-run
    assert run_score("cosine") == 0
    assert "complete; skipping" in capsys.readouterr().out


def test_score_voxceleb_format_same_result(recipe, capsys):
    write_trials(recipe["root"] / "data" / "test" / "vox.txt", recipe["utts"], voxceleb=True)
    assert run_score("cosine", trials="data/test/vox.txt") == 0
    sdir = recipe["root"] / "exp" / "sys" / "scores"
    assert run_score("cosine") == 0
    a = json.loads((sdir / "test_vox_cosine.metrics").read_text())
    b = json.loads((sdir / "test_cosine.metrics").read_text())
    assert a["trials_name"] == "test_vox" and a["eer"] == b["eer"] and a["num_trials"] == b["num_trials"]


def test_score_missing_utterance_error_and_skip(recipe, capsys):
    trials = recipe["root"] / "data" / "test" / "trials"
    with open(trials, "a") as f:
        f.write("test00-u0 ghost-utt target\n")
        f.write("phantom-utt test01-u1 nontarget\n")
    assert run_score("cosine") == 1
    err = capsys.readouterr().err
    assert "ghost-utt" in err and "--skip-missing" in err and "2 of" in err
    assert run_score("cosine", "--skip-missing") == 0
    out = capsys.readouterr().out
    assert "skipped 2 of" in out
    m = json.loads((recipe["root"] / "exp/sys/scores/test_cosine.metrics").read_text())
    assert m["num_skipped"] == 2 and m["num_trials"] == recipe["n_trials"]


def test_score_rejects_nan_embedding(recipe, capsys):
    write_set(recipe["root"], "test", 5, 3, seed=2, nan_utt="test02-u2")
    assert run_score("cosine") == 1
    err = capsys.readouterr().err
    assert "test02-u2" in err and "NaN" in err


def test_score_no_target_trials(recipe, capsys):
    write_trials(recipe["root"] / "data" / "test" / "nontgt", recipe["utts"], only_nontarget=True)
    assert run_score("cosine", trials="data/test/nontgt") == 1
    assert "no target trials" in capsys.readouterr().err


def test_score_plda_matches_backend_api(recipe, capsys):
    assert run_score("plda") == 1  # stage 4 not run yet
    err = capsys.readouterr().err
    assert "exp/sys/backend/mean.vec" in err and "pysv.bin.backend" in err
    assert run_backend() == 0
    assert run_score("plda", "--no-plot") == 0
    pairs, scores = read_scores(recipe["root"] / "exp/sys/scores/test_plda")
    be = PldaBackend.load(recipe["root"] / "exp/sys/backend")
    v = recipe["vecs"]
    ref = be.score(np.stack([v[a] for a, _ in pairs]), np.stack([v[b] for _, b in pairs]))
    np.testing.assert_allclose(scores, ref, atol=1e-4)
    labels = np.array([a.split("-")[0] == b.split("-")[0] for a, b in pairs], dtype=int)
    m = json.loads((recipe["root"] / "exp/sys/scores/test_plda.metrics").read_text())
    assert m["eer"] == pytest.approx(compute_eer(scores, labels)[0], abs=1e-3)


def test_score_spk_enrollment_with_num_utts(recipe, capsys):
    assert run_backend() == 0
    emb = recipe["root"] / "exp/sys/embeddings/test"
    v = recipe["vecs"]
    spk = sorted({s for _, s in recipe["utts"]})
    with kaldiio.WriteHelper(f"ark,scp:{emb}/spk_xvector.ark,{emb}/spk_xvector.scp") as w:
        for s in spk:
            w(s, np.mean([v[u] for u, ss in recipe["utts"] if ss == s and not u.endswith("u2")], axis=0))
    (emb / "num_utts.ark").write_text("".join(f"{s} 2\n" for s in spk))
    tr = recipe["root"] / "data/test/spk_trials"
    tr.write_text("".join(f"{s} {u} {'target' if ss == s else 'nontarget'}\n"
                          for s in spk for u, ss in recipe["utts"] if u.endswith("u2")))
    assert run_score("plda", "--enroll-level", "spk", trials=str(tr)) == 0
    pairs, scores = read_scores(recipe["root"] / "exp/sys/scores/test_spk_trials_plda")
    be = PldaBackend.load(recipe["root"] / "exp/sys/backend")
    spk_vec = dict(kaldiio.load_scp(str(emb / "spk_xvector.scp")))
    ref = be.score(np.stack([spk_vec[a] for a, _ in pairs]), np.stack([v[b] for _, b in pairs]), num_enroll=2)
    np.testing.assert_allclose(scores, ref, atol=1e-4)


def test_score_other_backends_and_results_table(recipe, capsys):
    assert run_backend() == 0
    assert run_score("cosine_mean", "--train-set", "train", "--no-plot") == 0
    assert run_score("cosine_mean", "--no-plot") == 0  # mean.vec from stage 4
    assert run_score("crops", "--no-plot") == 0
    assert run_score("asnorm", "--train-set", "train", "--asnorm-top-n", "10", "--no-plot") == 0
    assert run_score("plda", "--no-plot") == 0
    assert run_score("asnorm", "--no-plot") == 1
    assert "--train-set" in capsys.readouterr().err
    (recipe["root"] / "exp/sys/embeddings/train/spk_xvector.scp").unlink()
    assert run_score("asnorm", "--train-set", "train", "--no-plot", "--force") == 1
    assert "exp/sys/embeddings/train/spk_xvector.scp" in capsys.readouterr().err
    (recipe["root"] / "exp/sys/num_params").write_text("4380000\n")
    # the trainer's per-epoch record: epochs and summed training-step time go into the table
    (recipe["root"] / "exp/sys/history.json").write_text(json.dumps(
        [{"epoch": 1, "seconds": 50.0, "loss": 1.0}, {"epoch": 2, "seconds": 70.0, "loss": 0.9}]))
    assert results_table.main(["--exp-root", "exp", "--out", "RESULTS_table.md"]) == 0
    table = (recipe["root"] / "RESULTS_table.md").read_text()
    lines = table.strip().splitlines()
    assert lines[0].startswith("| System | Params | Epochs | Train time | Trials | Back-end | EER (%)")
    assert len(lines) == 2 + 4  # cosine_mean, asnorm, crops, plda
    assert all("| sys | 4.38M | 2 | 2.0 min | test |" in line for line in lines[2:])
    assert [line.split("|")[6].strip() for line in lines[2:]] == ["cosine_mean", "asnorm", "crops", "plda"]
    (recipe["root"] / "exp/sys/history.json").unlink()  # no training record: dashes, not an error
    assert results_table.main(["--exp-root", "exp"]) == 0
    assert "| sys | 4.38M | - | - | test |" in capsys.readouterr().out


@pytest.mark.parametrize("mod", ["backend", "score", "results_table"])
def test_help(mod):
    r = subprocess.run([sys.executable, "-m", f"pysv.bin.{mod}", "--help"], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0 and "usage" in r.stdout
    if mod == "score":  # the help describes every back-end of the table
        assert all(f"\n  {name} " in r.stdout for name in SCORERS)


def test_score_rejects_unknown_backend(recipe, capsys):
    with pytest.raises(SystemExit):
        run_score("nosuch")
    assert "cosine_mean" in capsys.readouterr().err


def test_score_reruns_when_an_input_it_reads_changes(recipe, capsys):
    assert run_backend() == 0
    assert run_score("plda", "--no-plot") == 0
    assert run_score("cosine", "--train-set", "train", "--no-plot") == 0
    capsys.readouterr()
    assert run_backend("--num-em-iters", "3") == 0  # a new stage-4 model
    assert run_score("plda", "--no-plot") == 0
    assert "complete; skipping" not in capsys.readouterr().out
    assert run_score("cosine", "--train-set", "train", "--no-plot") == 0  # cosine does not read it
    assert "complete; skipping" in capsys.readouterr().out
    write_set(recipe["root"], "test", 5, 3, seed=6, crops=True)  # new test embeddings
    assert run_score("cosine", "--train-set", "train", "--no-plot") == 0
    assert "complete; skipping" not in capsys.readouterr().out
    (recipe["root"] / "exp/sys/scores/test_cosine").write_text("truncated\n")
    assert run_score("cosine", "--train-set", "train", "--no-plot") == 0
    assert "complete; skipping" not in capsys.readouterr().out


def test_asnorm_cohort_is_the_training_speaker_means_of_stage_3(recipe):
    assert run_score("asnorm", "--train-set", "train", "--asnorm-top-n", "10", "--no-plot") == 0
    pairs, scores = read_scores(recipe["root"] / "exp/sys/scores/test_asnorm")
    emb = recipe["root"] / "exp/sys/embeddings"
    train = np.stack([np.asarray(v) for v in kaldiio.load_scp(str(emb / "train/xvector.scp")).values()])
    cohort = np.stack([np.asarray(v) for v in kaldiio.load_scp(str(emb / "train/spk_xvector.scp")).values()])
    keys = sorted(recipe["vecs"])
    X = np.stack([recipe["vecs"][k] for k in keys])
    ei = [keys.index(a) for a, _ in pairs]
    ti = [keys.index(b) for _, b in pairs]
    ref = asnorm_cosine_trials(X, X, ei, ti, cohort, top_n=10, mean=train.mean(0, dtype=np.float64))
    np.testing.assert_allclose(scores, ref, atol=2e-6)


def test_tta_backend_is_cosine_of_the_tta_embeddings(recipe):
    # the tta back-end scores xvector_tta.scp (averaged crops, RawNet2's protocol) by cosine, and
    # leaves the full-utterance cosine scores of xvector.scp as they are
    import kaldiio
    assert run_score("tta", "--no-plot") == 0
    assert run_score("cosine", "--no-plot") == 0
    emb = recipe["root"] / "exp" / "sys" / "embeddings" / "test"
    tta = {k: np.asarray(v, dtype=np.float64) for k, v in kaldiio.load_scp(str(emb / "xvector_tta.scp")).items()}
    pairs, scores = read_scores(recipe["root"] / "exp" / "sys" / "scores" / "test_tta")
    expected = [tta[a] @ tta[b] / np.linalg.norm(tta[a]) / np.linalg.norm(tta[b]) for a, b in pairs]
    np.testing.assert_allclose(scores, expected, atol=2e-6)
    _, full = read_scores(recipe["root"] / "exp" / "sys" / "scores" / "test_cosine")
    assert not np.allclose(full, scores)
    assert run_score("tta", "--enroll-level", "spk", "--no-plot") == 1


def test_score_files_round_trip_and_malformed_lines_are_named(tmp_path):
    io.write_scores(tmp_path / "s", [("a", "b", 0.5), ("a", "c", -1.25)])
    assert (tmp_path / "s").read_text() == "a b 0.500000\na c -1.250000\n"
    assert io.read_scores(tmp_path / "s") == [("a", "b", 0.5), ("a", "c", -1.25)]
    (tmp_path / "bad").write_text("a b 0.5\na c\n")
    with pytest.raises(io.DataError, match=r"bad:2: expected 'enroll test score'"):
        io.read_scores(tmp_path / "bad")
