"""`make demo`: the iterative RL loop on an embedded local cluster, end to end, on CPU.

What it sets up, all on this machine and all real:
  * the control plane (etcd, kube-apiserver, controller-manager, scheduler), kwok GPU nodes and
    the local node that runs pods as processes;
  * moto as the user's S3 bucket and STS: pods reach it only through workload identity (the local
    node plays EKS's pod identity webhook for the ServiceAccount annotated with a role ARN);
  * a tiny chat model built locally (nothing is downloaded) and uploaded to the bucket as the
    base `Model`;
  * the operator, under its own ServiceAccount with the Helm chart's RBAC (not as admin).
Then it runs `examples/rl_loop.py` (the loop as users write it, with the SDK) for a few steps on
vLLM (the production engine: its CPU build runs the server pods), prints each step's mean reward,
`kubectl get rft` and a reward plot, and stops everything.

`make demo LOOP=path/to/script.py` (`--loop`) runs that script instead, on the same cluster with
the same environment (KUBECONFIG, RFT_NAMESPACE, RFT_BUCKET, RFT_SERVICE_ACCOUNT, the user's
bucket credentials) plus RFT_BASE_MODEL naming the base `Model`, and exits with its exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from rft.api.common import WORKLOAD_SERVICE_ACCOUNT_LABEL

from rft_devcluster.binaries import REPO_ROOT, ensure_binaries
from rft_devcluster.controlplane import ClusterOptions, ControlPlane, LocalNodeOptions
from rft_devcluster.emulators import DEFAULT_REGION, create_s3_bucket, start_moto_server
from rft_devcluster.handle import ClusterHandle
from rft_devcluster.localnode.network import OPERATOR_POLL_SCOPE
from rft_devcluster.operator_process import OperatorProcess
from rft_devcluster.vllm_env import ensure_vllm_env

NAMESPACE = "demo"
BUCKET = "rft-demo"
SERVICE_ACCOUNT = "rft-trainer"
ROLE_ARN = "arn:aws:iam::123456789012:role/rft-demo-trainer"
BASE_MODEL = "tiny-chat"
OPERATOR_NAMESPACE = "rft-system"
OPERATOR_SA = "rft-operator"
CHART_RBAC_TEMPLATES = (
    "serviceaccount",
    "clusterrole",
    "clusterrolebinding",
    "clusterrole-framework",
    "clusterrolebinding-framework",
    "role-admin-key",
    "rolebinding-admin-key",
)

# The user's own credentials for uploading datasets (the emulator accepts any key).
USER_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "demo-user",
    "AWS_SECRET_ACCESS_KEY": "demo-user-secret",
    "AWS_DEFAULT_REGION": DEFAULT_REGION,
    "AWS_REGION": DEFAULT_REGION,
}


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def apply_yaml(cluster: ClusterHandle, text: str) -> None:
    cluster.kubectl("apply", "--server-side", "-f", "-", input=text)


def install_crds(cluster: ClusterHandle) -> None:
    crds = str(REPO_ROOT / "crds")
    cluster.kubectl("apply", "--server-side", "-f", crds)
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", crds)


def operator_kubeconfig(cluster: ClusterHandle, state_dir: Path) -> Path:
    """The operator's own identity: the Helm chart's ServiceAccount and RBAC, rendered by helm."""
    helm = cluster.bin_dir / "helm"
    rendered = subprocess.run(
        [
            str(helm),
            "template",
            "rft-operator",
            str(REPO_ROOT / "charts" / "rft-operator"),
            "--namespace",
            OPERATOR_NAMESPACE,
            "--kube-version",
            "1.33.13",
            *(f"--show-only=templates/{t}.yaml" for t in CHART_RBAC_TEMPLATES),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE)
    apply_yaml(cluster, rendered)
    return cluster.sa_kubeconfig(OPERATOR_NAMESPACE, OPERATOR_SA, path=state_dir / "operator.kubeconfig")


@contextlib.contextmanager
def running_operator(kubeconfig: Path, log_path: Path) -> Iterator[OperatorProcess]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        "KUBECONFIG": str(kubeconfig),
        "RFT_POLL_SECONDS": "1",
        "RFT_METRICS_PORT": "0",
        "RFT_PROGRESS_POLL": OPERATOR_POLL_SCOPE,
        # As in its pod (the downward API): the adapter admin key lives in its own namespace.
        "POD_NAMESPACE": OPERATOR_NAMESPACE,
    }
    operator = OperatorProcess(log_path, env=env)
    try:
        operator.start()
        yield operator
    finally:
        operator.stop()


def upload_base_model(state_dir: Path, endpoint: str) -> tuple[str, Path]:
    """Build the tiny model locally and put it in the bucket with a commit marker."""
    from rft.storage.checkpoints import upload_tree  # noqa: PLC0415 - after the env is set

    from rft_devcluster.tiny import VLLM_CPU_SHAPE, build_tiny_model  # noqa: PLC0415 - torch only when needed

    # words_only: a model an adapter can steer, whose completions survive the text API (see tiny.py);
    # VLLM_CPU_SHAPE: a head size vLLM's CPU attention supports.
    local = build_tiny_model(state_dir / "base-model", words_only=True, **VLLM_CPU_SHAPE)
    location = f"s3://{BUCKET}/rft/models/{BASE_MODEL}/"
    saved = {k: os.environ.get(k) for k in (*USER_AWS_ENV, "AWS_ENDPOINT_URL")}
    os.environ.update({**USER_AWS_ENV, "AWS_ENDPOINT_URL": endpoint})
    try:
        upload_tree(local, location)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return location, local


def user_objects(location: str) -> str:
    return f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NAMESPACE}}}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {SERVICE_ACCOUNT}
  namespace: {NAMESPACE}
  # The cluster admin's word that the project's resources may run pods as this identity.
  labels: {{{WORKLOAD_SERVICE_ACCOUNT_LABEL}: "true"}}
  annotations: {{eks.amazonaws.com/role-arn: "{ROLE_ARN}"}}
automountServiceAccountToken: false
---
apiVersion: rft-operator.io/v1alpha1
kind: Model
metadata: {{name: {BASE_MODEL}, namespace: {NAMESPACE}}}
spec: {{kind: base, location: "{location}", serviceAccountName: {SERVICE_ACCOUNT}}}
"""


