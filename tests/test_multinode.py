"""Training on several machines: two local "nodes" (two torchrun agents, one process each, gloo),
compared with one process on the same global batches; --resume across the two; the multi-node
mode of steps/launch/slurm.sh with stand-in Slurm commands.

What must be equal, and why the system is SAEP: DistributedDataParallel averages the gradients of
the ranks (all-reduce, divided by the world size); the shuffle sampler plans the epoch's batches of
``sampler.batch_size / world`` once and deals them round-robin. A single process that trains on the
*union* of the ranks' k-th batches at step k with a per-utterance mean loss (softmax cross-entropy)
takes the same gradient steps, so its weights equal the two-node run's up to float rounding (the
all-reduce and the batch reductions sum in another order). This holds for an encoder without
BatchNorm and without dropout: with BatchNorm every rank normalises with its own batch's statistics
(and DDP keeps rank 0's running statistics), so even the weights of a BatchNorm encoder follow
another trajectory than one process on the union; dropout draws per process. Hence SAEP (LayerNorm
only) with its dropout set to 0, float32 (no bf16 autocast) and SGD. Tolerance: every weight (encoder
and classifier) within ``ATOL + RTOL * |w|`` (1e-6 + 1e-5 |w|) after each of the two epochs (measured
here: at most 3e-8 apart); the test also checks that the tolerance is far below how much an epoch
moves the weights (about 3e-3) and what a different run (one rank's batches only) gives (about 5e-3).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pysv.bin import train as train_bin
from pysv.data import loader as loader_lib
from pysv.train.config import load_config
from pysv.train.distributed import DistInfo

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf" / "saep_softmax.yaml"
GLOBAL_BATCH = 10
SMALL = ["sampler.batch_size=10", "data.crop=100", "data.num_workers=0", "data.valid_speakers=2",
         "train.log_interval=1", "optim.name=sgd", "optim.lr=0.05", "train.precision=fp32", "data.feature=fbank40",
         "model.hparams.feat_dim=40", "model.hparams.d_k=32", "model.hparams.d_v=32", "model.hparams.d_ff=64",
         "model.hparams.encoder_dropout=0", "model.hparams.dropout=0"]
ATOL, RTOL = 1e-6, 1e-5
LAUNCH_TIMEOUT = 150


def overrides(tiny, epochs: int):
    return [f"data.train={tiny['train']}", f"train.epochs={epochs}", *SMALL]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for_runs(tmp_path: Path, extra_path: Path = None) -> dict:
    path = os.pathsep.join(str(p) for p in (extra_path, Path(sys.executable).parent) if p)
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), PATH=f"{path}{os.pathsep}{os.environ['PATH']}")


def run_all(cmds, env, cwd, timeout=LAUNCH_TIMEOUT):
    """Start every command at once (each in its own process group), wait for all; a group still
    running at the timeout is killed. Returns [(returncode, output)]."""
    procs = [subprocess.Popen(c, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True) for c in cmds]
    out = []
    try:
        for p in procs:
            text, _ = p.communicate(timeout=timeout)
            out.append((p.returncode, text))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return out


def train_args(tiny, exp: Path, epochs: int, resume: bool):
    return ["-m", "pysv.bin.train", "--config", str(CONF), "--exp-dir", str(exp), "--device", "cpu",
            "--threads", "1", "--no-progress", *(["--resume"] if resume else []), *overrides(tiny, epochs)]


class MergedShares(torch.utils.data.Sampler):
    """One process's batches = the union of the k-th batches of the ranks' samplers."""

    def __init__(self, shares):
        super().__init__()
        self.shares = shares

    def set_epoch(self, epoch):
        for s in self.shares:
            s.set_epoch(epoch)

    def __len__(self):
        return len(self.shares[0])

    def __iter__(self):
        for batches in zip(*self.shares):
            yield [i for b in batches for i in b]


def single_process_run(tiny, exp: Path, monkeypatch, ranks=(0, 1)):
    """Train in this process (world size 1) on the union of the given ranks' batches of a 2-process run."""
    original = loader_lib._build_sampler

    def merged(cfg, speakers, dist):
        shares = [original(cfg, speakers, DistInfo(rank=r, world_size=2)) for r in ranks]
        return MergedShares(shares)

    monkeypatch.setattr(loader_lib, "_build_sampler", merged)
    try:
        rc = train_bin.main(["--config", str(CONF), "--exp-dir", str(exp), "--device", "cpu", "--threads", "1",
                             "--no-progress", *overrides(tiny, 2)])
    finally:
        monkeypatch.setattr(loader_lib, "_build_sampler", original)
    assert rc == 0


