#!/usr/bin/env bash
# Soak (issue 8 item 9, "Load held"): the gateway in its production configuration under a sustained
# mixed load, sampled for FD / connection / memory leaks, then money consistency checked; writes
# bench/results/soak.md and soak.json. Arguments pass through to bench/soak.py:
#   bash bench/soak.sh [--duration 300] [--concurrency 64] [--interval 5] [--warmup 50]
# Its own ports (gateway 18400, nginx 18480, slow upstream 18481), database (ruapi_soak), Redis db
# (13) and directory (bench/var/soak/): it can run next to bench/run.sh. Every server it starts is a
# child in its own process group; the trap stops any left over.
set -euo pipefail
cd "$(dirname "$0")/.."

cleanup() {
  local pgids_file=bench/var/soak/run/pgids
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

# The soak needs only the fake upstream's nginx + njs (not wrk, LiteLLM or py-spy: see bench/setup.sh).
if ! command -v nginx >/dev/null || [ ! -f /usr/lib/nginx/modules/ngx_http_js_module.so ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx libnginx-mod-http-js
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

python3 bench/soak.py "$@"
