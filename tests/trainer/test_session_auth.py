"""A training session's client authentication against the local cluster's real kube-apiserver.

The session's checker (`rft_trainer.session.auth`) runs here as the session pod runs it: as a
ServiceAccount of the session's namespace (its token and the cluster CA in a directory), asking
the API server with TokenReviews. Tokens are minted with the TokenRequest API, as a client (or
`kubectl create token --audience`) gets them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client
from rft.api.training_session import token_audience
from rft_devcluster.handle import ClusterHandle
from rft_trainer.session.auth import Authenticator, AuthError, TokenReviewer

pytestmark = [pytest.mark.cluster]

API_KEY = "tml-" + "k" * 43
REVIEWER_ROLE = "rft-test-session-token-review"


@dataclass
class Namespaces:
    session: str
    other: str
    core: client.CoreV1Api


def _token(core: client.CoreV1Api, namespace: str, sa: str, audience: str | None) -> str:
    spec = client.V1TokenRequestSpec(audiences=[audience] if audience else [], expiration_seconds=600)
    answer = core.create_namespaced_service_account_token(
        sa, namespace, client.AuthenticationV1TokenRequest(spec=spec)
    )
    return str(answer.status.token)


def _credentials(cluster: ClusterHandle, core: client.CoreV1Api, namespace: str, sa: str, path: Path) -> Path:
    """What the session pod's kube-api volume holds: its own token (API server audience), the CA."""
    path.mkdir()
    (path / "token").write_text(_token(core, namespace, sa, None))
    (path / "ca.crt").write_bytes(cluster.ca_path.read_bytes())
    return path


@pytest.fixture
def namespaces(cluster: ClusterHandle) -> Iterator[Namespaces]:
    session_ns, other_ns = cluster.create_namespace("auth"), cluster.create_namespace("other")
    api = cluster.api_client()
    core = client.CoreV1Api(api)
    rbac = client.RbacAuthorizationV1Api(api)
    for ns in (session_ns, other_ns):
        for sa in ("session", "caller"):
            core.create_namespaced_service_account(ns, {"metadata": {"name": sa}})
    # The cluster admin's grant the session's ServiceAccount needs (and nothing else).
    binding = f"{REVIEWER_ROLE}-{session_ns}"
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": binding},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
            "subjects": [{"kind": "ServiceAccount", "name": "session", "namespace": session_ns}],
        }
    )
    try:
        yield Namespaces(session_ns, other_ns, core)
    finally:
        rbac.delete_cluster_role_binding(binding)
        cluster.delete_namespace(session_ns)
        cluster.delete_namespace(other_ns)
        api.close()


def _reviewer(cluster: ClusterHandle, ns: Namespaces, sa: str, tmp_path: Path) -> TokenReviewer:
    return TokenReviewer(
        api_url=cluster.server,
        credentials_dir=_credentials(cluster, ns.core, ns.session, sa, tmp_path / sa),
        audience=token_audience(ns.session, "warm"),
        namespace=ns.session,
    )


def test_kubernetes_tokens_of_the_session_namespace_only(
    cluster: ClusterHandle, namespaces: Namespaces, tmp_path: Path
) -> None:
    ns = namespaces
    audience = token_audience(ns.session, "warm")
    auth = Authenticator(API_KEY, _reviewer(cluster, ns, "session", tmp_path))

    # A ServiceAccount token of the session's namespace, bound to the session's audience.
    caller = auth.authenticate(_token(ns.core, ns.session, "caller", audience))
    assert (caller.kind, caller.name) == ("kubernetes", f"system:serviceaccount:{ns.session}:caller")

    # The same audience, another namespace's ServiceAccount: authenticated, but not allowed here.
    with pytest.raises(AuthError) as refused:
        auth.authenticate(_token(ns.core, ns.other, "caller", audience))
    assert refused.value.status == 403
    assert f"system:serviceaccount:{ns.other}:caller may not use this session" in refused.value.message
    assert f"only ServiceAccounts of namespace {ns.session}" in refused.value.message

    # The session's namespace, but a token for the API server, or for another session: refused
    # by the API server's audience check.
    for wrong in (None, token_audience(ns.session, "other-session")):
        with pytest.raises(AuthError) as unauthenticated:
            auth.authenticate(_token(ns.core, ns.session, "caller", wrong))
        assert unauthenticated.value.status == 401
        assert f"a token for this session has audience {audience}" in unauthenticated.value.message

    # A forged JWT-shaped credential.
    with pytest.raises(AuthError) as forged:
        auth.authenticate("eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjQxMDI0NDQ4MDB9.c2ln")
    assert forged.value.status == 401

    # The per-session key still works; a wrong one and none do not.
    assert auth.authenticate(API_KEY).kind == "api-key"
    for bad in ("tml-" + "x" * 43, None):
        with pytest.raises(AuthError) as wrong_key:
            auth.authenticate(bad)
        assert wrong_key.value.status == 401


def test_tokens_refused_where_not_enabled_or_not_permitted(
    cluster: ClusterHandle, namespaces: Namespaces, tmp_path: Path
) -> None:
    ns = namespaces
    token = _token(ns.core, ns.session, "caller", token_audience(ns.session, "warm"))

    # A session started without Kubernetes tokens says so, and keeps its key.
    with pytest.raises(AuthError, match="does not accept Kubernetes tokens") as off:
        Authenticator(API_KEY).authenticate(token)
    assert off.value.status == 401

    # A session whose ServiceAccount was not granted TokenReviews: a clear 503, not a 401 that
    # would blame the client's token.
    unprivileged = Authenticator(API_KEY, _reviewer(cluster, ns, "caller", tmp_path))
    with pytest.raises(AuthError, match="may not create tokenreviews") as denied:
        unprivileged.authenticate(token)
    assert denied.value.status == 503
