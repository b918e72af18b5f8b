# Sourced by scripts/serve and scripts/test: create .venv on first use and keep it installed.
# torch is pinned through constraints.txt to the CPU wheel; an unpinned torch pulls GBs of CUDA.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MODELREG_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
STAMP="$VENV/.modelreg-installed"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ] || [ "$ROOT/constraints.txt" -nt "$STAMP" ] \
   || [ "${MODELREG_REINSTALL:-}" = 1 ]; then
  echo "installing modelreg and its dependencies into $VENV" >&2
  python -m pip install --quiet --upgrade pip
  python -m pip install --quiet -c "$ROOT/constraints.txt" -e "$ROOT[torch,onnx,dev]"
  touch "$STAMP"
fi
