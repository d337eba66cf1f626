"""Set-up files (issue 12 §6, issue 16 "Set-up hygiene"): the dependency locks, the Dockerfile,
docker-compose.yml against the Compose specification (vendored in deploy/schema/, no Docker engine
needed), .env.example, and production settings served over plain HTTP on localhost."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from proxy.tests.reliability.faults import GatewayProcess, wait_for

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = ("migrate", "web", "worker", "beat")
AFTER_MIGRATE = ("web", "worker", "beat")


# -- the dependency locks -----------------------------------------------------------------------------
def lock_pins(path: Path) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) of a lock compiled by scripts/lock.sh, for this interpreter
    (the locks are universal: a pin may carry a marker, e.g. another version for PyPy)."""
    pins: dict[str, tuple[str, int]] = {}
    for block in re.split(r"\n(?=\S)", path.read_text()):
        first = block.split("\n", 1)[0]
        if not first or first.startswith("#"):
            continue
        requirement = Requirement(first.rstrip(" \\"))
        specs = list(requirement.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{path.name}: {first!r} is not an exact pin"
        hashes = len(re.findall(r"--hash=sha256:[0-9a-f]{64}", block))
        assert hashes, f"{path.name}: {first!r} has no hash"
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"{path.name}: {name} pinned twice for this interpreter"
        pins[name] = (specs[0].version, hashes)
    return pins


def direct_requirements(path: Path) -> list[Requirement]:
    requirements = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            requirements += direct_requirements(path.parent / line[3:].strip())
        elif line:
            requirements.append(Requirement(line))
    return requirements


@pytest.mark.parametrize("name", ["runtime", "dev"])
def test_lock_pins_every_package_with_hashes_and_satisfies_its_in_file(name):
    pins = lock_pins(ROOT / "requirements" / f"{name}.txt")
    assert len(pins) > 50
    for requirement in direct_requirements(ROOT / "requirements" / f"{name}.in"):
        package = canonicalize_name(requirement.name)
        assert package in pins, f"{requirement} is in {name}.in but not in {name}.txt: run ./scripts/lock.sh"
        assert requirement.specifier.contains(pins[package][0], prereleases=True), (
            f"{name}.txt pins {package}=={pins[package][0]}, outside {name}.in's {requirement}: run ./scripts/lock.sh"
        )


def test_runtime_lock_is_the_dev_lock_restricted_to_the_runtime():
    runtime = lock_pins(ROOT / "requirements" / "runtime.txt")
    dev = lock_pins(ROOT / "requirements" / "dev.txt")
    assert {name: dev.get(name) for name in runtime} == runtime
    assert {"pytest", "ruff", "playwright", "schemathesis", "daphne", "hypothesis"}.isdisjoint(runtime)
    assert {"django", "django-allauth", "uvicorn", "celery", "psycopg"} <= runtime.keys()


def test_installers_use_the_locks_with_hashes():
    dockerfile = (ROOT / "Dockerfile").read_text()
    installs = re.findall(r"pip install(?:[^\n\\]|\\\n)*", dockerfile)
    assert len(installs) == 1 and "--require-hashes" in installs[0], installs
    assert re.findall(r"-r\s+(\S+)", installs[0]) == ["requirements/runtime.txt"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"pip install [^\n]*--require-hashes [^\n]*-r requirements/dev\.txt", ci)
    demo = (ROOT / "scripts" / "demo.sh").read_text()
    assert "\nLOCK=requirements/runtime.txt\n" in demo
    assert re.search(r'pip install [^\n]*--require-hashes -r "\$LOCK"', demo)
    assert "python3 -m pip" not in demo  # never the system Python
    assert (ROOT / "requirements.txt").read_text().strip().splitlines()[-1] == "-r requirements/dev.txt"


# -- docker-compose.yml --------------------------------------------------------------------------------
def compose_schema() -> dict:
    return json.loads((ROOT / "deploy" / "schema" / "compose-spec.json").read_text())


def compose_raw() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value, env: dict[str, str]):
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error} and ${VAR?error}."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match) -> str:
        name, op, arg = match["name"], match["op"] or "", match["arg"] or ""
        present = name in env and (env[name] != "" or not op.startswith(":"))
        if present:
            return env[name]
        if op.endswith("?"):
            raise LookupError(f"{name}: {arg}")
        return arg

    return INTERPOLATION.sub(replace, value)


