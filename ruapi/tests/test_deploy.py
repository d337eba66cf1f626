"""The Kubernetes manifests under deploy/k8s validate offline against the API schemas (issue 17).

kubernetes-validate checks every resource against the Kubernetes JSON schemas of one API version
(strict: unknown fields are errors), with no cluster; the other checks hold the manifests to what
the gateway needs: probes that exist, a grace period that covers the drain, exactly one beat.
"""

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from ruapi.asgi import OPS_PATHS

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KUBERNETES_VERSION = "1.33"


def documents() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((f"{path.relative_to(DEPLOY)}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return found


DOCS = documents()
BY_NAME = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in DOCS}


@pytest.mark.parametrize(("_name", "doc"), DOCS, ids=[name for name, _ in DOCS])
def test_every_manifest_is_valid_for_the_kubernetes_api(_name, doc):
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("kustomization", sorted(DEPLOY.rglob("kustomization.yaml")), ids=str)
def test_kustomizations_list_files_that_exist(kustomization):
    listed = yaml.safe_load(kustomization.read_text())["resources"]
    assert listed and all((kustomization.parent / name).is_file() for name in listed)


def container(deployment: str, name: str) -> dict:
    spec = BY_NAME[("Deployment", deployment)]["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == name)


def test_web_probes_exist_and_the_grace_period_covers_the_drain():
    web = BY_NAME[("Deployment", "ruapi-web")]["spec"]["template"]["spec"]
    main = container("ruapi-web", "web")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert main[probe]["httpGet"]["path"] in OPS_PATHS
    config = BY_NAME[("ConfigMap", "ruapi-config")]["data"]
    drain = float(config["RUAPI_SHUTDOWN_GRACE_SECONDS"])
    uvicorn_timeout = float(next(a.split("=")[1] for a in main["command"] if a.startswith("--timeout-graceful-shutdown")))
    pre_stop = float(main["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert drain < uvicorn_timeout  # the error events go out before uvicorn cancels anything
    assert pre_stop + uvicorn_timeout < web["terminationGracePeriodSeconds"]  # before the kubelet's SIGKILL
    assert "--http=ruapi.server:GuardedHttpToolsProtocol" in main["command"]
    assert any(e["name"] == "PROMETHEUS_MULTIPROC_DIR" for e in main["env"])


def test_exactly_one_beat_and_an_hpa_and_pdb_for_the_web():
    beat = BY_NAME[("Deployment", "ruapi-beat")]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"
    assert BY_NAME[("HorizontalPodAutoscaler", "ruapi-web")]["spec"]["scaleTargetRef"]["name"] == "ruapi-web"
    pdb = BY_NAME[("PodDisruptionBudget", "ruapi-web")]["spec"]
    assert pdb["selector"]["matchLabels"] == BY_NAME[("Deployment", "ruapi-web")]["spec"]["selector"]["matchLabels"]


def test_secrets_come_from_the_secret_and_every_workload_sets_resources():
    secret_keys = set(BY_NAME[("Secret", "ruapi-secrets")]["stringData"])
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL"} <= secret_keys
    config = BY_NAME[("ConfigMap", "ruapi-config")]["data"]
    assert not secret_keys & set(config)
    for (kind, _name), doc in BY_NAME.items():
        if kind not in ("Deployment", "StatefulSet", "Job"):
            continue
        for c in doc["spec"]["template"]["spec"]["containers"]:
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], (kind, _name)


def test_the_grafana_dashboard_queries_only_series_the_gateway_exports():
    import json
    import re

    from ruapi import observability

    dashboard = json.loads((DEPLOY.parent / "grafana" / "ruapi-dashboard.json").read_text())
    exported = {m._name for m in vars(observability).values() if isinstance(getattr(m, "_name", None), str)}
    exported |= {"ruapi_holds_pending"}
    used = {
        re.sub(r"_(total|bucket|count|sum)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bruapi_[a-z_]+", target["expr"])
    }
    assert used and used <= exported, used - exported
