#!/usr/bin/env bash
# Compute Kaldi-compatible features (pysv.features) for a Kaldi data dir, in parallel jobs.
#
# Usage: steps/make_features.sh [options] <feat-config> <data-dir> <out-dir> [key=value ...]
#  e.g.: steps/make_features.sh --nj 8 --cmd "$cpu_cmd" fbank40 data/voxceleb1_dev data/voxceleb1_dev_fbank40
#
#  <feat-config>  fbank40 | fbank64 | mfcc30 (pysv/feature_configs/<name>.yaml) or a path to a yaml file
#  <data-dir>     Kaldi data dir with wav.scp (plain audio paths); utt2spk, spk2utt, utt2dur, trials* are copied
#  <out-dir>      output data dir: feats.scp, utt2num_frames, feat_conf.yaml, .done, data/feats.JOB.ark, log/
#  key=value      feature option overrides, e.g. dither=0 resample=resample channel=0; with --vad energy
#                 also VAD option overrides vad_energy_threshold=5.0 vad_proportion_threshold=0.12 ...
#
# Runs  $cmd JOB=1:$nj <out-dir>/log/make_feats.JOB.log python -m pysv.bin.make_features ... --job JOB --nj $nj
# then the merge. Skipped when <out-dir>/.done records these options, this wav.scp and the text files
# it copies. A job whose outputs are complete is skipped, so re-running after a failure or a kill
# finishes the work.
set -euo pipefail

nj=4         # number of parallel jobs (contiguous splits of the sorted wav.scp)
cmd=         # job launcher with Kaldi's run.pl interface (default: $cpu_cmd from cmd.sh)
force=false  # true: recompute even if <out-dir> is complete
vad=none     # energy: keep only voiced frames (Kaldi compute-vad, VoxCeleb recipe options; select-voiced-frames)

. "$(dirname "${BASH_SOURCE[0]}")/../utils/parse_options.sh"
if [[ $# -lt 3 ]]; then
  echo "usage: $0 [options] <feat-config> <data-dir> <out-dir> [key=value ...]  (see --help)" >&2; exit 1
fi
conf=$1; data=$2; out=$3; shift 3
overrides=("$@")
for kv in "${overrides[@]+"${overrides[@]}"}"; do
  [[ $kv == *=* ]] || { echo "$0: override '$kv' is not key=value" >&2; exit 1; }
done
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

# ---- validate inputs
[[ $nj =~ ^[1-9][0-9]*$ ]] || { echo "$0: --nj must be a positive integer, got '$nj'" >&2; exit 1; }
[[ -d $data ]] || { echo "$0: data dir not found: $data" >&2; exit 1; }
[[ -s $data/wav.scp ]] || { echo "$0: missing or empty $data/wav.scp" >&2; exit 1; }
if [[ ! -f $conf && ! -f $root/pysv/feature_configs/$conf.yaml ]]; then
  echo "$0: feature config '$conf' is neither a file nor a name in pysv/feature_configs/" >&2; exit 1
fi
num_utts=$(wc -l <"$data/wav.scp")
if [[ $nj -gt $num_utts ]]; then
  echo "$0: --nj $nj is more than the $num_utts utterances; using --nj $num_utts"; nj=$num_utts
fi

case $vad in none|energy) ;; *) echo "$0: --vad must be none or energy, got '$vad'" >&2; exit 1;; esac
py=(python -m pysv.bin.make_features --data "$data" --feat-config "$conf" --out "$out" --vad "$vad")

# ---- skip if complete for these options and inputs
if [[ $force != true ]] && "${py[@]}" --is-done "${overrides[@]+"${overrides[@]}"}" 2>/dev/null; then
  echo "$0: $out is complete for these options and inputs ($out/.done), skipping"
  exit 0
fi
if [[ $force == true ]]; then rm -f "$out/.done" "$out"/data/.done.*; fi

# ---- check the data dir once (names missing audio files / duplicate ids) before launching jobs
"${py[@]}" --check "${overrides[@]+"${overrides[@]}"}"

mkdir -p "$out/log" "$out/data"
vad_note=; [[ $vad == none ]] || vad_note=" with $vad VAD"
echo "$0: computing $conf features$vad_note for $data ($num_utts utterances) in $nj jobs; logs in $out/log"
start=$(date +%s)
if ! "${cmd_words[@]}" JOB=1:$nj "$out/log/make_feats.JOB.log" \
    "${py[@]}" --job JOB --nj $nj "${overrides[@]+"${overrides[@]}"}"; then
  echo "$0: feature extraction failed; see $out/log/make_feats.*.log (the error names the utterance)" >&2
  exit 1
fi
"${py[@]}" --merge --nj $nj --log-file "$out/log/merge.log" "${overrides[@]+"${overrides[@]}"}"

# ---- summary
n_feats=$(wc -l <"$out/feats.scp")
frames=$(awk '{n += $2} END {print n + 0}' "$out/utt2num_frames")
dim=$(sed -n 's/.*"dim": \([0-9]*\).*/\1/p' "$out/.done")
elapsed=$(( $(date +%s) - start ))
echo "$0: $out: features ($conf, dim $dim) for $n_feats of $num_utts utterances, $frames frames," \
     "in ${elapsed}s with $nj jobs"
if [[ $n_feats -ne $num_utts ]]; then
  echo "$0: WARNING: $((num_utts - n_feats)) utterances have no features" >&2
fi
exit 0
