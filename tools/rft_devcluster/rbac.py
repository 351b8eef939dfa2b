"""Granting a local cluster's component identity (a certificate's user) a ClusterRole."""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from rft_devcluster.handle import ClusterHandle


def grant_cluster_role(admin: ClusterHandle, name: str, user: str, rules: list[dict[str, Any]]) -> None:
    """A ClusterRole ``name`` with ``rules``, bound to ``user``; what already exists is kept."""
    role = {"metadata": {"name": name}, "rules": rules}
    binding = {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    with admin.api_client() as api:
        rbac = client.RbacAuthorizationV1Api(api)
        for create in (
            lambda: rbac.create_cluster_role(client.V1ClusterRole.model_validate(role)),
            lambda: rbac.create_cluster_role_binding(client.V1ClusterRoleBinding.model_validate(binding)),
        ):
            try:
                create()
            except ApiException as exc:
                if exc.status != 409:
                    raise
