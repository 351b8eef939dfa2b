"""The local node's pure pieces: path rewriting, env expansion, images, quantities, status merging."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from rft_devcluster.kwok_stages import render_kwok_config
from rft_devcluster.localnode.config import NodeCapacity
from rft_devcluster.localnode.container import RunState, exit_code_of
from rft_devcluster.localnode.downward import field_value, parse_quantity, resource_value
from rft_devcluster.localnode.endpoints import desired_slices
from rft_devcluster.localnode.envvars import expand
from rft_devcluster.localnode.images import (
    FAKE_VLLM_IMAGE,
    VENV_BIN,
    UnsupportedImageError,
    repository_name,
    runtime_for,
)
from rft_devcluster.localnode.paths import PathMapper
from rft_devcluster.localnode.podstatus import ConditionBook, merge_status, terminal_phase, will_restart

MAPPER = PathMapper(
    {
        "/tmp/rft": Path("/pod/scratch"),
        "/tmp/rft/cache": Path("/pod/cache"),
        "/dev/termination-log": Path("/pod/tl"),
        "/etc/rft/": Path("/pod/etc"),
    }
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/tmp/rft", "/pod/scratch"),
        ("/tmp/rft/x/y", "/pod/scratch/x/y"),
        ("HOME=/tmp/rft/home", "HOME=/pod/scratch/home"),
        ('{"dir": "/tmp/rft", "log": "/dev/termination-log"}', '{"dir": "/pod/scratch", "log": "/pod/tl"}'),
        ("file:///tmp/rft/model", "file:///pod/scratch/model"),
        ("/tmp/rft/cache/a", "/pod/cache/a"),
        ("--config=/etc/rft/c.json", "--config=/pod/etc/c.json"),
        ("/tmp/rftx", "/tmp/rftx"),
        ("/tmp/rft.d", "/tmp/rft.d"),
        ("/opt/tmp/rft", "/opt/tmp/rft"),
        ("s3://bucket/tmp/rft", "s3://bucket/tmp/rft"),
    ],
)
def test_mount_paths_are_rewritten_only_as_path_prefixes(text: str, expected: str) -> None:
    assert MAPPER.rewrite(text) == expected


def test_host_path_is_none_outside_mounts() -> None:
    assert MAPPER.host_path("/tmp/rft/a") == Path("/pod/scratch/a")
    assert MAPPER.host_path("/srv/app") is None


def test_dollar_expansion_follows_kubernetes_rules() -> None:
    env = {"NAME": "pod-1", "PORT": "8080"}
    assert expand("$(NAME):$(PORT)", env) == "pod-1:8080"
    assert expand("$(MISSING) stays", env) == "$(MISSING) stays"
    assert expand("$$(NAME) is escaped, $$ too", env) == "$(NAME) is escaped, $ too"


@pytest.mark.parametrize(
    ("image", "name"),
    [
        ("ghcr.io/acme/rft-trainer:0.1.0", "rft-trainer"),
        ("localhost:5000/rft-server@sha256:abc", "rft-server"),
        ("python:3.11-slim", "python"),
        ("busybox", "busybox"),
    ],
)
def test_repository_name_ignores_registry_tag_and_digest(image: str, name: str) -> None:
    assert repository_name(image) == name


def test_project_images_run_from_the_venv_with_their_default_command() -> None:
    trainer = runtime_for("ghcr.io/acme/rft-trainer:0.1.0")
    assert trainer.resolve_command([], []) == [str(VENV_BIN / "python"), "-m", "rft_trainer"]
    assert trainer.resolve_command(["/usr/local/bin/python3", "-m", "rft.pods.validate"], ["--x"]) == [
        str(VENV_BIN / "python"),
        "-m",
        "rft.pods.validate",
        "--x",
    ]


def test_the_fake_vllm_image_runs_vllms_container_command_with_the_fake() -> None:
    fake = runtime_for(FAKE_VLLM_IMAGE)
    fake_server = [
        str(VENV_BIN / "python"),
        "-m",
        "rft_devcluster.fake_vllm",
        "/models/base",
        "--port",
        "8000",
    ]
    assert fake.resolve_command(["vllm", "serve", "/models/base"], ["--port", "8000"]) == fake_server
    assert (
        fake.resolve_command(["/usr/local/bin/vllm", "serve", "/models/base", "--port", "8000"], [])
        == fake_server
    )
    assert fake.resolve_command([], ["/models/base", "--port", "8000"]) == fake_server
    # Anything else runs as in any project image.
    assert fake.resolve_command(["python", "-m", "rft.pods.fetch"], [])[1:] == ["-m", "rft.pods.fetch"]


def test_generic_images_run_on_the_host() -> None:
    assert runtime_for("python:3.11-slim").resolve_command(["python", "-c", "pass"], [])[0] == sys.executable
    shell = runtime_for("busybox:1.36").resolve_command(["sh", "-c", "echo hi"], [])
    assert Path(shell[0]).name == "sh"
    assert shell[1:] == ["-c", "echo hi"]


def test_unknown_images_are_refused_with_the_table_in_the_message() -> None:
    with pytest.raises(
        UnsupportedImageError, match=r"example\.com/app:1\.0.*no local stand-in.*rft-trainer.*vllm"
    ):
        runtime_for("registry.example.com/app:1.0")


@pytest.mark.parametrize(
    ("quantity", "value"),
    [("500m", "0.5"), ("2", "2"), ("1Gi", "1073741824"), ("1.5G", "1500000000"), ("1e3", "1000")],
)
def test_quantities(quantity: str, value: str) -> None:
    assert parse_quantity(quantity) == parse_quantity(value)


def test_downward_api_fields_and_resources() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"b": "2", "a": "1"}},
        "spec": {
            "nodeName": "local-node",
            "containers": [{"name": "c", "resources": {"limits": {"cpu": "1500m", "memory": "1Gi"}}}],
        },
    }
    assert field_value(pod, "status.podIP", pod_ip="198.18.1.9", host_ip="198.18.1.1") == "198.18.1.9"
    assert field_value(pod, "metadata.labels['a']", pod_ip="", host_ip="") == "1"
    assert field_value(pod, "metadata.labels", pod_ip="", host_ip="") == 'a="1"\nb="2"'
    capacity = NodeCapacity(cpu="4")
    assert resource_value(pod, "c", "limits.cpu", None, capacity) == "2"  # rounded up
    assert resource_value(pod, "c", "limits.memory", "1Mi", capacity) == "1024"
    assert resource_value(pod, "c", "requests.cpu", "1m", capacity) == "1500"  # requests default to limits


def test_conditions_keep_their_transition_time_until_the_status_changes() -> None:
    book = ConditionBook(
        [
            {"type": "Ready", "status": "False", "lastTransitionTime": "2020-01-01T00:00:00Z"},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": "x"},
        ]
    )
    book.set("Ready", False, "ContainersNotReady")
    ready = book.get("Ready")
    assert ready is not None
    assert ready["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    book.set("Ready", True)
    ready = book.get("Ready")
    assert ready is not None
    assert ready["lastTransitionTime"] != "2020-01-01T00:00:00Z"
    assert [c["type"] for c in book.owned()] == ["Ready"], "foreign conditions are not ours to write"


def test_merged_status_keeps_foreign_conditions_and_drops_stale_reason() -> None:
    current = {
        "phase": "Pending",
        "reason": "Old",
        "qosClass": "BestEffort",
        "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}],
    }
    merged = merge_status(current, {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})
    assert merged["phase"] == "Running"
    assert merged["qosClass"] == "BestEffort"
    assert "reason" not in merged
    assert merged["conditions"] == [
        {"type": "PodScheduled", "status": "True"},
        {"type": "Ready", "status": "True"},
    ]


def test_restart_policies_and_terminal_phase() -> None:
    assert will_restart("Always", 0)
    assert will_restart("OnFailure", 1)
    assert not will_restart("OnFailure", 0)
    assert not will_restart("Never", 1)
    ok = RunState(name="a", image="i", terminated={"exitCode": 0})
    bad = RunState(name="b", image="i", terminated={"exitCode": 137})
    assert terminal_phase([ok]) == "Succeeded"
    assert terminal_phase([ok, bad]) == "Failed"
    assert exit_code_of(-15) == 143
    assert exit_code_of(3) == 3


def test_kwok_stages_render_as_stage_documents_with_exclusive_outcomes() -> None:
    stages = list(yaml.safe_load_all(render_kwok_config()))
    names = [s["metadata"]["name"] for s in stages]
    assert names == [
        "pod-ready",
        "pod-complete",
        "rft-pod-exit-code",
        "rft-pod-termination-message",
        "rft-pod-complete-after-delay",
        "pod-delete",
    ]
    assert all(
        s["kind"] == "Stage" and s["spec"]["resourceRef"] == {"apiGroup": "v1", "kind": "Pod"} for s in stages
    )
    terminating = [s for s in stages if s["metadata"]["name"] not in ("pod-ready", "pod-delete")]
    for stage in terminating:
        assert "$code" in stage["spec"]["next"]["statusTemplate"]


def _pod(name: str, ip: str, *, ready: bool, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "labels": labels or {"app": "web"},
        },
        "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


SERVICE = {
    "metadata": {"name": "web", "namespace": "ns", "uid": "svc-uid"},
    "spec": {"selector": {"app": "web"}, "ports": [{"name": "api", "port": 80, "targetPort": "http"}]},
}


def test_loopback_pods_are_mirrored_into_fqdn_endpoint_slices() -> None:
    pods = [
        _pod("a", "127.77.1.2", ready=True),
        _pod("b", "127.77.1.3", ready=False),
        _pod("other", "127.77.1.4", ready=True, labels={"app": "db"}),
        _pod("routed", "198.18.1.2", ready=True),  # published by the controller-manager instead
    ]
    [(key, endpoint_slice)] = desired_slices([SERVICE], pods, "local-node").items()

    assert key[0] == "ns"
    assert endpoint_slice["addressType"] == "FQDN"
    assert endpoint_slice["metadata"]["labels"]["kubernetes.io/service-name"] == "web"
    assert endpoint_slice["metadata"]["ownerReferences"][0]["uid"] == "svc-uid"
    assert endpoint_slice["ports"] == [{"name": "api", "port": 8080, "protocol": "TCP"}]
    assert [(e["addresses"], e["conditions"]["ready"]) for e in endpoint_slice["endpoints"]] == [
        (["127.77.1.2"], True),
        (["127.77.1.3"], False),
    ]


def test_mirrored_endpoints_carry_the_pods_dns_hostname_and_publish_not_ready_addresses() -> None:
    """As the EndpointSlice controller: `hostname` where the pod's subdomain is the Service (cluster
    DNS answers <hostname>.<service>.<ns>.svc from it), all ready with publishNotReadyAddresses."""
    service = {**SERVICE, "spec": {**SERVICE["spec"], "clusterIP": "None", "publishNotReadyAddresses": True}}
    pods = [_pod("a", "127.77.1.2", ready=False), _pod("b", "127.77.1.3", ready=False)]
    pods[0]["spec"].update(hostname="web-0", subdomain="web")
    pods[1]["spec"].update(hostname="web-1", subdomain="other")
    [(_, endpoint_slice)] = desired_slices([service], pods, "local-node").items()
    assert [(e.get("hostname"), e["conditions"]["ready"]) for e in endpoint_slice["endpoints"]] == [
        ("web-0", True),
        (None, True),
    ]


def test_services_without_selector_or_matching_pods_get_no_slice() -> None:
    headless = {**SERVICE, "spec": {"ports": [{"port": 80}]}}
    assert desired_slices([headless], [_pod("a", "127.77.1.2", ready=True)], "n") == {}
    assert desired_slices([SERVICE], [], "n") == {}
