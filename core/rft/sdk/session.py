"""The settings and the (lazily built) API client that SDK objects share."""

from __future__ import annotations

import threading
from dataclasses import replace

from rft.sdk.config import SdkConfig, load_config
from rft.sdk.kube import KubeClient

_shared_clients: dict[tuple[str | None, str | None], KubeClient] = {}
_shared_clients_lock = threading.Lock()


def shared_client(config: SdkConfig) -> KubeClient:
    """One Kubernetes client per (kubeconfig, context) in this process, so that the many SDK objects
    of a training loop share a connection pool."""
    key = (config.kubeconfig, config.context)
    with _shared_clients_lock:
        client = _shared_clients.get(key)
        if client is None:
            client = KubeClient.from_config(config)
            _shared_clients[key] = client
        return client


class Session:
    """Resolved settings plus one Kubernetes client, built on first use (constructors stay offline)."""

    def __init__(self, config: SdkConfig, client: KubeClient | None = None) -> None:
        self.config = config
        self._client = client
        self._lock = threading.Lock()

    @classmethod
    def create(
        cls,
        *,
        namespace: str | None = None,
        bucket: str | None = None,
        service_account: str | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        client: KubeClient | None = None,
    ) -> Session:
        """Resolve settings (arguments > environment > config file > defaults)."""
        config = load_config(
            namespace=namespace,
            bucket=bucket,
            service_account=service_account,
            kubeconfig=kubeconfig,
            context=context,
        )
        return cls(config, client)

    def for_namespace(self, namespace: str) -> Session:
        """A session on another namespace sharing this one's client (for full names)."""
        if namespace == self.namespace:
            return self
        with self._lock:
            client = self._client
        return Session(replace(self.config, namespace=namespace), client)

    @property
    def namespace(self) -> str:
        """The default namespace (the managed service's account)."""
        return self.config.namespace

    @property
    def client(self) -> KubeClient:
        """The Kubernetes client, created from the kubeconfig on first use."""
        with self._lock:
            if self._client is None:
                self._client = shared_client(self.config)
            return self._client
