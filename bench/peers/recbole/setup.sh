#!/usr/bin/env bash
# Create bench/peers/recbole/venv with RecBole 1.2.1 and the pins that work on this machine
# (Python 3.11, CPU torch 2.13.0 from the /opt/wheels find-links). Idempotent: does nothing when the
# venv already has the pinned recbole and torch.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/venv"
REQS="${RECBOLE_REQS:-$HERE/../../../../shared/peers/recbole-1.2.1-requirements.txt}"
PY="${PYTHON:-python3}"

if [ ! -f "$REQS" ]; then
    echo "requirements not found: $REQS (set RECBOLE_REQS)" >&2
    exit 1
fi
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - <<'PY' 2>/dev/null
import importlib.metadata as m
assert m.version("recbole") == "1.2.1"
assert m.version("torch").startswith("2.13.0")
assert m.version("numpy") == "1.26.4"
PY
then
    echo "recbole venv already set up: $VENV"
    exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# torch==2.13.0+cpu comes from the find-links wheel (/opt/wheels) configured for pip on this machine.
"$VENV/bin/python" -m pip install --quiet -r "$REQS"
"$VENV/bin/python" - <<'PY'
import importlib.metadata as m
print("recbole", m.version("recbole"), "torch", m.version("torch"), "numpy", m.version("numpy"))
PY