def loop_environment(cluster: ClusterHandle, endpoint: str) -> dict[str, str]:
    """What a loop script gets: the cluster, namespace, bucket, ServiceAccount, the user's own
    bucket credentials and the base Model's name."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        **USER_AWS_ENV,
        "AWS_ENDPOINT_URL": endpoint,
        "KUBECONFIG": str(cluster.kubeconfig),
        "RFT_NAMESPACE": NAMESPACE,
        "RFT_BUCKET": f"s3://{BUCKET}/rft",
        "RFT_SERVICE_ACCOUNT": SERVICE_ACCOUNT,
        "RFT_BASE_MODEL": BASE_MODEL,
        "HF_HUB_OFFLINE": "1",
    }


def run_loop(
    cluster: ClusterHandle, endpoint: str, tokenizer_dir: Path, steps: int, results: Path, loop: Path | None
) -> int:
    """examples/rl_loop.py on vLLM (or `loop`, a user's script, with no arguments); its exit code."""
    if loop is not None:
        cmd = [sys.executable, str(loop)]
    else:
        cmd = [
            sys.executable,
            str(REPO_ROOT / "examples" / "rl_loop.py"),
            "--base-model",
            BASE_MODEL,
            "--tokenizer-dir",
            str(tokenizer_dir),
            "--steps",
            str(steps),
            "--results",
            str(results),
        ]
    return subprocess.run(cmd, env=loop_environment(cluster, endpoint), check=False).returncode


def summarize(cluster: ClusterHandle, state_dir: Path, results: Path) -> None:
    say(f"kubectl get rft -n {NAMESPACE}")
    print(cluster.kubectl("get", "rft", "-n", NAMESPACE).stdout, flush=True)
    print_cold_starts(cluster)
    history = json.loads(results.read_text()) if results.exists() else []
    last = next((h["output_model"] for h in reversed(history) if h.get("output_model")), None)
    if last:
        plot = state_dir / "reward.png"
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
        subprocess.run(
            [
                str(REPO_ROOT / ".venv" / "bin" / "rft"),
                "-n",
                NAMESPACE,
                "plot",
                last.rsplit("/", 1)[-1],
                "-o",
                str(plot),
            ],
            env=env,
            check=False,
        )
        say(f"reward plot: {plot}")


def print_cold_starts(cluster: ClusterHandle) -> None:
    """Where each served base's replica spent its time to Ready (the Deployments' lastColdStart)."""
    listing = cluster.kubectl(
        "get", "deployments.rft-operator.io", "-n", NAMESPACE, "-o", "json", check=False
    )
    if listing.returncode != 0:
        return
    for item in json.loads(listing.stdout).get("items", []):
        cold = item.get("status", {}).get("lastColdStart")
        if cold:
            say(
                f"cold start of {item['metadata']['name']}: ready {cold['totalSeconds']}s after the pod was "
                f"created: scheduled {cold['scheduleSeconds']}s, model fetched {cold['fetchSeconds']:.1f}s ({cold.get('fetchBytes', 0) / 2**20:.1f} MiB), "
                f"vLLM loaded and serving {cold['startSeconds']}s"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--state-dir", type=Path, default=REPO_ROOT / ".demo")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument(
        "--loop", type=Path, default=None, help="run this loop script instead of examples/rl_loop.py"
    )
    args = parser.parse_args(argv)
    loop: Path | None = args.loop.resolve() if args.loop else None
    if loop is not None and not loop.is_file():
        parser.error(f"--loop {args.loop}: no such file")
    state_dir: Path = args.state_dir.resolve()
    if state_dir.exists():
        import shutil  # noqa: PLC0415

        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True)
    started = time.monotonic()

    say("control-plane binaries and the local node's vLLM")
    bin_dir = ensure_binaries()
    ensure_vllm_env()
    say("S3 and STS (moto) on loopback")
    with start_moto_server(log_dir=state_dir) as moto:
        create_s3_bucket(moto.endpoint, BUCKET)
        node = LocalNodeOptions(
            # What the node advertises to the scheduler: it stands in for an A100 node (the
            # product label, nvidia.com/gpu, and the CPU and memory the accelerator map asks for
            # per GPU), so GPU deployments and steps schedule here; their processes share this
            # machine's real cores and run on its CPU.
            gpus=8,
            gpu_product="NVIDIA-A100-SXM4-80GB",
            cpu="64",
            memory="512Gi",
            workload_identity_env=(
                ("AWS_ENDPOINT_URL", moto.endpoint),
                ("AWS_DEFAULT_REGION", DEFAULT_REGION),
                ("AWS_REGION", DEFAULT_REGION),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ),
        )
        say(
            "local cluster: etcd, kube-apiserver, controller-manager, scheduler, the local node (8 A100s on CPU)"
        )
        # No kwok GPU nodes: pods placed there would only be played, and every pod here runs.
        with ControlPlane(
            state_dir / "cluster", bin_dir, ClusterOptions(gpu_nodes=0, local_node=node)
        ) as cluster:
            install_crds(cluster)
            say("base model: a tiny chat model built locally, uploaded to the bucket")
            location, local_model = upload_base_model(state_dir, moto.endpoint)
            apply_yaml(cluster, user_objects(location))
            say("the operator, under its own ServiceAccount (the Helm chart's RBAC)")
            kubeconfig = operator_kubeconfig(cluster, state_dir)
            with running_operator(kubeconfig, state_dir / "operator.log"):
                results = state_dir / "results.json"
                if loop is None:
                    say(f"the RL loop: examples/rl_loop.py on vLLM, {args.steps} steps")
                else:
                    say(f"the RL loop: {loop}")
                code = run_loop(cluster, moto.endpoint, local_model, args.steps, results, loop)
                summarize(cluster, state_dir, results)
    say(f"done in {time.monotonic() - started:.0f}s (logs in {state_dir})")
    return code


if __name__ == "__main__":
    sys.exit(main())
