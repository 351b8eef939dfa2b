"""The autoscaler's decision (pure) and its reading of vLLM's Prometheus text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rft_operator.autoscale import Decision, Load, ScaleState, decide, recommend, requests_in_flight

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
WINDOW = 300


def step(previous: ScaleState | None, load: Load | None, at: float = 0, **bounds: Any) -> Decision:
    """One decision `at` seconds after T0, with min 1, max 4, target 4 unless `bounds` say otherwise."""
    options: dict[str, Any] = {"lowest": 1, "highest": 4, "target": 4, "delay_seconds": WINDOW, **bounds}
    return decide(previous, load=load, now=T0 + timedelta(seconds=at), **options)


def test_recommendation_is_ceil_of_in_flight_over_target_within_the_bounds() -> None:
    assert recommend(0, 4, 1, 4) == 1
    assert recommend(4, 4, 1, 4) == 1
    assert recommend(4.5, 4, 1, 4) == 2
    assert recommend(7, 4, 1, 4) == 2
    assert recommend(100, 4, 1, 4) == 4
    assert recommend(0, 4, 0, 4) == 0


def test_the_first_decision_is_min_replica_count() -> None:
    assert step(None, None).state == ScaleState(1)
    assert step(None, None, lowest=2).state == ScaleState(2)


def test_scale_up_is_immediate_and_names_the_load() -> None:
    decision = step(ScaleState(1), Load(7))
    assert decision.state == ScaleState(2)
    assert decision.reason == "7 requests in flight, target 4 per replica"
    assert step(ScaleState(1), Load(1000)).state == ScaleState(4), "clamped to maxReplicaCount"


def test_scale_up_cancels_a_pending_scale_down() -> None:
    pending = ScaleState(3, T0, 1)
    assert step(pending, Load(16), at=WINDOW).state == ScaleState(4)
    assert step(pending, Load(12), at=WINDOW).state == ScaleState(3), "the load calls for 3 again"


def test_scale_down_waits_for_the_whole_window() -> None:
    first = step(ScaleState(2), Load(0))
    assert first.state == ScaleState(2, T0, 1)
    assert first.reason == ""
    held = step(first.state, Load(1), at=WINDOW - 1)
    assert held.state == ScaleState(2, T0, 1), "still inside the window: the start does not move"
    down = step(held.state, Load(0), at=WINDOW)
    assert down.state == ScaleState(1)
    assert down.reason == (
        "0 requests in flight, target 4 per replica; no more than 1 called for since 2026-01-01T12:00:00Z"
    )


def test_scale_down_goes_to_the_most_called_for_in_the_window() -> None:
    state = step(ScaleState(4), Load(0)).state
    state = step(state, Load(9), at=100).state  # 3 replicas' worth for a moment
    assert state == ScaleState(4, T0, 3)
    after = step(state, Load(0), at=WINDOW).state
    # Down to 3; the load calls for 1 now, so the next window starts at once.
    assert after == ScaleState(3, T0 + timedelta(seconds=WINDOW), 1)
    assert step(after, Load(0), at=2 * WINDOW).state == ScaleState(1)


def test_a_load_that_comes_back_resets_the_window() -> None:
    state = step(ScaleState(2), Load(0)).state
    state = step(state, Load(5), at=200).state  # 2 replicas' worth again
    assert state == ScaleState(2)
    state = step(state, Load(0), at=250).state
    assert state == ScaleState(2, T0 + timedelta(seconds=250), 1)
    assert step(state, Load(0), at=WINDOW + 100).state.desired == 2, "only 250 s of the new window"


def test_no_scale_down_on_missing_metrics() -> None:
    state = ScaleState(2, T0, 1)
    # One replica was not read: it may carry the load that keeps it. Hold, well past the window.
    held = step(state, Load(0, unread=1), at=10 * WINDOW)
    assert held.state == state
    assert held.reason == ""
    assert step(ScaleState(2), Load(0, unread=2), at=WINDOW).state == ScaleState(2), "no window starts"


def test_scale_up_on_what_was_read_even_with_missing_metrics() -> None:
    decision = step(ScaleState(1), Load(10, unread=1))
    assert decision.state == ScaleState(3)
    assert decision.reason == "10 requests in flight, target 4 per replica (1 replica(s) not read)"


def test_no_window_scales_down_at_once() -> None:
    assert step(ScaleState(3), Load(0), delay_seconds=0).state == ScaleState(1)


def test_equal_bounds_decide_alone() -> None:
    assert step(ScaleState(3, T0, 1), None, lowest=2, highest=2).state == ScaleState(2)
    assert step(None, None, lowest=2, highest=2).state == ScaleState(2)


def test_changed_bounds_clamp_at_once_and_say_why() -> None:
    lowered = step(ScaleState(4), Load(100), highest=2)
    assert lowered.state == ScaleState(2)
    assert lowered.reason == "maxReplicaCount is 2"
    raised = step(ScaleState(1, T0, 1), Load(0), lowest=3)
    assert raised.state == ScaleState(3)
    assert raised.reason == "minReplicaCount is 3"


def test_min_zero_stays_at_zero_without_replicas_to_read() -> None:
    # Scaling up from zero needs a signal from outside the servers; with none, zero stays zero.
    assert step(None, Load(0), lowest=0).state == ScaleState(0)
    assert step(ScaleState(0), Load(0), lowest=0).state == ScaleState(0)


# vLLM's /metrics (v1 engine, abridged): counters, histograms, the two gauges labelled by
# model_name and engine (two engines here), and the waiting requests again by reason (not to be
# counted twice).
VLLM_METRICS = """\
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 9634.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="qwen"} 3.0
vllm:num_requests_running{engine="1",model_name="qwen"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="qwen"} 1.0
vllm:num_requests_waiting{engine="1",model_name="qwen"} 0.0
# HELP vllm:num_requests_waiting_by_reason Number of waiting requests by reason. Sum of all reasons equals vllm:num_requests_waiting.
# TYPE vllm:num_requests_waiting_by_reason gauge
vllm:num_requests_waiting_by_reason{engine="0",model_name="qwen",reason="capacity"} 1.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="qwen",reason="deferred"} 0.0
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="qwen"} 12.0
# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.3",model_name="qwen"} 4.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="qwen"} 12.0
vllm:e2e_request_latency_seconds_count{engine="0",model_name="qwen"} 12.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="qwen"} 7.5
"""


def test_in_flight_sums_running_and_waiting_over_label_sets() -> None:
    assert requests_in_flight(VLLM_METRICS) == 3 + 2 + 1 + 0


def test_metrics_without_the_gauges_are_no_reading() -> None:
    with pytest.raises(ValueError, match="no vllm:num_requests_running"):
        requests_in_flight("# TYPE up gauge\nup 1\n")
    with pytest.raises(ValueError, match="no vllm:num_requests_running"):
        requests_in_flight("")
