#!/usr/bin/env bash
# Stage 0 for augmentation data (from local directories; nothing is downloaded):
#   --musan-dir DIR  MUSAN (musan/{noise,music,speech}/...) or any folder of <category>/<file>.{wav,flac}
#                    -> <data-root>/manifests/musan_{recordings,supervisions,cuts}.jsonl.gz (custom 'category'),
#                       <data-root>/musan/{wav.scp,utt2category,utt2dur}
#   --rirs-dir DIR   RIRS_NOISES (simulated_rirs/, real_rirs_isotropic_noises/) or a folder of RIR files
#                    -> <data-root>/manifests/rirs_{recordings,...}.jsonl.gz, <data-root>/rirs/{wav.scp,utt2room,...}
#
# Usage: local/prepare_augmentation.sh [--musan-dir DIR] [--rirs-dir DIR] [options] [<data-root>]
#   --categories noise,music,speech  --rir-types simulated,real  --nj N --force
#   --musan-name musan --rirs-name rirs (set names)
# e.g. local/prepare_augmentation.sh --musan-dir ../shared/data/noise --rirs-dir ../shared/data/rir data
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
musan_dir=
rirs_dir=
musan_opts=()
rirs_opts=()
script_option() {
  case "$1" in
    --musan-dir) musan_dir=$2 ;;
    --rirs-dir) rirs_dir=$2 ;;
    --categories) musan_opts+=("$1" "$2") ;;
    --rir-types) rirs_opts+=("$1" "$2") ;;
    --musan-name) musan_opts+=(--name "$2") ;;
    --rirs-name) rirs_opts+=(--name "$2") ;;
    *) return 1 ;;
  esac
}
parse_prepare_options "" "$@"; set -- ${args[@]+"${args[@]}"}  # "": no python --help (two subcommands)
if [[ $# -gt 1 ]]; then echo "usage: $0 [--musan-dir DIR] [--rirs-dir DIR] [options] [<data-root>]" >&2; exit 1; fi
if [[ -z "$musan_dir" && -z "$rirs_dir" ]]; then
  echo "$0: give --musan-dir and/or --rirs-dir" >&2; exit 1
fi
[[ $# -eq 1 ]] && data=$1
if [[ -n "$musan_dir" ]]; then
  run_cmd python -m pysv.bin.prepare_data musan --musan-dir "$musan_dir" ${musan_opts[@]+"${musan_opts[@]}"} \
    ${opts[@]+"${opts[@]}"} --data-root "$data"
fi
if [[ -n "$rirs_dir" ]]; then
  run_cmd python -m pysv.bin.prepare_data rirs --rirs-dir "$rirs_dir" ${rirs_opts[@]+"${rirs_opts[@]}"} \
    ${opts[@]+"${opts[@]}"} --data-root "$data"
fi
