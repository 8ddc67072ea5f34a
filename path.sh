# Puts the project's virtual environment on PATH (created by the first ./run.sh or tests/run.sh).
PYSV_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ -f "$PYSV_ROOT/.venv/bin/activate" ]]; then
  # shellcheck disable=SC1091
  . "$PYSV_ROOT/.venv/bin/activate"
fi
export PYTHONUNBUFFERED=1
export LC_ALL=C
