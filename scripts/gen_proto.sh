#!/usr/bin/env bash
# Regenerate the Python stubs of the wire contract into opss/v1/.
# Usage: scripts/gen_proto.sh [OUT_DIR]   (default: the repository root)
# tests/test_proto_stubs.py runs this into a temp dir and diffs the result
# against the committed stubs, so edit proto/opss/v1/opss.proto and rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-.}"
py="${PYTHON:-.venv/bin/python}"
[ -x "$py" ] || py=python
"$py" -m grpc_tools.protoc -Iproto --python_out="$out" --pyi_out="$out" \
    --grpc_python_out="$out" proto/opss/v1/opss.proto
