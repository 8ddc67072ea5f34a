#!/usr/bin/env bash
# Stage 0, built-in mini corpus: generate the synthetic speakers (deterministic, no network) into
# <data-root>/mini_corpus/wav/<spk>/<utt>.flac, then write lhotse manifests
# <data-root>/manifests/mini_{recordings,supervisions,cuts}_{mini_train,mini_test}.jsonl.gz and the Kaldi
# data dirs <data-root>/mini_train, <data-root>/mini_test (+ trials). Skips work already complete.
#
# Usage: local/prepare_mini.sh [options] [<data-root>]        (default <data-root>: data; or --data-root DIR)
#   --num-speakers 48 --num-test-speakers 16 --utts-per-speaker 12 --min-duration 2 --max-duration 6
#   --seed 777 --nj N --min-snr 10 --max-snr 30 --reverb-prob 0.3 --name mini --corpus-dir DIR --force
# Every option goes to `python -m pysv.bin.prepare_data mini` (run with --help for the full list).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ -f "$root/path.sh" ]] && . "$root/path.sh"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
flags=" --force --no-progress --check-audio --no-check-audio "
data=data
opts=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; python -m pysv.bin.prepare_data mini --help; exit 0 ;;
    --data-root) data=$2; shift 2 ;;
    --data-root=*) data=${1#*=}; shift ;;
    --*=*) opts+=("$1"); shift ;;
    --*) if [[ "$flags" == *" $1 "* ]]; then opts+=("$1"); shift
         elif [[ $# -ge 2 ]]; then opts+=("$1" "$2"); shift 2
         else echo "$0: option $1 needs a value" >&2; exit 1; fi ;;
    *) break ;;
  esac
done
if [[ $# -gt 1 ]]; then echo "usage: $0 [options] [<data-root>]  (see --help)" >&2; exit 1; fi
[[ $# -eq 1 ]] && data=$1
cmd=(python -m pysv.bin.prepare_data mini ${opts[@]+"${opts[@]}"} --data-root "$data")
echo "$0: ${cmd[*]}"
"${cmd[@]}"
