#!/usr/bin/env bash
# Stage 0, built-in mini corpus: generate the synthetic speakers (deterministic, no network) into
# <data-root>/mini_corpus/wav/<spk>/<utt>.flac, then write lhotse manifests
# <data-root>/manifests/mini_{recordings,supervisions,cuts}_{mini_train,mini_test}.jsonl.gz and the Kaldi
# data dirs <data-root>/mini_train, <data-root>/mini_test (+ trials). Skips work already complete.
#
# Usage: local/prepare_mini.sh [options] [<data-root>]        (default <data-root>: data; or --data-root DIR)
#   --num-speakers 48 --num-test-speakers 16 --utts-per-speaker 12 --min-duration 2 --max-duration 6
#   --seed 777 --nj N --min-snr 10 --max-snr 30 --reverb-prob 0.3 --name mini --corpus-dir DIR --force
# The options are those of `python -m pysv.bin.prepare_data mini` (its help follows the list below);
# one left empty takes its default there.
set -euo pipefail
corpus_dir=              # where the audio is generated (default: <data-root>/mini_corpus)
name=                    # set / corpus name: sets <name>_train, <name>_test
num_speakers=            # speakers in total
num_test_speakers=       # speakers held out for the test set (0: no test set)
utts_per_speaker=        # utterances per speaker
min_duration=            # shortest utterance in s
max_duration=            # longest utterance in s
min_snr=                 # lowest background-noise SNR in dB
max_snr=                 # highest background-noise SNR in dB
reverb_prob=             # probability that an utterance is reverberated
audio_format=            # flac | wav
seed=                    # seed of the speaker split and the trial sampling
max_target_trials=       # a seeded sample of at most this many target trials (0: all)
nontarget_ratio=         # non-target trials per target trial
check_audio=true         # decode every file fully (false: read the headers only)
help_more() { python -m pysv.bin.prepare_data mini --help; }
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
if [[ $# -gt 1 ]]; then echo "usage: $0 [options] [<data-root>]  (see --help)" >&2; exit 1; fi
[[ $# -eq 1 ]] && data_root=$1
prepare mini corpus_dir name num_speakers num_test_speakers utts_per_speaker min_duration max_duration \
  min_snr max_snr reverb_prob audio_format seed max_target_trials nontarget_ratio
