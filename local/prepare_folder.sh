#!/usr/bin/env bash
# Stage 0 for any directory of speaker folders <corpus-dir>/<speaker>/<utterance>.{wav,flac}:
# a speaker-disjoint split into <name>_train and <name>_test (a seeded --test-fraction, a
# --test-speakers list, fold K of N seeded folds (--test-fold K/N), or a separate --test-corpus-dir), lhotse manifests
# <data-root>/manifests/<name>_{recordings,supervisions,cuts}_<set>.jsonl.gz, Kaldi data dirs and
# <data-root>/<name>_test/trials (all target pairs + as many seeded non-target pairs).
#
# Usage: local/prepare_folder.sh [options] <corpus-dir> [<data-root>]   (default <data-root>: data)
#    or: local/prepare_folder.sh --corpus-dir DIR [--data-root DIR] [options]
#   --name folder --test-fraction 0.2 --test-speakers FILE --test-fold K/N --test-corpus-dir DIR --seed 0
#   --max-target-trials 0 --nontarget-ratio 1.0 --sample-rate 16000 --on-rate-mismatch refuse|resample
#   --nj N --force --no-check-audio --convert-audio DIR (.m4a etc. converted with ffmpeg, DIR read instead)
# e.g. local/prepare_folder.sh --name so762 ../shared/data/so762_dev/wav data
# The options are those of `python -m pysv.bin.prepare_data folder` (its help follows the list below);
# one left empty takes its default there.
set -euo pipefail
corpus_dir=              # directory of <speaker>/<utterance>.{wav,flac} (or the first positional argument)
name=                    # set / corpus name: sets <name>_train, <name>_test
test_corpus_dir=         # separate test directory of the same layout (then all of the corpus is training)
test_speakers=           # file with one test speaker id per line
test_fold=               # K/N: test on fold K of N disjoint seeded folds of the speakers (k-fold cross-validation)
test_fraction=           # fraction of speakers drawn (seeded) as test speakers otherwise (0: no test set)
seed=                    # seed of the speaker split and the trial sampling
max_target_trials=       # a seeded sample of at most this many target trials (0: all)
nontarget_ratio=         # non-target trials per target trial
convert_audio=           # first convert .m4a etc. with ffmpeg to FLAC under this dir, then read the corpus from it
check_audio=true         # decode every file fully (false: read the headers only)
help_more() { python -m pysv.bin.prepare_data folder --help; }
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
[[ $# -ge 1 ]] && { corpus_dir=$1; shift; }
[[ $# -ge 1 ]] && { data_root=$1; shift; }
if [[ $# -gt 0 || -z $corpus_dir ]]; then
  echo "usage: $0 [options] <corpus-dir> [<data-root>]   (or --corpus-dir DIR --data-root DIR; see --help)" >&2; exit 1
fi
prepare folder corpus_dir name test_corpus_dir test_speakers test_fold test_fraction seed max_target_trials nontarget_ratio \
  convert_audio
