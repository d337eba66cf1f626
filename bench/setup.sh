#!/usr/bin/env bash
# Install what the benchmark needs on this machine kind (Debian 12, Python 3.11, root):
# nginx + its njs module and wrk from Debian; the project's dev lock in .venv; LiteLLM proxy in its own
# virtualenv bench/.venv-litellm (not a project dependency); py-spy in bench/.venv-tools.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v nginx >/dev/null || need_apt+=(nginx)
[ -f /usr/lib/nginx/modules/ngx_http_js_module.so ] || need_apt+=(libnginx-mod-http-js)
command -v wrk >/dev/null || need_apt+=(wrk)
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
echo "== bench setup done"
