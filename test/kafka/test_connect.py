"""Connecting to Kafka without a broker (defect 6): ``interrupt()`` ends a ``connect()`` in progress within half a
second, whether nobody listens at the address or a server accepts the connection and never answers; the
``Connecting to Kafka`` line names only the settings the site set."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from conftest import poll_until
from livereduce.config import Config
from livereduce.engines.scipp.listeners.kafka import KafkaEventListener
from livereduce.errors import SourceError

from .conftest import free_port

PROMPT_S = 0.5


@pytest.fixture
def silent_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP server on 127.0.0.1 that accepts connections and never answers: (port, connections accepted)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)
    accepted: list[socket.socket] = []
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    done.set()
    thread.join()
    for connection in [server, *accepted]:
        connection.close()


def kafka_listener(port: int, **keys: object) -> KafkaEventListener:
    return KafkaEventListener(
        Config(instrument="SANS2D", listener="KafkaEventListener", address=f"127.0.0.1:{port}", **keys)
    )


def connect_in_background(source: KafkaEventListener) -> tuple[threading.Thread, dict[str, object]]:
    """``source.connect()`` on a thread; the outcome (``error``, ``ended`` monotonic time) lands in the dict."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            source.connect()
        except SourceError as err:
            outcome["error"] = err
        outcome["ended"] = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("peer", ["nobody listening", "a server that never answers"])
def test_interrupt_ends_a_connect_in_progress_promptly(
    peer: str, silent_server: tuple[int, list[socket.socket]], caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="livereduce")
    port, accepted = silent_server if peer != "nobody listening" else (free_port(), [])
    source = kafka_listener(port)
    thread, outcome = connect_in_background(source)
    if accepted is silent_server[1]:
        poll_until(lambda: accepted, "librdkafka to connect to the silent server", timeout=10)
    else:
        poll_until(lambda: "Connecting to Kafka" in caplog.text, "connect() to begin", timeout=10)
    interrupted = time.monotonic()
    source.interrupt()
    thread.join(5)
    assert not thread.is_alive()
    assert outcome["ended"] - interrupted < PROMPT_S  # before: the metadata request waited its 10 s
    assert "interrupted" in str(outcome["error"])
    assert outcome["error"].recoverable
    with pytest.raises(SourceError, match="interrupted"):
        source.start("now")
    source.disconnect()


def test_the_connecting_line_names_the_address_and_only_the_site_settings(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="livereduce")
    kafka = {"client.id": "site", "sasl.password": "hunter2"}
    port = free_port()
    for keys in ({}, {"kafka": kafka}):
        source = kafka_listener(port, **keys)
        thread, _ = connect_in_background(source)
        poll_until(lambda: "Connecting to Kafka" in caplog.text, "connect() to begin", timeout=10)
        source.interrupt()
        thread.join(5)
        source.disconnect()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Connecting to Kafka")]
    assert lines == [
        f"Connecting to Kafka at 127.0.0.1:{port}",
        f"Connecting to Kafka at 127.0.0.1:{port} (client.id=site, sasl.password=***)",
    ]
