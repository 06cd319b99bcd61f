#!/usr/bin/env bash
# Create or refresh ./.venv with the tested versions (constraints.txt) and
# install OPSS into it in editable mode, with the test extras.
#
# Reuses an existing .venv when its stamp (Python version + hashes of
# pyproject.toml and constraints.txt) matches, so repeated runs take a second.
# Usage: bash scripts/bootstrap.sh            (quiet unless something fails)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
want=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || {
    echo "bootstrap: error: '$PY' not found; install Python >= 3.11 or set PYTHON=/path/to/python3" >&2
    exit 1
}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "bootstrap: error: Python >= 3.11 needed, got $want from '$PY'" >&2
    exit 1
}

stamp=$( { echo "$want"; cat pyproject.toml constraints.txt; } | sha256sum | cut -c1-16)
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.opss-stamp" 2>/dev/null)" = "$stamp" ]; then
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "bootstrap: creating $VENV (torch is large: this takes a minute or two)" >&2
    "$PY" -m venv "$VENV"
else
    echo "bootstrap: $VENV is out of date; updating it" >&2
fi
log=$(mktemp)
if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -q \
        -c constraints.txt -e '.[test]' >"$log" 2>&1; then
    grep -v "^WARNING: Location" "$log" | tail -n 30 >&2
    echo "bootstrap: error: pip install failed (log above)" >&2
    rm -f "$log"
    exit 1
fi
rm -f "$log"
echo "$stamp" > "$VENV/.opss-stamp"
echo "bootstrap: $VENV ready" >&2
