#!/usr/bin/env bash
# Stage 0 for VoxCeleb from local directories (nothing is downloaded):
#   training set = VoxCeleb2-dev (--vox2-dir; its .m4a converted with --convert-audio DIR, or first by hand)
#                  [+ VoxCeleb1-dev via --train-corpora vox2_dev,vox1_dev, only when testing on Vox1-O]
#   test set     = data/vox1_test with the VoxCeleb1 utterances named by the cleaned trial lists, converted
#                  to trials_O / trials_E / trials_H (Kaldi format; trials = the first of them).
#
# Usage: local/prepare_voxceleb.sh [options] [<data-root>]          (default <data-root>: data; or --data-root DIR)
#   --vox1-dir DIR (repeatable) --vox2-dir DIR --trials-dir DIR (veri_test2.txt, list_test_all2.txt,
#   list_test_hard2.txt) or --vox1-o/--vox1-e/--vox1-h FILE, --train-corpora vox2_dev[,vox1_dev]|none
#   --convert-audio DIR --nj N --check-audio (decode every file; off by default at this scale) --force
# e.g. local/prepare_voxceleb.sh --vox1-dir /corpora/voxceleb1 --vox2-dir /corpora/voxceleb2 \
#        --trials-dir /corpora/voxceleb1/lists data
# The options are those of `python -m pysv.bin.prepare_data voxceleb` (its help follows the list
# below); one left empty takes its default there.
set -euo pipefail
vox1_dir=()              # VoxCeleb1 directory (wav/idXXXXX/<video>/<nnnnn>.wav); repeat for dev and test downloads
vox2_dir=                # VoxCeleb2 directory (dev/wav/ or wav/ holding idXXXXX/<video>/<nnnnn>.wav)
train_corpora=           # comma list from vox2_dev, vox1_dev, or none
trials_dir=              # directory with veri_test2.txt (O), list_test_all2.txt (E), list_test_hard2.txt (H)
vox1_o=                  # Vox1-O trial list (overrides --trials-dir)
vox1_e=                  # Vox1-E trial list
vox1_h=                  # Vox1-H trial list
train_set_name=          # training set name
test_set_name=           # test set name
convert_audio=           # first convert VoxCeleb2's .m4a with ffmpeg to FLAC under this dir, then read it from there
check_audio=false        # true: decode every file fully (else the headers only)
help_more() { python -m pysv.bin.prepare_data voxceleb --help; }
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
if [[ $# -gt 1 ]]; then echo "usage: $0 [options] [<data-root>]  (see --help)" >&2; exit 1; fi
[[ $# -eq 1 ]] && data_root=$1
prepare voxceleb vox1_dir vox2_dir train_corpora trials_dir vox1_o vox1_e vox1_h train_set_name test_set_name \
  convert_audio
