#!/usr/bin/env bash
# Set up and start the gateway on its embedded default (SQLite, no other services):
# a demo organisation with $10 of credit, the demo catalog (built-in echo provider) and a fresh key.
#   ./scripts/demo.sh              http://127.0.0.1:8000
#   PORT=8123 ./scripts/demo.sh    another port (the server listens on 127.0.0.1 only)
# Python packages go into the project virtualenv .venv (created on the first run from python3, or from
# $PYTHON; 3.11 or newer), installed from the runtime lock requirements/runtime.txt with their hashes
# checked: the system Python is never changed (Debian/Ubuntu's is externally managed anyway).
set -euo pipefail
cd "$(dirname "$0")/.."
export DATABASE_URL="${DATABASE_URL:-}" REDIS_URL="${REDIS_URL:-}"
PORT="${PORT:-8000}"
PYTHON="${PYTHON:-python3}"
LOCK=requirements/runtime.txt

if [ ! -x .venv/bin/python ]; then
  command -v "$PYTHON" >/dev/null || { echo "demo.sh: $PYTHON not found; install Python 3.11 or newer" >&2; exit 1; }
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "demo.sh: $("$PYTHON" -V 2>&1) is too old; RuAPI needs Python 3.11 or newer (PYTHON=...)" >&2; exit 1; }
  if ! "$PYTHON" -m venv .venv >/dev/null 2>&1; then
    rm -rf .venv
    # Debian/Ubuntu ship the venv module's pip bootstrap (ensurepip) as a package of its own.
    venv_package="python$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "demo.sh: installing $venv_package (Debian's venv module) with apt-get"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$venv_package" >/dev/null
      "$PYTHON" -m venv .venv
    else
      echo "demo.sh: '$PYTHON -m venv' failed. On Debian/Ubuntu: sudo apt-get install $venv_package" >&2
      exit 1
    fi
  fi
fi
PY=.venv/bin/python
# Install only when the lock changed since the last install into this virtualenv.
lock_sum="$("$PY" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$LOCK")"
if [ "$(cat .venv/.ruapi-runtime-lock 2>/dev/null)" != "$lock_sum" ]; then
  echo "Installing the runtime dependencies into .venv (first run: a minute or two) ..."
  "$PY" -m pip install -q --disable-pip-version-check --require-hashes -r "$LOCK"
  echo "$lock_sum" > .venv/.ruapi-runtime-lock
fi

mkdir -p var
"$PY" manage.py migrate --no-input -v0
"$PY" manage.py loadcatalog catalog/fixtures/demo.yaml >/dev/null
"$PY" manage.py createorg Demo --credit 10 --owner-email demo@ruapi.local >/dev/null
KEY="$("$PY" manage.py createapikey Demo --name demo | tail -n 1)"
# A dashboard login for the demo owner: a fresh password each start, email marked verified.
DEMO_PASSWORD="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(12))')"
DEMO_PASSWORD="$DEMO_PASSWORD" "$PY" manage.py shell --no-imports -c '
import os
from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
user = get_user_model().objects.get(email="demo@ruapi.local")
user.set_password(os.environ["DEMO_PASSWORD"])
user.save()
EmailAddress.objects.update_or_create(user=user, email=user.email, defaults={"verified": True, "primary": True})
'

cat <<TXT

RuAPI is starting on http://127.0.0.1:${PORT}  (embedded default: SQLite, in-process cache)
Demo API key (shown once):  ${KEY}
Dashboard:                  http://127.0.0.1:${PORT}/  (demo@ruapi.local / ${DEMO_PASSWORD})
Public pricing page:        http://127.0.0.1:${PORT}/pricing/

  curl http://127.0.0.1:${PORT}/v1/chat/completions -H "Authorization: Bearer ${KEY}" \\
       -H "Content-Type: application/json" \\
       -d '{"model": "demo-echo", "messages": [{"role": "user", "content": "Hello!"}]}'

  OpenAI SDK:    OpenAI(base_url="http://127.0.0.1:${PORT}/v1", api_key="${KEY}")
  Anthropic SDK: Anthropic(base_url="http://127.0.0.1:${PORT}", api_key="${KEY}")

TXT
exec "$PY" -m uvicorn ruapi.asgi:application --host 127.0.0.1 --port "${PORT}" --loop uvloop --http ruapi.server:GuardedHttpToolsProtocol
