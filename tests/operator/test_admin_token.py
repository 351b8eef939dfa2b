"""The operator's admin key on a real API server: made once, the same after every restart (so server
pod templates do not roll when the operator restarts), per Deployment tokens."""

from __future__ import annotations

import base64

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from rft.pods.admin_guard import token_sha256
from rft_devcluster.handle import ClusterHandle
from rft_operator.admintoken import KEY_FIELD, AdminKeyError, AdminTokens

pytestmark = pytest.mark.cluster


def _core(cluster: ClusterHandle) -> client.CoreV1Api:
    return client.CoreV1Api(cluster.api_client())


def test_key_is_made_once_and_read_back_on_every_start(cluster: ClusterHandle, namespace: str) -> None:
    core = _core(cluster)
    first = AdminTokens.load_or_create(core, namespace, "key")
    again = AdminTokens.load_or_create(core, namespace, "key")
    token = first.token("team-a", "base", "uid-1")
    assert again.token("team-a", "base", "uid-1") == token, "a restarted operator keeps every token"
    assert len(token) == 64
    assert first.token_sha256("team-a", "base", "uid-1") == token_sha256(token) != token
    # Each Deployment its own: another name, namespace or a re-made object (new uid) differs.
    others = {
        first.token("team-a", "other", "uid-1"),
        first.token("team-b", "base", "uid-1"),
        first.token("team-a", "base", "uid-2"),
    }
    assert token not in others
    assert len(others) == 3
    secret = core.read_namespaced_secret("key", namespace)
    assert len(base64.b64decode(secret.data[KEY_FIELD])) == 32
    assert secret.metadata.labels == {"app.kubernetes.io/managed-by": "rft-operator"}


def test_a_deleted_key_is_made_anew_and_every_token_changes(cluster: ClusterHandle, namespace: str) -> None:
    core = _core(cluster)
    before = AdminTokens.load_or_create(core, namespace, "rotated").token("ns", "d", "u")
    core.delete_namespaced_secret("rotated", namespace)
    after = AdminTokens.load_or_create(core, namespace, "rotated").token("ns", "d", "u")
    assert after != before


def test_a_secret_of_that_name_without_a_key_is_a_clear_error(cluster: ClusterHandle, namespace: str) -> None:
    core = _core(cluster)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "foreign"}, "stringData": {"other": "x"}})
    with pytest.raises(AdminKeyError, match=f"Secret {namespace}/foreign has no 'key' entry"):
        AdminTokens.load_or_create(core, namespace, "foreign")


def test_no_rights_to_read_the_key_is_a_clear_error(cluster: ClusterHandle, namespace: str) -> None:
    """A ServiceAccount without the chart's key Role: the operator stops at start, naming the Secret."""
    core = _core(cluster)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "no-rights"}})
    token = core.create_namespaced_service_account_token(
        "no-rights", namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token
    configuration = cluster.api_client().configuration
    restricted = client.Configuration()
    restricted.host = configuration.host
    restricted.ssl_ca_cert = configuration.ssl_ca_cert
    restricted.api_key = {"authorization": f"Bearer {token}"}
    with (
        client.ApiClient(restricted) as api,
        pytest.raises(AdminKeyError, match=rf"cannot read Secret {namespace}/key .*HTTP 403"),
    ):
        AdminTokens.load_or_create(client.CoreV1Api(api), namespace, "key")
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_secret("key", namespace)
    assert missing.value.status == 404, "nothing was made"
