#!/usr/bin/env bash
# `make test`'s test run. TEST_WORKERS=0: one pytest session, one test at a time. Otherwise (4 by
# default, from the Makefile) three lanes at once: on the run's cluster (started here if it is
# not running, stopped after) the tests that share it side by side (pytest-xdist, TEST_WORKERS
# of them); on a cluster of their own, one at a time, those marked `exclusive` (they stop the
# session's operator, install cluster-wide objects or restart the API server: tests/shared.py);
# and the tests marked `own_cluster` (the chaos smoke), which start a cluster of their own.
# Arguments go to pytest in every lane; TEST_LINT, a command run beside the tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=.venv/bin
cluster=${SIDECAR_OPERATOR_TEST_CLUSTER:-test}

if ! "$bin/sidecar-operator" dev env --name "$cluster" >/dev/null 2>&1; then
  trap '"$bin/sidecar-operator" dev down --name "$cluster" >/dev/null' EXIT
fi
# TEST_LINT (`make test` sets it to `make lint`): static checks beside the tests, their output
# after the tests'. About 10 s of mostly one core: before the first test, it held them all up.
lint=$(mktemp)
lint_pid=
if [ -n "${TEST_LINT:-}" ]; then
  $TEST_LINT >"$lint" 2>&1 &
  lint_pid=$!
fi
linted() {
  local code=0
  if [ -n "$lint_pid" ]; then wait "$lint_pid" || code=1; fi
  cat "$lint"
  rm -f "$lint"
  return "$code"
}
"$bin/sidecar-operator" dev up --name "$cluster" >/dev/null

if [ "${TEST_WORKERS:-0}" = 0 ]; then
  failed=0
  "$bin/pytest" "$@" || failed=1  # one session, one test at a time
  linted || failed=1
  exit "$failed"
fi

# pytest exits 5 when a phase selects no test (`-k` naming only tests of another): not a failure.
passed() { "$@" || [ $? = 5 ]; }

# The exclusive tests mostly wait (operators starting, takeovers, the API server restarted):
# beside the rest on a second cluster, not alone after them on the first.
exclusive=$(mktemp)
SIDECAR_OPERATOR_TEST_CLUSTER="$cluster-exclusive" \
  passed "$bin/pytest" -m "exclusive and not own_cluster" "$@" >"$exclusive" 2>&1 &
exclusive_pid=$!
aside=$(mktemp)
passed "$bin/pytest" -m own_cluster "$@" >"$aside" 2>&1 &
aside_pid=$!
failed=0
# One test at a time to each worker (`--maxschedchunk 1`): in runs of consecutive tests, the
# long ones bunched on one worker while the others idled at the end.
passed "$bin/pytest" -n "$TEST_WORKERS" --maxschedchunk 1 -m "not exclusive and not own_cluster" "$@" \
  || failed=1
wait "$exclusive_pid" || failed=1
cat "$exclusive"
wait "$aside_pid" || failed=1
cat "$aside"
rm -f "$exclusive" "$aside"
linted || failed=1
exit "$failed"
