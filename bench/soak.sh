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

# shellcheck source=bench/common.sh
source bench/common.sh

cleanup() { stop_process_groups bench/var/soak/run/pgids; }
trap cleanup EXIT

# The soak needs only the fake upstream's nginx + njs (not wrk, LiteLLM or py-spy: see bench/setup.sh).
if ! command -v nginx >/dev/null || [ ! -f /usr/lib/nginx/modules/ngx_http_js_module.so ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx libnginx-mod-http-js
fi

ensure_services

python3 bench/soak.py "$@"
