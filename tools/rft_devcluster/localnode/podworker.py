"""One pod's lifecycle on the local node, in its own thread.

Pending (address, volumes, images) -> init containers one by one -> containers as process
groups, restarted per restartPolicy, probed -> Succeeded/Failed. An image this node cannot run
keeps the pod Pending (ErrImagePull, ImagePullBackOff) rather than failing it, like the kubelet
(see imagepull.py). Where the node gives pods network namespaces (network.py), the pod's is
made before its first container starts, every process of the pod (init containers, containers,
exec probes) runs in it, the host's loopback services its env names are forwarded into it
(loopback_forward.py), and it is removed once the pod is terminal, deleted or the agent stops.
Deleting the pod stops its processes
(SIGTERM, SIGKILL after the grace period) and then removes it from the API, like the kubelet.
The thread that starts a container's process also waits for it: the processes die with
that thread (parent-death signal), so a killed agent leaves no orphans.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rft_devcluster.localnode.config import LOG_PATH_ANNOTATION, LOG_PATH_CONDITION, AgentConfig
from rft_devcluster.localnode.container import ContainerLaunch, ContainerProcess, RunState, now_rfc3339
from rft_devcluster.localnode.envvars import EnvResolver, expand
from rft_devcluster.localnode.imagepull import ImagePull
from rft_devcluster.localnode.images import ImageRuntime, MissingCommandError
from rft_devcluster.localnode.kubeapi import ApiError, KubeApi, pod_path
from rft_devcluster.localnode.loopback_forward import (
    LoopbackForwarder,
    host_listeners,
    loopback_targets,
    served_by_host,
)
from rft_devcluster.localnode.netns import NetnsError, PodSandbox
from rft_devcluster.localnode.network import PodNetwork
from rft_devcluster.localnode.paths import PathMapper
from rft_devcluster.localnode.poddns import PodDNS, PodIdentity
from rft_devcluster.localnode.podstatus import ConditionBook, StatusWriter, terminal_phase, will_restart
from rft_devcluster.localnode.probes import Probe
from rft_devcluster.localnode.volumes import PodContext, PodSetupError, VolumeBuilder
from rft_devcluster.localnode.workload_identity import VOLUME_NAME as WEB_IDENTITY_VOLUME
from rft_devcluster.localnode.workload_identity import inject_web_identity
from rft_devcluster.processes import ProcessRecord, stop_group

log = logging.getLogger(__name__)

TICK_SECONDS = 0.1
DEFAULT_GRACE_SECONDS = 30
SHUTDOWN_GRACE_SECONDS = 5.0
RUNTIME_FILE = "runtime.json"
SHORT_VOLUMES_ROOT = Path("/tmp/rft-pods")  # noqa: S108 - the host's, for short socket paths


@dataclass(frozen=True)
class AgentContext:
    """What every pod worker shares."""

    api: KubeApi
    helper: KubeApi | None
    config: AgentConfig
    network: PodNetwork
    apiserver_host: str
    apiserver_port: int
    # Called after each pod status write (the endpoint mirror resyncs).
    pods_changed: Callable[[], None] = lambda: None
    # Hostnames, /etc/hosts and resolv.conf of pods (None: pods keep the host's).
    dns: PodDNS | None = None


class _PodFailedError(Exception):
    """The pod fails as a whole (reason and message go to its status)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class _Stop(Exception):  # noqa: N818 - control flow, not an error
    """The worker must stop what it is doing (pod deleted, gone, or agent shutting down)."""


def pod_dir_name(pod: dict[str, Any]) -> str:
    """The pod's directory under ``<root>/pods`` (namespace, name and uid prefix, readable)."""
    meta = pod["metadata"]
    return f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"


