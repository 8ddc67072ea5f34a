"""The shell side of the recipe: option parsing, --help, the job launcher."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def bash(script: str, cwd=REPO):
    return subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_parse_options_sets_variables_and_never_clobbers_callers():
    # 'name' is a recipe option (run.sh --name); the parser's own variables must not overwrite it
    r = bash('name=folder; train_opts=; nj=2; set -- --train-opts "a=1 b=2" --nj=4; '
             '. utils/parse_options.sh; echo "$name|$train_opts|$nj"')
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "folder|a=1 b=2|4"


def test_parse_options_rejects_unknown_option_and_missing_value():
    r = bash("nj=2; set -- --bogus 1; . utils/parse_options.sh")
    assert r.returncode != 0 and "invalid option --bogus" in r.stderr
    r = bash("nj=2; set -- --nj; . utils/parse_options.sh")
    assert r.returncode != 0 and "needs a value" in r.stderr


def test_parse_options_booleans_arrays_and_the_end_of_options():
    r = bash('force=false; progress=true; dirs=(); nj=2; '
             'set -- --force --no-progress --dirs a --dirs "b c" --nj=3 -- --not-an-option pos; '
             '. utils/parse_options.sh; echo "$force|$progress|${#dirs[@]}:${dirs[1]}|$nj|$*"')
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "true|false|2:b c|3|--not-an-option pos"
    # a boolean followed by a value that is not true/false: that word is the next argument
    r = bash('force=true; set -- --force false data; . utils/parse_options.sh; echo "$force|$*"')
    assert r.stdout.strip() == "false|data"
    r = bash('force=false; set -- --force data; . utils/parse_options.sh; echo "$force|$*"')
    assert r.stdout.strip() == "true|data"
    r = bash("force=false; set -- --force=yes; . utils/parse_options.sh")
    assert r.returncode != 0 and "takes true or false, got 'yes'" in r.stderr
    r = bash("nj=2; set -- --no-nj; . utils/parse_options.sh")  # --no-X only for a boolean X
    assert r.returncode != 0 and "invalid option --no-nj" in r.stderr


SCRIPTS = {  # script: options it must list in --help
    "steps/make_features.sh": ["--nj=4", "--cmd=", "--force=false"],
    "steps/convert_audio.sh": ["--nj=", "--cmd="],
    "steps/extract_embeddings.sh": ["--nj=2", "--cmd=", "--mode=full", "--precision=fp32", "--batch-seconds="],
    "steps/launch/local.sh": ["--max-jobs-run=", "--mem=", "--gpu="],
    "steps/launch/slurm.sh": ["--mem=", "--gpu=0", "--num-threads=", "--time=", "--max-jobs-run="],
    "local/prepare_mini.sh": ["--num-speakers=", "--data-root=data", "--force=false", "--check-audio=true"],
    "local/prepare_folder.sh": ["--corpus-dir=", "--test-fraction=", "--on-rate-mismatch=", "--min-utt-duration="],
    "local/prepare_voxceleb.sh": ["--vox1-dir=()", "--trials-dir=", "--check-audio=false", "--progress=true"],
    "local/prepare_augmentation.sh": ["--musan-dir=", "--rirs-name=", "--nj="],
    "local/prepare_kaldi.sh": ["--train-data-dir=", "--test-data-dir=", "--trials=", "--nontarget-ratio="],
}


def test_every_script_parses_options_with_parse_options_sh(tmp_path):
    for script, options in SCRIPTS.items():
        text = (REPO / script).read_text()
        assert ('/_common.sh"' if script.startswith("local/") else "/utils/parse_options.sh") in text, script
        assert "shift 2" not in text, f"{script} parses options by hand"
        r = subprocess.run([str(REPO / script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (script, r.stderr)
        header = (REPO / script).read_text().splitlines()[1].lstrip("# ")
        assert r.stdout.startswith(header), script
        for opt in options:
            assert f"\n  {opt}" in r.stdout, (script, opt)
        r = subprocess.run([str(REPO / script), "--bogus-option", "1", "x"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode != 0 and "invalid option --bogus-option" in r.stderr, script
    # the stage-0 wrappers end their help with the prepare_data sub-command's
    r = subprocess.run([str(REPO / "local/prepare_mini.sh"), "--help"], capture_output=True, text=True, timeout=60)
    assert "usage: python -m pysv.bin.prepare_data mini" in r.stdout and "--reverb-prob" in r.stdout


def _prepare_command(script, *args):
    """The prepare_data command a stage-0 wrapper runs (python stubbed by an exported function)."""
    r = bash(f'python() {{ printf "[%s]" "$@"; echo; }}; export -f python; {script} ' + " ".join(args))
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()[-1]


def test_stage0_wrappers_pass_run_sh_options_to_prepare_data():
    # what run.sh passes (stage 0), with --force as a bare flag
    cmd = _prepare_command("local/prepare_mini.sh", "--data-root", "data", "--min-utt-duration", "0.5", "--force")
    assert cmd == ("[-m][pysv.bin.prepare_data][mini][--min-utt-duration][0.5][--force][--check-audio]"
                   "[--data-root][data]")
    cmd = _prepare_command("local/prepare_folder.sh", "--data-root", "d", "--name", "toy", "--corpus-dir", "'/c d'",
                           "--test-corpus-dir", "/t", "--test-fraction", "0.2", "--nontarget-ratio", "1.0",
                           "--on-rate-mismatch", "resample", "--min-utt-duration", "0.5", "--no-progress")
    assert cmd == ("[-m][pysv.bin.prepare_data][folder][--corpus-dir][/c d][--name][toy][--test-corpus-dir][/t]"
                   "[--test-fraction][0.2][--nontarget-ratio][1.0][--on-rate-mismatch][resample]"
                   "[--min-utt-duration][0.5][--no-progress][--check-audio][--data-root][d]")
    cmd = _prepare_command("local/prepare_folder.sh", "--test-fold", "2/5", "/corpus", "out")
    assert cmd.endswith("[folder][--corpus-dir][/corpus][--test-fold][2/5][--check-audio][--data-root][out]")
    cmd = _prepare_command("local/prepare_folder.sh", "--nj", "1", "/corpus", "out")  # Kaldi style: positionals
    assert cmd.endswith("[folder][--corpus-dir][/corpus][--nj][1][--check-audio][--data-root][out]")
    # run.sh passes --vox1-dir "$vox1_dir" and --trials-dir "$vox_trials_dir" even when they are empty
    cmd = _prepare_command("local/prepare_voxceleb.sh", "--data-root", "data", "--vox1-dir", "/v1",
                           "--vox1-dir", "/v1test", "--trials-dir", "''", "--check-audio", "--force", "true")
    assert cmd.endswith("[voxceleb][--vox1-dir][/v1][--vox1-dir][/v1test][--force][--check-audio][--data-root][data]")
    out = bash('python() { printf "[%s]" "$@"; echo; }; export -f python; '
               "local/prepare_augmentation.sh --musan-dir /m --rirs-dir /r --rirs-name rr --no-check-audio d").stdout
    assert out.splitlines()[1::2] == ["[-m][pysv.bin.prepare_data][musan][--musan-dir][/m][--no-check-audio]"
                                     "[--data-root][d]",
                                     "[-m][pysv.bin.prepare_data][rirs][--rirs-dir][/r][--no-check-audio][--name][rr]"
                                     "[--data-root][d]"]


def test_run_sh_help_lists_options_and_rejects_typos():
    r = subprocess.run(["./run.sh", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for opt in ("--stage=0", "--stop-stage=5", "--corpus=mini", "--corpus-dir=", "--test-corpus-dir=",
                "--systems=default", "--nj=2", "--vox1-dir="):
        assert opt in r.stdout, opt
    r = subprocess.run(["./run.sh", "--stgae", "2"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "invalid option --stgae" in r.stderr


def test_local_launcher_runs_jobs_and_reports_failures(tmp_path):
    r = bash(f"steps/launch/local.sh JOB=1:3 {tmp_path}/log/x.JOB.log echo hello JOB")
    assert r.returncode == 0, r.stderr
    for j in (1, 2, 3):
        assert f"hello {j}" in (tmp_path / "log" / f"x.{j}.log").read_text()
    r = bash(f"steps/launch/local.sh JOB=1:2 {tmp_path}/log/y.JOB.log test JOB = 1")
    assert r.returncode != 0 and "y.2.log" in r.stderr and "1 of 2 jobs failed" in r.stderr


HOSTILE = "a b;touch X;$(touch Y)'\"`touch Z`"


def test_local_launcher_passes_arguments_literally(tmp_path):
    # text in an argument is data, never shell code: no X, Y or Z appears in the working dir
    r = subprocess.run(["steps/launch/local.sh", "JOB=1:2", str(tmp_path / "log" / "l.JOB.log"),
                        "printf", "[%s]", f"{HOSTILE} JOB"], cwd=REPO,
                       capture_output=True, text=True, timeout=60, env=_env(tmp_path))
    assert r.returncode == 0, r.stderr
    for j in (1, 2):
        assert f"[{HOSTILE} {j}]" in (tmp_path / "log" / f"l.{j}.log").read_text()
    for f in "XYZ":
        assert not (REPO / f).exists() and not (tmp_path / f).exists()


def _env(tmp_path):
    import os
    env = dict(os.environ)
    env["PATH"] = f"{tmp_path / 'bin'}:{env['PATH']}"
    return env


def test_slurm_launcher_quotes_arguments_into_the_job_script(tmp_path):
    # a stand-in sbatch that runs the array job script locally, one task per index
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "sbatch").write_text(
        "#!/usr/bin/env bash\n"
        "for a in \"$@\"; do case $a in --array=*) arr=${a#--array=};; --output=*) out=${a#--output=};; esac; done\n"
        "script=${@: -1}; arr=${arr%%%*}\n"
        "for ((i=${arr%-*}; i<=${arr#*-}; i++)); do\n"
        "  SLURM_ARRAY_TASK_ID=$i bash \"$script\" > \"${out//%a/$i}\" 2>&1 || exit 1\n"
        "done\n")
    (tmp_path / "bin" / "sbatch").chmod(0o755)
    work = tmp_path / "work dir;touch X"
    work.mkdir()
    (work / "path.sh").write_text("")
    r = subprocess.run([str(REPO / "steps/launch/slurm.sh"), "--mem", "1G", "JOB=1:2", str(work / "log" / "s.JOB.log"),
                        "printf", "[%s]", f"{HOSTILE} JOB"], cwd=work, capture_output=True, text=True,
                       timeout=60, env=_env(tmp_path))
    assert r.returncode == 0, r.stderr + r.stdout
    for j in (1, 2):
        assert f"[{HOSTILE} {j}]" in (work / "log" / f"s.{j}.log").read_text()
    for f in "XYZ":
        assert not (work / f).exists() and not (tmp_path / f).exists()


def test_run_sh_refuses_set_names_outside_the_safe_characters():
    r = subprocess.run(["./run.sh", "--corpus", "folder", "--corpus-dir", "/nonexistent", "--name", "a;touch X"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "set names may only hold" in r.stderr
    assert not (REPO / "X").exists()


def test_run_sh_refuses_a_system_that_augments_without_the_sets(tmp_path):
    # --systems small (conf/small_data_cpu_ensemble_mix.yaml, its first member small_data_cpu.yaml)
    # trains with augmentation: without --musan-dir / --rirs-dir, without the site's folders and without
    # manifests from an earlier stage 0, run.sh stops before any stage and names the flag to pass
    if (REPO / "data" / "manifests" / "musan_recordings.jsonl.gz").exists():
        pytest.skip("this checkout holds augmentation manifests from an earlier run")
    none = str(tmp_path / "absent")
    r = subprocess.run(["./run.sh", "--corpus", "folder", "--corpus-dir", str(tmp_path), "--systems", "small",
                        "--site-musan-dir", none, "--site-rirs-dir", none],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert ("system small_data_cpu_ensemble_mix trains with the augmentation set "
            "data/manifests/musan_recordings.jsonl.gz") in r.stderr
    assert "pass --musan-dir DIR" in r.stderr and "stage 0" not in r.stdout
    # with the site's folders present but stage 0 not run, nothing would write the manifests: refused too
    (tmp_path / "noise").mkdir()
    r = subprocess.run(["./run.sh", "--corpus", "folder", "--corpus-dir", str(tmp_path), "--systems", "small",
                        "--stage", "1", "--site-musan-dir", str(tmp_path / "noise"), "--site-rirs-dir", none],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "pass --musan-dir DIR" in r.stderr and "stage 1" not in r.stdout


def test_run_sh_prepares_a_systems_sets_from_the_sites_folders(tmp_path):
    # the command `./run.sh --corpus folder --corpus-dir <dir> --systems small` without the flags:
    # stage 0 prepares the sets from --site-musan-dir / --site-rirs-dir (default ../shared/data/noise, rir)
    # and says so; only for the systems that train with them. An empty corpus then stops stage 0 early,
    # before anything is written.
    if (REPO / "data" / "manifests" / "musan_recordings.jsonl.gz").exists():
        pytest.skip("this checkout holds augmentation manifests from an earlier run")
    for d in ("corpus", "noise", "rir"):
        (tmp_path / d).mkdir()
    r = subprocess.run(["./run.sh", "--corpus", "folder", "--corpus-dir", str(tmp_path / "corpus"), "--systems",
                        "small", "--site-musan-dir", str(tmp_path / "noise"), "--site-rirs-dir", str(tmp_path / "rir"),
                        "--name", "sitetest"], cwd=REPO, capture_output=True, text=True, timeout=120)
    for aug_set, flag, d in (("musan", "--musan-dir", "noise"), ("rirs", "--rirs-dir", "rir")):
        assert (f"trains with the augmentation set {aug_set}; no {flag} given: stage 0 prepares it from the "
                f"site's folder {tmp_path / d}") in r.stdout
    assert "stage 0: data preparation" in r.stdout and r.returncode != 0
    assert f"corpus directory {tmp_path / 'corpus'} has no" in r.stderr
    assert not (REPO / "data" / "sitetest_train").exists()


def test_so762_folds_pools_the_folds_scores_and_compares(tmp_path):
    """local/so762_folds.sh --compare-only: the test trials of the folds whose rows all have scores are
    pooled, per back-end (cosine; dev = each fold's calibration choice), and compared over speakers."""
    for script in ("local/so762_folds.sh", "local/so762_folds_mean.py", "local/so762_ablation.sh",
                   "utils/parse_options.sh", "path.sh"):
        (tmp_path / script).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / script, tmp_path / script)
    rng = np.random.default_rng(0)
    systems = {"vt": "thin_resnet34_angleproto_vt", "small": "small_data_cpu"}
    devs = {1: {"vt": "asnorm", "small": "plda"}, 2: {"vt": "cosine", "small": "plda"}}  # each fold's choice
    for k, dev in devs.items():
        fold = tmp_path / "exp_so762_folds" / f"f{k}"  # a fold's run leaves its test trials here
        fold.mkdir(parents=True)
        utts = [f"f{k}s{s}-u{u}" for s in range(3) for u in range(2)]
        (fold / "test_utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u in utts))
        trials = [(a, b, "target" if a.split("-")[0] == b.split("-")[0] else "nontarget")
                  for i, a in enumerate(utts) for b in utts[i + 1:]]
        (fold / "test_trials").write_text("".join(" ".join(t) + "\n" for t in trials))
        for row, sys in systems.items():
            d = tmp_path / "exp_so762_folds" / f"f{k}" / row / sys
            (d / "scores").mkdir(parents=True)
            # the dev back-ends' raw scores differ in scale (PLDA ×50); each calibration maps them back
            scale = 50.0 if dev[row] == "plda" else 1.0
            (d / "calibration.json").write_text(json.dumps({
                "backend": dev[row], "a": 1 / scale, "b": 0.5, "prior": 0.5, "threshold": 0.0,
                "threshold_rule": "eer", "dev_trials": "x", "dev_cllr": 0.1, "dev_min_cllr": 0.1, "dev_eer": 1.0}))
            for b in {"cosine", dev[row]}:
                sep = 2.0 if row == "small" else 0.5
                (d / "scores" / f"so762_f{k}of3_test_{b}").write_text("".join(
                    f"{a} {b_} {(scale if b != 'cosine' else 1) * (rng.normal() + sep * (lab == 'target')):.4f}\n"
                    for a, b_, lab in trials))
    # fold 3 has no scores: it is left out of the pool
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(["bash", "local/so762_folds.sh", "--folds", "3", "--compare-only", "--resamples", "50",
                        "--archive", "archive"], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "archived folds 1 2 (dev) in archive" in r.stdout
    assert "pooled cosine: folds 1 2 of 3" in r.stdout and "pooled dev: folds 1 2 of 3" in r.stdout
    assert "fold 1, vt: asnorm" in r.stdout and "fold 2, vt: cosine" in r.stdout
    pool = tmp_path / "exp_so762_folds" / "pooled"
    assert (pool / "trials_dev").read_text() == "".join(
        (tmp_path / "exp_so762_folds" / f"f{k}" / "test_trials").read_text() for k in (1, 2))
    # dev scores are pooled as each fold's calibrated LLRs (a * score + b), cosine scores as they are
    raw = [ln.split() for k in (1, 2) for ln in (tmp_path / "exp_so762_folds" / f"f{k}" / "small" / "small_data_cpu"
                                                  / "scores" / f"so762_f{k}of3_test_plda").read_text().splitlines()]
    pooled = [ln.split() for ln in (pool / "small_dev").read_text().splitlines()]
    assert [p[:2] for p in pooled] == [r[:2] for r in raw]
    assert np.allclose([float(p[2]) for p in pooled], [float(r[2]) / 50 + 0.5 for r in raw])
    assert (pool / "vt_cosine").read_text() == "".join(
        (tmp_path / "exp_so762_folds" / f"f{k}" / "vt" / "thin_resnet34_angleproto_vt" / "scores"
         / f"so762_f{k}of3_test_cosine").read_text() for k in (1, 2))
    assert "fold 1, small: plda (calibrated LLR)" in r.stdout
    res = json.loads((pool / "compare_dev.json").read_text())
    assert res["num_speakers"] == 6 and set(res["systems"]) == {"vt", "small"}
    assert [d["system"] for d in res["differences"]] == ["small"]
    # each fold's own EER per row (raw scores: a calibration does not move a fold's EER) and their mean
    from pysv.bin.compare import load_aligned
    from pysv.metrics import compute_eer
    from pysv.utils.io import read_trials
    per_fold = json.loads((pool / "per_fold_dev.json").read_text())
    for k in (1, 2):
        t = read_trials(tmp_path / "exp_so762_folds" / f"f{k}" / "test_trials")
        f = tmp_path / "exp_so762_folds" / f"f{k}" / "small" / "small_data_cpu" / "scores" / f"so762_f{k}of3_test_plda"
        assert per_fold["eer"]["small"][str(k)] == compute_eer(load_aligned(t, f), np.array([x[2] for x in t]))[0]
    assert np.isclose(per_fold["mean"]["vt"], np.mean(list(per_fold["eer"]["vt"].values())))
    lower = 100 * (1 - per_fold["mean"]["small"] / per_fold["mean"]["vt"])
    assert f"mean of the per-fold EERs, small vs vt: {lower:.1f} % lower" in r.stdout
    # the archive holds only what the pooling reads, and pools to the same comparison
    arch = tmp_path / "archive"
    assert sorted(str(p.relative_to(arch)) for p in arch.rglob("*") if p.is_file()) == sorted(
        [f"f{k}/test_{f}" for k in (1, 2) for f in ("trials", "utt2spk")]
        + [f"f{k}/{row}/{sys}/calibration.json" for k in (1, 2) for row, sys in systems.items()]
        + [f"f{k}/{row}/{sys}/scores/so762_f{k}of3_test_{b}" for k, dev in devs.items()
           for row, sys in systems.items() for b in {"cosine", dev[row]}])
    r = subprocess.run(["bash", "local/so762_folds.sh", "--folds", "3", "--compare-only", "--resamples", "50",
                        "--exp-root", "archive"], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    for b in ("cosine", "dev"):
        for out in (f"compare_{b}.json", f"per_fold_{b}.json"):
            assert (arch / "pooled" / out).read_text() == (pool / out).read_text()
    r = subprocess.run(["bash", "local/so762_folds.sh", "--compare-only", "nosuchrow"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode != 0 and "row 'nosuchrow'" in r.stderr
