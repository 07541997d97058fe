"""f142 (``LogData``, the older log schema) under NumPy 2.

Why: ess-streaming-data-types 0.27.0's ``logdata_f142`` tests value types with ``np.unicode_`` and
``np.string_``, aliases NumPy 2.0 removed (``AttributeError: np.unicode_ was removed in the NumPy 2.0 release``).
Every ``serialise_f142`` call, and ``deserialise_f142`` of every message, fails with it. ISIS still streams
sample-environment logs as f142, so livereduce needs it.

How: the module's ``np`` global is replaced by a view of NumPy that also has the two old names, mapped to what
NumPy 1 aliased them to (``np.unicode_ is np.str_``, ``np.string_ is np.bytes_``). Only that module sees the
names; NumPy itself is not modified. Under NumPy 1 nothing is changed. Remove this module once the package fixes
it (``test_f142_shim`` in ``test/kafka/test_schemas.py`` shows whether it is still needed).
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np
from streaming_data_types import logdata_f142


class _NumPyWithOldAliases(types.ModuleType):
    """``numpy`` plus ``unicode_``/``string_`` (NumPy 1's aliases of ``str_``/``bytes_``)."""

    unicode_ = np.str_
    string_ = np.bytes_

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


def needs_shim() -> bool:
    """True when this NumPy lacks the aliases ``logdata_f142`` uses."""
    return not hasattr(np, "unicode_")


def install() -> None:
    """Give ``streaming_data_types.logdata_f142`` the NumPy names it needs (idempotent; no-op on NumPy 1)."""
    if needs_shim() and not isinstance(logdata_f142.np, _NumPyWithOldAliases):
        logdata_f142.np = _NumPyWithOldAliases("numpy")


install()
serialise_f142 = logdata_f142.serialise_f142
deserialise_f142 = logdata_f142.deserialise_f142
