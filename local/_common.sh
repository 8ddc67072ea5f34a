# Shared by the stage-0 wrappers local/prepare_*.sh, sourced after their `set -euo pipefail`:
# puts the repository on PYTHONPATH (and its venv on PATH, via path.sh) and parses their options.
#
#   parse_prepare_options SUBCOMMAND "$@"; set -- ${args[@]+"${args[@]}"}
#     -h|--help                     print the calling script's header comment, then
#                                   `python -m pysv.bin.prepare_data SUBCOMMAND --help` (none if SUBCOMMAND is "")
#     --data-root DIR|--data-root=DIR   sets data (default: data)
#     any other --opt VALUE|--opt=VALUE|--flag   appended to the array opts (the flags are $flags)
#     the first non-option argument ends the options; it and the rest are left in the array args.
#   A script with options of its own defines script_option NAME VALUE before calling: it returns 0
#   when it took NAME (an option that takes a value, in either form), 1 otherwise.
#
#   run_cmd CMD...                  echo the command, then run it.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ -f "$root/path.sh" ]] && . "$root/path.sh"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
flags=" --force --no-progress --check-audio --no-check-audio "
data=data
opts=()
args=()

parse_prepare_options() {
  local subcommand=$1
  shift
  while [[ $# -gt 0 ]]; do
    case "$1" in
      -h|--help)
        awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"
        [[ -n "$subcommand" ]] && python -m pysv.bin.prepare_data "$subcommand" --help
        exit 0 ;;
      --*=*)
        _prepare_option "${1%%=*}" "${1#*=}" || opts+=("$1")
        shift ;;
      --*)
        if [[ "$flags" == *" $1 "* ]]; then opts+=("$1"); shift
        elif [[ $# -ge 2 ]]; then _prepare_option "$1" "$2" || opts+=("$1" "$2"); shift 2
        else echo "$0: option $1 needs a value" >&2; exit 1; fi ;;
      *) break ;;
    esac
  done
  args=("$@")
}

# --data-root, else the calling script's own options; returns 1 for an option to pass on.
_prepare_option() {
  if [[ "$1" == --data-root ]]; then data=$2; return 0; fi
  declare -F script_option >/dev/null && script_option "$1" "$2"
}

run_cmd() {
  echo "$0: $*"
  "$@"
}
