# Shared by the stage scripts steps/*.sh, sourced after their options are parsed:
#   the project's environment: path.sh and cmd.sh of the working directory (a recipe dir), else of
#   the repository, and the repository on PYTHONPATH (the package need not be installed);
#   cmd_words: the job launcher (--cmd, else $cpu_cmd of cmd.sh) as an array; a launcher given
#   relative to the repository (steps/launch/local.sh) works from any directory.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -f path.sh ]]; then . ./path.sh; else . "$root/path.sh"; fi
if [[ -f cmd.sh ]]; then . ./cmd.sh; else . "$root/cmd.sh"; fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
read -r -a cmd_words <<<"${cmd:-${cpu_cmd:-steps/launch/local.sh}}"
if [[ ! -x ${cmd_words[0]} && -x $root/${cmd_words[0]} ]]; then cmd_words[0]=$root/${cmd_words[0]}; fi
