#!/usr/bin/env bash
# Run the whole test suite on Postgres + Redis, then the embedded-default part again on SQLite
# without Redis. Needs Postgres on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 (.ci/run starts them);
# it fails, never skips, when they are missing. Extra arguments go to both pytest runs.
set -euo pipefail
cd "$(dirname "$0")/.."

export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/ruapi}"
export TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}"
# The `clients` tier (real Claude Code, Codex, SDKs) is skipped when scripts/install-clients.sh has not
# run; in CI it must run, so a missing install fails instead.
export RUAPI_REQUIRE_CLIENTS="${RUAPI_REQUIRE_CLIENTS:-${CI:+1}}"

python3 - <<'PY'
import os, sys
import psycopg, redis
try:
    psycopg.connect(os.environ["TEST_DATABASE_URL"].rsplit("/", 1)[0] + "/postgres", connect_timeout=5).close()
    redis.Redis.from_url(os.environ["TEST_REDIS_URL"], socket_connect_timeout=5).ping()
except Exception as exc:
    sys.exit(f"scripts/test.sh: Postgres or Redis is not reachable ({exc}); start them (see .ci/run)")
PY

# pytest, where "no test selected" (exit 5: e.g. a path argument with no outage tests in it) is fine.
run_pytest() {
  local status=0
  python3 -m pytest "$@" || status=$?
  if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then exit "$status"; fi
}

echo "== pytest on Postgres + Redis"
DATABASE_URL="$TEST_DATABASE_URL" REDIS_URL="$TEST_REDIS_URL" run_pytest -m "not outage" "$@"

# The outage tests kill every backend of the test database (this process's connections too), so
# they run in a pytest process of their own.
echo "== pytest -m outage on Postgres + Redis (database and Redis outages)"
DATABASE_URL="$TEST_DATABASE_URL" REDIS_URL="$TEST_REDIS_URL" run_pytest -m outage "$@"

echo "== pytest -m embedded on the embedded default (SQLite, no Redis)"
DATABASE_URL="" REDIS_URL="" run_pytest -m embedded "$@"
