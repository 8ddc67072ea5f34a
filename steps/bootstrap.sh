#!/usr/bin/env bash
# Creates .venv and installs pysv into it (editable) the first time, and again whenever
# pyproject.toml changes. Called by ./run.sh and tests/run.sh; safe to call repeatedly.
#
# torch: installed first, pinned, so that `pip install -e .` (which asks for torch>=2.1) finds it
# satisfied and never pulls a different build. The default spec is torch==2.13.0: on a CPU machine
# whose pip finds the CPU wheel (as here) that is what it installs. A GPU user picks the build with
#   PYSV_TORCH_SPEC="torch==2.13.0" PIP_INDEX_URL=<the CUDA wheel index of your choice> ./run.sh
# or installs torch into .venv by hand before the first run (an importable torch is kept as it is).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
stamp="$venv/.pysv-bootstrap"
python=${PYSV_PYTHON:-python3}
want="$(cat "$root/pyproject.toml" | sha1sum | cut -d' ' -f1) ${PYSV_EXTRAS:-test}"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
echo "bootstrap: setting up $venv (one time; pyproject.toml or extras changed)" >&2
if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv"
fi
# shellcheck disable=SC1091
. "$venv/bin/activate"
if ! python -c "import torch" 2>/dev/null; then
  echo "bootstrap: installing ${PYSV_TORCH_SPEC:-torch==2.13.0} (pinned; the CPU wheel where pip finds it)" >&2
  pip install -q "${PYSV_TORCH_SPEC:-torch==2.13.0}"
fi
echo "bootstrap: installing pysv (editable) with lhotse, kaldiio, soundfile, numpy/scipy, tqdm, pyyaml, matplotlib and the [${PYSV_EXTRAS:-test}] extras" >&2
pip install -q -e "$root[${PYSV_EXTRAS:-test}]"
python -c "import torch, lhotse, kaldiio, pysv; print('bootstrap: torch', torch.__version__, '| lhotse', lhotse.__version__, '| cuda available:', torch.cuda.is_available())" >&2
echo "$want" > "$stamp"
