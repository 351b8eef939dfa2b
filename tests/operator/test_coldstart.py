"""The cold-start breakdown of a server replica, read from its pod's status timestamps."""

from __future__ import annotations

from typing import Any

from rft_operator.builders.serving import FETCH_CONTAINER, SERVER_CONTAINER
from rft_operator.coldstart import cold_start, describe


def _pod(ready: bool = True) -> dict[str, Any]:
    conditions = [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-12-06T10:00:02Z"},
        {
            "type": "Ready",
            "status": "True" if ready else "False",
            "lastTransitionTime": "2026-12-06T10:01:30Z",
        },
    ]
    return {
        "metadata": {"name": "base-server-abc", "creationTimestamp": "2026-12-06T10:00:00Z"},
        "spec": {"nodeName": "rft-local"},
        "status": {
            "conditions": conditions,
            "initContainerStatuses": [
                {
                    "name": FETCH_CONTAINER,
                    "state": {
                        "terminated": {
                            "exitCode": 0,
                            "startedAt": "2026-12-06T10:00:03Z",
                            "finishedAt": "2026-12-06T10:00:10Z",
                            "message": '{"event": "fetched", "files": 6, "bytes": 16777216, "seconds": 6.25}',
                        }
                    },
                }
            ],
            "containerStatuses": [
                {"name": SERVER_CONTAINER, "state": {"running": {"startedAt": "2026-12-06T10:00:11Z"}}},
                {"name": "adapter-loader", "state": {"running": {"startedAt": "2026-12-06T10:00:11Z"}}},
            ],
        },
    }


def test_the_time_to_ready_is_split_into_schedule_fetch_and_start() -> None:
    cold = cold_start(_pod(), FETCH_CONTAINER, SERVER_CONTAINER)
    assert cold is not None
    assert (cold.pod, cold.node) == ("base-server-abc", "rft-local")
    # The fetch's own measure, finer than the timestamps (7 s), and what it fetched.
    timings = (cold.schedule_seconds, cold.fetch_seconds, cold.start_seconds, cold.total_seconds)
    assert timings == (2, 6.25, 79, 90)
    assert cold.fetch_bytes == 16 * 2**20
    assert describe(cold) == (
        "pod base-server-abc ready 90s after creation: scheduled in 2s, model fetched in 6.2s (16.0 MiB), "
        "server loaded and serving in 79s"
    )
    assert cold.to_wire()["readyAt"] == "2026-12-06T10:01:30Z"


def test_without_the_fetch_s_report_the_timestamps_tell() -> None:
    pod = _pod()
    pod["status"]["initContainerStatuses"][0]["state"]["terminated"]["message"] = "not json"
    cold = cold_start(pod, FETCH_CONTAINER, SERVER_CONTAINER)
    assert cold is not None
    assert (cold.fetch_seconds, cold.fetch_bytes) == (7, None)


def test_a_replica_not_ready_or_without_timestamps_has_none() -> None:
    assert cold_start(_pod(ready=False), FETCH_CONTAINER, SERVER_CONTAINER) is None
    running_init = _pod()
    running_init["status"]["initContainerStatuses"][0]["state"] = {
        "running": {"startedAt": "2026-12-06T10:00:03Z"}
    }
    assert cold_start(running_init, FETCH_CONTAINER, SERVER_CONTAINER) is None
    garbled = _pod()
    garbled["metadata"]["creationTimestamp"] = "yesterday"
    assert cold_start(garbled, FETCH_CONTAINER, SERVER_CONTAINER) is None
