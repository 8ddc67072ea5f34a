#!/usr/bin/env bash
# Stage 0 for VoxCeleb from local directories (nothing is downloaded):
#   training set = VoxCeleb2-dev (--vox2-dir; .m4a must be converted to .wav first, see docs/data.md)
#                  [+ VoxCeleb1-dev via --train-corpora vox2_dev,vox1_dev, only when testing on Vox1-O]
#   test set     = data/vox1_test with the VoxCeleb1 utterances named by the cleaned trial lists, converted
#                  to trials_O / trials_E / trials_H (Kaldi format; trials = the first of them).
#
# Usage: local/prepare_voxceleb.sh [options] [<data-root>]          (default <data-root>: data; or --data-root DIR)
#   --vox1-dir DIR (repeatable) --vox2-dir DIR --trials-dir DIR (veri_test2.txt, list_test_all2.txt,
#   list_test_hard2.txt) or --vox1-o/--vox1-e/--vox1-h FILE, --train-corpora vox2_dev[,vox1_dev]|none
#   --nj N --check-audio (decode every file; off by default at this scale) --force
# e.g. local/prepare_voxceleb.sh --vox1-dir /corpora/voxceleb1 --vox2-dir /corpora/voxceleb2 \
#        --trials-dir /corpora/voxceleb1/lists data
# Every option goes to `python -m pysv.bin.prepare_data voxceleb` (run with --help for the full list).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
parse_prepare_options voxceleb "$@"; set -- ${args[@]+"${args[@]}"}
if [[ $# -gt 1 ]]; then echo "usage: $0 [options] [<data-root>]  (see --help)" >&2; exit 1; fi
[[ $# -eq 1 ]] && data=$1
run_cmd python -m pysv.bin.prepare_data voxceleb ${opts[@]+"${opts[@]}"} --data-root "$data"
