# Shared by the stage-0 wrappers local/prepare_*.sh, sourced after `set -euo pipefail` and the
# declarations of their own options (with check_audio, whose default differs between corpora, and
# help_more, which prints the help of the prepare_data sub-command they run):
#   puts the repository on PYTHONPATH (and its venv on PATH, via path.sh), declares the options
#   every `python -m pysv.bin.prepare_data` sub-command has, parses the options
#   (utils/parse_options.sh), and defines
#   prepare SUBCOMMAND [VAR...] [-- ARG...]
#       echo and run `python -m pysv.bin.prepare_data SUBCOMMAND` with --var value for every
#       non-empty VAR (each value of an array VAR), the common options, then the ARGs.
# An option left empty takes the sub-command's default.
. "$(dirname "${BASH_SOURCE[0]}")/../path.sh"
export PYTHONPATH="$PYSV_ROOT${PYTHONPATH:+:$PYTHONPATH}"

data_root=data           # root of the data dirs and manifests (or the last positional argument)
sample_rate=             # required sample rate of all audio in Hz
on_rate_mismatch=        # a file at another sample rate: refuse | resample
nj=                      # parallel processes for audio checks / generation
min_utt_duration=        # utterances shorter than this many seconds are left out (listed in <set>/short_utts)
log_file=                # also write the log to this file
force=false              # true: redo the stage even if it is complete
progress=true            # false (or --no-progress): no progress bars
. "$(dirname "${BASH_SOURCE[0]}")/../utils/parse_options.sh"

prepare() {  # its locals start with __: they must not hide the option variables
  local __sub=$1 __vars=() __args=() __var __values __value
  shift
  while [[ $# -gt 0 && $1 != -- ]]; do __vars+=("$1"); shift; done
  [[ $# -eq 0 ]] || shift
  for __var in ${__vars[@]+"${__vars[@]}"} sample_rate on_rate_mismatch nj min_utt_duration log_file; do
    __values="$__var[@]"
    for __value in ${!__values+"${!__values}"}; do
      if [[ -n $__value ]]; then __args+=("--${__var//_/-}" "$__value"); fi
    done
  done
  if [[ $force == true ]]; then __args+=(--force); fi
  if [[ $progress != true ]]; then __args+=(--no-progress); fi
  if [[ $check_audio == true ]]; then __args+=(--check-audio); else __args+=(--no-check-audio); fi
  __args+=("$@" --data-root "$data_root")
  echo "$0: python -m pysv.bin.prepare_data $__sub$(printf ' %q' "${__args[@]}")"
  python -m pysv.bin.prepare_data "$__sub" "${__args[@]}"
}
