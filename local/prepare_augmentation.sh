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
# The options are those of `python -m pysv.bin.prepare_data musan` and `... rirs`; one left empty
# takes its default there.
set -euo pipefail
musan_dir=               # MUSAN root (or a folder of <category>/ folders)
rirs_dir=                # RIRS_NOISES root (or its parent), or a folder of RIR files
categories=              # musan: comma list of categories to keep (default: all found)
rir_types=               # rirs: comma list of simulated, real (default: both)
musan_name=              # musan: set / manifest name
rirs_name=               # rirs: set / manifest name
check_audio=true         # decode every file fully (false: read the headers only)
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
if [[ $# -gt 1 ]]; then echo "usage: $0 [--musan-dir DIR] [--rirs-dir DIR] [options] [<data-root>]" >&2; exit 1; fi
if [[ -z $musan_dir && -z $rirs_dir ]]; then
  echo "$0: give --musan-dir and/or --rirs-dir" >&2; exit 1
fi
[[ $# -eq 1 ]] && data_root=$1
if [[ -n $musan_dir ]]; then
  prepare musan musan_dir categories -- ${musan_name:+--name "$musan_name"}
fi
if [[ -n $rirs_dir ]]; then
  prepare rirs rirs_dir rir_types -- ${rirs_name:+--name "$rirs_name"}
fi
