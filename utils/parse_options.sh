# Kaldi-style option parsing, sourced by a script after it has declared its options as variables
# with their defaults (the parser's own variables start with __ so they never clobber the caller's):
#   --some-option value, --some-option=value   set the variable some_option (dashes become underscores);
#                                             the variable must exist, so a misspelt option is an error;
#   a boolean (a variable holding true or false) takes true or false, or stands alone:
#                                             --force alone is --force true, --no-force is --force false;
#   an array variable (name=()) collects the values of a repeated option;
#   --help, -h   print the script's header comment and its options with their defaults, then what
#                the script's function help_more prints (if it defines one), and exit.
# Options end at the first argument not starting with -- (or after --); the rest stay in "$@".
# A script may declare options in a file it sources first (local/_common.sh): --help lists the
# assignments that each file of the chain makes before the line sourcing the next one.
while [[ $# -gt 0 ]]; do
  case "$1" in
    --help|-h)
      sed -n '2,/^set /p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
      echo "Options (defaults):"
      for ((__i = ${#BASH_SOURCE[@]} - 1; __i >= 1; __i--)); do
        __stop=${BASH_SOURCE[$((__i - 1))]##*/}
        awk -v stop="$__stop" '!/^[[:space:]]*#/ && index($0, stop) {exit}
             /^[a-z0-9_]+=/ {i = index($0, "="); n = substr($0, 1, i - 1); gsub("_", "-", n);
                            print "  --" n substr($0, i)}' "${BASH_SOURCE[$__i]}"
      done
      if declare -F help_more >/dev/null; then echo; help_more; fi
      exit 0 ;;
    --) shift; break ;;
    --*)
      if [[ $1 == *=* ]]; then __opt=${1%%=*}; __value=${1#*=}; __shift=1
      else __opt=$1; __value=${2-}; __shift=2; fi
      __name=${__opt#--}; __name=${__name//-/_}
      if [[ $__shift == 2 && $__name == no_* ]] && ! declare -p "$__name" >/dev/null 2>&1; then
        __name=${__name#no_}  # --no-force: false, if force is a boolean
        if [[ $__name =~ ^[a-z_][a-z0-9_]*$ ]] && declare -p "$__name" >/dev/null 2>&1 \
            && [[ ${!__name} == true || ${!__name} == false ]]; then
          printf -v "$__name" false; shift; continue
        fi
        __name=no_$__name
      fi
      if [[ ! $__name =~ ^[a-z_][a-z0-9_]*$ ]] || ! declare -p "$__name" >/dev/null 2>&1; then
        echo "$0: invalid option $__opt" >&2; exit 1
      fi
      if [[ $(declare -p "$__name") == "declare -a"* ]]; then
        [[ $__shift == 1 || $# -ge 2 ]] || { echo "$0: option $__opt needs a value" >&2; exit 1; }
        eval "$__name+=(\"\$__value\")"
      elif [[ ${!__name} == true || ${!__name} == false ]]; then
        if [[ $__shift == 2 && $__value != true && $__value != false ]]; then __value=true; __shift=1; fi  # --force
        [[ $__value == true || $__value == false ]] \
          || { echo "$0: option $__opt takes true or false, got '$__value'" >&2; exit 1; }
        printf -v "$__name" '%s' "$__value"
      else
        [[ $__shift == 1 || $# -ge 2 ]] || { echo "$0: option $__opt needs a value" >&2; exit 1; }
        printf -v "$__name" '%s' "$__value"
      fi
      shift "$__shift" ;;
    *) break ;;
  esac
done
true