def weights(path: Path, key: str = "model"):
    return torch.load(path, map_location="cpu", weights_only=True)[key]


def max_excess(a, b) -> float:
    """max over tensors of max(|a - b| - (ATOL + RTOL |b|)); <= 0 means within the tolerance."""
    assert a.keys() == b.keys()
    return max(float(((a[k].double() - b[k].double()).abs() - (ATOL + RTOL * b[k].double().abs())).max())
               for k in a)


def max_diff(a, b) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


# ----------------------------------------------------------------------------------------------
# the ranks' data
# ----------------------------------------------------------------------------------------------
def test_sampler_shares_of_two_ranks_are_disjoint(tiny_recipe):
    cfg = load_config(str(CONF), overrides(tiny_recipe, 2))
    data = {r: loader_lib.build_training_data(cfg, "features", DistInfo(rank=r, world_size=2), torch.device("cpu"))
            for r in (0, 1)}
    train_utts = {data[0].train_set.base.index.utts[i] for i in data[0].train_set.indices}
    assert len(train_utts) == 25  # 5 training speakers x 5 (2 of the 7 held out for validation)
    for epoch in (1, 2):
        seen = {}
        for r, td in data.items():
            td.sampler.set_epoch(epoch)
            batches = list(td.sampler)
            assert len(batches) == len(td.sampler) == 2  # the same number of steps on both ranks
            assert all(len(b) == GLOBAL_BATCH // 2 for b in batches)
            seen[r] = [td.train_set.base.index.utts[td.train_set.indices[i]] for b in batches for i in b]
            assert len(set(seen[r])) == len(seen[r])
        assert not set(seen[0]) & set(seen[1]), f"epoch {epoch}: ranks share utterances"
        assert set(seen[0]) | set(seen[1]) <= train_utts
    # another epoch, other shares
    data[0].sampler.set_epoch(1)
    first = [list(b) for b in data[0].sampler]
    data[0].sampler.set_epoch(2)
    assert first != [list(b) for b in data[0].sampler]


# ----------------------------------------------------------------------------------------------
# two nodes = one process on the same global batches; --resume; Slurm's multi-node mode
# ----------------------------------------------------------------------------------------------
def slurm_stand_ins(bin_dir: Path, nodelist: str) -> None:
    """sbatch: runs the job script once with the Slurm variables of a job on the nodes of
    ``nodelist``; scontrol: `show hostnames`; srun: runs its command once per node, in parallel
    (torchrun's --local-addr given by environment, as the nodes are this machine)."""
    bin_dir.mkdir()
    scripts = {
        "sbatch": "#!/usr/bin/env bash\n"
                  "echo \"$*\" > \"$(dirname \"$0\")/sbatch.args\"\n"
                  "for a in \"$@\"; do case $a in --nodes=*) n=${a#--nodes=};; --output=*) out=${a#--output=};;"
                  " --array=*) echo 'no array expected' >&2; exit 9;; esac; done\n"
                  f"SLURM_JOB_ID=4242 SLURM_NNODES=$n SLURM_JOB_NODELIST={nodelist} "
                  "bash \"${@: -1}\" > \"$out\" 2>&1\n",
        "scontrol": "#!/usr/bin/env bash\n"
                    "[[ $1 == show && $2 == hostnames ]] || exit 2\n"
                    "tr ',' '\\n' <<< \"${3:-$SLURM_JOB_NODELIST}\"\n",
        "srun": "#!/usr/bin/env bash\n"
                "echo \"$*\" > \"$(dirname \"$0\")/srun.args\"\n"
                "while [[ $1 == --* ]]; do shift; done\n"
                "pids=()\n"
                "for ((i = 0; i < SLURM_NNODES; i++)); do\n"
                "  SLURM_NODEID=$i SLURM_PROCID=$i PET_LOCAL_ADDR=127.0.0.1 \"$@\" \\\n"
                "    > \"$(dirname \"$0\")/node$i.log\" 2>&1 &\n"
                "  pids+=($!)\n"
                "done\n"
                "rc=0; for p in \"${pids[@]}\"; do wait $p || rc=1; done; exit $rc\n",
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)


def test_two_nodes_train_like_one_process_and_resume_through_slurm(tiny_recipe, tmp_path, monkeypatch):
    exp = tmp_path / "exp" / "two_nodes"
    env = env_for_runs(tmp_path)
    # run 1: two torchrun agents = two nodes (static rendezvous, node ranks 0 and 1), epoch 1
    port = free_port()
    cmds = [[sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
             "--node-rank", str(r), "--master-addr", "127.0.0.1", "--master-port", str(port), "--local-addr",
             "127.0.0.1", *train_args(tiny_recipe, exp, 1, resume=False)] for r in (0, 1)]
    for rc, text in run_all(cmds, env, tmp_path):
        assert rc == 0, text[-3000:]
    assert (exp / "checkpoints" / "epoch_001.pt").is_file()

    # run 2: the same run continued to epoch 2 by a multi-node Slurm job (stand-in sbatch / srun /
    # scontrol; real torchrun on both "nodes", c10d rendezvous on the job's first node)
    bin_dir = tmp_path / "bin"
    slurm_stand_ins(bin_dir, "127.0.0.1,127.0.0.2")
    port = free_port()
    launcher = [str(REPO / "steps" / "launch" / "slurm.sh"), "--nodes", "2", "--port", str(port),
                str(tmp_path / "log" / "train.log"), "python", *train_args(tiny_recipe, exp, 2, resume=True)]
    [(rc, text)] = run_all([launcher], env_for_runs(tmp_path, bin_dir), REPO)
    job_log = (tmp_path / "log" / "train.log").read_text() if (tmp_path / "log" / "train.log").exists() else ""
    nodes = "".join((bin_dir / f"node{i}.log").read_text() for i in (0, 1) if (bin_dir / f"node{i}.log").exists())
    assert rc == 0, text + job_log + nodes[-4000:]
    assert (bin_dir / "sbatch.args").read_text().startswith("--wait --nodes=2 --ntasks-per-node=1 ")
    assert "--nodes=2 --ntasks-per-node=1 --kill-on-bad-exit=1 torchrun --nnodes 2 --nproc-per-node 1 " \
           f"--rdzv-id 4242 --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:{port} -m pysv.bin.train " \
        in (bin_dir / "srun.args").read_text()
    assert "continuing" in nodes and "from 1 to 2 epochs" in nodes
    assert not list(tmp_path.glob("log/.sbatch.*"))

    log = (exp / "train.log").read_text()
    assert log.count("2 process(es)") == 2 and "25 training utterances" in log
    assert "resumed from" in log and "epoch_001.pt (epoch 1 done)" in log
    for e in (1, 2):  # each rank: 2 steps of 5 utterances per epoch (global batch 10)
        assert f"epoch {e} step 2/2" in log and f"epoch {e} step 3/" not in log
    hist = json.loads((exp / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2] and [h["steps"] for h in hist] == [2, 2]

    # one process on the union of the ranks' batches: the same weights within the tolerance
    ref = tmp_path / "exp" / "one_process"
    single_process_run(tiny_recipe, ref, monkeypatch)
    for name in ("checkpoints/epoch_001.pt", "checkpoints/epoch_002.pt"):
        for key in ("model", "loss"):
            a, b = weights(exp / name, key), weights(ref / name, key)
            assert max_excess(a, b) <= 0, (name, key, max_diff(a, b))
    a, b = weights(exp / "final.pt"), weights(ref / "final.pt")
    assert max_excess(a, b) <= 0, max_diff(a, b)
    # the tolerance is meaningful: training moved the weights, and a run on rank 0's batches only
    # (half the data, no averaging) ends far outside it
    moved = max_diff(weights(exp / "checkpoints/epoch_001.pt"), weights(exp / "checkpoints/epoch_002.pt"))
    assert moved > 100 * ATOL
    other = tmp_path / "exp" / "rank0_only"
    single_process_run(tiny_recipe, other, monkeypatch, ranks=(0,))
    assert max_diff(weights(other / "final.pt"), b) > 100 * ATOL


# ----------------------------------------------------------------------------------------------
# steps/launch/slurm.sh --nodes N: the job it submits (no training)
# ----------------------------------------------------------------------------------------------
HOSTILE = "a b;touch X;$(touch Y)'\"`touch Z`"


def test_slurm_multi_node_job_quotes_arguments_and_replaces_torchrun_options(tmp_path):
    bin_dir = tmp_path / "bin"
    slurm_stand_ins(bin_dir, "gpu-a17,gpu-a18,gpu-a19")
    # a stand-in torchrun recording, per node, its arguments one per line
    (bin_dir / "torchrun").write_text("#!/usr/bin/env bash\n"
                                      "printf '%s\\n' \"$@\" > \"$(dirname \"$0\")/torchrun.$SLURM_NODEID\"\n")
    (bin_dir / "torchrun").chmod(0o755)
    work = tmp_path / "work dir;touch X"
    work.mkdir()
    (work / "path.sh").write_text("")
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    # what run.sh --ngpu 4 hands to $train_cmd: torchrun with its single-node options
    r = subprocess.run([str(REPO / "steps/launch/slurm.sh"), "--nodes", "3", "--gpu", "4", "--num-threads", "16",
                        "--mem", "64G", str(work / "log" / "train.log"), "torchrun", "--standalone", "--nproc_per_node",
                        "4", "-m", "pysv.bin.train", "--config", HOSTILE, "--device", "cuda"],
                       cwd=work, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    sbatch = (bin_dir / "sbatch.args").read_text()
    assert "--nodes=3 --ntasks-per-node=1" in sbatch and "--gres=gpu:4" in sbatch and "--mem=64G" in sbatch
    assert "--cpus-per-task=16" in sbatch and "--array" not in sbatch
    for node in range(3):
        args = (bin_dir / f"torchrun.{node}").read_text().splitlines()
        assert args == ["--nnodes", "3", "--nproc-per-node", "4", "--rdzv-id", "4242", "--rdzv-backend", "c10d",
                        "--rdzv-endpoint", f"gpu-a17:{20000 + 4242 % 20000}", "-m", "pysv.bin.train", "--config",
                        HOSTILE, "--device", "cuda"]
    assert "# torchrun on 3 nodes x 4" in (work / "log" / "train.log").read_text()
    for f in "XYZ":
        assert not (work / f).exists() and not (tmp_path / f).exists()
    # refused: an array spec, a command that is not a Python module
    for bad, msg in ((["JOB=1:2", str(work / "x.JOB.log"), "python", "-m", "m"], "no JOB=1:N"),
                     ([str(work / "x.log"), "bash", "-c", "true"], "must be 'python -m MODULE")):
        r = subprocess.run([str(REPO / "steps/launch/slurm.sh"), "--nodes", "2", *bad], cwd=work,
                           capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode != 0 and msg in r.stderr, r.stderr


@pytest.mark.parametrize("nodes", ["0", "x"])
def test_slurm_bad_node_count(tmp_path, nodes):
    bin_dir = tmp_path / "bin"
    slurm_stand_ins(bin_dir, "n1")
    r = subprocess.run([str(REPO / "steps/launch/slurm.sh"), "--nodes", nodes, str(tmp_path / "l.log"), "true"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}"))
    assert r.returncode != 0 and "--nodes must be a positive number" in r.stderr
