"""The local node's emulation of EKS's pod identity webhook (IRSA), as a pure function."""

from __future__ import annotations

from typing import Any

from rft_devcluster.localnode.workload_identity import TOKEN_DIR, inject_web_identity

SA = {"metadata": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/rft"}}}
POD: dict[str, Any] = {
    "metadata": {"name": "p"},
    "spec": {
        "initContainers": [{"name": "init", "image": "x"}],
        "containers": [{"name": "a", "image": "x", "env": [{"name": "KEEP", "value": "1"}]}],
    },
}


def test_pods_of_an_annotated_service_account_get_a_token_and_the_role() -> None:
    pod = inject_web_identity(POD, SA, {"AWS_ENDPOINT_URL": "http://127.0.0.1:5000"})
    (volume,) = pod["spec"]["volumes"]
    token = volume["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == "sts.amazonaws.com"
    for container in [*pod["spec"]["initContainers"], *pod["spec"]["containers"]]:
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["AWS_ROLE_ARN"] == "arn:aws:iam::111122223333:role/rft"
        assert env["AWS_WEB_IDENTITY_TOKEN_FILE"] == f"{TOKEN_DIR}/token"
        assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000"
        assert not any("SECRET" in name or name == "AWS_ACCESS_KEY_ID" for name in env)
        assert {"name": "aws-iam-token", "mountPath": TOKEN_DIR, "readOnly": True} in container[
            "volumeMounts"
        ]
    assert {"name": "KEEP", "value": "1"} in pod["spec"]["containers"][0]["env"]
    assert "volumes" not in POD["spec"], "the input pod is not modified"


def test_other_pods_are_left_alone() -> None:
    assert inject_web_identity(POD, {"metadata": {}}, {"X": "1"}) == POD
    assert inject_web_identity(POD, None, {}) == POD


def test_containers_that_set_their_own_role_are_left_alone() -> None:
    pod = {
        "metadata": {},
        "spec": {"containers": [{"name": "a", "env": [{"name": "AWS_ROLE_ARN", "value": "mine"}]}]},
    }
    out = inject_web_identity(pod, SA, {})
    assert out["spec"]["containers"][0]["env"] == [{"name": "AWS_ROLE_ARN", "value": "mine"}]
