"""Wire protocols of data sources for which no maintained Python library exists (ADARA, SNS's live stream).

Each protocol package decodes and encodes bytes only: it knows nothing of scipp, chunks or the engine, so the
listener that uses it, the fake server that speaks it and the tests share one implementation.
"""

from __future__ import annotations

import re


def skipped_counter(reason: str) -> str:
    """The counter name of a kind of skipped message, one vocabulary for every source: ``skipped_`` and the
    reason in lower case with words joined by ``_``, e.g. ``"bank count beyond the payload"`` ->
    ``"skipped_bank_count_beyond_the_payload"``."""
    return "skipped_" + (re.sub(r"[^0-9a-z]+", "_", reason.lower()).strip("_") or "unknown")
