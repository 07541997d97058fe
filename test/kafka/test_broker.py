"""The test broker itself: it runs, it round-trips messages, and it has the quirks the listener must live with."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, Producer, TopicPartition

from .conftest import Broker
from .helpers import read_messages


def test_messages_round_trip_with_their_timestamps(kafka_broker: Broker, kafka_topics) -> None:
    topic = kafka_topics(("events",))["events"]
    producer = Producer({"bootstrap.servers": kafka_broker.address})
    for i in range(5):
        producer.produce(topic, value=b"m%d" % i, timestamp=1_000 + i)
    assert producer.flush(10) == 0
    del producer

    messages = read_messages(kafka_broker, topic, timeout=10)

    assert [m.value() for m in messages] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    assert [m.timestamp()[1] for m in messages] == [1_000, 1_001, 1_002, 1_003, 1_004]


def test_timestamp_lookup_answers_by_write_time_not_record_time(kafka_broker: Broker, kafka_topics) -> None:
    """Why the listener selects by the messages' own times: tansu ignores the record timestamps in a look-up."""
    topic = kafka_topics(("events",))["events"]
    producer = Producer({"bootstrap.servers": kafka_broker.address, "linger.ms": 0})
    producer.produce(topic, value=b"old", timestamp=1_000)  # record time 1970
    producer.flush(10)
    time.sleep(0.1)  # a gap in the write times is what is tested: nothing to poll for
    between = int(time.time() * 1000)  # after the first write, before the second (tansu's clock is ours)
    time.sleep(0.1)
    producer.produce(topic, value=b"new", timestamp=1_001)
    producer.flush(10)
    del producer
    consumer = Consumer({"bootstrap.servers": kafka_broker.address, "group.id": "test"})
    try:
        by_record_time = consumer.offsets_for_times([TopicPartition(topic, 0, 1_001)], timeout=10)[0].offset
        by_write_time = consumer.offsets_for_times([TopicPartition(topic, 0, between)], timeout=10)[0].offset
        future = consumer.offsets_for_times([TopicPartition(topic, 0, between + 3_600_000)], timeout=10)[0].offset
    finally:
        consumer.close()

    assert by_record_time == 0  # Kafka would answer 1
    assert by_write_time == 1
    assert future == 0  # Kafka would answer -1 (no such message)
