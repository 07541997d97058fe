"""Demo processing script for the SANS2D sample streamed live (the fake SMS over ADARA, or
``livereduce-kafka-replay`` over Kafka): runs on every chunk.

Counts per pixel (SANS2D's pixel ids lie within 0..122888), counts per time-of-flight bin, and the proton charge
where the stream carries one (ADARA does, Kafka's ev44 does not), with fixed bin edges so that AccumulationMethod
Add sums the chunks.
"""

import scipp as sc

from livereduce.engines.scipp.chunk import flat_events

events = flat_events(input)  # all events of the chunk as one table (no copy)
reduced = {
    "pixels": events.hist(event_id=sc.arange("event_id", 0, 122_890, unit=None, dtype="int32")),
    "tof": events.hist(event_time_offset=sc.linspace("event_time_offset", 0.0, 100_000.0, 201, unit="us")),
}
if "proton_charge" in input.coords:
    reduced["proton_charge"] = input.coords["proton_charge"].sum()
output = sc.DataGroup(reduced)
