#!/usr/bin/env bash
# The test command (README, .ci/run): every fast test, in less wall time than one process.
#
# Two pytest runs at once:
#   - the tests that assert on wall-clock rates or delays (marker `timing`) and every
#     root test (namespaces, shaped links, CPU quotas): one after another, at normal priority;
#   - the rest on xdist workers (OPSS_TEST_WORKERS, default 3 on this 2-core class of machine:
#     many tests wait on subprocesses and sockets) under `nice -n 10`, so they use the CPU the
#     timing tests leave idle without stretching the intervals those tests measure.
# Extra arguments go to both runs (e.g. -x, -k EXPR). The timing run's output follows the other's.
# Plain `.venv/bin/python -m pytest` still runs everything in one process.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
workers=${OPSS_TEST_WORKERS:-3}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s)
"$PY" -m pytest -p no:xdist -m "not slow and (timing or root)" "$@" >"$log" 2>&1 &
timing=$!
nice -n 10 "$PY" -m pytest -n "$workers" -m "not slow and not timing and not root" "$@"
rest=$?
wait "$timing"
timed=$?
echo
echo "== timing and root tests (run alone beside the above) =="
cat "$log"
# pytest exits 5 when a selection is empty (e.g. -k matched nothing there): not a failure
[ "$rest" -eq 5 ] && rest=0
[ "$timed" -eq 5 ] && timed=0
echo "tests: $(( $(date +%s) - start )) s in all; exit codes: parallel $rest, timing $timed"
[ "$rest" -eq 0 ] && [ "$timed" -eq 0 ]
