"""Lease-based leader election, so that only one operator replica reconciles at a time.

The same protocol as client-go's leaderelection: a coordination.k8s.io/v1 Lease names its
holder and when it last renewed; a candidate takes it over only after it expired. A leader that
cannot renew in time stops the process (its replacement, or the next leader, carries on): two
replicas never reconcile at once for longer than the lease allows.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from datetime import UTC, datetime

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def _micro(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class LeaderElector:
    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str,
        name: str = "rft-operator",
        identity: str | None = None,
        lease_seconds: int = 15,
        renew_seconds: float = 5.0,
    ) -> None:
        self.api = client.CoordinationV1Api(api_client)
        self.namespace = namespace
        self.name = name
        self.identity = identity or f"{socket.gethostname()}-{os.getpid()}"
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.leading = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _body(self, resource_version: str | None, acquired: datetime, transitions: int) -> dict[str, object]:
        meta: dict[str, object] = {"name": self.name, "namespace": self.namespace}
        if resource_version:
            meta["resourceVersion"] = resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.lease_seconds,
                "acquireTime": _micro(acquired),
                "renewTime": _micro(_now()),
                "leaseTransitions": transitions,
            },
        }

    def try_acquire_or_renew(self) -> bool:
        """One round of the protocol; True when this process holds the lease afterwards."""
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace).to_dict()
        except ApiException as exc:
            if exc.status != 404:
                raise
            try:
                self.api.create_namespaced_lease(self.namespace, self._body(None, _now(), 0))  # type: ignore[arg-type]
            except ApiException as create_exc:
                if create_exc.status == 409:
                    return False
                raise
            return True
        spec = lease["spec"] or {}
        holder = spec.get("holder_identity")
        renewed = spec.get("renew_time")
        duration = spec.get("lease_duration_seconds") or self.lease_seconds
        expired = renewed is None or (_now() - renewed).total_seconds() > duration
        if holder != self.identity and not expired:
            return False
        transitions = int(spec.get("lease_transitions") or 0) + (0 if holder == self.identity else 1)
        acquired = (
            spec.get("acquire_time") if holder == self.identity and spec.get("acquire_time") else _now()
        )
        try:
            self.api.replace_namespaced_lease(
                self.name,
                self.namespace,
                self._body(lease["metadata"]["resource_version"], acquired, transitions),  # type: ignore[arg-type]
            )
        except ApiException as exc:
            if exc.status == 409:  # someone else renewed or took it between our read and write
                return False
            raise
        return True

    def _run(self) -> None:
        last_renewal = 0.0
        while not self._stop.is_set():
            try:
                held = self.try_acquire_or_renew()
            except Exception:
                log.exception("leader election round failed")
                held = False
            now = time.monotonic()
            if held:
                last_renewal = now
                if not self.leading.is_set():
                    log.info("became the leader (%s/%s as %s)", self.namespace, self.name, self.identity)
                    self.leading.set()
            elif self.leading.is_set() and now - last_renewal > self.lease_seconds - self.renew_seconds:
                log.error(
                    "lost the leader lease %s/%s; stopping so another replica takes over",
                    self.namespace,
                    self.name,
                )
                os.kill(os.getpid(), signal.SIGTERM)
                return
            self._stop.wait(self.renew_seconds if self.leading.is_set() else self.renew_seconds / 2)
