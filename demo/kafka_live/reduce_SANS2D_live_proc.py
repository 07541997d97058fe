"""Demo processing script for SANS2D events replayed through Kafka (``livereduce-kafka-replay``): runs on every
chunk. Counts per pixel (SANS2D's pixel ids lie within 0..122888) and per time-of-flight bin, with fixed bin
edges so that AccumulationMethod Add sums the chunks."""

import scipp as sc

from livereduce.engines.scipp.chunk import flat_events

events = flat_events(input)  # all events of the chunk as one table (no copy)
output = sc.DataGroup(
    {
        "pixels": events.hist(event_id=sc.arange("event_id", 0, 122_890, unit=None, dtype="int32")),
        "tof": events.hist(event_time_offset=sc.linspace("event_time_offset", 0.0, 100_000.0, 201, unit="us")),
    }
)
