"""Which log values (sample environment, process variables) a chunk can hold exactly, one rule for every source.

Kafka's f144/f142 (ess-streaming-data-types) and ADARA's VAR_VALUE packets deliver numbers of many widths, text
and 1-D arrays. The chunk builder (``engines/scipp/chunk.log_series``) turns every value this module accepts into a
scipp dtype that holds it exactly: integers (every width, booleans as 0/1) into int64, or float64 where a value
lies beyond int64 (uint64 above 2**63 - 1), floats into float64, text into strings. What it cannot hold is
refused here, before the value enters a buffer, so that a log never fails a chunk: the listener drops the
message (Kafka) or packet (ADARA) and counts it under ``skipped_<reason>`` with a reason of
:data:`LOG_DROP_REASONS`.
"""

from __future__ import annotations

from typing import Final

import numpy as np

MAX_LOG_ELEMENTS: Final = 1 << 20
"""Most elements of one array value (1,048,576: a 1024 x 1024 image flattened; 8 MiB as int64 or float64 in the
chunk). A longer one is dropped (``log_too_long``): the chunk holds every value of a log received in a cycle, and
a uint8 waveform becomes 8 times larger as int64."""

LOG_DROP_REASONS: Final = ("log_of_unsupported_type", "log_of_several_dimensions", "log_too_long")
"""Why a log value is dropped: a type no scipp dtype holds exactly (complex, bytes, object, structured, datetime,
extended precision, an integer beyond the 64-bit range); an array of more than one dimension; an array of more
than :data:`MAX_LOG_ELEMENTS` elements."""

_KINDS: Final = frozenset("biufU")
"""NumPy dtype kinds of usable values: boolean, signed and unsigned integers, floats, text."""


class UnusableLog(ValueError):
    """A log value no chunk can hold exactly.

    Attributes:
        reason: one of :data:`LOG_DROP_REASONS`.
        detail: one line for the log: the value's dtype and shape, never the value in bulk.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def check_log_value(value: object) -> None:
    """Refuse a value that ``log_series`` cannot hold exactly.

    Accepted: ``str``; Python ``bool``, ``int`` (within -2**63 .. 2**64 - 1) and ``float``; NumPy scalars and 0-d
    or 1-d arrays of booleans, integers (8 to 64 bits, signed or unsigned), floats (at most 64 bits) or text,
    an array of at most :data:`MAX_LOG_ELEMENTS` elements.

    Raises:
        UnusableLog: with a reason of :data:`LOG_DROP_REASONS`.
    """
    if isinstance(value, str):
        return
    array = np.asarray(value)  # a Python int beyond 64 bits gives dtype object
    kind = array.dtype.kind
    if kind not in _KINDS or (kind == "f" and array.dtype.itemsize > 8):
        raise UnusableLog("log_of_unsupported_type", f"dtype {array.dtype}")
    if array.ndim > 1:
        raise UnusableLog("log_of_several_dimensions", f"shape {array.shape}")
    if array.size > MAX_LOG_ELEMENTS:
        raise UnusableLog("log_too_long", f"{array.size} elements (at most {MAX_LOG_ELEMENTS})")
