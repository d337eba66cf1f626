#!/usr/bin/env bash
# One command for the whole benchmark: install what is missing, make sure Postgres and Redis run on
# 127.0.0.1, then run bench/run.py (arguments pass through: --quick, --targets, --scenarios, --profile).
# Every server the run starts is a child in its own process group; the trap stops any left over.
set -euo pipefail
cd "$(dirname "$0")/.."

cleanup() {
  local pgids_file=bench/var/run/pgids
  if [ -f "$pgids_file" ]; then
    while read -r pgid; do
      [ -n "$pgid" ] && kill -TERM -- "-$pgid" 2>/dev/null || true
    done <"$pgids_file"
    sleep 1
    while read -r pgid; do
      [ -n "$pgid" ] && kill -KILL -- "-$pgid" 2>/dev/null || true
    done <"$pgids_file"
    rm -f "$pgids_file"
  fi
}
trap cleanup EXIT

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null || [ ! -x bench/.venv-litellm/bin/litellm ] \
   || [ ! -x bench/.venv-tools/bin/py-spy ] || [ ! -f /usr/lib/nginx/modules/ngx_http_js_module.so ]; then
  bash bench/setup.sh
fi

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no
fi
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p 5432 && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break
  sleep 1
done

python3 bench/run.py "$@"
