# Kaldi-style option parsing (its own variables start with __ so they never clobber the caller's), sourced by scripts after their defaults:
#   --some-option value   sets the shell variable some_option (dashes become underscores);
#   the variable must already exist (so a misspelt option is an error), --help prints the header.
while true; do
  [[ $# -eq 0 ]] && break
  case "$1" in
    --help|-h)
      sed -n '2,/^set /p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
      echo "Options (current values):"
      awk '/parse_options.sh/ {exit} /^[a-z0-9_]+=/ {i = index($0, "="); n = substr($0, 1, i - 1);
           gsub("_", "-", n); print "  --" n substr($0, i)}' "$0"
      exit 0 ;;
    --*=*)
      __opt=${1%%=*}; __opt=${__opt#--}; __opt=${__opt//-/_}
      if ! declare -p "$__opt" >/dev/null 2>&1; then echo "$0: invalid option ${1%%=*}" >&2; exit 1; fi
      printf -v "$__opt" '%s' "${1#*=}"; shift ;;
    --*)
      __opt=${1#--}; __opt=${__opt//-/_}
      if ! declare -p "$__opt" >/dev/null 2>&1; then echo "$0: invalid option $1" >&2; exit 1; fi
      if [[ $# -lt 2 ]]; then echo "$0: option $1 needs a value" >&2; exit 1; fi
      printf -v "$__opt" '%s' "$2"; shift 2 ;;
    *) break ;;
  esac
done
true
