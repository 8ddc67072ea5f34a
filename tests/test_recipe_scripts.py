"""The shell side of the recipe: option parsing, --help, the job launcher."""
from __future__ import annotations

import subprocess
from pathlib import Path

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
        "for ((i=${arr%-*}; i<=${arr#*-}; i++)); do SLURM_ARRAY_TASK_ID=$i bash \"$script\" > \"${out//%a/$i}\" 2>&1 || exit 1; done\n")
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