def _is_terminal(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


class _Container:
    """A container of this pod: its spec, launch settings, state, process and probes."""

    def __init__(
        self, spec: dict[str, Any], runtime: ImageRuntime, launch: ContainerLaunch, mapper: PathMapper
    ) -> None:
        self.spec = spec
        self.runtime = runtime
        self.launch = launch
        self.mapper = mapper
        self.state = RunState(name=spec["name"], image=spec["image"])
        self.process: ContainerProcess | None = None
        self.restart_at = 0.0
        self.backoff = 0.0
        self.done = False  # exited and will not be started again
        self.readiness: Probe | None = None
        self.liveness: Probe | None = None
        self.startup: Probe | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def exec_in(self, command: list[str], timeout: float) -> int:
        """Run ``command`` the way an exec probe would inside this container; return its exit code."""
        argv = self.runtime.resolve_command([self.mapper.rewrite(a) for a in command], [])
        try:
            result = subprocess.run(
                [*self.launch.prefix(), *argv],
                env=dict(self.launch.env),
                cwd=self.launch.cwd,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return -1
        except OSError:
            return 127
        return result.returncode


class PodWorker:
    """Runs one pod; fed with the pod's latest object by the agent's watch loop."""

    def __init__(self, ctx: AgentContext, pod: dict[str, Any]) -> None:
        self._ctx = ctx
        self._pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.key = f"{meta['namespace']}/{meta['name']}"
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._deleting = threading.Event()
        self._gone = threading.Event()
        self._shutdown = threading.Event()
        self._writer = StatusWriter(ctx.api, meta["namespace"], meta["name"], self.uid)
        self._dir = ctx.config.root_dir / "pods" / pod_dir_name(pod)
        self._conditions = ConditionBook((pod.get("status") or {}).get("conditions", []))
        self._init: list[_Container] = []
        self._main: list[_Container] = []
        self._init_index = 0
        # Waiting reason and message of containers not built yet (_init/_main), by name.
        self._waiting: dict[str, tuple[str, str]] = {}
        self._pulls: dict[str, ImagePull] = {}
        self._pod_ip = ""
        self._start_time = (pod.get("status") or {}).get("startTime") or now_rfc3339()
        self._failure: _PodFailedError | None = None
        self._last_written: str = ""
        self._volumes: VolumeBuilder | None = None
        self._sandbox: PodSandbox | None = None  # the pod's network namespace, while it exists
        self._forwarder: LoopbackForwarder | None = None
        self._identity: PodIdentity | None = None
        self._started_monotonic = time.monotonic()
        self.update(pod)
        self._thread = threading.Thread(target=self._main_loop, name=f"pod-{self.key}", daemon=True)

    # ------------------------------------------------------------------ agent side

    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    def update(self, pod: dict[str, Any]) -> None:
        """Hand the worker the pod's latest object."""
        with self._lock:
            self._pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self._deleting.set()
        self._wake.set()

    def gone(self) -> None:
        """The pod no longer exists in the API (deleted or force-deleted)."""
        self._gone.set()
        self._wake.set()

    def shutdown(self) -> None:
        """The agent stops: stop the processes, leave the pod's status for a restarted agent."""
        self._shutdown.set()
        self._wake.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the worker thread to end."""
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """Whether the worker thread still runs."""
        return self._thread.is_alive()

    # ------------------------------------------------------------------ worker thread

    def _snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self._pod

    def _check_stop(self) -> None:
        if self._deleting.is_set() or self._gone.is_set() or self._shutdown.is_set():
            raise _Stop

    def _sleep(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()
        self._check_stop()

    def _main_loop(self) -> None:
        try:
            self._run()
        except _Stop:
            pass
        except Exception as exc:
            log.exception("pod %s: worker failed", self.key)
            self._fail_after_error(exc)
        try:
            self._finish()
        except Exception:
            log.exception("pod %s: cleanup failed", self.key)
            self._stop_all(0.0)

    def _fail_after_error(self, exc: Exception) -> None:
        """A bug or an API failure: stop the pod's processes and report it Failed, then idle."""
        self._failure = _PodFailedError("NodeAgentError", f"the local node agent failed: {exc}")
        self._stop_all(0.0)
        self._teardown_network()
        try:
            self._write_status()
        except Exception:
            log.exception("pod %s: could not report the failure", self.key)
        self._idle()

    def _run(self) -> None:
        pod = self._snapshot()
        if _is_terminal(pod):
            self._idle()
            return
        self._check_stop()
        self._dir.mkdir(parents=True, exist_ok=True)
        self._kill_leftovers()
        recovered = self._recover_state(pod)
        self._pod_ip = self._address(pod)
        try:
            if recovered and pod["spec"].get("restartPolicy", "Always") == "Never":
                raise _PodFailedError(
                    "NodeAgentRestarted",
                    "the local node agent restarted while this pod ran; with restartPolicy Never it is not rerun",
                )
            self._setup_network(pod)
            self._setup_identity(pod)
            self._write_status()
            self._prepare(pod)
            self._forward_host_loopback(pod)
            self._annotate_log_path(pod)
            self._supervise()
        except _PodFailedError as failure:
            self._failure = failure
            self._stop_all(0.0)
            self._write_status()
            log.info("pod %s failed: %s: %s", self.key, failure.reason, failure.message)
        # Terminal: nothing runs in the pod any more, like the kubelet tear its sandbox down.
        self._teardown_network()
        self._idle()

    def _idle(self) -> None:
        """Nothing runs any more; wait for deletion (then finalize) or the agent's shutdown."""
        while not (self._deleting.is_set() or self._gone.is_set() or self._shutdown.is_set()):
            self._wake.wait(5.0)
            self._wake.clear()

    def _finish(self) -> None:
        """Stop what still runs; finalize a deletion; clean up when the pod is gone."""
        if self._shutdown.is_set() and not self._deleting.is_set():
            self._stop_all(SHUTDOWN_GRACE_SECONDS)
            self._teardown_network()
            return
        if self._deleting.is_set() and not self._gone.is_set():
            meta = self._snapshot()["metadata"]
            grace = float(meta.get("deletionGracePeriodSeconds", DEFAULT_GRACE_SECONDS))
            if self._stop_all(grace):
                with contextlib.suppress(_Stop):
                    self._write_status()
            self._teardown_network()
            self._writer.delete_final()
            self._gone.wait(30.0)
        if self._gone.is_set():
            self._stop_all(0.0)
            self._teardown_network()
            if self._pod_ip:
                self._ctx.network.release(self._pod_ip)
            shutil.rmtree(self._dir / "volumes", ignore_errors=True)
            self._short_link().unlink(missing_ok=True)

    # ------------------------------------------------------------------ setup

    def _short_link(self) -> Path:
        return SHORT_VOLUMES_ROOT / self.uid

    def _short_paths(self, volume_paths: dict[str, Path]) -> dict[str, Path]:
        """The volumes as the containers see them: through a short symlink to the pod's volumes.

        A kubelet mounts a volume at its mountPath (``/tmp``); here the container sees the host
        path, under the pod's directory, which can be long. Unix socket paths hold at most 107
        bytes (vLLM's IPC sockets in its temp dir failed to bind under pytest's temp dirs), so
        containers get ``/tmp/rft-pods/<pod uid>/<volume>`` instead.
        """
        link = self._short_link()
        link.parent.mkdir(parents=True, exist_ok=True)
        target = self._dir / "volumes"
        if not (link.is_symlink() and link.readlink() == target):
            link.unlink(missing_ok=True)
            link.symlink_to(target, target_is_directory=True)
        return {
            name: link / path.relative_to(target) if path.is_relative_to(target) else path
            for name, path in volume_paths.items()
        }

    def _kill_leftovers(self) -> None:
        """Processes an earlier agent started for this pod (only if it died without parent-death signals)."""
        try:
            records = json.loads((self._dir / RUNTIME_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return
        for data in records:
            stop_group(ProcessRecord.from_json(data), grace_seconds=2.0)

    def _save_runtime(self) -> None:
        records = [c.process.record.to_json() for c in (*self._init, *self._main) if c.process]
        (self._dir / RUNTIME_FILE).write_text(json.dumps(records))

    def _recover_state(self, pod: dict[str, Any]) -> bool:
        """Whether an earlier agent already started this pod's containers."""
        status = pod.get("status") or {}
        started = [
            s
            for s in (*status.get("containerStatuses", []), *status.get("initContainerStatuses", []))
            if "running" in (s.get("state") or {}) or "terminated" in (s.get("state") or {})
        ]
        return bool(started)

    def _address(self, pod: dict[str, Any]) -> str:
        previous = (pod.get("status") or {}).get("podIP")
        if previous and self._ctx.network.reserve(previous):
            return str(previous)
        return self._ctx.network.allocate()

    def _setup_network(self, pod: dict[str, Any]) -> None:
        """The pod's network namespace at its IP (none in the shared mode or with hostNetwork).

        Like a kubelet whose CNI plugin fails, the pod waits in ContainerCreating and it is retried.
        """
        sandbox = (
            None if pod["spec"].get("hostNetwork") else self._ctx.network.sandbox(self.uid, self._pod_ip)
        )
        if sandbox is None:
            return
        while True:
            try:
                sandbox.create()
                break
            except (NetnsError, OSError, subprocess.SubprocessError) as exc:
                log.warning("pod %s: cannot create its network namespace: %s", self.key, exc)
                self._set_waiting("ContainerCreating", f"failed to create the pod's network namespace: {exc}")
                self._write_status()
                self._sleep(2.0)
        self._sandbox = sandbox
        log.info("pod %s: network namespace %s at %s", self.key, sandbox.name, self._pod_ip)

    def _setup_identity(self, pod: dict[str, Any]) -> None:
        """The pod's hostname, /etc/hosts and resolv.conf, as the kubelet writes them (poddns.py)."""
        dns = self._ctx.dns
        self._identity = dns.identity(pod, self._pod_ip, self._dir) if dns is not None else None

    def _forward_host_loopback(self, pod: dict[str, Any]) -> None:
        """Make the host's loopback services that the containers' env names reachable inside the pod."""
        if self._sandbox is None:
            return
        ctx = self._ctx
        values = [v for c in (*self._init, *self._main) for v in c.launch.env.values()]
        values.append(f"{ctx.apiserver_host}:{ctx.apiserver_port}")
        own_ports = {
            int(port["containerPort"])
            for c in (*pod["spec"].get("initContainers", []), *pod["spec"]["containers"])
            for port in c.get("ports", [])
        }
        wanted = {t for t in loopback_targets(values) if t[1] not in own_ports}
        targets = served_by_host(wanted, host_listeners())
        forwarder = LoopbackForwarder(self._sandbox.path, self.key)
        forwarder.start(targets)
        self._forwarder = forwarder

    def _teardown_network(self) -> None:
        """Stop the forwarders and remove the pod's namespace and veth (idempotent)."""
        forwarder, self._forwarder = self._forwarder, None
        if forwarder is not None:
            forwarder.stop()
        sandbox, self._sandbox = self._sandbox, None
        if sandbox is not None:
            try:
                sandbox.delete()
                log.info("pod %s: network namespace %s removed", self.key, sandbox.name)
            except (NetnsError, OSError, subprocess.SubprocessError):
                log.exception("pod %s: cannot remove network namespace %s", self.key, sandbox.name)

    def _service_account(self, pod: dict[str, Any]) -> dict[str, Any] | None:
        """The pod's ServiceAccount (None if it does not exist), for workload-identity injection.

        Nodes may not read ServiceAccounts: this needs the agent's helper identity. Without
        one, no pod gets the emulated IRSA environment.
        """
        helper = self._ctx.helper
        if helper is None:
            return None
        name = pod["spec"].get("serviceAccountName") or "default"
        path = f"/api/v1/namespaces/{pod['metadata']['namespace']}/serviceaccounts/{name}"
        try:
            return helper.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise PodSetupError(f"serviceaccount {name}: {exc}", permanent=False) from exc

    def _with_web_identity(self, pod: dict[str, Any]) -> dict[str, Any]:
        """The pod as EKS's pod identity webhook would have admitted it (see workload_identity.py)."""
        while True:
            try:
                service_account = self._service_account(pod)
                break
            except PodSetupError as exc:
                self._set_waiting("CreateContainerConfigError", str(exc))
                self._write_status()
                self._sleep(2.0)
        return inject_web_identity(pod, service_account, dict(self._ctx.config.workload_identity_env))

    def _base_env(self, pod: dict[str, Any], runtime: ImageRuntime) -> dict[str, str]:
        ctx = self._ctx
        home = self._dir / "home"
        tmp = self._dir / "tmp"
        home.mkdir(parents=True, exist_ok=True)
        tmp.mkdir(parents=True, exist_ok=True)
        port = str(ctx.apiserver_port)
        return {
            **dict(runtime.image_env),
            "PATH": runtime.path,
            "HOME": str(home),
            "TMPDIR": str(tmp),
            "LANG": "C.UTF-8",
            "HOSTNAME": self._identity.hostname
            if self._identity is not None
            else pod["spec"].get("hostname") or pod["metadata"]["name"],
            "KUBERNETES_SERVICE_HOST": ctx.apiserver_host,
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://{ctx.apiserver_host}:{port}",
        }

    def _prepare(self, pod: dict[str, Any]) -> None:
        """Create volumes, get the images, resolve env and commands for every container."""
        pod = self._with_web_identity(pod)
        spec = pod["spec"]
        pod_ctx = PodContext(
            pod=pod,
            pod_ip=self._pod_ip,
            host_ip=self._ctx.network.node_ip,
            capacity=self._ctx.config.capacity,
        )
        while True:
            try:
                self._volumes = VolumeBuilder(
                    self._ctx.api,
                    pod_ctx,
                    self._dir / "volumes",
                    helper_api=self._ctx.helper,
                    injected_volumes=frozenset({WEB_IDENTITY_VOLUME}),
                )
                volume_paths = self._short_paths(self._volumes.build())
                # Address and volumes: the kubelet's sandbox is ready, and it pulls images next.
                self._conditions.set("PodReadyToStartContainers", True)
                runtimes = self._pull_images(spec)
                resolver = EnvResolver(self._ctx.api, pod_ctx)
                self._init = [
                    self._container(c, runtimes[c["name"]], volume_paths, resolver, pod)
                    for c in spec.get("initContainers", [])
                ]
                self._main = [
                    self._container(c, runtimes[c["name"]], volume_paths, resolver, pod)
                    for c in spec["containers"]
                ]
                break
            except PodSetupError as exc:
                if exc.permanent:
                    raise _PodFailedError("CreateContainerConfigError", str(exc)) from exc
                self._set_waiting("CreateContainerConfigError", str(exc))
                self._write_status()
                self._sleep(2.0)
        if self._init:
            # Like the kubelet: containers of a pod with init containers wait "PodInitializing".
            for container in (*self._init, *self._main):
                container.state.waiting_reason = "PodInitializing"
        self._init_index = self._recovered_restart_counts(pod)

    def _pull_images(self, spec: dict[str, Any]) -> dict[str, ImageRuntime]:
        """Every container's stand-in, by container name; wait (and retry) until all are there.

        While an image is missing its containers wait with ErrImagePull/ImagePullBackOff and
        the pod stays Pending however long it takes (activeDeadlineSeconds still applies);
        deleting the pod ends the wait. Unlike the kubelet, which pulls an init container's
        image when its turn comes and starts the containers it has images for, no container
        starts here before every image is there.
        """
        containers = [*spec.get("initContainers", []), *spec["containers"]]
        cfg = self._ctx.config
        for c in containers:
            if c["image"] not in self._pulls:
                self._pulls[c["image"]] = ImagePull(
                    c["image"], cfg.image_pull_backoff_initial, cfg.image_pull_backoff_max, owner=self.key
                )
        while True:
            now = time.monotonic()
            for pull in self._pulls.values():
                pull.poll(now)
            runtimes = {c["name"]: self._pulls[c["image"]].runtime for c in containers}
            for c in containers:
                pull = self._pulls[c["image"]]
                if pull.runtime is None and pull.error:
                    self._waiting[c["name"]] = pull.waiting(now)
                else:
                    self._waiting.pop(c["name"], None)
            found = {name: runtime for name, runtime in runtimes.items() if runtime is not None}
            if len(found) == len(runtimes):
                return found
            self._check_deadline()
            self._write_status()
            self._sleep(TICK_SECONDS)

    def _recovered_restart_counts(self, pod: dict[str, Any]) -> int:
        """Carry restart counts over from an earlier agent; return the first init container to run."""
        status = pod.get("status") or {}
        previous = {
            s["name"]: s
            for s in (*status.get("containerStatuses", []), *status.get("initContainerStatuses", []))
        }
        first_init = 0
        for container in (*self._init, *self._main):
            old = previous.get(container.name)
            if old and ("running" in old.get("state", {}) or "terminated" in old.get("state", {})):
                container.state.restart_count = int(old.get("restartCount", 0)) + 1
        for index, container in enumerate(self._init):
            old = previous.get(container.name, {})
            if old.get("state", {}).get("terminated", {}).get("exitCode") == 0:
                container.state.restart_count -= 1
                container.state.terminated = old["state"]["terminated"]
                container.done = True
                first_init = index + 1
        return first_init

    def _container(
        self,
        spec: dict[str, Any],
        runtime: ImageRuntime,
        volume_paths: dict[str, Path],
        resolver: EnvResolver,
        pod: dict[str, Any],
    ) -> _Container:
        container_dir = self._dir / "containers" / spec["name"]
        mapping: dict[str, Path] = {}
        for mount in spec.get("volumeMounts", []):
            if mount["name"] not in volume_paths:
                raise PodSetupError(f"volumeMount {mount['name']!r} has no volume", permanent=True)
            host = volume_paths[mount["name"]]
            if mount.get("subPath"):
                host = host / mount["subPath"]
                host.mkdir(parents=True, exist_ok=True)
            mapping[mount["mountPath"]] = host
        termination_path = spec.get("terminationMessagePath", "/dev/termination-log")
        mapping[termination_path] = container_dir / "termination-log"
        mapper = PathMapper(mapping)
        env = resolver.resolve(spec, self._base_env(pod, runtime))
        env = {k: mapper.rewrite(v) for k, v in env.items()}
        command = [mapper.rewrite(expand(a, env)) for a in spec.get("command", [])]
        args = [mapper.rewrite(expand(a, env)) for a in spec.get("args", [])]
        try:
            argv = runtime.resolve_command(command, args)
        except MissingCommandError as exc:
            raise PodSetupError(f"container {spec['name']}: {exc}", permanent=True) from exc
        working_dir = spec.get("workingDir")
        cwd = self._dir / "rootfs"
        if working_dir:
            mapped = mapper.host_path(working_dir)
            cwd = mapped if mapped is not None else cwd / working_dir.lstrip("/")
        launch = ContainerLaunch(
            name=spec["name"],
            argv=argv,
            env=env,
            cwd=cwd,
            log_path=self._dir / "logs" / f"{spec['name']}.log",
            termination_path=container_dir / "termination-log",
            termination_policy=spec.get("terminationMessagePolicy", "File"),
            netns=self._sandbox.path if self._sandbox is not None else None,
            identity=self._identity,
        )
        return _Container(spec, runtime, launch, mapper)

    def _annotate_log_path(self, pod: dict[str, Any]) -> None:
        logs = self._dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        main_log = str(logs / f"{pod['spec']['containers'][0]['name']}.log")
        self._conditions.set(LOG_PATH_CONDITION, True, "LogsOnLocalNode", str(logs))
        helper = self._ctx.helper
        if helper is None:
            return
        meta = pod["metadata"]
        patch = {"metadata": {"annotations": {LOG_PATH_ANNOTATION: main_log}}}
        try:
            helper.merge_patch(pod_path(meta["namespace"], meta["name"]), patch)
        except ApiError as exc:
            log.warning("pod %s: cannot annotate the log path: %s", self.key, exc)

    # ------------------------------------------------------------------ running

    def _restart_policy(self) -> str:
        return str(self._snapshot()["spec"].get("restartPolicy", "Always"))

    def _grace(self) -> float:
        return float(self._snapshot()["spec"].get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS))

    def _set_waiting(self, reason: str, message: str) -> None:
        for container in (*self._init, *self._main):
            if container.process is None and not container.done:
                container.state.waiting_reason = reason
                container.state.waiting_message = message
        spec = self._snapshot()["spec"]
        for c in (*spec.get("initContainers", []), *spec["containers"]):
            self._waiting[c["name"]] = (reason, message)

    def _start(self, container: _Container) -> None:
        container.process = ContainerProcess.start(container.launch)
        state = container.state
        state.running_since = container.process.started_at
        state.terminated = None
        state.pid = container.process.record.pid
        state.waiting_reason, state.waiting_message = "", ""
        state.ready = False
        state.started = False
        now = time.monotonic()
        self._make_probes(container, now)
        self._save_runtime()
        log.info(
            "pod %s: started %s (pid %d): %s", self.key, container.name, state.pid, container.launch.argv
        )

    def _make_probes(self, container: _Container, now: float) -> None:
        ports = {p["name"]: int(p["containerPort"]) for p in container.spec.get("ports", []) if p.get("name")}

        def make(kind: str, initial: bool) -> Probe | None:
            spec = container.spec.get(kind)
            if not spec:
                return None
            return Probe(
                spec,
                initial=initial,
                pod_ip=self._pod_ip,
                named_ports=ports,
                exec_fn=container.exec_in,
                started_at=now,
            )

        container.startup = make("startupProbe", initial=False)
        container.liveness = make("livenessProbe", initial=True)
        container.readiness = make("readinessProbe", initial=False)

    def _on_exit(self, container: _Container, exit_code: int, restart_policy: str) -> None:
        assert container.process is not None
        state = container.state
        message = container.process.termination_message(exit_code)
        terminated: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": container.process.started_at,
            "finishedAt": now_rfc3339(),
            "containerID": f"localnode://{state.pid}",
        }
        if exit_code >= 128:
            terminated["signal"] = exit_code - 128
        if message:
            terminated["message"] = message
        container.process = None
        state.running_since = ""
        state.ready = False
        state.started = False
        log.info("pod %s: %s exited with %d", self.key, container.name, exit_code)
        if will_restart(restart_policy, exit_code) and not self._deleting.is_set():
            state.last_terminated = terminated
            state.terminated = None
            cfg = self._ctx.config
            container.backoff = (
                cfg.restart_backoff_initial
                if container.backoff == 0
                else min(container.backoff * 2, cfg.restart_backoff_max)
            )
            container.restart_at = time.monotonic() + container.backoff
            state.waiting_reason = "CrashLoopBackOff"
            state.waiting_message = (
                f"back-off {container.backoff:.0f}s restarting failed container={container.name}"
            )
        else:
            state.terminated = terminated
            container.done = True

    def _step_container(self, container: _Container, now: float, restart_policy: str) -> None:
        if container.done:
            return
        if container.process is None:
            if now >= container.restart_at:
                if container.state.last_terminated is not None and container.restart_at:
                    container.state.restart_count += 1
                self._start(container)
            return
        exit_code = container.process.poll()
        if exit_code is not None:
            self._on_exit(container, exit_code, restart_policy)
            return
        self._probe(container, now)

    def _probe(self, container: _Container, now: float) -> None:
        state = container.state
        if container.startup is not None and not container.startup.healthy:
            if container.startup.due(now):
                container.startup.run(now)
            if not container.startup.healthy:
                return
        state.started = True
        if container.liveness is not None and container.liveness.due(now):
            container.liveness.run(now)
            if not container.liveness.healthy and container.process is not None:
                log.info(
                    "pod %s: %s failed liveness (%s); restarting",
                    self.key,
                    container.name,
                    container.liveness.last_error,
                )
                container.process.stop(self._grace())
        if container.readiness is None:
            state.ready = True
        elif container.readiness.due(now):
            container.readiness.run(now)
            state.ready = container.readiness.healthy

    def _check_deadline(self) -> None:
        deadline = self._snapshot()["spec"].get("activeDeadlineSeconds")
        if deadline is not None and time.monotonic() - self._started_monotonic > float(deadline):
            raise _PodFailedError("DeadlineExceeded", f"Pod was active on the node longer than {deadline}s")

    def _supervise(self) -> None:
        """Run init containers, then containers, until the pod is terminal or must stop."""
        restart_policy = self._restart_policy()
        while True:
            self._check_stop()
            self._check_deadline()
            now = time.monotonic()
            if self._volumes is not None:
                self._volumes.refresh_due_tokens()
            if self._init_index < len(self._init):
                container = self._init[self._init_index]
                self._step_container(container, now, "Never" if restart_policy == "Never" else "OnFailure")
                if container.done:
                    code = container.state.terminated["exitCode"] if container.state.terminated else 1
                    if code != 0:
                        raise _PodFailedError(
                            "InitContainerFailed", f"init container {container.name} exited {code}"
                        )
                    self._init_index += 1
                    continue
            else:
                for container in self._main:
                    self._step_container(container, now, restart_policy)
            self._write_status()
            if self._main and all(c.done for c in self._main):
                return
            self._sleep(TICK_SECONDS)

    def _stop_all(self, grace: float) -> bool:
        """Stop every running container (SIGTERM, SIGKILL after ``grace``); True if any ran."""
        running = [c for c in (*self._init, *self._main) if c.process is not None]
        for container in running:
            assert container.process is not None
            container.process.terminate()
        deadline = time.monotonic() + grace
        while any(c.process is not None and c.process.poll() is None for c in running):
            if time.monotonic() >= deadline:
                for container in running:
                    if container.process is not None:
                        container.process.kill_if_overdue(0.0)
            time.sleep(0.05)
        for container in running:
            if container.process is not None:
                container.process.stop(0.0)  # reaps, and kills what is left of the group
                code = container.process.poll()
                self._on_exit(container, 137 if code is None else code, "Never")
        return bool(running)

    # ------------------------------------------------------------------ status

    def _phase(self) -> str:
        if self._failure is not None:
            return "Failed"
        if self._main and all(c.done for c in self._main):
            return terminal_phase([c.state for c in self._main])
        if self._init_index >= len(self._init) and any(
            c.process is not None or c.state.last_terminated is not None or c.done for c in self._main
        ):
            return "Running"
        return "Pending"

    def _write_status(self) -> None:
        phase = self._phase()
        initialized = self._init_index >= len(self._init) and bool(self._main)
        containers_ready = bool(self._main) and all(c.state.ready for c in self._main) and phase == "Running"
        pod = self._snapshot()
        gates = [g["conditionType"] for g in pod["spec"].get("readinessGates", [])]
        current = {c["type"]: c for c in (pod.get("status") or {}).get("conditions", [])}
        gates_ok = all(current.get(g, {}).get("status") == "True" for g in gates)
        book = self._conditions
        if phase in ("Succeeded", "Failed"):
            book.set("Initialized", initialized or not self._init, "PodCompleted" if initialized else "")
            book.set("ContainersReady", False, "PodCompleted")
            book.set("Ready", False, "PodCompleted")
        else:
            # The kubelet's messages: the names, as Go prints a []string.
            incomplete = [c["name"] for c in pod["spec"].get("initContainers", [])][self._init_index :]
            unready = [c.name for c in self._main if not c.state.ready] or [
                c["name"] for c in pod["spec"]["containers"]
            ]
            not_initialized = f"containers with incomplete status: [{' '.join(incomplete)}]"
            not_ready = f"containers with unready status: [{' '.join(unready)}]"
            if initialized:
                book.set("Initialized", True)
            else:
                book.set("Initialized", False, "ContainersNotInitialized", not_initialized)
            if containers_ready:
                book.set("ContainersReady", True)
            else:
                book.set("ContainersReady", False, "ContainersNotReady", not_ready)
            if containers_ready:
                book.set("Ready", gates_ok)
            else:
                book.set("Ready", False, "ContainersNotReady", not_ready)
        if book.get("PodReadyToStartContainers") is None:
            book.set("PodReadyToStartContainers", False)
        ours: dict[str, Any] = {
            "phase": phase,
            "conditions": book.owned(),
            "hostIP": self._ctx.network.node_ip,
            "hostIPs": [{"ip": self._ctx.network.node_ip}],
            "podIP": self._pod_ip,
            "podIPs": [{"ip": self._pod_ip}],
            "startTime": self._start_time,
            "containerStatuses": [c.state.status() for c in self._main]
            or self._waiting_statuses("containers"),
            "initContainerStatuses": [c.state.status() for c in self._init]
            or self._waiting_statuses("initContainers"),
        }
        if self._failure is not None:
            ours["reason"] = self._failure.reason
            ours["message"] = self._failure.message
        encoded = json.dumps(ours, sort_keys=True)
        if encoded == self._last_written:
            return
        if not self._writer.write(ours):
            self._gone.set()
            raise _Stop
        self._last_written = encoded
        self._ctx.pods_changed()

    def _waiting_statuses(self, key: str) -> list[dict[str, Any]]:
        """Statuses for containers not yet prepared (before or instead of _prepare)."""
        spec = self._snapshot()["spec"]
        default = ("PodInitializing" if spec.get("initContainers") else "ContainerCreating", "")
        statuses = []
        for c in spec.get(key, []):
            reason, message = self._waiting.get(c["name"], default)
            if self._failure is not None:
                reason, message = self._failure.reason, self._failure.message
            statuses.append(
                RunState(
                    name=c["name"], image=c["image"], waiting_reason=reason, waiting_message=message
                ).status()
            )
        return statuses
