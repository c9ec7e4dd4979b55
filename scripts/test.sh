#!/usr/bin/env bash
# The whole test suite: Python (SQLite + PostgreSQL + Redis, real browser) and the JS client kit.
# `--quick` (make quick): the fast tier only: Python tests not marked `slow`, on SQLite, no JS kit suite.
# Other arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
QUICK=0
if [ "${1:-}" = "--quick" ]; then
  QUICK=1
  shift
  export LEADPUSH_TEST_DATABASES="${LEADPUSH_TEST_DATABASES:-sqlite}"
  set -- -m "not slow" "$@"
fi

# Start local PostgreSQL / Redis if this machine has them installed but stopped.
if command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
if command -v redis-server >/dev/null 2>&1 && ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
fi

# The JS client kit's suite (node's test runner) mostly waits on the `leadpush serve` processes it starts: it runs
# beside pytest, and its report is printed after pytest's.
KIT_PID=""
if [ "$QUICK" = 0 ] && [ -d clients/js/test ] && command -v node >/dev/null 2>&1; then
  KIT_LOG="$(mktemp)"
  (cd clients/js && node --test test/) >"$KIT_LOG" 2>&1 &
  KIT_PID=$!
fi

# The tests run in parallel worker processes (pytest-xdist), LEADPUSH_TEST_WORKERS of them (0: one process, as
# plain `pytest` runs). Most tests wait on I/O (servers, databases, chromium), so more workers than cores pay.
# `--dist loadgroup`: tests that share a module-scoped fixture (a browser, a fake server) stay on one worker
# (tests/conftest.py marks them). Arguments that choose workers themselves (-n, -p no:xdist) win.
WORKERS="${LEADPUSH_TEST_WORKERS:-3}"
PARALLEL=(-n "$WORKERS" --dist loadgroup)
for arg in "$@"; do
  case "$arg" in -n | -n* | --numprocesses* | no:xdist | -pno:xdist) PARALLEL=() ;; esac
done
[ "$WORKERS" = 0 ] && PARALLEL=()

PYTHONPATH=src:tests $BIN/python -m pytest "${PARALLEL[@]}" "$@"
rc=$?
if [ -n "$KIT_PID" ]; then
  wait "$KIT_PID" || rc=1
  cat "$KIT_LOG"
  rm -f "$KIT_LOG"
fi
exit $rc
