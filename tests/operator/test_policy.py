"""The admin's workload policy (rft_operator.policy): which images and ServiceAccounts a resource
may make the operator run pods with. No cluster: a stand-in answers the one API read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from pydantic import ValidationError
from rft_operator.config import OperatorConfig
from rft_operator.kube import Kube
from rft_operator.policy import WorkloadPolicy, parse_allowed_images, parse_image

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
DIGEST = "sha256:" + "a" * 64
LABEL = "rft-operator.io/workload"


class Accounts:
    """Kube.read_service_account over a dict; counts the reads."""

    def __init__(self, accounts: dict[str, dict[str, str]]) -> None:
        self.accounts = accounts
        self.reads = 0

    def read_service_account(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads += 1
        if name not in self.accounts:
            return None
        return {"metadata": {"name": name, "namespace": namespace, "labels": self.accounts[name]}}


def policy(**settings: Any) -> WorkloadPolicy:
    return WorkloadPolicy(OperatorConfig(**settings))


def resource(age: float = 3600) -> dict[str, Any]:
    created = (NOW - timedelta(seconds=age)).isoformat().replace("+00:00", "Z")
    return {"metadata": {"name": "r", "namespace": "team", "creationTimestamp": created}}


def check(p: WorkloadPolicy, accounts: Accounts, sa: str, image: str | None = None, age: float = 3600) -> Any:
    return p.check(
        cast(Kube, accounts), resource(age), NOW, service_account=sa, images={"spec.trainerImage": image}
    )


# --- images ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("image", "name", "tag", "digest"),
    [
        ("vllm/vllm-openai:v0.32.0", "vllm/vllm-openai", "v0.32.0", None),
        ("rft.local/rft-fake-vllm:dev", "rft.local/rft-fake-vllm", "dev", None),
        ("registry:5000/team/trainer", "registry:5000/team/trainer", None, None),
        (f"ghcr.io/org/t:1@{DIGEST}", "ghcr.io/org/t", "1", DIGEST),
        (f"ghcr.io/org/t@{DIGEST}", "ghcr.io/org/t", None, DIGEST),
    ],
)
def test_image_references_split_into_name_tag_and_digest(
    image: str, name: str, tag: str | None, digest: str | None
) -> None:
    ref = parse_image(image)
    assert (ref.name, ref.tag, ref.digest) == (name, tag, digest)


@pytest.mark.parametrize(
    "image",
    ["", "ghcr.io/org/../evil", "ghcr.io/Org/x", "a b", "x:tag:tag", "x@sha256:abc", "ghcr.io//x", "x/"],
)
def test_malformed_image_references_are_refused(image: str) -> None:
    with pytest.raises(ValueError, match="not an image reference"):
        parse_image(image)
    refusal = policy(allowed_images="ghcr.io/").image_refusal("spec.image", image)
    assert refusal is not None
    assert refusal.reason == "ImageNotAllowed"
    assert refusal.message.startswith("spec.image: ")


def test_the_operators_own_images_and_no_image_are_always_allowed() -> None:
    p = policy(
        trainer_image="ghcr.io/me/trainer:1",
        vllm_image="v/gpu:1",
        vllm_cpu_image="v/cpu:1",
        serving_helpers_image="ghcr.io/me/helpers:1",
    )
    for image in (None, "ghcr.io/me/trainer:1", "v/gpu:1", "v/cpu:1", "ghcr.io/me/helpers:1"):
        assert p.image_refusal("spec.image", image) is None
    # Every *_image setting.
    assert sorted(p.own_images) == sorted(
        ["ghcr.io/me/trainer:1", "v/gpu:1", "v/cpu:1", "ghcr.io/me/helpers:1"]
    )
    # Exactly those: another tag of the same repository is not the operator's image.
    assert p.image_refusal("spec.image", "ghcr.io/me/trainer:2") is not None


@pytest.mark.parametrize(
    ("entry", "allowed", "refused"),
    [
        # A repository: any tag or digest of it, nothing that merely starts like it.
        (
            "ghcr.io/org/trainer",
            ["ghcr.io/org/trainer", "ghcr.io/org/trainer:2", f"ghcr.io/org/trainer@{DIGEST}"],
            ["ghcr.io/org/trainer-evil:1", "ghcr.io/org/trainer/sub:1", "ghcr.io/org/other:1"],
        ),
        # A prefix ending in /: every repository under it, at any depth.
        (
            "registry.example.com/team/",
            ["registry.example.com/team/a:1", "registry.example.com/team/x/y@" + DIGEST],
            [
                "registry.example.com/teamx/a:1",
                "registry.example.com/a:1",
                "evil.com/registry.example.com/team/a",
            ],
        ),
        # A tag: that tag only (with or without a digest beside it).
        (
            "ghcr.io/org/t:1.0",
            ["ghcr.io/org/t:1.0", f"ghcr.io/org/t:1.0@{DIGEST}"],
            ["ghcr.io/org/t:1.1", "ghcr.io/org/t"],
        ),
        # A digest: that content only.
        (
            f"ghcr.io/org/t@{DIGEST}",
            [f"ghcr.io/org/t@{DIGEST}", f"ghcr.io/org/t:any@{DIGEST}"],
            ["ghcr.io/org/t:1", "ghcr.io/org/t@sha256:" + "b" * 64, f"ghcr.io/org/u@{DIGEST}"],
        ),
    ],
)
def test_allow_list_entries(entry: str, allowed: list[str], refused: list[str]) -> None:
    p = policy(allowed_images=f" {entry} ,")
    for image in allowed:
        assert p.image_refusal("spec.trainerImage", image) is None, image
    for image in refused:
        refusal = p.image_refusal("spec.trainerImage", image)
        assert refusal is not None, image
        assert refusal.permanent


def test_image_refusal_names_the_field_the_value_and_what_the_admin_allows() -> None:
    p = policy(allowed_images="registry.example.com/team/", trainer_image="ghcr.io/me/trainer:1")
    refusal = p.image_refusal("spec.trainerImage", "evil.example/miner:latest")
    assert refusal is not None
    assert refusal.reason == "ImageNotAllowed"
    assert "spec.trainerImage 'evil.example/miner:latest' is not allowed" in refusal.message
    assert "ghcr.io/me/trainer:1" in refusal.message
    assert "registry.example.com/team/" in refusal.message
    only_own = policy().image_refusal("spec.image", "evil.example/x:1")
    assert only_own is not None
    assert "allows only the operator's own images" in only_own.message


@pytest.mark.parametrize("entries", ["not an image", "ghcr.io/x@sha256:short", "UPPER/", "a,,b c"])
def test_malformed_allow_list_is_a_configuration_error(entries: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message names the entry; checked below
        parse_allowed_images(entries)
    with pytest.raises(ValidationError, match="allowed"):
        OperatorConfig(allowed_images=entries)


def test_allow_list_from_the_environment() -> None:
    config = OperatorConfig.from_env(
        {"RFT_ALLOWED_IMAGES": "a.io/x/,b.io/y", "RFT_SERVICE_ACCOUNT_CHECK": "false"}
    )
    assert [e.text for e in parse_allowed_images(config.allowed_images)] == ["a.io/x/", "b.io/y"]
    assert config.service_account_check is False


# --- ServiceAccounts ------------------------------------------------------------------------------
def test_labelled_service_account_is_allowed() -> None:
    accounts = Accounts({"rft-trainer": {LABEL: "true"}})
    assert check(policy(), accounts, "rft-trainer") is None
    assert accounts.reads == 1


@pytest.mark.parametrize("labels", [{}, {LABEL: "false"}, {LABEL: "True"}, {"other.io/workload": "true"}])
def test_unlabelled_service_account_is_refused(labels: dict[str, str]) -> None:
    refusal = check(policy(), Accounts({"reader": labels}), "reader")
    assert refusal is not None
    assert refusal.reason == "ServiceAccountNotAllowed"
    assert refusal.permanent
    assert "spec.serviceAccountName 'reader' is not allowed" in refusal.message
    assert f'{LABEL}="true"' in refusal.message


def test_the_default_service_account_needs_the_label_too() -> None:
    assert check(policy(), Accounts({"default": {}}), "default").reason == "ServiceAccountNotAllowed"
    assert check(policy(), Accounts({"default": {LABEL: "true"}}), "default") is None


def test_the_label_key_is_the_admins() -> None:
    accounts = Accounts({"a": {"example.com/rft": "true"}, "b": {LABEL: "true"}})
    p = policy(service_account_label="example.com/rft")
    assert check(p, accounts, "a") is None
    refusal = check(p, accounts, "b")
    assert refusal is not None
    assert 'example.com/rft="true"' in refusal.message


def test_check_switched_off_reads_nothing() -> None:
    accounts = Accounts({})
    assert check(policy(service_account_check=False), accounts, "anything") is None
    assert accounts.reads == 0


def test_missing_service_account_is_waited_for_then_fails() -> None:
    p = policy(service_account_wait_seconds=60)
    young = check(p, Accounts({}), "later", age=10)
    assert young is not None
    assert (young.reason, young.permanent) == ("ServiceAccountNotFound", False)
    assert "waiting for ServiceAccount 'later'" in young.message
    old = check(p, Accounts({}), "later", age=61)
    assert (old.reason, old.permanent) == ("ServiceAccountNotFound", True)
    assert "spec.serviceAccountName 'later': no such ServiceAccount in namespace team" in old.message


def test_image_is_checked_before_the_service_account_is_read() -> None:
    accounts = Accounts({})
    refusal = check(policy(), accounts, "missing", image="evil.example/x:1")
    assert refusal is not None
    assert refusal.reason == "ImageNotAllowed"
    assert accounts.reads == 0
