"""The provenance of :func:`livereduce.outputs.save_nexus`'s files: how the data were made, as an ``NXprocess`` group.

A scientist who opens a live output months later reads in ``/ENTRY/livereduce`` which livereduce, engine and
library versions, instrument, run, scripts (path and MD5), accumulation keys and source made it, and which part
of the source it covers (first and last position, chunks, events, first and last pulse): the
:class:`livereduce.provenance.Provenance` of the accumulation, which the scipp engine makes :func:`current
<livereduce.provenance.current>` in the thread that runs post_proc. h5py, NeXpy (nexusformat) and scippnexus read
it (``scippnexus.load(path, root=ENTRY)["livereduce"]`` is a ``DataGroup``).

Source of the layout: the NeXus base classes ``NXprocess`` (fields ``program``, ``version``, ``date``; ``NXnote``
children "about the data provenance") and ``NXnote`` (``type``: a MIME type, ``file_name``, ``description``,
``data``), NeXus definitions, base_classes/NXprocess.nxdl.xml and NXnote.nxdl.xml; Mantid's SaveNexusProcessed
records its history the same way, an ``NXprocess`` of ``NXnote`` groups (Framework/API/src/WorkspaceHistory.cpp,
``saveNexus``). Types: strings are variable-length UTF-8 (as scippnexus writes them), integers int64, booleans
h5py's (an HDF5 enum FALSE/TRUE over int8: NX_BOOLEAN), times ISO 8601 strings (NX_DATE_TIME).
"""

from __future__ import annotations

import json
from typing import Any

import h5py
import numpy as np
import scippnexus as snx

from livereduce.provenance import Provenance

PROCESS = "livereduce"
"""Name of the ``NXprocess`` group in the ``NXentry``."""
PROGRAM = "livereduce"
"""``program`` of the group."""
UNKNOWN_ENGINE = "unknown"
"""``engine`` outside a live cycle."""
LIVE = "the accumulation of a live cycle: the fields and notes of this group say what made it"
"""``description`` of the group in a live cycle."""
OUTSIDE = (
    "written outside a live cycle (a script run by hand, or the mantid engine): how the data were made is not known"
)
"""``description`` of the group outside a live cycle."""
JSON = "application/json"
"""``type`` of a note whose ``data`` is JSON text (RFC 8259's media type)."""
_NOTES = {
    "source": "the source as configured: listener and, as set, address, filename, topics",
    "first_position": "where the source stood after the accumulation's first chunk (the listener's own keys)",
    "last_position": "where the source stood after its last chunk: a restart resumes after it",
}
"""``description`` of the notes holding a JSON value (:class:`Provenance` attributes of those names)."""


def write_process(entry: h5py.Group, provenance: Provenance | None, date: str) -> h5py.Group:
    """Write how the data were made as the ``NXprocess`` group ``entry/livereduce``.

    Layout::

        livereduce           NXprocess
          program            "livereduce"
          version            livereduce's version (the one that made the accumulation)
          date               ``date``: when the file was written
          description        "the accumulation of a live cycle: ..." or "written outside a live cycle ..."
          engine             "scipp", "mantid", or "unknown" outside a live cycle
          instrument, accum_method           strings (Provenance)
          run_number, chunks, events         int64
          preserve_events                    NX_BOOLEAN
          first_pulse, last_pulse            ISO 8601 (UTC, ns) of the first and last pulse accumulated
          versions           NXcollection: one string field per library (e.g. scipp = "26.8.0")
          source, first_position, last_position    NXnote: type = "application/json", data = the value as JSON
                                                   text, description
          proc_script, post_proc_script            NXnote per script: file_name = its path, md5 = hex MD5 of
                                                   its bytes, type = "text/x-python", description

    Outside a live cycle (``provenance`` None) only ``program``, ``version`` (this process's), ``date``,
    ``description`` and ``engine`` are written. A value that is unknown (None: no pulse or position yet) is left
    out: NeXus has no null. Every other attribute of :class:`Provenance` is written under its own name, a string,
    integer or boolean as a field, anything else as a JSON note, so a new attribute is never lost.

    Args:
        entry: the ``NXentry`` group (no member named ``livereduce``).
        provenance: :func:`livereduce.provenance.current` of the thread that saves, or None.
        date: ISO 8601 time of the write.

    Returns:
        The group.

    Raises:
        TypeError: a provenance value that is not JSON-serialisable.
    """
    group = snx.create_class(entry, PROCESS, "NXprocess")
    record: dict[str, Any] = {"program": PROGRAM}
    if provenance is None:
        from livereduce import __version__  # noqa: PLC0415 - only here: importlib.metadata takes ~1 ms a lookup

        record |= {"version": __version__, "date": date, "description": OUTSIDE, "engine": UNKNOWN_ENGINE}
    else:
        values = provenance.to_json()
        record |= {"version": values.pop("livereduce_version"), "date": date, "description": LIVE, **values}
    for name, value in record.items():
        if value is None:
            continue
        if name == "versions":
            versions = snx.create_class(group, name, "NXcollection")
            for library, version in value.items():
                _field(versions, library, version)
        elif name == "scripts":
            for role, script in value.items():
                note = _note(group, f"{role}_script", "text/x-python", f"the {role} script, as it was run")
                _field(note, "file_name", script["path"])
                _field(note, "md5", script["md5"])
        elif isinstance(value, str | int):  # bool is an int
            _field(group, name, value)
        else:
            _field(_note(group, name, JSON, _NOTES.get(name, name)), "data", json.dumps(value, sort_keys=True))
    return group


def _note(parent: h5py.Group, name: str, mime_type: str, description: str) -> h5py.Group:
    """An ``NXnote`` with its ``type`` (a MIME type) and ``description``; the caller writes its content."""
    note = snx.create_class(parent, name, "NXnote")
    _field(note, "type", mime_type)
    _field(note, "description", description)
    return note


def _field(parent: h5py.Group, name: str, value: str | int) -> h5py.Dataset:
    """A scalar field: a string as variable-length UTF-8, a bool as NX_BOOLEAN, an int as int64."""
    if isinstance(value, str):
        return parent.create_dataset(name, data=value, dtype=h5py.string_dtype())
    return parent.create_dataset(name, data=np.bool_(value) if isinstance(value, bool) else np.int64(value))
