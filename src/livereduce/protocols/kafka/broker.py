"""Look-ups of a Kafka consumer that assigns its partitions itself (no group, no commits), for locating where to
read: watermarks, offsets for times, the messages of a partition between two offsets, the last run start of a
runInfo partition, the run start at an offset. Every request waits in slices of :data:`SLICE_S` and gives up when
a stop is asked (:class:`Stopped`), so that a broker that accepts the connection and never answers cannot hold a
stop up. The listener (``engines/scipp/listeners/kafka.py``) owns the consumer, its thread and the decoding.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Final, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from livereduce.clock import Clock
from livereduce.protocols.kafka.partitions import Key
from livereduce.protocols.kafka.positions import RunAt
from livereduce.protocols.kafka.runs import last_run_start
from livereduce.protocols.kafka.schemas import Decoded, RunStart, RunStop

_T = TypeVar("_T")

SLICE_S: Final = 0.25
"""Longest single wait in a librdkafka call: a stop is noticed within it."""
BATCH: Final = 1000
"""Most messages taken from the consumer at once."""
POLL_S: Final = 0.1
FIRST_SCAN: Final = 16
"""Messages read from the end of a runInfo partition first when looking for the last run start (then 4x more)."""


class Stopped(Exception):
    """A stop was asked while waiting for the broker."""


class Broker:
    """The look-ups of one consumer.

    Args:
        stopping: set when the waits must end (:class:`Stopped`).
        clock: the monotonic clock of the deadlines.
        timeout_s: how long one look-up may take in all, asked at each look-up (s).
        losses: broker connections lost so far (a partition read while it changes may mix two logs).
        run_record: a runInfo message decoded (a pl72 or 6s4t, or anything else it is not).

    Attributes:
        consumer: the consumer (set once it exists).
    """

    def __init__(
        self,
        stopping: threading.Event,
        clock: Clock,
        timeout_s: Callable[[], float],
        losses: Callable[[], int],
        run_record: Callable[[Message], object],
    ) -> None:
        self.consumer: Consumer | None = None
        self._stopping, self._clock, self._timeout_s = stopping, clock, timeout_s
        self._losses, self._run_record = losses, run_record

    def patiently(self, call: Callable[[float], _T | None]) -> _T:
        """``call(timeout)``, a librdkafka request, repeated with timeouts of ``SLICE_S`` until it answers (not
        None), a stop is asked, or ``timeout_s()`` pass.

        Raises:
            KafkaException: no answer in time (the last error).
            Stopped: a stop was asked.
        """
        timeout = self._timeout_s()
        deadline = self._clock.monotonic() + timeout
        error = KafkaException(KafkaError(KafkaError._TIMED_OUT, f"no answer within {timeout:g} s"))
        while not self._stopping.is_set():
            try:
                answer = call(SLICE_S)
            except KafkaException as err:
                error = err
            else:
                if answer is not None:
                    return answer
            if self._clock.monotonic() >= deadline:
                raise error
        raise Stopped

    def watermarks(self, key: Key) -> tuple[int, int]:
        """(low, high) offsets of a partition, asked of the broker (:meth:`patiently`)."""
        return self.patiently(lambda s: self.consumer.get_watermark_offsets(TopicPartition(*key), timeout=s))

    def offsets_for_times(self, times: dict[Key, int]) -> dict[Key, int]:
        """The first offset at or after each partition's time (ms; the broker's answer, see the listener's "Start"
        in ``docs/architecture.md``); partitions without a message after it are left out.

        Raises:
            KafkaException: a partition's answer is an error, or no answer in time.
            Stopped: a stop was asked.
        """
        lookups = [TopicPartition(topic, partition, ms) for (topic, partition), ms in times.items()]
        offsets = {}
        for answer in self.patiently(lambda s: self.consumer.offsets_for_times(lookups, timeout=s)):
            if answer.error is not None:
                raise KafkaException(answer.error)
            if answer.offset >= 0:
                offsets[answer.topic, answer.partition] = answer.offset
        return offsets

    def read_partition(self, key: Key, first: int, stop: int | None) -> tuple[list[Message], int]:
        """Messages of one partition from offset ``first`` up to ``stop`` (exclusive; None: to the partition's
        end), and the offset where reading ended (the consumer is left assigned to that partition alone).

        Raises:
            KafkaException: the partition's end was not reached within ``timeout_s()``, or a broker connection was
                lost meanwhile (what was read may mix two logs).
            Stopped: a stop was asked.
        """
        consumer = self.consumer
        consumer.assign([TopicPartition(*key, first)])
        found: list[Message] = []
        losses = self._losses()
        deadline = self._clock.monotonic() + self._timeout_s()
        while self._clock.monotonic() < deadline:
            if self._stopping.is_set():
                raise Stopped
            messages = consumer.consume(BATCH, POLL_S)
            if self._losses() != losses:
                raise KafkaException(KafkaError(KafkaError._TRANSPORT, "a broker connection was lost meanwhile"))
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        return found, message.offset()
                    raise KafkaException(error)
                if stop is not None and message.offset() >= stop:
                    return found, stop
                found.append(message)
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"reading {key[0]} [{key[1]}] from offset {first}"))

    def last_run_start(self, key: Key, bound: int | None) -> tuple[tuple[int, RunStart] | None, int, list[RunStop]]:
        """The last run start of a runInfo partition at or before ``bound`` (any if None), reading backwards from its
        end, ``FIRST_SCAN`` messages first, then 4 times more each round: ((offset, run start) or None, the
        partition's end offset, the run stops after it).

        Raises:
            KafkaException: the broker cannot answer.
            Stopped: a stop was asked.
        """
        low, high = self.watermarks(key)
        stop, window, first, end = None, FIRST_SCAN, high, max(high, 0)
        while True:
            first = max(low, first - window)
            messages, reached = self.read_partition(key, first, stop)
            end = reached if stop is None else end
            records = [(m.offset(), r) for m in messages if isinstance(r := self._run_record(m), Decoded)]
            best, later = last_run_start(records, bound)
            if best is not None or first <= low:
                return best, end, later
            stop, window = first, window * 4

    def run_start_at(self, run: RunAt) -> RunStart | None:
        """The pl72 at ``run``'s partition and offset if it is that run's (its name and start), else None.

        Raises:
            KafkaException: the broker cannot answer.
            Stopped: a stop was asked.
        """
        messages, _ = self.read_partition(run.key, run.offset, run.offset + 1)
        record = self._run_record(messages[0]) if messages else None
        same = isinstance(record, RunStart) and (record.run_name, record.start_ns) == (run.run_name, run.start_ns)
        return record if same else None
