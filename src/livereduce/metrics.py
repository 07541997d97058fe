"""Prometheus metrics of the daemon, for the facility's monitoring: ``/metrics`` of the daemon's web server
(``http_port``, or its alias ``metrics_port``; off by default), in the text exposition format, by
``prometheus-client``'s encoders (:mod:`livereduce.web.server`); its URL is ``metrics_url`` in the status.

A state set's label is named after the metric, as prometheus-client writes it:
``livereduce_engine_state{livereduce_engine_state="idle"} 1``.

Most metrics are read at scrape time from the status the supervisor last published (once a second and at every
change of state, see :mod:`livereduce.status`), so the scrape never touches the engine. Two are observed per
cycle, because a once-a-second status cannot see every cycle: the cycle-duration histogram and the script errors.

| metric | type | labels | meaning |
|---|---|---|---|
| ``livereduce_info`` | info | version, engine, instrument | constant 1 |
| ``livereduce_state`` | state set | livereduce_state | the supervisor's state (``running``, ``connecting``, ...) |
| ``livereduce_engine_state`` | state set | livereduce_engine_state | the engine's (``running``, ``idle``, ...) |
| ``livereduce_chunks_total`` | counter | | cycles completed since the daemon started |
| ``livereduce_events_received_total`` | counter | | events the source delivered (after dropping) |
| ``livereduce_events_accumulated`` | gauge | | events in the accumulation (0 for histograms) |
| ``livereduce_events_dropped_total`` | counter | reason | events dropped at the source |
| ``livereduce_cycle_errors_total`` | counter | | cycles that ended with an error |
| ``livereduce_script_errors_total`` | counter | script | failed cycles by step: proc, post_proc, accumulate |
| ``livereduce_cycle_duration_seconds`` | histogram | | duration of each cycle (scipp engine) |
| ``livereduce_lag_seconds`` | gauge | | newest pulse accumulated to its cycle's output (absent while unknown) |
| ``livereduce_cycle_lag_seconds`` | histogram | | the lag after each cycle (scipp engine) |
| ``livereduce_lagging`` | gauge | | 1 while live data falls behind real time (the log says why) |
| ``livereduce_kafka_offset_lag`` | gauge | partition | messages between the consumer and each partition's end |
| ``livereduce_engine_restarts_total`` | counter | reason | scripts, memory, failures, signals, watcher |
| ``livereduce_script_reloads_total`` | counter | role | post_proc (edits applied without a restart) |
| ``livereduce_rss_bytes`` | gauge | | resident memory with children |
| ``livereduce_memory_limit_bytes`` | gauge | | the memory limit (absent without one) |
| ``livereduce_last_cycle_end_timestamp_seconds`` | gauge | | Unix time of the last completed cycle |
| ``livereduce_last_cycle_age_seconds`` | gauge | | seconds since then (absent before the first) |
| ``livereduce_update_every_seconds`` | gauge | | the configured ``update_every`` |
| ``livereduce_run_number`` | gauge | | run of the last chunk (0: none) |
| ``livereduce_source_healthy`` | gauge | | 1 while the source delivers as it should |
| ``livereduce_source_count_total`` | counter | counter | the source's own counters (bytes, packets, ...) |
| ``livereduce_source_level`` | gauge | level | ``buffered_bytes``, ``buffer_limit_bytes``, ``offset_lag`` now |
| ``livereduce_log_records_lost_total`` | counter | | log records a failing handler could not write |
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, StateSetMetricFamily
from prometheus_client.registry import Collector

from livereduce.engines.base import CycleCompleted
from livereduce.status import EngineStatus, Status

_log = logging.getLogger("livereduce")

CYCLE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
"""Upper bounds (seconds) of the cycle-duration histogram's buckets."""
LAG_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
"""Upper bounds (seconds) of the lag histogram's buckets."""
STEPS = ("proc", "post_proc", "accumulate")
SUPERVISOR_STATES = (
    "starting",
    "connecting",
    "running",
    "reloading",
    "backing off",
    "waiting for scripts",
    "stopping",
    "stopped",
    "stop timed out",
)
SOURCE_LEVELS = frozenset({"buffered_bytes", "buffer_limit_bytes", "offset_lag"})
"""Entries of a source's counters that are levels (they go down as well as up): gauges, not counters."""
ENGINE_STATES = ("starting", "connecting", "running", "idle", "finished", "failed", "stopped")


