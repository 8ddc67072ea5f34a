#!/usr/bin/env bash
# Speaker cross-validation of ablation rows on ../shared/data/so762_dev (speechocean762, 125
# speakers): the speakers are cut into N disjoint seeded folds (run.sh --test-fold K/N); for each
# fold K the rows of local/so762_ablation.sh (default: vt and small) are trained on the other folds'
# speakers (their own 10 validation speakers held out) and tested on fold K's. Every speaker is
# then a test speaker once: 125 test speakers instead of the single split's 25, so a gap between
# two recipes is measured with a much narrower interval. The last step pools the test trials of the
# folds done so far and compares the rows with a paired speaker bootstrap (pysv.bin.compare), per
# back-end: cosine, and "dev" = each fold's system scored with the back-end its own calibration
# picked on the development trials of its validation speakers (never the test speakers). The dev
# scores are pooled as that calibration's log-likelihood ratios: folds may pick different back-ends
# (cosine in [-1, 1], PLDA LLRs in the tens), and raw scores of different scales pooled under one
# threshold give a meaningless EER.
#
#   local/so762_folds.sh [--folds 5] [--fold "1 2 3 4 5"] [--minutes 40] [--exp-root exp_so762_folds]
#                        [--compare-only] [--archive DIR] [ROW ...]               (default rows: vt small)
#
# Each fold costs stages 0-1 (a few minutes) plus one training budget per row (--minutes for the
# ablation rows; the small row keeps its config's train.max_minutes, 40) and its extraction and
# scoring: about 45 minutes per row and fold on the 2 CPU cores of this machine, run alone.
# --fold runs a subset (e.g. one fold per session); --compare-only pools what is there.
# --archive DIR copies what the pooling reads of every complete fold (its test trials and utt2spk,
# each row's calibration.json and its cosine and development-chosen test scores; no models) into DIR
# in the same layout, so that folds run on different machines or sessions can be pooled later:
# local/so762_folds.sh --compare-only --exp-root DIR (results/so762_folds holds the folds run so far).
# Outputs: data/so762_f<K>of<N>_{train,test}, <exp-root>/f<K>/<row>/<system>/..., the fold's test
# trials and utt2spk as <exp-root>/f<K>/test_{trials,utt2spk}, and <exp-root>/pooled/ (trials,
# utt2spk, score files and compare_<back-end>.json).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. ./path.sh    # the project's environment: the pooling below runs python itself

folds=5
fold=
minutes=40
exp_root=exp_so762_folds
corpus_dir=../shared/data/so762_dev/wav
noise_dir=../shared/data/noise
rir_dir=../shared/data/rir
seed=0                    # seed of the folds (and of the trial sampling)
resamples=1000
aim="40 50"
compare_only=false
archive=
. ./utils/parse_options.sh

rows=${*:-vt small}
fold=${fold:-$(seq -s ' ' 1 "$folds")}
# the directory and system of each row, as local/so762_ablation.sh runs it (an unknown row stops here)
# shellcheck disable=SC2086
mapping=$(local/so762_ablation.sh --print-systems true $rows)
declare -A row_sys=()
row_dirs=()
while read -r dir sys; do row_sys[$dir]=$sys; row_dirs+=("$dir"); done <<< "$mapping"
fold_name() { echo "so762_f${1}of$folds"; }
# copy file $1 to $2 atomically (a reader never sees a half-written copy)
atomic_cp() { cp "$1" "$2.tmp" && mv "$2.tmp" "$2"; }
system_dir() { echo "$exp_root/f$1/$2/${row_sys[$2]}"; }
# the score file of row directory $2 on fold $1 for back-end $3 (dev: the one its calibration picked);
# fails when the calibration is not there yet
score_file() {
  local d b=$3
  d=$(system_dir "$1" "$2")
  if [[ $b == dev ]]; then
    b=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['backend'])" "$d/calibration.json" \
          2>/dev/null) || return 1
  fi
  echo "$d/scores/$(fold_name "$1")_test_$b"
}
# score file $1 (row directory $3 on fold $2, back-end $4) as it is pooled: dev scores as calibrated LLRs
pooled_scores() {
  if [[ $4 == dev ]]; then
    python -c "import sys
from pysv.calibration import Calibration
from pysv.utils.io import read_scores
cal = Calibration.load(sys.argv[1])
sys.stdout.writelines(f'{a} {b} {float(cal.llr(s))!r}\n' for a, b, s in read_scores(sys.argv[2]))" \
      "$(system_dir "$2" "$3")/calibration.json" "$1"
  else
    cat "$1"
  fi
}

