"""docker-compose.yml and the Kubernetes manifests, validated statically (no engine here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("registry", "gateway", "trainer", "monitor")


def _documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_compose_runs_every_service_on_real_kafka_and_postgres() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "postgres", *SERVICES} <= set(services)
    for name in SERVICES:
        environment = services[name]["environment"]
        assert environment["HEADWATER_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert environment["HEADWATER_DATABASE_URL"].startswith("postgresql://")
        assert services[name]["command"] == [name]


@pytest.mark.parametrize("name", SERVICES)
def test_k8s_manifest_has_deployment_service_and_probes(name: str) -> None:
    docs = _documents(ROOT / "infra" / "k8s" / f"{name}.yaml")
    kinds = {doc["kind"]: doc for doc in docs}
    assert set(kinds) == {"Deployment", "Service"}
    container = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == [name]
    assert "readinessProbe" in container and "livenessProbe" in container
    selector = kinds["Deployment"]["spec"]["selector"]["matchLabels"]
    assert kinds["Service"]["spec"]["selector"] == selector


def test_prometheus_scrapes_every_service() -> None:
    config = yaml.safe_load((ROOT / "infra" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs == {f"headwater-{name}" for name in SERVICES}


def test_every_service_finds_the_registry_by_one_variable() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name in ("gateway", "trainer"):
        assert compose["services"][name]["environment"]["HEADWATER_REGISTRY_TARGET"] == (
            "registry:50051")
    config = {doc["kind"]: doc for doc in _documents(ROOT / "infra" / "k8s" / "config.yaml")}
    assert config["ConfigMap"]["data"]["HEADWATER_REGISTRY_TARGET"] == "headwater-registry:50051"
    for path in [ROOT / "docker-compose.yml", *(ROOT / "infra" / "k8s").glob("*.yaml")]:
        assert "_REGISTRY_TARGET" not in path.read_text().replace("HEADWATER_REGISTRY_TARGET", "")
