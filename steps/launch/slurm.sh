#!/usr/bin/env bash
# Slurm job launcher with Kaldi's run.pl/slurm.pl interface:
#   steps/launch/slurm.sh [--mem 4G] [--gpu N] [--num-threads N] [--time 4:00:00] [--partition P]
#                         JOB=1:NJ log/name.JOB.log command args...
# Submits one array job with sbatch --wait, so the call blocks like run.pl and fails if any task fails.
# Each argument is quoted (printf %q) into the job script, so the task runs the command with its
# arguments exactly as given: text in paths or names is never executed.
#
# Multi-node training (--nodes N > 1): one job on N nodes instead of an array,
#   steps/launch/slurm.sh --nodes 2 --gpu 4 [...] log/train.log python -m pysv.bin.train --config ... ARGS
# (or "torchrun [its options] -m pysv.bin.train ARGS", as run.sh --ngpu N gives it: those torchrun
# options are replaced). In the job, srun starts one task per node, each running
#   torchrun --nnodes $SLURM_NNODES --nproc-per-node <--gpu, 1 without GPUs> --rdzv-id $SLURM_JOB_ID \
#            --rdzv-backend c10d --rdzv-endpoint <first node of the job>:<--port> -m pysv.bin.train ARGS
# with the first node from `scontrol show hostnames`; the run directory must be on a file system
# that every node sees. A failing task ends the job (srun --kill-on-bad-exit).
set -u
mem=            # memory per task (sbatch --mem)
gpu=0           # GPUs per task (sbatch --gres=gpu:N)
num_threads=    # CPUs per task (sbatch --cpus-per-task)
time=           # time limit per task (sbatch --time)
partition=      # sbatch --partition
max_jobs_run=   # tasks of the array running at once (sbatch --array=...%N)
nodes=1         # >1: one multi-node training job (srun + torchrun on every node, see above)
port=           # multi-node: rendezvous port on the first node (default: 20000 + job id % 20000)
. "$(dirname "${BASH_SOURCE[0]}")/../../utils/parse_options.sh"
opts=()
[[ -n $mem ]] && opts+=(--mem="$mem")
[[ -n $gpu && $gpu != 0 ]] && opts+=(--gres="gpu:$gpu")
[[ -n $num_threads ]] && opts+=(--cpus-per-task="$num_threads")
[[ -n $time ]] && opts+=(--time="$time")
[[ -n $partition ]] && opts+=(--partition="$partition")
command -v sbatch >/dev/null || { echo "$0: sbatch not found; select steps/launch/local.sh in cmd.sh" >&2; exit 1; }
[[ $nodes =~ ^[1-9][0-9]*$ ]] || { echo "$0: --nodes must be a positive number, got '$nodes'" >&2; exit 1; }
if [[ $nodes -gt 1 ]]; then
  [[ $gpu =~ ^[0-9]+$ ]] || { echo "$0: --gpu must be a number, got '$gpu'" >&2; exit 1; }
  [[ -z $port || $port =~ ^[0-9]+$ ]] || { echo "$0: --port must be a number, got '$port'" >&2; exit 1; }
  if [[ $# -lt 1 || "$1" =~ ^[A-Za-z_]+=[0-9]+:[0-9]+$ ]]; then
    echo "$0: --nodes $nodes runs one job on several nodes: give a log file and the training command, no JOB=1:N" >&2
    exit 1
  fi
  log=$1; shift
  case ${1-} in  # the command as a module: python -m MODULE ..., or torchrun [options] -m MODULE ...
    torchrun|*/torchrun) shift; while [[ $# -gt 0 && $1 != -m ]]; do shift; done ;;
    python|python[0-9]*|*/python|*/python[0-9]*) shift ;;
  esac
  if [[ $# -lt 2 || $1 != -m ]]; then
    echo "$0: --nodes $nodes: the command must be 'python -m MODULE ...' or 'torchrun ... -m MODULE ...'" \
         "(it is run with torchrun on every node)" >&2
    exit 1
  fi
  nproc=$(( gpu > 0 ? gpu : 1 ))
  cmd=$(printf '%q ' "$@")
  mkdir -p "$(dirname "$log")"
  script=$(mktemp "$(dirname "$log")/.sbatch.XXXXXX")
  header=$(printf '%q' "# torchrun on $nodes nodes x $nproc: $cmd")
  cat >"$script" <<EOS
#!/usr/bin/env bash
cd $(printf '%q' "$PWD")
. ./path.sh
echo $header; echo "# Started at \$(date) on \$(hostname), nodes \$SLURM_JOB_NODELIST"
head=\$(scontrol show hostnames "\$SLURM_JOB_NODELIST" | head -n 1)
port=${port:-\$((20000 + SLURM_JOB_ID % 20000))}
srun --nodes="\$SLURM_NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 \${SLURM_CPUS_PER_TASK:+--cpus-per-task=\$SLURM_CPUS_PER_TASK} \\
  torchrun --nnodes "\$SLURM_NNODES" --nproc-per-node $nproc --rdzv-id "\$SLURM_JOB_ID" \\
  --rdzv-backend c10d --rdzv-endpoint "\$head:\$port" $cmd
rc=\$?
echo "# Ended (code \$rc) at \$(date)"
exit \$rc
EOS
  sbatch --wait --nodes="$nodes" --ntasks-per-node=1 --output="$log" --job-name="pysv" "${opts[@]}" "$script"
  rc=$?
  rm -f "$script"
  [[ $rc -ne 0 ]] && echo "$0: multi-node job failed; see $log" >&2
  exit $rc
fi
var=""; start=1; end=1
if [[ "$1" =~ ^([A-Za-z_]+)=([0-9]+):([0-9]+)$ ]]; then
  var=${BASH_REMATCH[1]}; start=${BASH_REMATCH[2]}; end=${BASH_REMATCH[3]}; shift
fi
log=$1; shift
cmd=$(printf '%q ' "$@")
if [[ -n $var ]]; then
  log=${log//$var/%a}; cmd=${cmd//$var/\$\{SLURM_ARRAY_TASK_ID\}}
fi
mkdir -p "$(dirname "$log")"
array="$start-$end${max_jobs_run:+%$max_jobs_run}"
script=$(mktemp "$(dirname "$log")/.sbatch.XXXXXX")
header=$(printf '%q' "# $cmd")
cat >"$script" <<EOS
#!/usr/bin/env bash
cd $(printf '%q' "$PWD")
. ./path.sh
echo $header; echo "# Started at \$(date) on \$(hostname)"
$cmd
rc=\$?
echo "# Ended (code \$rc) at \$(date)"
exit \$rc
EOS
sbatch --wait --array="$array" --output="$log" --job-name="pysv" "${opts[@]}" "$script"
rc=$?
rm -f "$script"
[[ $rc -ne 0 ]] && echo "$0: slurm array failed; see ${log//%a/*}" >&2
exit $rc