if [[ $compare_only != true ]]; then
  for k in $fold; do
    name=$(fold_name "$k")
    echo "=== fold $k/$folds: $name"
    ./run.sh --corpus folder --corpus-dir "$corpus_dir" --name "$name" --test-fold "$k/$folds" \
      --musan-dir "$noise_dir" --rirs-dir "$rir_dir" --stage 0 --stop-stage 1
    # shellcheck disable=SC2086
    local/so762_ablation.sh --name "$name" --minutes "$minutes" --exp-root "$exp_root/f$k" \
      --corpus-dir "$corpus_dir" --noise-dir "$noise_dir" --rir-dir "$rir_dir" $rows
    # the fold's test trials travel with its scores (the pooling below reads them from here)
    for f in trials utt2spk; do atomic_cp "data/${name}_test/$f" "$exp_root/f$k/test_$f"; done
  done
fi

# pool the folds whose every row has its scores
pool=$exp_root/pooled
mkdir -p "$pool"
for backend in cosine dev; do
  done_folds=()
  for k in $(seq 1 "$folds"); do
    ok=true
    for r in "${row_dirs[@]}"; do
      f=$(score_file "$k" "$r" "$backend") && [[ -f $f ]] || ok=false
    done
    [[ -f $exp_root/f$k/test_trials && -f $exp_root/f$k/test_utt2spk ]] || ok=false
    [[ $ok == true ]] && done_folds+=("$k")
  done
  if [[ ${#done_folds[@]} -eq 0 ]]; then
    echo "$0: no fold has $backend scores of every row ($rows) under $exp_root yet"; continue
  fi
  echo "=== pooled $backend: folds ${done_folds[*]} of $folds"
  for k in "${done_folds[@]}"; do cat "$exp_root/f$k/test_trials"; done > "$pool/trials.tmp"
  for k in "${done_folds[@]}"; do cat "$exp_root/f$k/test_utt2spk"; done > "$pool/utt2spk.tmp"
  mv "$pool/trials.tmp" "$pool/trials_$backend"; mv "$pool/utt2spk.tmp" "$pool/utt2spk_$backend"
  if [[ -n $archive ]]; then
    for k in "${done_folds[@]}"; do
      mkdir -p "$archive/f$k"
      for f in test_trials test_utt2spk; do atomic_cp "$exp_root/f$k/$f" "$archive/f$k/$f"; done
      for r in "${row_dirs[@]}"; do
        f=$(score_file "$k" "$r" "$backend")
        a=$archive/f$k/$r/${row_sys[$r]}
        mkdir -p "$a/scores"
        atomic_cp "$f" "$a/scores/${f##*/}"
        # the calibration names the dev back-end and maps its scores to LLRs: read by the dev pass only
        if [[ $backend == dev ]]; then atomic_cp "$(system_dir "$k" "$r")/calibration.json" "$a/calibration.json"; fi
      done
    done
    echo "  archived folds ${done_folds[*]} ($backend) in $archive"
  fi
  score_args=()
  for r in "${row_dirs[@]}"; do
    : > "$pool/${r}_$backend.tmp"
    for k in "${done_folds[@]}"; do
      f=$(score_file "$k" "$r" "$backend")
      echo "  fold $k, $r: ${f##*_test_}$([[ $backend == dev ]] && echo ' (calibrated LLR)')"
      pooled_scores "$f" "$k" "$r" "$backend" >> "$pool/${r}_$backend.tmp"
    done
    mv "$pool/${r}_$backend.tmp" "$pool/${r}_$backend"
    score_args+=("$r=$pool/${r}_$backend")
  done
  # shellcheck disable=SC2086
  python -m pysv.bin.compare --trials "$pool/trials_$backend" --utt2spk "$pool/utt2spk_$backend" \
    --resamples "$resamples" --aim $aim --json "$pool/compare_$backend.json" --scores "${score_args[@]}"
  # each fold's own EER per row and their mean over the folds
  fold_args=()
  for k in "${done_folds[@]}"; do
    for r in "${row_dirs[@]}"; do
      fold_args+=("$k" "$r" "$exp_root/f$k/test_trials" "$(score_file "$k" "$r" "$backend")")
    done
  done
  python local/so762_folds_mean.py "$pool/per_fold_$backend.json" "${fold_args[@]}"
done