class Metrics:
    """The daemon's metrics and their HTTP endpoint.

    Args:
        status: returns the status the supervisor last published (None before the first).
        instrument: the instrument's name (a label of ``livereduce_info``).
    """

    def __init__(self, status: Callable[[], Status | None], instrument: str) -> None:
        self.registry = CollectorRegistry()
        self._cycle_seconds = Histogram(
            "livereduce_cycle_duration_seconds",
            "Duration of each cycle (extract, proc, accumulate, post_proc)",
            buckets=CYCLE_BUCKETS,
            registry=self.registry,
        )
        self._lag_seconds = Histogram(
            "livereduce_cycle_lag_seconds",
            "Lag after each cycle: its output time minus the newest pulse accumulated",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self._script_errors = Counter(
            "livereduce_script_errors",
            "Cycles that failed, by the step that failed",
            ["script"],
            registry=self.registry,
        )
        for step in STEPS:
            self._script_errors.labels(step)
        self.registry.register(_StatusCollector(status, instrument))

    def cycle(self, done: CycleCompleted) -> None:
        """Record one completed cycle."""
        if done.duration is not None:
            self._cycle_seconds.observe(done.duration)
        if done.failed is not None:
            self._script_errors.labels(done.failed).inc()
        if done.lag is not None:
            self._lag_seconds.observe(done.lag)


class _StatusCollector(Collector):
    """Metrics made from the last published status at each scrape."""

    def __init__(self, status: Callable[[], Status | None], instrument: str) -> None:
        self._status = status
        self._instrument = instrument

    def collect(self) -> Iterator[Any]:
        status = self._status() or Status()
        engine = status.engine or EngineStatus()
        info = InfoMetricFamily("livereduce", "The daemon")
        info.add_metric([], {"version": status.version, "engine": engine.name, "instrument": self._instrument})
        yield info
        yield _states("livereduce_state", "The supervisor's state", SUPERVISOR_STATES, status.state)
        yield _states("livereduce_engine_state", "The engine's state", ENGINE_STATES, engine.state)
        yield CounterMetricFamily("livereduce_chunks", "Cycles completed since the daemon started", value=engine.chunks)
        yield CounterMetricFamily("livereduce_events_received", "Events the source delivered", value=engine.events)
        yield GaugeMetricFamily(
            "livereduce_events_accumulated", "Events in the accumulation", value=engine.accumulated_events
        )
        yield _labelled("livereduce_events_dropped", "Events dropped at the source", "reason", engine.dropped_events)
        yield CounterMetricFamily("livereduce_cycle_errors", "Cycles that ended with an error", value=engine.errors)
        yield _labelled("livereduce_engine_restarts", "Engine restarts by reason", "reason", status.restarts)
        yield _labelled("livereduce_script_reloads", "Script edits applied without a restart", "role", status.reloads)
        yield GaugeMetricFamily(
            "livereduce_rss_bytes", "Resident memory of the daemon and its children", value=status.rss_bytes or 0
        )
        if status.memory_limit_bytes is not None:
            yield GaugeMetricFamily(
                "livereduce_memory_limit_bytes", "The memory limit", value=status.memory_limit_bytes
            )
        last = engine.last_cycle_end
        if last is not None:
            yield GaugeMetricFamily(
                "livereduce_last_cycle_end_timestamp_seconds", "Unix time of the last completed cycle", value=last
            )
            yield GaugeMetricFamily(
                "livereduce_last_cycle_age_seconds", "Seconds since the last completed cycle", value=time.time() - last
            )
        yield GaugeMetricFamily(
            "livereduce_update_every_seconds", "The configured update_every", value=status.update_every or 0
        )
        yield GaugeMetricFamily("livereduce_run_number", "Run of the last chunk (0: none)", value=engine.run_number)
        yield GaugeMetricFamily(
            "livereduce_source_healthy", "1 while the source delivers", value=int(engine.source_healthy)
        )
        counts = {k: v for k, v in engine.source_counters.items() if k not in SOURCE_LEVELS}
        yield _labelled("livereduce_source_count", "The source's own counters", "counter", counts)
        levels = GaugeMetricFamily("livereduce_source_level", "The source's levels (held now)", labels=["level"])
        for name, value in engine.source_counters.items():
            if name in SOURCE_LEVELS:
                levels.add_metric([name], value)
        yield levels
        if engine.lag is not None:
            yield GaugeMetricFamily(
                "livereduce_lag_seconds", "Newest pulse accumulated to its cycle's output", value=engine.lag
            )
        yield GaugeMetricFamily(
            "livereduce_lagging", "1 while live data falls behind real time", value=int(bool(engine.lagging))
        )
        offsets = GaugeMetricFamily(
            "livereduce_kafka_offset_lag", "Messages between the consumer and the partition's end", labels=["partition"]
        )
        for partition, behind in engine.offset_lag.items():
            offsets.add_metric([partition], behind)
        yield offsets
        yield CounterMetricFamily(
            "livereduce_log_records_lost", "Log records that could not be written", value=status.log_records_lost
        )


def _labelled(name: str, documentation: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value_label, value in values.items():
        family.add_metric([value_label], value)
    return family


def _states(name: str, documentation: str, states: tuple[str, ...], current: str) -> StateSetMetricFamily:
    known = dict.fromkeys(states, False)
    if current:
        known[current] = True
    return StateSetMetricFamily(name, documentation, value=known)
