"""A thin wrapper over the Kubernetes API: plain dicts in and out, 404/409 folded into results.

Responses are read raw (`_preload_content=False`) so that objects stay in their wire form
(camelCase dicts), exactly what the Pydantic API models and the builders use. "Already exists" on
create and "not found" on delete are successes here: a reconcile that runs twice must not fail.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from rft.api import GROUP, VERSION

from rft_operator.cache import Cache
from rft_operator.metrics import METRICS

Obj = dict[str, Any]
log = logging.getLogger(__name__)
# The Kueue API the operator reads (WorkloadPriorityClass), as Kueue v0.17 stores it.
KUEUE_GROUP = "kueue.x-k8s.io"
KUEUE_VERSION = "v1beta2"


def _body(response: Any) -> Obj:
    data: Obj = json.loads(response.data)
    return data


def _drain(response: Any) -> None:
    """Read a raw response whose body is not needed: an unread response keeps its connection out of
    the pool, and the next request pays for a new TLS handshake (on both ends)."""
    _ = response.data
    response.release_conn()


class WriteCounter:
    """Counts the API writes this process makes, by verb and resource (exported as the metric
    `rft_api_writes_total`; the scale benchmark checks writes per step with it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[tuple[str, str], int] = {}

    def add(self, verb: str, resource: str) -> None:
        with self._lock:
            self.counts[(verb, resource)] = self.counts.get((verb, resource), 0) + 1
        METRICS.api_writes.labels(verb=verb, resource=resource).inc()


class EventRecorder:
    """Posts Events in the background, like client-go's event broadcaster: a reconcile hands its
    Event over and goes on instead of waiting for the API server.

    Events queue up to `capacity` (10,000 by default: a burst of a thousand new steps queues three
    thousand, about a kilobyte each); beyond that (or once stopping) they are dropped, counted in
    `rft_events_dropped_total` and logged at debug level: Events are best effort and must never
    hold up reconciling. `workers` threads post them; `stop` posts what is queued for a short
    while (on shutdown), then drops the rest.
    """

    def __init__(self, post: Callable[[str, Obj], None], capacity: int = 10_000, workers: int = 2) -> None:
        self._post = post
        self._capacity = capacity
        self._pending: deque[tuple[str, Obj]] = deque()
        self._posting = 0
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._stopping = False
        self.dropped = 0
        self._threads = [
            threading.Thread(target=self._run, name=f"events-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def record(self, namespace: str, event: Obj) -> bool:
        """Queue `event` for posting; False when it was dropped (queue full or stopping)."""
        with self._lock:
            if not self._stopping and len(self._pending) < self._capacity:
                self._pending.append((namespace, event))
                self._work.notify()
                return True
            self.dropped += 1
        METRICS.events_dropped.inc()
        involved = event.get("involvedObject", {})
        log.debug(
            "event queue full: dropped event %s on %s/%s",
            event.get("reason"),
            namespace,
            involved.get("name"),
        )
        return False

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending) + self._posting

    def flush(self, timeout: float) -> bool:
        """Wait until every queued Event has been posted (or failed); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending or self._posting:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def stop(self, timeout: float = 2.0) -> bool:
        """Post what is queued for up to `timeout` seconds, then drop the rest and stop."""
        flushed = self.flush(timeout)
        with self._lock:
            self._stopping = True
            left = len(self._pending)
            self._pending.clear()
            self.dropped += left
            self._work.notify_all()
            self._idle.notify_all()
        if left:
            METRICS.events_dropped.inc(left)
            log.info("dropped %d event(s) not posted within %.1fs of shutdown", left, timeout)
        return flushed

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._stopping:
                    self._work.wait()
                if not self._pending:
                    return
                namespace, event = self._pending.popleft()
                self._posting += 1
            try:
                self._post(namespace, event)
            except Exception:  # best effort: the poster logs API errors itself
                log.exception("could not post event %s", event.get("reason"))
            finally:
                with self._lock:
                    self._posting -= 1
                    if not self._pending and not self._posting:
                        self._idle.notify_all()


class Kube:
    """The few API calls the reconcilers need."""

    def __init__(
        self, api_client: client.ApiClient, component: str = "rft-operator", cache: Cache | None = None
    ) -> None:
        self.api_client = api_client
        self.cache = cache
        self.custom = client.CustomObjectsApi(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.discovery = client.DiscoveryV1Api(api_client)
        self.component = component
        self.writes = WriteCounter()
        self.events = EventRecorder(self._post_event)

    # --- the project's custom resources -------------------------------------------------------
    def get(self, plural: str, namespace: str, name: str, *, confirm_absent: bool = True) -> Obj | None:
        """The object from the watch cache when it has it, else from the API (None: not found).

        `confirm_absent=False`: trust the cache's "not there" too (when acting on a missed object
        is safe anyway, as a create that meets "already exists" is).
        """
        found, cached = self._from_cache(plural, namespace, name, confirm_absent)
        return cached if found else self.read(plural, namespace, name)

    def read(self, plural: str, namespace: str, name: str) -> Obj | None:
        """The object from the API (None: not found)."""
        METRICS.api_reads.labels(verb="get", resource=plural).inc()
        try:
            return _body(
                self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, name, _preload_content=False
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _from_cache(
        self, plural: str, namespace: str, name: str, confirm_absent: bool
    ) -> tuple[bool, Obj | None]:
        """(True, the object or None) when the cache decides; (False, None) to ask the API."""
        if self.cache is None or not self.cache.covers(plural):
            return False, None
        cached = self.cache.get(plural, namespace, name)
        return cached is not None or not confirm_absent, cached

    def _remember(self, plural: str, obj: Obj) -> Obj:
        if self.cache is not None:
            self.cache.remember(plural, obj)
        return obj

    def list_objects(self, plural: str, namespace: str | None = None) -> list[Obj]:
        METRICS.api_reads.labels(verb="list", resource=plural).inc()
        if namespace is None:
            resp = self.custom.list_cluster_custom_object(GROUP, VERSION, plural, _preload_content=False)
        else:
            resp = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, _preload_content=False
            )
        items: list[Obj] = _body(resp)["items"]
        return items

    def create(self, plural: str, namespace: str, body: Obj) -> tuple[Obj, bool]:
        """Create; on 409 return the existing object and False."""
        try:
            self.writes.add("create", plural)
            created = _body(
                self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, body, _preload_content=False
                )
            )
            return self._remember(plural, created), True
        except ApiException as exc:
            if exc.status != 409:
                raise
        existing = self.read(plural, namespace, body["metadata"]["name"])
        if existing is None:  # deleted in between: the caller retries
            raise ApiException(status=409, reason="object vanished after a conflict")
        return existing, False

    def patch_status(
        self, plural: str, namespace: str, name: str, status: Obj, resource_version: str | None = None
    ) -> Obj | None:
        """Merge-patch the status subresource; None when the object is gone.

        With `resource_version` the patch applies only to that version of the object (409
        otherwise), so a status computed from a stale read never overwrites a newer one.
        """
        body: Obj = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            self.writes.add("patch", f"{plural}/status")
            return self._remember(
                plural,
                _body(
                    self.custom.patch_namespaced_custom_object_status(
                        GROUP, VERSION, namespace, plural, name, body, _preload_content=False
                    )
                ),
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def set_finalizers(
        self, plural: str, namespace: str, name: str, finalizers: list[str], resource_version: str
    ) -> Obj:
        """Replace metadata.finalizers, only on that version of the object."""
        self.writes.add("patch", plural)
        return self._remember(
            plural,
            _body(
                self.custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    plural,
                    name,
                    {"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}},
                    _preload_content=False,
                )
            ),
        )

    def delete(self, plural: str, namespace: str, name: str, propagation: str = "Background") -> bool:
        if self.cache is not None:
            self.cache.forget(plural, namespace, name)
        try:
            self.writes.add("delete", plural)
            _drain(
                self.custom.delete_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    plural,
                    name,
                    body=client.V1DeleteOptions(propagation_policy=propagation),
                    _preload_content=False,
                )
            )
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    # --- ServiceAccounts (read only: the workload policy checks their label) -------------------
    def read_service_account(self, namespace: str, name: str) -> Obj | None:
        """The ServiceAccount from the API (None: not found)."""
        METRICS.api_reads.labels(verb="get", resource="serviceaccounts").inc()
        try:
            return _body(self.core.read_namespaced_service_account(name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def service_account_may(
        self, namespace: str, name: str, *, verb: str, group: str, resource: str
    ) -> tuple[bool, str]:
        """Whether the ServiceAccount may `verb` the cluster-scoped `resource` (a
        SubjectAccessReview, with the groups its tokens carry), and the authorizer's reason."""
        self.writes.add("create", "subjectaccessreviews")
        review = client.AuthorizationV1Api(self.api_client).create_subject_access_review(
            {  # type: ignore[arg-type]
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": f"system:serviceaccount:{namespace}:{name}",
                    "groups": [
                        "system:serviceaccounts",
                        f"system:serviceaccounts:{namespace}",
                        "system:authenticated",
                    ],
                    "resourceAttributes": {"verb": verb, "group": group, "resource": resource},
                },
            }
        )
        status = review.status
        return bool(status and status.allowed), str(
            (status and (status.reason or status.evaluation_error)) or ""
        )

    # --- Kueue (read only: a step's spec.priorityClass must name an existing class) -------------
    def read_workload_priority_class(self, name: str) -> Obj | None:
        """Kueue's cluster-scoped WorkloadPriorityClass `name` (None: not found, or Kueue's CRDs
        are not installed)."""
        METRICS.api_reads.labels(verb="get", resource="workloadpriorityclasses").inc()
        try:
            return _body(
                self.custom.get_cluster_custom_object(
                    KUEUE_GROUP, KUEUE_VERSION, "workloadpriorityclasses", name, _preload_content=False
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    # --- Jobs and Pods --------------------------------------------------------------------------
    def get_job(self, namespace: str, name: str, *, confirm_absent: bool = True) -> Obj | None:
        """The Job from the watch cache when it has it, else from the API (None: not found)."""
        found, cached = self._from_cache("jobs", namespace, name, confirm_absent)
        return cached if found else self.read_job(namespace, name)

    def read_job(self, namespace: str, name: str) -> Obj | None:
        """The Job from the API (None: not found)."""
        METRICS.api_reads.labels(verb="get", resource="jobs").inc()
        try:
            return _body(self.batch.read_namespaced_job(name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create_job(self, namespace: str, body: Obj) -> tuple[Obj, bool]:
        try:
            self.writes.add("create", "jobs")
            response = self.batch.create_namespaced_job(namespace, body, _preload_content=False)  # type: ignore[arg-type]
            return self._remember("jobs", _body(response)), True
        except ApiException as exc:
            if exc.status != 409:
                raise
        existing = self.read_job(namespace, body["metadata"]["name"])
        if existing is None:
            raise ApiException(status=409, reason="Job vanished after a conflict")
        return existing, False

    def patch_job(self, namespace: str, name: str, patch: Obj) -> None:
        self.writes.add("patch", "jobs")
        self._remember(
            "jobs", _body(self.batch.patch_namespaced_job(name, namespace, patch, _preload_content=False))
        )

    def delete_job(self, namespace: str, name: str) -> bool:
        if self.cache is not None:
            self.cache.forget("jobs", namespace, name)
        try:
            self.writes.add("delete", "jobs")
            _drain(
                self.batch.delete_namespaced_job(
                    name,
                    namespace,
                    body=client.V1DeleteOptions(propagation_policy="Background"),
                    _preload_content=False,
                )
            )
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def job_pods(self, namespace: str, job_name: str) -> list[Obj]:
        """The Job's pods, from the watch cache when there is one (it may lag behind the Job)."""
        if self.cache is not None and (cached := self.cache.pods(namespace, job_name)) is not None:
            return cached
        return self.list_pods(namespace, f"batch.kubernetes.io/job-name={job_name}")

    def list_pods(self, namespace: str, selector: str) -> list[Obj]:
        METRICS.api_reads.labels(verb="list", resource="pods").inc()
        items: list[Obj] = _body(
            self.core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False)
        )["items"]
        return items

    def set_pod_condition(self, namespace: str, name: str, condition: Obj) -> bool:
        """Set one condition of a pod's status (a strategic merge by type: the kubelet's own
        conditions stay); False when the pod is gone."""
        self.writes.add("patch", "pods/status")
        try:
            self.core.patch_namespaced_pod_status(name, namespace, {"status": {"conditions": [condition]}})
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # --- Events ----------------------------------------------------------------------------------
    def record_event(self, obj: Obj, event_type: str, reason: str, message: str) -> None:
        """Queue a core/v1 Event about `obj` for posting in the background (`EventRecorder`): the
        caller never waits for it. Failures are logged, never raised: events are best effort."""
        meta = obj["metadata"]
        now = datetime.now(UTC)
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj["apiVersion"],
                "kind": obj["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.component,
            "firstTimestamp": now.isoformat().replace("+00:00", "Z"),
            "lastTimestamp": now.isoformat().replace("+00:00", "Z"),
            "count": 1,
        }
        self.events.record(meta["namespace"], event)

    def _post_event(self, namespace: str, event: Obj) -> None:
        try:
            self.writes.add("create", "events")
            _drain(self.core.create_namespaced_event(namespace, event, _preload_content=False))  # type: ignore[arg-type]
        except ApiException as exc:
            log.warning(
                "could not record event %s on %s/%s: %s",
                event["reason"],
                namespace,
                event["involvedObject"]["name"],
                exc.reason,
            )


class Children:
    """Create-or-update of the apps/v1 Deployments and Services the operator owns.

    Updates use server-side apply under the operator's field manager, so fields the operator no
    longer sets are removed and fields others own (an HPA's replicas, say) are left alone. The
    desired manifest's hash is kept in an annotation: an unchanged hash means nothing to write.
    """

    HASH_ANNOTATION = f"{GROUP}/desired-hash"
    FIELD_MANAGER = "rft-operator"

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    @staticmethod
    def _hash(manifest: Obj) -> str:
        return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]

    def ensure_deployment(self, manifest: Obj) -> Obj:
        return self._ensure(
            manifest, self.kube.apps.read_namespaced_deployment, self.kube.apps.patch_namespaced_deployment
        )

    def ensure_service(self, manifest: Obj) -> Obj:
        return self._ensure(
            manifest, self.kube.core.read_namespaced_service, self.kube.core.patch_namespaced_service
        )

    def _ensure(self, manifest: Obj, read: Any, patch: Any) -> Obj:
        meta = manifest["metadata"]
        digest = self._hash(manifest)
        try:
            current = _body(read(meta["name"], meta["namespace"], _preload_content=False))
            foreign_object(manifest, current)
            if current["metadata"].get("annotations", {}).get(self.HASH_ANNOTATION) == digest:
                return current
        except ApiException as exc:
            if exc.status != 404:
                raise
        desired = {
            **manifest,
            "metadata": {
                **meta,
                "annotations": {**meta.get("annotations", {}), self.HASH_ANNOTATION: digest},
            },
        }
        self.kube.writes.add("apply", f"{manifest['kind'].lower()}s")
        return _body(
            patch(
                meta["name"],
                meta["namespace"],
                desired,
                field_manager=self.FIELD_MANAGER,
                force=True,
                _content_type="application/apply-patch+yaml",
                _preload_content=False,
            )
        )


class ForeignObjectError(RuntimeError):
    """An object of the child's name exists and is not the owner's: it is never taken over.
    `previous`: it belongs to an earlier object of the owner's kind and name (deleted and made
    again), which the garbage collector is about to remove."""

    def __init__(self, message: str, *, previous: bool) -> None:
        super().__init__(message)
        self.previous = previous


def foreign_object(manifest: Obj, current: Obj) -> None:
    """Raise ForeignObjectError unless `current` is controlled by the owner `manifest` names
    (server-side apply with force would otherwise take over someone else's Service or Deployment)."""
    owners = [ref for ref in manifest["metadata"].get("ownerReferences") or [] if ref.get("controller")]
    if not owners:
        return
    owner = owners[0]
    held = current["metadata"].get("ownerReferences") or []
    if any(ref.get("uid") == owner["uid"] and ref.get("controller") for ref in held):
        return
    name = f"{manifest['kind']} {current['metadata']['name']}"
    if any(
        ref.get("controller") and ref.get("kind") == owner["kind"] and ref.get("name") == owner["name"]
        for ref in held
    ):
        raise ForeignObjectError(
            f"{name} still belongs to an earlier {owner['kind']} {owner['name']}; waiting for it to be removed",
            previous=True,
        )
    raise ForeignObjectError(
        f"{name} already exists and does not belong to {owner['kind']} {owner['name']}; the operator "
        f"does not take over objects it did not make: delete or rename that {manifest['kind']}",
        previous=False,
    )
