#!/usr/bin/env bash
# Slurm job launcher with Kaldi's run.pl/slurm.pl interface:
#   steps/launch/slurm.sh [--mem 4G] [--gpu N] [--num-threads N] [--time 4:00:00] [--partition P]
#                         JOB=1:NJ log/name.JOB.log command args...
# Submits one array job with sbatch --wait, so the call blocks like run.pl and fails if any task fails.
# Each argument is quoted (printf %q) into the job script, so the task runs the command with its
# arguments exactly as given: text in paths or names is never executed.
set -u
mem=            # memory per task (sbatch --mem)
gpu=0           # GPUs per task (sbatch --gres=gpu:N)
num_threads=    # CPUs per task (sbatch --cpus-per-task)
time=           # time limit per task (sbatch --time)
partition=      # sbatch --partition
max_jobs_run=   # tasks of the array running at once (sbatch --array=...%N)
. "$(dirname "${BASH_SOURCE[0]}")/../../utils/parse_options.sh"
opts=()
[[ -n $mem ]] && opts+=(--mem="$mem")
[[ -n $gpu && $gpu != 0 ]] && opts+=(--gres="gpu:$gpu")
[[ -n $num_threads ]] && opts+=(--cpus-per-task="$num_threads")
[[ -n $time ]] && opts+=(--time="$time")
[[ -n $partition ]] && opts+=(--partition="$partition")
command -v sbatch >/dev/null || { echo "$0: sbatch not found; select steps/launch/local.sh in cmd.sh" >&2; exit 1; }
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
