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
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
parse_prepare_options mini "$@"; set -- ${args[@]+"${args[@]}"}
if [[ $# -gt 1 ]]; then echo "usage: $0 [options] [<data-root>]  (see --help)" >&2; exit 1; fi
[[ $# -eq 1 ]] && data=$1
run_cmd python -m pysv.bin.prepare_data mini ${opts[@]+"${opts[@]}"} --data-root "$data"
