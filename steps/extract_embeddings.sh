#!/usr/bin/env bash
# Extract speaker embeddings of a data set with a trained system, in --nj parallel parts.
#
# Usage: steps/extract_embeddings.sh [options] <exp-dir> <data-dir>
#  e.g.: steps/extract_embeddings.sh --nj 2 --cmd "$cpu_cmd" --mode full exp/<system> data/<set>
#
# Leaves exp/<system>/embeddings/<set>/{xvector,spk_xvector}.{ark,scp} and num_utts.ark
# (xvector_crops.{ark,scp} with --mode crops, xvector_tta.{ark,scp} with --mode tta; crop length,
# number of crops and overlap from the system's extract: block). Skips a set whose embeddings are
# complete for this model, data and protocol; a part whose outputs are complete is skipped, so
# re-running after a failure or a kill finishes the work.
set -euo pipefail

nj=2                      # number of parallel parts (contiguous splits of the sorted utterances)
cmd=                      # job launcher with Kaldi's run.pl interface (default: $cpu_cmd from cmd.sh)
mode=full                 # full | crops | tta
device=auto               # auto | cpu | cuda
force=false               # true: recompute even if the embeddings are complete
precision=fp32            # fp32 | bf16 | auto: autocast of the forward pass (fp32: exact embeddings)
batch_seconds=            # full mode: padded audio per batch of similar-length utterances (0: one at a time; default 120 on CUDA, 0 on CPU)

. "$(dirname "${BASH_SOURCE[0]}")/../utils/parse_options.sh"
if [[ $# -ne 2 ]]; then
  echo "usage: $0 [options] <exp-dir> <data-dir>  (see --help)" >&2; exit 1
fi
exp=$1; data=$2
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

set_name=$(basename "$data")
case $mode in
  full) name=xvector ;;
  crops|tta) name=xvector_$mode ;;
  *) echo "$0: unknown --mode '$mode' (full|crops|tta)" >&2; exit 1 ;;
esac
out=$exp/embeddings/$set_name
[[ $nj =~ ^[1-9][0-9]*$ ]] || { echo "$0: --nj must be a positive integer, got '$nj'" >&2; exit 1; }
[[ -f $exp/final.pt ]] || { echo "$0: missing $exp/final.pt (train the system first: stage 2)" >&2; exit 1; }
[[ -f $data/utt2spk ]] || { echo "$0: missing $data/utt2spk (stage 0)" >&2; exit 1; }
# complete for this model (final.pt), data and protocol? (a changed input or option, a missing or
# truncated output all mean "no", and the reason is printed)
force_opt=(); [[ $force == true ]] && force_opt=(--force)
common=(--exp "$exp" --data "$data" --mode "$mode" --precision "$precision")
if [[ $force != true ]] && python -m pysv.bin.extract "${common[@]}" --is-done; then
  echo "$0: skipping"; exit 0
fi
nutt=$(wc -l < "$data/utt2spk")
[[ $nj -gt $nutt ]] && nj=$nutt
threads=$(( $(nproc) / nj )); [[ $threads -lt 1 ]] && threads=1
echo "$0: $exp on $data ($mode): $nutt utterances in $nj job(s); progress in $out/log/extract_$name.*.log"
start_s=$SECONDS
"${cmd_words[@]}" JOB=1:$nj "$out/log/extract_$name.JOB.log" \
  python -m pysv.bin.extract "${common[@]}" --device "$device" ${batch_seconds:+--batch-seconds "$batch_seconds"} \
    --threads "$threads" --job JOB --nj "$nj" ${force_opt[@]+"${force_opt[@]}"}
python -m pysv.bin.extract "${common[@]}" --merge --nj "$nj" ${force_opt[@]+"${force_opt[@]}"}
echo "$0: $exp on $data ($mode): done in $((SECONDS - start_s)) s"
