#!/usr/bin/env bash
# The test command: bootstraps .venv (first run), lints with ruff (pyproject.toml [tool.ruff]),
# then runs the pytest suite.
#   tests/run.sh            # lint + whole suite
#   tests/run.sh -k plda    # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
steps/bootstrap.sh
. ./path.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
ruff check --quiet pysv tests bench
exec python -m pytest -q "$@" tests
