"""Helpers of the serving tests: publish a base model and an adapter, wait for Deployments,
talk to a served model's pod."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from rft.storage import upload_file
from rft.storage.checkpoints import upload_tree
from rft_devcluster.fake_vllm.testing import make_lora_adapter
from rft_devcluster.handle import ClusterHandle
from rft_devcluster.pytest_fixtures_storage import S3Bucket
from rft_operator.admintoken import AdminTokens
from rft_operator.config import OperatorConfig
from rft_trainer.canary import canary_logprobs, canary_tokens, record_canary
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.operator.conftest import WORKLOAD, Objects

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def adapter_canary(base_dir: Path, adapter_dir: Path) -> dict[str, Any]:
    """The canary record the trainer would write for `adapter_dir` (float32, moved from the base)."""
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), torch_dtype=torch.float32)
    tokens = canary_tokens(base, AutoTokenizer.from_pretrained(str(base_dir)))
    start = canary_logprobs(base, tokens)
    return record_canary(PeftModel.from_pretrained(base, str(adapter_dir)), tokens, start).to_wire()


def publish_base_and_adapter(
    objects: Objects,
    s3_bucket: S3Bucket,
    base_dir: Path,
    tmp_path: Path,
    *,
    name: str,
    service_account: str,
    role_arn: str,
    rank: int,
    with_canary: bool = False,
    plain_base: bool = False,
) -> Path:
    """A ServiceAccount with the role, the base model `name` and a random rank-`rank` adapter
    `name-lora` uploaded to the bucket, and their Model objects; the adapter's local directory.
    `with_canary`: the adapter's Model records its canary, as a trained checkpoint's does.
    `plain_base`: the base is uploaded file by file as a plain Hugging Face folder (no commit
    marker), as `aws s3 sync` would."""
    objects.core.create_namespaced_service_account(
        objects.namespace,
        {
            "metadata": {
                "name": service_account,
                "labels": WORKLOAD,
                "annotations": {"eks.amazonaws.com/role-arn": role_arn},
            }
        },
    )
    base_url = f"s3://{s3_bucket.name}/rft/models/{name}/"
    adapter_url = f"s3://{s3_bucket.name}/rft/models/{name}-lora/"
    if plain_base:
        upload_plain(base_dir, base_url)
    else:
        upload_tree(base_dir, base_url)
    adapter_dir = make_lora_adapter(base_dir, tmp_path / "adapter", rank=rank, seed=3)
    upload_tree(adapter_dir, adapter_url)
    objects.create(
        "models", "Model", name, {"kind": "base", "location": base_url, "serviceAccountName": service_account}
    )
    objects.create(
        "models",
        "Model",
        f"{name}-lora",
        {
            "kind": "lora",
            "location": adapter_url,
            "baseModel": name,
            "lora": {"rank": rank, "alpha": 2 * rank, "targetModules": LORA_TARGETS},
            **({"canary": adapter_canary(base_dir, adapter_dir)} if with_canary else {}),
        },
    )
    return adapter_dir


def upload_plain(local: Path, url: str) -> None:
    """Upload a folder file by file, as `aws s3 sync` would: no commit marker, no manifest."""
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        upload_file(path, f"{url}{path.relative_to(local).as_posix()}", create_only=True)


def wait_deployment(objects: Objects, name: str, phase: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    obj: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        obj = objects.get("deployments", name)
        if obj and obj.get("status", {}).get("phase") == phase:
            return obj
        time.sleep(0.5)
    raise AssertionError(f"deployment {name} not {phase} in {timeout}s: {(obj or {}).get('status')}")


def server_address(objects: Objects, deployment: str) -> str:
    """A ready server pod's address (what port-forward to the Service would reach)."""
    pods = objects.core.list_namespaced_pod(
        objects.namespace, label_selector=f"rft-operator.io/deployment={deployment}"
    ).items
    ready = [
        p for p in pods if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]
    assert ready, "no ready server pod"
    return f"http://{ready[0].status.pod_ip}:8000"


def post(url: str, body: dict[str, Any], *, text: bool = False, headers: dict[str, str] | None = None) -> Any:
    """POST JSON; the answer parsed as JSON, or as text with `text` (vLLM's adapter routes)."""
    headers = {"Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)  # noqa: S310
    with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - loopback pod IP
        raw = resp.read()
    return raw.decode() if text else json.loads(raw)


def scale(objects: Objects, deployment: str, replicas: int) -> None:
    """Set a base Deployment's replica range to exactly `replicas`."""
    objects.custom.patch_namespaced_custom_object(
        "rft-operator.io",
        "v1alpha1",
        objects.namespace,
        "deployments",
        deployment,
        {"spec": {"minReplicaCount": replicas, "maxReplicaCount": replicas}},
    )


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    """The status condition of type `kind` ({} if absent)."""
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), {})


