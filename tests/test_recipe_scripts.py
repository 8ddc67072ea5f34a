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
    r = bash(f"steps/launch/local.sh JOB=1:2 {tmp_path}/log/y.JOB.log 'test JOB = 1'")
    assert r.returncode != 0 and "y.2.log" in r.stderr and "1 of 2 jobs failed" in r.stderr
