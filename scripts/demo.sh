#!/usr/bin/env bash
# Set up and start the gateway on its embedded default (SQLite, no other services):
# a demo organisation with $10 of credit, the demo catalog (built-in echo provider) and a fresh key.
set -euo pipefail
cd "$(dirname "$0")/.."
export DATABASE_URL="${DATABASE_URL:-}" REDIS_URL="${REDIS_URL:-}"
PORT="${PORT:-8000}"

python3 -m pip install -q --disable-pip-version-check -r requirements.txt
mkdir -p var
python3 manage.py migrate --no-input -v0
python3 manage.py loadcatalog catalog/fixtures/demo.yaml >/dev/null
python3 manage.py createorg Demo --credit 10 --owner-email demo@ruapi.local >/dev/null
KEY="$(python3 manage.py createapikey Demo --name demo | tail -n 1)"
# A dashboard login for the demo owner: a fresh password each start, email marked verified.
DEMO_PASSWORD="$(python3 -c 'import secrets; print(secrets.token_urlsafe(12))')"
DEMO_PASSWORD="$DEMO_PASSWORD" python3 manage.py shell -c '
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
exec python3 -m uvicorn ruapi.asgi:application --host 127.0.0.1 --port "${PORT}" --loop uvloop --http ruapi.server:GuardedHttpToolsProtocol