def first_token_seconds(address: str, model: str) -> float:
    """Seconds from sending a streamed chat request to the first generated token's chunk."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 8,
        "stream": True,
    }
    headers = {"Content-Type": "application/json"}
    req = urllib.request.Request(  # noqa: S310 - loopback pod IP
        f"{address}/v1/chat/completions", data=json.dumps(body).encode(), headers=headers
    )
    started = time.monotonic()
    with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310
        for line in resp:
            if line.startswith(b"data: {") and b'"content"' in line:
                return time.monotonic() - started
    raise AssertionError("the stream ended without a token")


def models_served(address: str) -> set[str]:
    with urllib.request.urlopen(f"{address}/v1/models", timeout=30) as resp:  # noqa: S310
        return {m["id"] for m in json.loads(resp.read())["data"]}


def greedy(address: str, model: str, max_tokens: int = 8) -> str:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    if max_tokens > 8:
        body["ignore_eos"] = True  # vLLM's extension: the whole length, a steady load
    return str(post(f"{address}/v1/chat/completions", body)["choices"][0]["message"]["content"])


class AdapterLoad:
    """Requests for an adapter (or any served model), one after another from each of `clients`
    threads, each to a ready endpoint of the Service in turn (as kube-proxy spreads connections);
    every failure is kept."""

    def __init__(
        self,
        cluster: ClusterHandle,
        namespace: str,
        service: str,
        model: str,
        interval: float = 0.25,
        clients: int = 1,
        max_tokens: int = 8,
    ) -> None:
        """`interval`: the pause between requests (a steady load that leaves a new replica's
        start some of the 2 cores); `clients`: requests in flight at once; `max_tokens`: each
        request's length (longer ones keep more in flight)."""
        self._cluster, self._namespace, self._service, self._model = cluster, namespace, service, model
        self._interval, self._max_tokens = interval, max_tokens
        self.failures: list[str] = []
        self._by_address: Counter[str] = Counter()
        self._counts = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(clients)]

    def __enter__(self) -> AdapterLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _run(self, turn: int) -> None:
        while not self._stop.is_set():
            endpoints = self._cluster.ready_endpoints(self._namespace, self._service, "http")
            if not endpoints:
                self.failures.append("the Service has no ready endpoint")
                time.sleep(0.5)
                continue
            address, port = endpoints[turn % len(endpoints)]
            turn += 1
            try:
                greedy(f"http://{address}:{port}", self._model, self._max_tokens)
                with self._counts:
                    self._by_address[address] += 1
            except OSError as exc:  # urllib's HTTPError and URLError included
                self.failures.append(f"{address}: {exc}")
            self._stop.wait(self._interval)

    def requests_to(self, address: str) -> int:
        return self._by_address[address]

    def wait_for_requests(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while sum(self._by_address.values()) < count and time.monotonic() < deadline:
            time.sleep(0.2)

    def summary(self) -> str:
        return f"{sum(self._by_address.values())} requests ({dict(self._by_address)}), {len(self.failures)} failed"


def admin_headers(objects: Objects, deployment: str) -> dict[str, str]:
    """The `Authorization` header the operator sends to `deployment`'s server pods: its token from
    the operator's key (the Secret the operator made in its namespace, `default` when run as a
    process), for tests that act behind the operator's back with the operator's rights."""
    secret = objects.core.read_namespaced_secret(OperatorConfig().admin_key_secret, "default")
    tokens = AdminTokens(base64.b64decode(secret.data["key"]))
    dep = objects.get("deployments", deployment)
    assert dep is not None
    return {"Authorization": f"Bearer {tokens.token(objects.namespace, deployment, dep['metadata']['uid'])}"}


INTRUDER_SCRIPT = """
import json, sys, urllib.error, urllib.request
out = []
for method, url, body in json.loads(sys.argv[2]):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            out.append(resp.status)
    except urllib.error.HTTPError as exc:
        out.append(exc.code)
    except OSError as exc:
        out.append(str(exc))
open(sys.argv[1], "w").write(json.dumps(out))
"""


def calls_from_a_pod(
    objects: Objects, name: str, like: Any, calls: list[tuple[str, str, dict[str, Any] | None]]
) -> list[Any]:
    """Make `calls` (method, URL, JSON body) from a plain pod of the namespace, scheduled where pod
    `like` runs (no token, no Kubernetes rights: what anyone who may create pods there has); the
    HTTP status of each, or the error."""
    pod = {
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "nodeSelector": like.spec.node_selector,
            "tolerations": [t.to_dict() for t in like.spec.tolerations or []],
            "containers": [
                {
                    "name": "intruder",
                    "image": "python:3.11-slim",
                    "command": ["python", "-c", INTRUDER_SCRIPT, "/dev/termination-log", json.dumps(calls)],
                }
            ],
        },
    }
    objects.core.create_namespaced_pod(objects.namespace, pod)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = objects.core.read_namespaced_pod(name, objects.namespace).status
        if status.phase in ("Succeeded", "Failed"):
            (container,) = status.container_statuses
            message = container.state.terminated.message
            assert status.phase == "Succeeded", message
            answers: list[Any] = json.loads(message)
            return answers
        time.sleep(1)
    raise AssertionError(f"pod {name} did not finish within 300 s")
