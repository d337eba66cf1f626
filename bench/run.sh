#!/usr/bin/env bash
# One command for the whole benchmark: install what is missing, make sure Postgres and Redis run on
# 127.0.0.1, then run bench/run.py (arguments pass through: --quick, --targets, --scenarios, --profile).
# Every server the run starts is a child in its own process group; the trap stops any left over.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=bench/common.sh
source bench/common.sh

cleanup() { stop_process_groups bench/var/run/pgids; }
trap cleanup EXIT

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null || [ ! -x bench/.venv-litellm/bin/litellm ] \
   || [ ! -x .venv/bin/python ] \
   || [ ! -x bench/.venv-tools/bin/py-spy ] || [ ! -f /usr/lib/nginx/modules/ngx_http_js_module.so ] \
   || ! command -v node >/dev/null || [ ! -f bench/.portkey/node_modules/@portkey-ai/gateway/build/start-server.js ]; then
  bash bench/setup.sh
fi

ensure_services

.venv/bin/python bench/run.py "$@"
