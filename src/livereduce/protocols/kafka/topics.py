"""Topic names and client settings.

Topic names follow Mantid's KafkaEventListener (``KafkaEventListener.cpp``, suffix constants): the instrument
name followed by ``_events`` (neutron events), ``_runInfo`` (run start/stop), ``_sampleEnv`` (logs) and
``_monitors`` (beam-monitor events), each overridable by role with the ``topics`` configuration key: a name, a
list of names (ESS instruments spread detector banks and logs over several topics), or null (not read).

Client settings: librdkafka's names (``CONFIGURATION.md`` of librdkafka), defaults chosen here (below), then the
site's own from the ``kafka`` configuration key, which win. Values of settings that hold secrets are never
logged (:func:`redacted`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Literal

Role = Literal["events", "runInfo", "sampleEnv", "monitors"]
ROLES: tuple[Role, ...] = ("events", "runInfo", "sampleEnv", "monitors")
REQUIRED_ROLES: tuple[Role, ...] = ("events", "runInfo")
"""Topics that must exist; ``sampleEnv`` and ``monitors`` are read if present."""

MAX_MESSAGE_BYTES = 25_000_000
"""Largest message decoded; a larger one is skipped and counted (``skipped_too_large``). Mantid sets librdkafka's
``fetch.message.max.bytes`` to 25,000,000 (a later copy of its ``KafkaTopicSubscriber.cpp``: 200,000,000), which
is no limit on what it reads: librdkafka grows a fetch for a larger message."""
RECEIVE_MAX_BYTES = 200_000_512
"""librdkafka's ``receive.message.max.bytes``: the largest message that can be received at all (esslivedata's
consumers allow the same 200 MB + 512). A message larger than this could never be received, and the partition would
stall behind it; up to it, a message over :data:`MAX_MESSAGE_BYTES` is received, skipped and counted."""

Settings = dict[str, str | int | float | bool]

_SECRET = re.compile(r"password|secret|token|jaas|credential|\.key\b|key\.pem|keystore|sasl\.username", re.IGNORECASE)
"""Setting names whose values are never logged (SASL passwords and users, OAuth secrets, TLS keys, keystores)."""


def topic_lists(
    instrument: str, overrides: Mapping[str, str | Sequence[str] | None] | None
) -> dict[Role, tuple[str, ...]]:
    """The topics a listener reads for each role: ``<instrument>_<role>`` unless ``overrides`` (the ``topics``
    configuration key) names one topic, a list of topics (ESS: one per detector bank), or None (the role is not
    read: ``runInfo`` None means the stream has no run information); the empty tuple for a role not read."""
    chosen = dict(overrides or {})
    lists: dict[Role, tuple[str, ...]] = {}
    for role in ROLES:
        named = chosen.get(role, f"{instrument}_{role}")
        lists[role] = () if named is None else (named,) if isinstance(named, str) else tuple(named)
    return lists


def topic_names(instrument: str, overrides: Mapping[str, str] | None) -> dict[Role, str]:
    """The topic of each role: ``<instrument>_<role>`` unless ``overrides`` names it.

    Args:
        instrument: the instrument's name as the topics spell it (e.g. ``SANS2D``, ``LOKI``).
        overrides: the ``topics`` configuration key (role -> topic), or None.
    """
    chosen = dict(overrides or {})
    return {role: chosen.get(role) or f"{instrument}_{role}" for role in ROLES}


def consumer_settings(address: str, site: Mapping[str, str | int | float | bool] | None, queue_kib: int) -> Settings:
    """librdkafka consumer settings for a listener that assigns partitions itself and never commits.

    Args:
        address: ``bootstrap.servers`` (``host:port[,host:port...]``).
        site: the ``kafka`` configuration key (security protocol, SASL, TLS, ...); wins over the defaults.
        queue_kib: ``queued.max.messages.kbytes``: how much librdkafka may prefetch (bounds its memory).

    Defaults: ``group.id`` is required by the client but unused (no subscribe, no commits, no group join);
    ``fetch.wait.max.ms`` 100 (at the end of a partition the broker answers within 0.1 s instead of 0.5 s);
    fetches of 25 MB per partition and 50 MB in all, and messages up to :data:`RECEIVE_MAX_BYTES` received (those
    over :data:`MAX_MESSAGE_BYTES` are then skipped, not stalled behind); ``auto.offset.reset`` earliest (a
    position lost to retention continues with the oldest data kept); partition EOF events (the run-stop logic
    needs them); statistics every second (broker states for the health report).
    """
    settings: Settings = {
        "bootstrap.servers": address,
        "group.id": "livereduce",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 100,
        "fetch.message.max.bytes": MAX_MESSAGE_BYTES,
        "fetch.max.bytes": 2 * MAX_MESSAGE_BYTES,
        "receive.message.max.bytes": RECEIVE_MAX_BYTES,
        "queued.max.messages.kbytes": max(1024, queue_kib),
        "statistics.interval.ms": 1000,
        "client.id": "livereduce",
        "log_level": 2,
    }
    settings.update(site or {})
    return settings


def producer_settings(address: str, site: Mapping[str, str | int | float | bool] | None) -> Settings:
    """librdkafka producer settings of ``livereduce-kafka-replay``: messages up to :data:`MAX_MESSAGE_BYTES`, then
    the site's settings."""
    settings: Settings = {
        "bootstrap.servers": address,
        "message.max.bytes": MAX_MESSAGE_BYTES,
        "linger.ms": 5,
        "client.id": "livereduce-kafka-replay",
    }
    settings.update(site or {})
    return settings


def broker_states(statistics: str) -> tuple[dict[str, int], bool]:
    """From librdkafka's statistics (JSON, ``statistics.interval.ms``; fields as in librdkafka's
    ``STATISTICS.md``): each broker's ``disconnects`` so far (connections lost, also those no error reported),
    and whether a broker the cluster named (``nodeid`` >= 0) is ``UP``. Malformed statistics: ({}, False)."""
    try:
        brokers = json.loads(statistics).get("brokers", {})
    except (ValueError, AttributeError):
        return {}, False
    brokers = {name: b for name, b in brokers.items() if isinstance(b, dict)} if isinstance(brokers, dict) else {}
    disconnects = {name: b["disconnects"] for name, b in brokers.items() if isinstance(b.get("disconnects"), int)}
    up = any(isinstance(b.get("nodeid"), int) and b["nodeid"] >= 0 and b.get("state") == "UP" for b in brokers.values())
    return disconnects, up


def redacted(settings: Mapping[str, object]) -> str:
    """Settings as ``key=value, ...`` for a log line, the values of secret settings replaced by ``***``.

    Callables (callbacks) and the logger object are left out.
    """
    shown = _masked(settings)
    return ", ".join(f"{key}={shown[key]}" for key in sorted(shown))


def without_secrets(configuration: Mapping[str, object]) -> dict[str, object]:
    """A configuration (as ``--print-config`` shows it) whose ``kafka`` settings hold no secret values."""
    shown = dict(configuration)
    if isinstance(shown.get("kafka"), Mapping):
        shown["kafka"] = _masked(shown["kafka"])
    return shown


def _masked(settings: Mapping[str, object]) -> dict[str, object]:
    return {
        key: "***" if _SECRET.search(key) else value
        for key, value in settings.items()
        if not callable(value) and key != "logger"
    }
