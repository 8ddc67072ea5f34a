#!/usr/bin/env bash
# Convert the audio of a corpus tree that soundfile cannot read (VoxCeleb2's AAC .m4a, .aac, .mp3,
# .opus, ...) with ffmpeg to mono 16-bit FLAC, in parallel jobs through the job launcher (cmd.sh).
#
# Usage: steps/convert_audio.sh [options] <src-dir> <out-dir>
#  e.g.: steps/convert_audio.sh --nj 16 --cmd "$cpu_cmd" /corpora/voxceleb2 /corpora/voxceleb2_flac
#
#  <src-dir>  the corpus tree (e.g. VoxCeleb2 with dev/aac/idXXXXX/<video>/<nnnnn>.m4a)
#  <out-dir>  the mirrored tree, outside <src-dir>: <out-dir>/<same path>.flac for every such file
#             without a .wav/.flac twin, symbolic links to the .wav/.flac files; logs in <out-dir>/.log/
#             (hidden: <out-dir> is read as the corpus afterwards)
#
# Runs  $cmd JOB=1:$nj <out-dir>/.log/convert.JOB.log python -m pysv.bin.convert_audio --part JOB/$nj ...
# Each job converts the files whose relative path hashes to its part (the parts are disjoint, and
# each job only touches its own files, so they can run on different machines that share the file
# system). Resumable: files are written under a temporary name and renamed when complete, so a killed
# conversion continues when run again with the files not yet done (any --nj), and a half-written file
# is never taken as done. While the jobs run, a progress bar on stderr (a line a minute when stderr is
# not a terminal); at the end the summed count 'N converted, M already done, K linked, F failed'.
# A job that failed (ffmpeg missing, files ffmpeg could not convert: listed in its log) makes the
# script fail, naming its log; run it again to retry.
set -euo pipefail

nj=4               # number of parallel jobs (parts of the tree)
cmd=               # job launcher with Kaldi's run.pl interface (default: $cpu_cmd from cmd.sh)
threads=1          # ffmpeg processes at once inside each job
sample_rate=16000  # output sample rate in Hz
what=corpus        # what <src-dir> is, in messages

. "$(dirname "${BASH_SOURCE[0]}")/../utils/parse_options.sh"
if [[ $# -ne 2 ]]; then
  echo "usage: $0 [options] <src-dir> <out-dir>  (see --help)" >&2; exit 1
fi
src=$1; out=$2
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

# ---- validate inputs
[[ $nj =~ ^[1-9][0-9]*$ ]] || { echo "$0: --nj must be a positive integer, got '$nj'" >&2; exit 1; }
[[ $threads =~ ^[1-9][0-9]*$ ]] || { echo "$0: --threads must be a positive integer, got '$threads'" >&2; exit 1; }
[[ -d $src ]] || { echo "$0: $what directory not found: $src" >&2; exit 1; }
if [[ $src == *JOB* || $out == *JOB* ]]; then  # the launcher replaces JOB in every argument
  echo "$0: the paths must not contain 'JOB' (the job launcher replaces it by the job number): $src $out" >&2
  exit 1
fi
src_real=$(realpath "$src"); out_real=$(realpath -m "$out")
if [[ $out_real == "$src_real" || $out_real == "$src_real"/* ]]; then
  echo "$0: <out-dir> $out is or lies inside the $what directory $src; give a directory outside it" >&2; exit 1
fi

logdir=$out/.log
mkdir -p "$logdir"
rm -f "$logdir"/convert.*.progress "$logdir"/convert.*.report
py=(python -m pysv.bin.convert_audio "$src" "$out" --nj "$threads" --sample-rate "$sample_rate" --what "$what"
    --no-progress)

# ---- progress: the jobs write '<processed> <to convert>' to convert.JOB.progress every few seconds
progress_line() {
  cat "$logdir"/convert.*.progress 2>/dev/null | awk -v nj="$nj" -v s="$(( $(date +%s) - start ))" '
    {p += $1; t += $2; n++}
    END {f = t > 0 ? p / t : 0; w = 30; b = ""
         for (i = 0; i < w; i++) b = b (i < int(f * w) ? "#" : ".")
         printf "converting [%s] %3d%% %d/%d%s files, %d/%d jobs started, %ds", b, 100 * f, p, t,
                n < nj ? "+" : "", n, nj, s}'
}
monitor() {
  local last
  last=$(date +%s)
  while sleep 1; do
    if [[ -t 2 ]]; then printf '\r%s\033[K' "$(progress_line)" >&2
    elif (( $(date +%s) - last >= 60 )); then echo "$0: $(progress_line)" >&2; last=$(date +%s); fi
  done
}

echo "$0: converting $src into $out in $nj jobs ($threads ffmpeg process(es) each); logs in $logdir"
start=$(date +%s)
monitor & monitor_pid=$!
trap 'kill "$monitor_pid" 2>/dev/null || true' EXIT
rc=0
"${cmd_words[@]}" JOB=1:$nj "$logdir/convert.JOB.log" "${py[@]}" --part JOB/$nj \
  --progress-file "$logdir/convert.JOB.progress" --report-file "$logdir/convert.JOB.report" || rc=$?
kill "$monitor_pid" 2>/dev/null || true
wait "$monitor_pid" 2>/dev/null || true
if [[ -t 2 ]]; then printf '\r%s\033[K\n' "$(progress_line)" >&2; fi

# ---- the summed count from the jobs' reports ('converted N done N linked N failed N')
converted=0; done_=0; linked=0; failed=0; failed_jobs=()
for ((j = 1; j <= nj; j++)); do
  report=$logdir/convert.$j.report
  if [[ -s $report ]] && read -r _ c _ d _ l _ f <"$report" && [[ "$c$d$l$f" =~ ^[0-9]+$ ]]; then
    converted=$((converted + c)); done_=$((done_ + d)); linked=$((linked + l)); failed=$((failed + f))
    [[ $f -eq 0 ]] || failed_jobs+=("$j")
  else
    failed_jobs+=("$j")  # no report: the job stopped before its end (ffmpeg missing, killed, ...)
  fi
done
echo "$0: $src -> $out: $converted converted, $done_ already done, $linked linked, $failed failed" \
     "($nj jobs, $(( $(date +%s) - start ))s)"
if [[ ${#failed_jobs[@]} -gt 0 ]]; then
  for j in "${failed_jobs[@]}"; do
    echo "$0: job $j of $nj failed; see $logdir/convert.$j.log" >&2
    if [[ -f $logdir/convert.$j.log ]]; then
      awk '/: error: /{p = 1} /^# Ended/{p = 0} p' "$logdir/convert.$j.log" | head -n 8 | sed 's/^/    /' >&2
    fi
  done
  echo "$0: ${#failed_jobs[@]} of $nj jobs failed; run again to retry (files already converted are kept)" >&2
  exit 1
fi
if [[ $rc -ne 0 ]]; then
  echo "$0: the job launcher failed (exit status $rc); see $logdir/convert.*.log" >&2; exit 1
fi
exit 0
