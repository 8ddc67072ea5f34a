#!/usr/bin/env bash
# The test command: bootstraps .venv (first run) and runs the pytest suite.
#   tests/run.sh            # whole suite
#   tests/run.sh -k plda    # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
steps/bootstrap.sh
. ./path.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
exec python -m pytest -q "$@" tests
