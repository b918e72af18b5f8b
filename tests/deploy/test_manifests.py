"""What users deploy matches the server it deploys, and the checks CI runs on it can fail.

No cluster and no Docker engine here: the Kubernetes manifests are rendered (kustomize_lite, and
kubectl kustomize where installed) and validated against the Kubernetes schemas; the compose file
goes through Docker Compose's own loader; the app itself answers the probe paths and exports the
autoscaler's metric.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from deploy.tools import check_deploy, kustomize_lite
from modelreg.api.app import create_app
from modelreg.api.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "kubernetes" / "overlays" / "example"
AWS_SETTINGS = {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"}


def rendered(kind: str, name: str | None = None) -> dict[str, Any]:
    [found] = [r for r in kustomize_lite.build(EXAMPLE)
               if r["kind"] == kind and (name is None or r["metadata"]["name"] == name)]
    return found


def pod_spec(kind: str) -> dict[str, Any]:
    spec: dict[str, Any] = rendered(kind)["spec"]["template"]["spec"]
    return spec


def test_check_deploy_passes_on_what_is_committed() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "deploy" / "tools" / "check_deploy.py")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_misspelt_field_in_a_manifest_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "kubernetes"
    shutil.copytree(ROOT / "deploy" / "kubernetes", copy)
    deployment = copy / "base" / "deployment.yaml"
    deployment.write_text(deployment.read_text().replace("readinessProbe:", "readynessProbe:"))
    monkeypatch.setattr(check_deploy, "KUSTOMIZE_ROOT", copy)
    problems: list[str] = []
    check_deploy.check_kubernetes(problems, require_kubectl=False)
    assert problems and all("readynessProbe" in p for p in problems), problems


def test_a_broken_compose_file_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "docker-compose.yml").write_text(
        (ROOT / "docker-compose.yml").read_text().replace("    restart: \"no\"", "    restart: \"no\"\n    replica: 2"))
    shutil.copy(ROOT / "Dockerfile", tmp_path / "Dockerfile")
    monkeypatch.setattr(check_deploy, "ROOT", tmp_path)
    problems: list[str] = []
    check_deploy.check_compose(problems)
    assert len(problems) == 1 and "replica" in problems[0], problems


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed (check_deploy notes it)")
def test_the_python_renderer_emits_what_kubectl_kustomize_emits() -> None:
    for folder in check_deploy.kustomizations():
        real = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True, check=True)
        assert [d for d in yaml.safe_load_all(real.stdout) if d] == kustomize_lite.build(folder), folder


def test_every_setting_the_deployments_set_is_one_the_server_reads() -> None:
    # Settings ignores unknown MODELREG_* variables, so a misspelt one would be silently without effect.
    fields = {f"MODELREG_{name.upper()}" for name in Settings.model_fields}
    names: set[str] = set()
    for generated in (rendered("ConfigMap"), rendered("Secret")):
        names |= set(generated["data"])
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for service in compose["services"].values():
        names |= set(service.get("environment") or {})
    names -= {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}  # the postgres image's own
    unknown = {n for n in names if n not in fields and n not in AWS_SETTINGS}
    assert unknown == set()
    assert {"MODELREG_DATABASE_URL", "MODELREG_REDIS_URL", "MODELREG_ADMIN_TOKEN", "AWS_SECRET_ACCESS_KEY"} <= set(
        rendered("Secret")["data"]), "credentials and URLs belong in the Secret"
    assert not {"MODELREG_DATABASE_URL", "MODELREG_ADMIN_TOKEN"} & set(rendered("ConfigMap")["data"])


def test_probes_and_the_autoscaler_metric_are_what_the_server_serves(tmp_path: Path) -> None:
    [server] = pod_spec("Deployment")["containers"]
    assert server["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert server["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert server["startupProbe"]["httpGet"]["path"] == "/readyz"
    [metric] = [m["pods"]["metric"]["name"] for m in rendered("HorizontalPodAutoscaler")["spec"]["metrics"]
                if m["type"] == "Pods"]
    settings = Settings(data_dir=tmp_path / "data", plugins="echo")
    with TestClient(create_app(settings)) as client:
        assert client.get("/livez").status_code == 200
        assert client.get("/readyz").json()["status"] in ("ready", "degraded")
        # Every family /metrics declares (a per-model gauge has no sample before its model's first request).
        exported = [line.split()[2] for line in client.get("/metrics").text.splitlines()
                    if line.startswith("# TYPE ")]
    assert metric in exported, f"the HPA scales on {metric}, which /metrics does not export"
    adapter = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "prometheus-adapter" / "values.yaml").read_text())
    assert [rule["name"]["as"] for rule in adapter["rules"]["custom"]] == [metric], \
        "prometheus-adapter must serve the metric the HPA asks for, under that name"


def test_the_migration_job_upgrades_with_the_replicas_image_and_settings() -> None:
    [migrate] = pod_spec("Job")["containers"]
    deployment = pod_spec("Deployment")
    [server] = deployment["containers"]
    assert migrate["args"] == ["db", "upgrade"]
    assert migrate["image"] == server["image"] == deployment["initContainers"][0]["image"]
    assert migrate["envFrom"] == server["envFrom"]
    # Replicas never migrate on their own (that is the Job's); they wait for it instead.
    assert rendered("ConfigMap")["data"]["MODELREG_AUTO_MIGRATE"] == "false"
    assert "modelreg db current" in " ".join(deployment["initContainers"][0]["command"])
    # SIGTERM drains for MODELREG_SHUTDOWN_GRACE_SECONDS; Kubernetes must wait longer than that before SIGKILL.
    grace = float(rendered("ConfigMap")["data"]["MODELREG_SHUTDOWN_GRACE_SECONDS"])
    assert deployment["terminationGracePeriodSeconds"] > grace + 5