def env_example() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            assert re.fullmatch(r"[A-Z][A-Z0-9_]*", name), f".env.example: {line!r}"
            assert name not in values, f".env.example names {name} twice"
            values[name] = value
    return values


def compose_variables() -> dict[str, set[str]]:
    """Each variable docker-compose.yml interpolates -> its operators ('' for a plain ${VAR})."""
    found: dict[str, set[str]] = {}
    for match in INTERPOLATION.finditer((ROOT / "docker-compose.yml").read_text()):
        found.setdefault(match["name"], set()).add(match["op"] or "")
    return found


def filled_env() -> dict[str, str]:
    """.env.example with the required values filled in, as an operator's .env would be."""
    required = {name for name, ops in compose_variables().items() if ":?" in ops}
    return {**env_example(), **{name: f"filled-{name.lower()}" for name in required}}


def test_compose_file_is_valid_under_the_compose_specification():
    schema = compose_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    raw = compose_raw()
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(raw)]
    assert errors == []
    interpolated = interpolate(raw, filled_env())
    assert [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(interpolated)] == []


@pytest.mark.parametrize(
    ("_case", "mutate", "path"),
    [
        (
            "unknown condition",
            lambda c: c["services"]["web"]["depends_on"]["migrate"].update(condition="finished"),
            ["services", "web", "depends_on"],
        ),
        ("misspelt key", lambda c: c["services"]["worker"].update(comand=["celery"]), ["services", "worker"]),
        (
            "restart not a string",
            lambda c: c["services"]["migrate"].update(restart=False),
            ["services", "migrate", "restart"],
        ),
        (
            "healthcheck interval a number",
            lambda c: c["services"]["redis"]["healthcheck"].update(interval=5),
            ["services", "redis", "healthcheck", "interval"],
        ),
    ],
)
def test_the_schema_check_catches_a_broken_compose_file(_case, mutate, path):
    compose = compose_raw()
    mutate(compose)
    errors = list(jsonschema.Draft202012Validator(compose_schema()).iter_errors(compose))
    assert errors, "the vendored schema accepted a broken compose file"
    assert any(list(e.absolute_path)[: len(path)] == path for e in errors), [list(e.absolute_path) for e in errors]


