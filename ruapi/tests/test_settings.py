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
