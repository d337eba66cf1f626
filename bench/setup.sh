#!/usr/bin/env bash
# Install what the benchmark needs on this machine kind (Debian 12, Python 3.11, root):
# nginx + its njs module and wrk from Debian; the project's dev lock in .venv; LiteLLM proxy in its own
# virtualenv bench/.venv-litellm (not a project dependency); py-spy in bench/.venv-tools; Portkey's
# gateway (Node, from npm, pinned) in bench/.portkey.
set -euo pipefail
cd "$(dirname "$0")/.."

PORTKEY_VERSION=1.15.2  # @portkey-ai/gateway, exact; bench/run.py records the installed one
PORTKEY_HONO_NODE_SERVER=1.13.5  # its HTTP server adapter, see below

need_apt=()
command -v nginx >/dev/null || need_apt+=(nginx)
[ -f /usr/lib/nginx/modules/ngx_http_js_module.so ] || need_apt+=(libnginx-mod-http-js)
command -v wrk >/dev/null || need_apt+=(wrk)
command -v node >/dev/null || need_apt+=(nodejs)  # Portkey's gateway needs Node >= 18 (Debian 12: 18.19)
command -v npm >/dev/null || need_apt+=(npm)
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "== apt-get install ${need_apt[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_apt[@]}"
fi
# The Debian package may start a system nginx on port 80; the benchmark runs its own on 127.0.0.1.

echo "== project requirements (the dev lock, into the project virtualenv .venv; the system Python is untouched)"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements/dev.txt

if [ ! -x bench/.venv-litellm/bin/litellm ]; then
  echo "== LiteLLM proxy in bench/.venv-litellm"
  python3 -m venv bench/.venv-litellm
  bench/.venv-litellm/bin/pip install -q --disable-pip-version-check 'litellm[proxy]'
fi
if [ ! -x bench/.venv-tools/bin/py-spy ]; then
  echo "== py-spy in bench/.venv-tools"
  python3 -m venv bench/.venv-tools
  bench/.venv-tools/bin/pip install -q --disable-pip-version-check py-spy
fi
portkey_dir=bench/.portkey
installed=$(node -p "require('./$portkey_dir/node_modules/@portkey-ai/gateway/package.json').version" 2>/dev/null || true)
hono=$(node -p "require('./$portkey_dir/node_modules/@hono/node-server/package.json').version" 2>/dev/null || true)
if [ "$installed" != "$PORTKEY_VERSION" ] || [ "$hono" != "$PORTKEY_HONO_NODE_SERVER" ]; then
  echo "== Portkey gateway @portkey-ai/gateway@$PORTKEY_VERSION in $portkey_dir (npm)"
  mkdir -p "$portkey_dir"
  # @hono/node-server is held at the version Portkey's own lock file uses: the package asks for ^1.3.3, and
  # from 1.14 on a streamed reply keeps the upstream's immutable headers, so every stream fails with
  # "TypeError: immutable" (Portkey-AI/gateway issue 1389).
  cat >"$portkey_dir/package.json" <<JSON
{"private": true, "dependencies": {"@portkey-ai/gateway": "$PORTKEY_VERSION"},
 "overrides": {"@hono/node-server": "$PORTKEY_HONO_NODE_SERVER"}}
JSON
  # --ignore-scripts: the package's only install script runs patch-package for its own development patches,
  # which are not published. The gateway has no telemetry to switch off (no such code in its build).
  (cd "$portkey_dir" && npm install --no-audit --no-fund --ignore-scripts)
fi
echo "== bench setup done"