def test_app_services_start_after_the_migration_job():
    services = interpolate(compose_raw(), filled_env())["services"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["command"] == ["python", "manage.py", "migrate", "--no-input"]
    assert "migrate" not in services["migrate"]["depends_on"]
    for name in AFTER_MIGRATE:
        assert services[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }, name
    assert services["postgres"]["healthcheck"]["test"][0] == "CMD-SHELL"
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_app_services_share_one_environment_with_email_and_redirect_settings():
    services = interpolate(compose_raw(), filled_env())["services"]
    environments = [services[name]["environment"] for name in APP_SERVICES]
    assert all(environment == environments[0] for environment in environments)
    environment = environments[0]
    assert environment["RUAPI_PRODUCTION"] == "1"
    assert environment["RUAPI_SECURE_SSL_REDIRECT"] == "0"
    assert environment["EMAIL_URL"] == ""
    assert environment["DEFAULT_FROM_EMAIL"] == "RuAPI <no-reply@localhost>"
    assert environment["DATABASE_URL"] == "postgres://ruapi:filled-postgres_password@postgres:5432/ruapi"
    assert environment["SECRET_KEY"] == "filled-secret_key"
    for name, value in {"SECRET_KEY": "", "RUAPI_FIELD_ENCRYPTION_KEY": "", "POSTGRES_PASSWORD": ""}.items():
        with pytest.raises(LookupError, match=name):  # compose refuses to start without them
            interpolate(compose_raw(), {**filled_env(), name: value})


def test_proxy_headers_only_with_forwarded_allow_ips_from_the_trusted_proxies_variable():
    raw_web = compose_raw()["services"]["web"]["command"]
    assert "--proxy-headers" in raw_web
    assert "--forwarded-allow-ips=${RUAPI_TRUSTED_PROXIES:-127.0.0.1}" in raw_web
    web = interpolate(compose_raw(), {**filled_env(), "RUAPI_TRUSTED_PROXIES": "172.18.0.0/16"})["services"]["web"]
    assert "--forwarded-allow-ips=172.18.0.0/16" in web["command"]
    assert web["environment"]["RUAPI_TRUSTED_PROXIES"] == "172.18.0.0/16"
    assert web["ports"] == ["127.0.0.1:8000:8000"]
    for name in ("worker", "beat", "migrate"):
        assert "--proxy-headers" not in json.dumps(compose_raw()["services"][name].get("command", []))


def test_env_example_lists_exactly_the_variables_compose_reads():
    variables = compose_variables()
    example = env_example()
    assert set(example) == set(variables)
    required = sorted(name for name, ops in variables.items() if ":?" in ops)
    assert required == ["POSTGRES_PASSWORD", "RUAPI_FIELD_ENCRYPTION_KEY", "SECRET_KEY"]
    assert {name: example[name] for name in required} == dict.fromkeys(required, "")  # no sample secret
    # every optional variable's example value is a compose default: an untouched line changes nothing
    # (RUAPI_TRUSTED_PROXIES: empty for the app, uvicorn's own 127.0.0.1 for --forwarded-allow-ips)
    defaults: dict[str, set[str]] = {}
    for match in INTERPOLATION.finditer((ROOT / "docker-compose.yml").read_text()):
        if match["op"] == ":-":
            defaults.setdefault(match["name"], set()).add(match["arg"])
    assert {name: example[name] for name in defaults if example[name] not in defaults[name]} == {}
    assert defaults["RUAPI_TRUSTED_PROXIES"] == {"", "127.0.0.1"}
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


# -- production settings over plain HTTP -----------------------------------------------------------------
PRODUCTION_ENV = {
    "RUAPI_PRODUCTION": "1",
    "SECRET_KEY": "k" * 20 + "Z9#x" * 10,
    "ALLOWED_HOSTS": "localhost,127.0.0.1",
    "DATABASE_URL": "",
    "REDIS_URL": "",
}


def production_server(tmp_path: Path, **env: str) -> GatewayProcess:
    clean = {k: "" for k in os.environ if k.startswith(("RUAPI_", "STRIPE_"))}
    return GatewayProcess(tmp_path / "gateway.log", env={**clean, **PRODUCTION_ENV, **env})


def first_answer(server: GatewayProcess, **headers: str) -> httpx.Response:
    def answer():
        if server.process.poll() is not None:
            pytest.fail(f"the server exited:\n{server.log_tail()}")
        try:
            return httpx.get(server.url + "/healthz", headers=headers, timeout=1)
        except httpx.HTTPError:
            return None

    return wait_for(answer, 30, "the production server to answer")


@pytest.mark.integration
def test_production_with_redirect_off_serves_plain_http_localhost(tmp_path):
    server = production_server(tmp_path, RUAPI_SECURE_SSL_REDIRECT="0")
    try:
        response = first_answer(server, host="localhost:8000")
        assert (response.status_code, response.json()) == (200, {"status": "ok"})
        assert "strict-transport-security" not in response.headers  # HSTS only over https
    finally:
        server.stop()


@pytest.mark.integration
def test_production_redirects_to_https_by_default(tmp_path):
    server = production_server(tmp_path)
    try:
        response = first_answer(server, host="localhost:8000")
        assert response.status_code == 301
        assert response.headers["location"] == "https://localhost:8000/healthz"
        behind_tls_proxy = httpx.get(server.url + "/healthz", headers={"x-forwarded-proto": "https"}, timeout=5)
        assert behind_tls_proxy.status_code == 200
    finally:
        server.stop()


def test_check_deploy_accepts_a_deliberately_disabled_redirect():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "RUAPI_", "SECRET_KEY", "DEBUG"))}
    env.update({**PRODUCTION_ENV, "DJANGO_SETTINGS_MODULE": "ruapi.settings", "RUAPI_SECURE_SSL_REDIRECT": "0"})
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    env["RUAPI_SECURE_SSL_REDIRECT"] = "sometimes"
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode != 0
    assert "RUAPI_SECURE_SSL_REDIRECT must be a boolean" in result.stderr
