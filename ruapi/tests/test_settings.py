"""Production settings fail closed (issue 8 §5, §8)."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.embedded

PRODUCTION = {"RUAPI_PRODUCTION": "1", "SECRET_KEY": "x" * 50, "ALLOWED_HOSTS": "gw.example.com"}


def check(extra: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "RUAPI_", "SECRET_KEY", "DEBUG"))}
    env.update({"DJANGO_SETTINGS_MODULE": "ruapi.settings", **extra})
    return subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip


@pytest.mark.parametrize(
    ("_case", "env", "message"),
    [
        ("no secret key", {"RUAPI_PRODUCTION": "1", "ALLOWED_HOSTS": "gw.example.com"}, "SECRET_KEY must be set"),
        ("no allowed hosts", {"RUAPI_PRODUCTION": "1", "SECRET_KEY": "x" * 50}, "ALLOWED_HOSTS must be set"),
        ("stripe without webhook secret", {**PRODUCTION, "STRIPE_SECRET_KEY": "sk_live_x"}, "STRIPE_WEBHOOK_SECRET"),
    ],
)
def test_production_refuses_to_start_misconfigured(_case, env, message):
    result = check(env)
    assert result.returncode != 0
    assert message in result.stderr


def test_production_settings_pass_check_deploy():
    result = check({**PRODUCTION, "SECRET_KEY": "k" * 20 + "Z9#x" * 10})
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("postgres://u:p@db.internal:6432/ruapi", "db.internal", "6432"),
        ("postgres://u@/ruapi", "", ""),  # libpq's default Unix socket
        ("postgres://u@/ruapi?host=/var/run/postgresql", "/var/run/postgresql", ""),
        ("postgres://u@localhost/ruapi?host=/tmp&sslmode=disable", "/tmp", ""),
    ],
)
def test_a_database_url_names_a_tcp_host_or_a_unix_socket_directory(url, host, port):
    from ruapi.env import database_from_url

    entry = database_from_url(url)
    assert (entry["NAME"], entry["USER"], entry["HOST"], entry["PORT"]) == ("ruapi", "u", host, port)
    assert "host" not in entry["OPTIONS"]  # HOST is what every connection (Django's, the ledger's pools) reads


def test_a_co_located_postgres_is_reached_over_its_unix_socket():
    import psycopg

    from ruapi.env import database_from_url

    if not os.path.exists("/var/run/postgresql/.s.PGSQL.5432"):
        pytest.skip("no local Postgres socket")
    entry = database_from_url("postgres://postgres@/postgres?host=/var/run/postgresql", pool_size=0)
    with psycopg.connect(dbname=entry["NAME"], user=entry["USER"], host=entry["HOST"], connect_timeout=5) as conn:
        assert conn.execute("SELECT inet_server_addr()").fetchone() == (None,)  # not TCP
