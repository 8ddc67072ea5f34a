#!/usr/bin/env bash
# Stage 0 for existing Kaldi data dirs (wav.scp with paths or commands "... |", utt2spk, optional
# segments), imported through lhotse: <name>_train from --train-data-dir, <name>_test from
# --test-data-dir with its trials (--trials FILE, else <test-data-dir>/trials, else generated from the
# test speakers). Commands run once per recording and segments are cut in this stage: their audio is
# written to <data-root>/<set>/audio/<utt>.flac, so every later stage reads plain files.
#
# Usage: local/prepare_kaldi.sh [options] <train-data-dir> <test-data-dir> [<data-root>]   (default <data-root>: data)
#    or: local/prepare_kaldi.sh --train-data-dir DIR --test-data-dir DIR [--trials FILE] [--data-root DIR] [options]
#   --name kaldi --trials FILE --audio-format flac|wav --seed 0 --max-target-trials 0 --nontarget-ratio 1.0
#   --sample-rate 16000 --on-rate-mismatch refuse|resample --nj N --force --no-check-audio
# e.g. (Kaldi's egs/voxceleb/v2 data dirs; VoxCeleb2's wav.scp holds "ffmpeg ... -f wav - |" commands,
# voxceleb1_test its trials file) local/prepare_kaldi.sh --name vox --nj 16 \
#        /kaldi/egs/voxceleb/v2/data/voxceleb2_train /kaldi/egs/voxceleb/v2/data/voxceleb1_test data
# The options are those of `python -m pysv.bin.prepare_data kaldi` (its help follows the list below);
# one left empty takes its default there.
set -euo pipefail
train_data_dir=          # Kaldi data dir of the training set (or the first positional argument)
test_data_dir=           # Kaldi data dir of the test set (or the second positional argument)
trials=                  # trial list of the test set (default: <test-data-dir>/trials, else generated)
name=                    # set / corpus name: sets <name>_train, <name>_test
audio_format=            # flac | wav: the audio written for commands and segments
seed=                    # seed of the trial sampling
max_target_trials=       # a seeded sample of at most this many target trials (0: all)
nontarget_ratio=         # non-target trials per target trial
check_audio=true         # decode every file fully (false: read the headers only)
help_more() { python -m pysv.bin.prepare_data kaldi --help; }
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
[[ $# -ge 1 ]] && { train_data_dir=$1; shift; }
[[ $# -ge 1 ]] && { test_data_dir=$1; shift; }
[[ $# -ge 1 ]] && { data_root=$1; shift; }
if [[ $# -gt 0 || ( -z $train_data_dir && -z $test_data_dir ) ]]; then
  echo "usage: $0 [options] <train-data-dir> <test-data-dir> [<data-root>]   (or --train-data-dir DIR" \
       "--test-data-dir DIR --data-root DIR; see --help)" >&2; exit 1
fi
prepare kaldi train_data_dir test_data_dir trials name audio_format seed max_target_trials nontarget_ratio
