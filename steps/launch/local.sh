#!/usr/bin/env bash
# Local parallel job launcher with Kaldi's run.pl interface:
#   steps/launch/local.sh [--max-jobs-run N] JOB=1:NJ log/name.JOB.log command args...
# Every occurrence of JOB in the log name and in the command is replaced by the job index.
# The command runs with its arguments exactly as given (no shell re-parsing: a path holding spaces,
# ';', '$()' or quotes stays one literal argument). Pipes or redirections need an explicit
# `bash -c '...'` as the command.
# Jobs run in the background, at most --max-jobs-run at once (default: number of cores).
# Exit status is non-zero if any job failed; the failing log files are named.
set -u
max_jobs_run=$(nproc 2>/dev/null || echo 2)  # jobs running at once
mem=           # ignored here: accepted so that one $cmd line also serves steps/launch/slurm.sh
gpu=           # ignored here
num_threads=   # ignored here
time=          # ignored here
partition=     # ignored here
. "$(dirname "${BASH_SOURCE[0]}")/../../utils/parse_options.sh"
if [[ $# -lt 2 ]]; then
  echo "usage: $0 [--max-jobs-run N] [JOB=1:N] <log-file> <command> ..." >&2; exit 1
fi
var=""; start=1; end=1
if [[ "$1" =~ ^([A-Za-z_]+)=([0-9]+):([0-9]+)$ ]]; then
  var=${BASH_REMATCH[1]}; start=${BASH_REMATCH[2]}; end=${BASH_REMATCH[3]}; shift
elif [[ "$1" =~ ^([A-Za-z_]+)=([0-9]+)$ ]]; then
  var=${BASH_REMATCH[1]}; start=${BASH_REMATCH[2]}; end=$start; shift
fi
log=$1; shift
cmd=("$@")
pids=(); logs=()
for ((j = start; j <= end; j++)); do
  this_log=$log; this_cmd=()
  if [[ -n $var ]]; then
    this_log=${log//$var/$j}
    for a in "${cmd[@]}"; do this_cmd+=("${a//$var/$j}"); done
  else
    this_cmd=("${cmd[@]}")
  fi
  mkdir -p "$(dirname "$this_log")"
  while [[ $(jobs -rp | wc -l) -ge $max_jobs_run ]]; do sleep 0.2; done
  (
    printf '#'; printf ' %q' "${this_cmd[@]}"; echo
    echo "# Started at $(date)"
    "${this_cmd[@]}"
    rc=$?
    echo "# Ended (code $rc) at $(date)"
    exit $rc
  ) >"$this_log" 2>&1 &
  pids+=($!); logs+=("$this_log")
done
failed=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "$0: job failed, see ${logs[$i]}:" >&2
    tail -n 20 "${logs[$i]}" >&2
    failed=$((failed + 1))
  fi
done
if [[ $failed -gt 0 ]]; then
  echo "$0: $failed of $((end - start + 1)) jobs failed" >&2; exit 1
fi
exit 0
