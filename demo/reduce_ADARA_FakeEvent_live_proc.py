"""Demo processing script: runs on every chunk (``input``: events binned by pulse).

Histograms the chunk two ways with fixed bin edges, so that AccumulationMethod Add sums the chunks:
counts per pixel on the 64 x 64 detector, and counts per time-of-flight bin.
"""

import scipp as sc

from livereduce.engines.scipp.chunk import flat_events

events = flat_events(input)  # all events of the chunk as one table (no copy)
pixels = events.hist(event_id=sc.arange("event_id", 0, 64 * 64 + 1, unit=None, dtype="int32"))
tof = events.hist(event_time_offset=sc.linspace("event_time_offset", 0.0, 16667.0, 201, unit="us"))
output = sc.DataGroup({"pixels": pixels.fold("event_id", sizes={"y": 64, "x": 64}), "tof": tof})
