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
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
corpus=
script_option() {
  case "$1" in
    --corpus-dir) corpus=$2 ;;
    *) return 1 ;;
  esac
}
parse_prepare_options folder "$@"; set -- ${args[@]+"${args[@]}"}
[[ $# -ge 1 ]] && { corpus=$1; shift; }
[[ $# -ge 1 ]] && { data=$1; shift; }
if [[ $# -gt 0 || -z "$corpus" ]]; then
  echo "usage: $0 [options] <corpus-dir> [<data-root>]   (or --corpus-dir DIR --data-root DIR; see --help)" >&2; exit 1
fi
run_cmd python -m pysv.bin.prepare_data folder --corpus-dir "$corpus" ${opts[@]+"${opts[@]}"} --data-root "$data"
