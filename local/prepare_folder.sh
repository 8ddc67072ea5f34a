#!/usr/bin/env bash
# Stage 0 for any directory of speaker folders <corpus-dir>/<speaker>/<utterance>.{wav,flac}:
# a speaker-disjoint split into <name>_train and <name>_test (a seeded --test-fraction, a
# --test-speakers list, or a separate --test-corpus-dir), lhotse manifests
# <data-root>/manifests/<name>_{recordings,supervisions,cuts}_<set>.jsonl.gz, Kaldi data dirs and
# <data-root>/<name>_test/trials (all target pairs + as many seeded non-target pairs).
#
# Usage: local/prepare_folder.sh [options] <corpus-dir> [<data-root>]   (default <data-root>: data)
#    or: local/prepare_folder.sh --corpus-dir DIR [--data-root DIR] [options]
#   --name folder --test-fraction 0.2 --test-speakers FILE --test-corpus-dir DIR --seed 0
#   --max-target-trials 0 --nontarget-ratio 1.0 --sample-rate 16000 --on-rate-mismatch refuse|resample
#   --nj N --force --no-check-audio
# e.g. local/prepare_folder.sh --name so762 ../shared/data/so762_dev/wav data
# Every option goes to `python -m pysv.bin.prepare_data folder` (run with --help for the full list).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ -f "$root/path.sh" ]] && . "$root/path.sh"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
flags=" --force --no-progress --check-audio --no-check-audio "
data=data
corpus=
opts=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; python -m pysv.bin.prepare_data folder --help; exit 0 ;;
    --data-root) data=$2; shift 2 ;;
    --corpus-dir) corpus=$2; shift 2 ;;
    --corpus-dir=*) corpus=${1#*=}; shift ;;
    --data-root=*) data=${1#*=}; shift ;;
    --*=*) opts+=("$1"); shift ;;
    --*) if [[ "$flags" == *" $1 "* ]]; then opts+=("$1"); shift
         elif [[ $# -ge 2 ]]; then opts+=("$1" "$2"); shift 2
         else echo "$0: option $1 needs a value" >&2; exit 1; fi ;;
    *) break ;;
  esac
done
[[ $# -ge 1 ]] && { corpus=$1; shift; }
[[ $# -ge 1 ]] && { data=$1; shift; }
if [[ $# -gt 0 || -z "$corpus" ]]; then
  echo "usage: $0 [options] <corpus-dir> [<data-root>]   (or --corpus-dir DIR --data-root DIR; see --help)" >&2; exit 1
fi
cmd=(python -m pysv.bin.prepare_data folder --corpus-dir "$corpus" ${opts[@]+"${opts[@]}"} --data-root "$data")
echo "$0: ${cmd[*]}"
"${cmd[@]}"
