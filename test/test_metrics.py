"""The metrics endpoint's collector in process: every metric is read from the typed status the supervisor last
published (the subprocess test in test_operator.py scrapes a real daemon over HTTP)."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from livereduce.engines.base import CycleCompleted
from livereduce.metrics import Metrics
from livereduce.status import EngineStatus, Status


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_metrics_are_read_from_the_typed_status() -> None:
    status = Status(
        version="2.0.0",
        state="connecting",
        update_every=2.0,
        engine=EngineStatus(
            name="scipp",
            state="connecting",
            chunks=4,
            events=1000,
            errors=1,
            run_number=7,
            dropped_events={"event_id negative": 3},
            source_counters={"pulses": 60, "buffered_bytes": 4096, "offset_lag": 12},
            last_cycle_end=1.0,
            lag=95.5,
            lagging="the data arrives late",
            offset_lag={"SANS2D_events[0]": 12},
        ),
        restarts={"scripts": 1, "failures": 2},
        rss_bytes=123,
        memory_limit_bytes=None,
        log_records_lost=5,
    )
    metrics = Metrics(lambda: status, "SANS2D")
    metrics.cycle(CycleCompleted(duration=0.3, failed="proc", lag=95.5))
    shown = samples(metrics)
    assert shown[("livereduce_info", (("engine", "scipp"), ("instrument", "SANS2D"), ("version", "2.0.0")))] == 1
    assert shown[("livereduce_state", (("livereduce_state", "connecting"),))] == 1
    assert shown[("livereduce_state", (("livereduce_state", "running"),))] == 0
    assert shown[("livereduce_engine_state", (("livereduce_engine_state", "connecting"),))] == 1
    assert shown[("livereduce_chunks_total", ())] == 4
    assert shown[("livereduce_events_received_total", ())] == 1000
    assert shown[("livereduce_cycle_errors_total", ())] == 1
    assert shown[("livereduce_events_dropped_total", (("reason", "event_id negative"),))] == 3
    assert shown[("livereduce_source_count_total", (("counter", "pulses"),))] == 60
    assert ("livereduce_source_count_total", (("counter", "buffered_bytes"),)) not in shown  # a level, not a count
    assert shown[("livereduce_source_level", (("level", "buffered_bytes"),))] == 4096
    assert shown[("livereduce_source_level", (("level", "offset_lag"),))] == 12
    assert shown[("livereduce_lag_seconds", ())] == 95.5
    assert shown[("livereduce_lagging", ())] == 1
    assert shown[("livereduce_cycle_lag_seconds_bucket", (("le", "120.0"),))] == 1
    assert shown[("livereduce_cycle_lag_seconds_bucket", (("le", "60.0"),))] == 0
    assert shown[("livereduce_kafka_offset_lag", (("partition", "SANS2D_events[0]"),))] == 12
    assert shown[("livereduce_engine_restarts_total", (("reason", "failures"),))] == 2
    assert shown[("livereduce_run_number", ())] == 7
    assert shown[("livereduce_update_every_seconds", ())] == 2
    assert shown[("livereduce_rss_bytes", ())] == 123
    assert shown[("livereduce_log_records_lost_total", ())] == 5
    assert shown[("livereduce_last_cycle_end_timestamp_seconds", ())] == 1
    assert shown[("livereduce_script_errors_total", (("script", "proc"),))] == 1
    assert shown[("livereduce_cycle_duration_seconds_count", ())] == 1
    assert not any(name == "livereduce_memory_limit_bytes" for name, _ in shown)  # no limit: no sample


def test_a_scrape_before_the_first_status_is_published() -> None:
    shown = samples(Metrics(lambda: None, "SANS2D"))
    assert shown[("livereduce_chunks_total", ())] == 0
    assert not any(value for (name, _), value in shown.items() if name == "livereduce_state")
    assert not any(name == "livereduce_last_cycle_age_seconds" for name, _ in shown)
