"""Lease-based leader election against the real apiserver: one leader, takeover after expiry."""

from __future__ import annotations

import time

import pytest
from rft_devcluster.handle import ClusterHandle
from rft_operator.leader import LeaderElector

pytestmark = pytest.mark.cluster


def test_only_one_candidate_leads_and_another_takes_over_after_expiry(
    cluster: ClusterHandle, namespace: str
) -> None:
    api = cluster.api_client()
    a = LeaderElector(api, namespace, identity="replica-a", lease_seconds=3, renew_seconds=1)
    b = LeaderElector(api, namespace, identity="replica-b", lease_seconds=3, renew_seconds=1)
    assert a.try_acquire_or_renew() is True
    assert b.try_acquire_or_renew() is False, "a live lease is not taken over"
    assert a.try_acquire_or_renew() is True, "the holder renews"
    time.sleep(3.5)  # a stops renewing: the lease expires
    assert b.try_acquire_or_renew() is True
    assert a.try_acquire_or_renew() is False
    lease = cluster.kubectl(
        "get",
        "lease",
        "rft-operator",
        "-n",
        namespace,
        "-o",
        "jsonpath={.spec.holderIdentity} {.spec.leaseTransitions}",
    ).stdout
    assert lease == "replica-b 1"
