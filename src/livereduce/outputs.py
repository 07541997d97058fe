"""Output files for processing scripts that are never torn: NeXus files and figures, written atomically.

A post_proc script that writes its result in place (``h5py.File(path, "w")``, ``figure.savefig(path)``,
``scipp.io.save_hdf5``) leaves a torn file when the daemon is killed in the middle of the write, and a reader
that opens the file meanwhile sees it half written; a reader holding the HDF5 file lock even makes the next
write fail ("unable to lock file"). The functions here write a temporary file in the target's directory, flush
and ``fsync`` it, rename it over the target with ``os.replace`` (atomic on POSIX: a reader opens either the old
or the new file, never a mix) and ``fsync`` the directory so that the rename survives a crash. A reader keeps
reading the file it opened (the old inode) and holds no lock on the new one, so it cannot make the writer fail.
On any error the temporary file is removed and the target is left as it was.

* :func:`save_nexus`: a scipp ``DataArray``, ``Dataset`` or ``DataGroup`` as a NeXus file (``NXentry`` with one
  ``NXdata`` per array, the logs as ``NXlog``, the beam monitors' events as ``NXmonitor``), read by h5py,
  scippnexus and NeXpy (nexusformat); h5web finds the default plot through the same attributes. Beside it,
  each array that a Mantid ``Workspace2D`` can hold (1-D or 2-D) is written again as ``/mantid_workspace_<k>`` in
  Mantid's processed layout, for ``LoadNexusProcessed(Filename=..., EntryNumber=k)`` (see :func:`save_nexus` for
  why ``EntryNumber`` is needed; derived from Mantid's source, not tested against a Mantid installation).
* :func:`save_figure`: a matplotlib ``Figure``, in the format named by the path's suffix.
* :func:`atomic_path`: the same guarantee for any writer that takes a path.

The atomic write is written here rather than taken from a library: the maintained candidates (``safer``,
``boltons.fileutils.atomic_save``) hand out a Python file object, but h5py writes through its own driver and
needs a path. Field writing is scippnexus's (``create_field``: units
as strings, ``<name>_errors``, datetimes as offsets from a ``start`` attribute); the ``NXdata`` attributes,
which scippnexus reads but does not write, are set here.

Source of the layout: the NeXus ``NXdata`` base class (NeXus definitions, base_classes/NXdata.nxdl.xml:
group attributes ``signal``, ``axes`` with ``"."`` for a dimension without a scale, ``AXISNAME_indices``;
a dimension scale has length n or n + 1 (bin edges); the ``errors`` field holds the standard deviations of
the signal), the ``NXlog`` and ``NXmonitor`` base classes (``NXmonitor`` defines ``integral``, the total
counts, and a histogram ``data``, no events; the events are ``NXevent_data``'s fields ``event_time_offset``,
``event_time_zero`` with ``@offset`` and ``event_index`` placed in the ``NXmonitor``, as SNS event files hold
them and scippnexus reads them) and the NIAC2014 "How to find default data" convention (``default`` attributes
on the root and on ``NXentry``). The Mantid entries follow what Mantid's reader needs, read from its source
(github.com/mantidproject/mantid, main of 2024-2025): Framework/DataHandling/src/LoadNexusProcessed.cpp
(``confidence``, ``execLoader``, ``loadEntry``, ``loadNonEventEntry``, ``loadNonSpectraAxis``), the writer it
mirrors, Framework/Nexus/src/NexusFileIO.cpp (``writeNexusProcessedHeader``, ``writeNexusProcessedData2D``),
Framework/Nexus/inc/MantidNexus/NexusClasses.h (``NXData::openData``: the signal is the field with
``signal == 1``; ``NXDataSetTyped::load`` reads the raw bytes, so every number Mantid reads is float64) and
Framework/Kernel/src/Unit.cpp (the unit ids). The functions writing them cite the line of the reader that each
group, field and attribute is for.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
import scipp as sc
import scippnexus as snx

from livereduce import figures, provenance
from livereduce.mantid_nexus import AXIS_DTYPES, mantid_axes, write_mantid_workspace
from livereduce.plots import publish_plot  # noqa: F401 (for post_proc scripts: an interactive figure)
from livereduce.provenance_nexus import PROCESS, write_process

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SIGNAL = "data"
"""Name of the signal field in every ``NXdata`` group."""
ERRORS = "errors"
"""Name of the field holding the signal's standard deviations (NXdata ``errors``)."""
LOGS = "DASlogs"
"""``NXcollection`` in the ``NXentry`` holding time-series logs as ``NXlog`` (the group name of SNS files)."""

MANTID_ENTRY = "mantid_workspace_{}"
"""Name of the ``NXentry`` of the k-th array in Mantid's processed layout, k = 1, 2, ... (LoadNexusProcessed.cpp,
``execLoader``: it loads ``"mantid_workspace_" + EntryNumber``; ``confidence``: a file is Mantid's when
``/mantid_workspace_1`` exists)."""

STALE_AFTER_SEC = 3600.0
"""Age (s, by modification time) after which a temporary file of a killed writer is removed by the next write."""
_TOKEN_BYTES = 6

MONITORS = "monitors"
"""The 0-D coordinate in which the scipp engine's chunks carry beam-monitor events: a ``DataGroup`` (dtype
PyObject) of monitor name -> ``DataArray`` of events (``livereduce.engines.scipp.chunk.monitor_events``)."""
EPOCH = "1970-01-01T00:00:00Z"
"""``@offset`` of a monitor's ``event_time_zero`` (NXevent_data: an ISO 8601 time the values count from)."""

_log = logging.getLogger(__name__)
_left_out: set[str] = set()
"""What :func:`_leave_out` has warned about in this process (one warning per name, not one per cycle)."""

_NUMERIC = (sc.DType.float64, sc.DType.float32, sc.DType.int64, sc.DType.int32, sc.DType.bool)
_FIELD_DTYPES = (*_NUMERIC, sc.DType.datetime64, sc.DType.string)
_MANTID_RESERVED = re.compile(MANTID_ENTRY.format(r"[0-9]+"))
_RESERVED = {LOGS: "the logs", PROCESS: "the provenance"}
"""Names of the ``NXentry``'s own groups, which no member or monitor may have."""
_OBJECT_DTYPES = (sc.DType.DataArray, sc.DType.Dataset, sc.DType.Variable, sc.DType.PyObject)
"""Dtypes of a 0-D coordinate holding an object (a log, the monitors, ...) rather than a value."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Give a writer a temporary path beside ``path``; on success make it ``path`` in one atomic step.

    Use it for outputs that :func:`save_nexus` and :func:`save_figure` do not cover::

        with atomic_path("out/spectrum.txt") as tmp:
            numpy.savetxt(tmp, values)

    The temporary file is ``.<name>.<random>.tmp`` in the same directory (so the rename never crosses a file
    system, and readers that glob ``*.png`` do not see it), created empty with mode ``0o666`` less the umask,
    as a new file would be. The writer must have closed it when the block ends. Then the file's data is
    fsynced, ``os.replace`` renames it over ``path`` and the directory is fsynced. A reader sees the old file or
    the new one, whole, at every moment; after a crash (kill -9, power loss) ``path`` is the old or the new file.
    A temporary file that a killed writer left behind is removed by the next write of the same ``path`` once it
    is older than :data:`STALE_AFTER_SEC` (younger ones may belong to a writer still at work).

    Args:
        path: the target file; its directory must exist.

    Yields:
        The temporary path to write.

    Raises:
        FileNotFoundError, PermissionError: the directory does not exist or is not writable.
        IsADirectoryError: ``path`` is a directory (raised by the rename; the temporary file is removed).
        Whatever the block raises: the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    directory = target.parent
    _remove_stale(directory, target.name)
    temporary = directory / f".{target.name}.{secrets.token_hex(_TOKEN_BYTES)}.tmp"
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))
    try:
        yield temporary
        _fsync(temporary, os.O_RDONLY)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync(directory, os.O_RDONLY | os.O_DIRECTORY)


def _remove_stale(directory: Path, name: str) -> None:
    """Remove the temporary files of ``name`` older than :data:`STALE_AFTER_SEC` (left by a killed writer)."""
    pattern = re.compile(rf"\.{re.escape(name)}\.[0-9a-f]{{{2 * _TOKEN_BYTES}}}\.tmp")
    now = time.time()
    with os.scandir(directory) as entries:
        for entry in entries:
            if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):  # another writer removed it first
                    if now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_SEC:
                        os.unlink(entry.path)


def _fsync(path: Path, flags: int) -> None:
    """Flush the data of a file (or the entries of a directory) to the disk."""
    descriptor = os.open(path, flags | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def save_figure(figure: Figure, path: str | os.PathLike[str], **savefig: object) -> Path:
    """Save a matplotlib figure atomically (see :func:`atomic_path`): never a torn image at ``path``; an image the
    daemon's page can show (PNG, SVG, JPEG, GIF, WebP) goes on its figure board (:mod:`livereduce.figures`).

    Args:
        figure: the figure (``matplotlib.figure.Figure``, e.g. from ``plt.subplots()``).
        path: target file; its suffix names the format (``.png``, ``.svg``, ``.pdf``, ... any format of
            ``figure.canvas.get_supported_filetypes()``).
        **savefig: further arguments of ``Figure.savefig`` (``dpi``, ``bbox_inches``, ...); not ``format``.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: the suffix is missing or not a format matplotlib can write, or ``format`` was given.
        OSError: the file cannot be written (the target is left as it was).
    """
    target = Path(path)
    kind = target.suffix.removeprefix(".").lower()
    supported = figure.canvas.get_supported_filetypes()
    if "format" in savefig:
        raise ValueError("save_figure takes the format from the file name's suffix; do not pass format=")
    if kind not in supported:
        raise ValueError(
            f"save_figure: cannot tell the image format of {str(target)[:200]!r}: the suffix must be one of "
            + ", ".join(f".{name}" for name in sorted(supported))
        )
    with atomic_path(target) as temporary:
        figure.savefig(temporary, format=kind, **savefig)
    figures.saved_image(target)
    return target


def save_nexus(
    data: sc.DataArray | sc.Dataset | sc.DataGroup,
    path: str | os.PathLike[str],
    *,
    entry: str = "entry",
    mantid: bool = True,
) -> Path:
    """Save dense scipp data as a NeXus file, atomically (see :func:`atomic_path`): never a torn file at ``path``.

    Layout (NeXus ``NXdata`` base class; see the module docstring)::

        /                    @default = ENTRY, @creator, @file_name, @file_time (ISO 8601, UTC)
        /ENTRY  NXentry      @default = the first NXdata
          NAME  NXdata       @signal = "data", @axes = [one per dimension: the scale's name or "."],
                             @COORD_indices = the dimensions (indices into data's shape) of each coordinate
            data             the values, shape and dtype of the array's data, @units
            errors           standard deviations (sqrt of the variances) when there are variances, @units
            COORD            each coordinate: length n (points) or n + 1 (bin edges) per dimension, @units;
                             datetime64 as int64 offsets in its unit from @start (the epoch, ISO 8601);
                             0-D coordinates (e.g. run_number, start_time) as scalar fields;
                             coordinate variances as COORD_errors;
                             HDF5 dimension labels: the dimension names, ``dim_<index>`` for one without
                             a scale (the name NeXus readers give it)
          DASlogs NXcollection   0-D coordinates that hold a time-series DataArray (the scipp engine's
            LOG  NXlog             sample-environment logs): ``time`` (datetime64 as above) and ``value``
                                   (rank 1, or (time, n) for an array per time)
          MONITOR NXmonitor    each monitor of the ``monitors`` coordinate (a DataGroup, monitor name ->
                               DataArray of events), its events as NXevent_data fields without event_id:
            event_time_offset    each event's time of flight, as given (float32, @units = "µs")
            event_time_zero      each pulse's time, int64 [ns] from @offset = "1970-01-01T00:00:00Z"
            event_index          int64, the first event of each pulse (consecutive events of one time)
            integral             int64 [counts], the number of events
          livereduce NXprocess how the data were made: program, version, date, engine, instrument, run_number,
                               scripts (path, md5), accumulation keys, source, first/last position and pulse,
                               chunks, events (see :func:`livereduce.provenance_nexus.write_process`)
        /mantid_workspace_K NXentry  the K-th member that a Mantid Workspace2D can hold, again (below)

    ``NAME`` is the ``DataArray``'s name (``"data"`` when it has none), each item's name for a ``Dataset``, each
    member's key for a ``DataGroup`` (one ``NXdata`` per member, in order; the first is the default plot).
    ``scippnexus.load(path, root=ENTRY)["NAME"]`` gives the DataArray back with its coordinates and variances
    (``scippnexus.load(path)`` of the whole file also reads the Mantid entries, with warnings about their units);
    ``scippnexus.load(path, root=ENTRY)["MONITOR"]["events"]`` a monitor's events, binned by pulse.

    Provenance: ``livereduce`` records :func:`livereduce.provenance.current`, what the scipp engine set in the
    thread that runs post_proc before it ran: the scripts, keys, source and pulses that made the accumulation.
    Outside a live cycle (a script run by hand) it says so and holds only livereduce's version and the date.

    Logs and monitors are written once per file, however many members carry them (the scipp engine sets them on
    every member); what NeXus has no place for is left out, with one warning per name and process on the logger
    ``livereduce.outputs`` (not one per cycle): a 0-D coordinate holding another object (a dict, a Dataset, a
    DataGroup not named ``monitors``), a log whose arrays per time differ in length, a monitor that is not a table
    of events with weights 1 and exactly the coordinates ``event_time_offset`` and ``event_time_zero``, or whose
    name is not an HDF5 name or is a member's, ``DASlogs`` or ``livereduce``.

    Mantid: with ``mantid`` (the default), each member of 1 or 2 dimensions with no empty dimension is also
    written in the layout of Mantid's SaveNexusProcessed, as ``mantid_workspace_1``, ``_2``, ... in member order
    (members that Mantid cannot hold are skipped and the numbering continues with the next one):

    * the last dimension is the x axis (``axis1``): its coordinate (n points or n + 1 bin edges, numeric, 1-D, or
      2-D over both dimensions for per-spectrum x) as float64 with a Mantid unit id (``TOF`` for ``tof``,
      ``time_of_flight``, ``event_time_offset``; ``Wavelength``, ``dSpacing``, ``MomentumTransfer`` (``Q``),
      ``DeltaE`` (``energy_transfer``), ``Energy``; converted to Mantid's unit, e.g. ms to µs), else Mantid's
      ``Label`` unit with caption = dimension and label = unit; without a coordinate the bin indices 0..n-1;
    * the first dimension of a 2-D array is the spectrum axis (``axis2``): without a coordinate spectrum numbers
      1..m (``spectraNumber``); a numeric coordinate (m or m + 1 values) as a numeric axis with a unit as above;
      strings as a ``TextAxis``; a 1-D array is one spectrum;
    * ``values`` and ``errors`` (the standard deviations; 0 without variances) as float64 of shape
      (spectra, n), the unit as Mantid's Y unit (``counts`` as ``Counts``), not a distribution;
    * the title is ``NAME``; no instrument, sample or logs (Mantid logs that it could not load the instrument).

    A member is skipped (no Mantid entry) when it has 0 or more than 2 dimensions, an empty dimension, or an axis
    coordinate Mantid cannot hold (datetime64, bool, a coordinate of other dimensions, strings with an empty
    label or a newline). Mantid reads entry K with ``LoadNexusProcessed(Filename=path, EntryNumber=K)``; without
    ``EntryNumber`` it fails: it counts every root ``NXentry`` (``ENTRY`` too) as a workspace and opens
    ``mantid_workspace_<count>``, which does not exist (LoadNexusProcessed.cpp ``execLoader``). Not verified
    against a Mantid installation: the layout is derived from Mantid's source (see the module docstring).

    Binned (event) data is refused rather than histogrammed: only the script knows the bin edges that make
    sense, and ``hist()`` of a whole accumulation in every cycle can be costly. Histogram first, e.g.
    ``data.hist(event_time_offset=EDGES)`` or ``data.bins.sum()``.

    Args:
        data: a ``DataArray`` with dense numeric data (float64/32, int64/32, bool) of 1 or more dimensions
            (e.g. counts (y: 64, x: 64) or (event_time_offset: 200) with bin edges (201,) in µs); or a
            ``Dataset``/``DataGroup`` of such arrays. Coordinates: float64/32, int64/32, bool, datetime64,
            string, or 0-D holding an object: a time-series ``DataArray`` (dimension ``time``), the ``monitors``
            ``DataGroup`` of the scipp engine's chunks, or anything else (left out, see above).
        path: target file (``.nxs``, ``.h5``, ...); its directory must exist.
        entry: name of the ``NXentry`` group.
        mantid: also write the members in Mantid's processed layout (``mantid_workspace_K``; see above). The
            values are then stored twice; pass False for large arrays that Mantid need not read.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        TypeError: binned data, a data dtype that is not numeric, a coordinate of 1 or more dimensions that
            cannot be written (vectors, objects: drop it with ``data.drop_coords(name)``), masks (NXdata has
            none: apply them and ``data.drop_masks(list(data.masks))``), or a member that is not a DataArray.
        TypeError: the current provenance holds a value that is not JSON-serialisable.
        ValueError: a 0-D array, an empty Dataset/DataGroup, a name that is not a valid HDF5 name or that
            clashes (``data``, ``errors``, ``DASlogs``, ``livereduce``; an ``entry`` named
            ``mantid_workspace_<digits>``), or two members with different logs, or different monitors, of the same
            name.
        OSError: the file cannot be written (the target is left as it was).
    """
    arrays = _members(data)
    _check_name(entry, "entry")
    if _MANTID_RESERVED.fullmatch(entry):
        raise ValueError(f"save_nexus: the entry name {entry!r} is reserved for Mantid's entries; choose another")
    made = provenance.current()
    with atomic_path(path) as temporary, h5py.File(temporary, "w") as nexus:
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        nexus.attrs["default"] = entry
        nexus.attrs["creator"] = "livereduce.outputs.save_nexus"
        nexus.attrs["file_name"] = str(Path(path).absolute())
        nexus.attrs["file_time"] = now
        group = snx.create_class(nexus, entry, "NXentry")
        group.attrs["default"] = next(iter(arrays))
        metadata = _Metadata()
        for name, array in arrays.items():
            _write_nxdata(group, name, array, metadata)
        metadata.write(group, taken=set(arrays))
        write_process(group, made, now)
        if mantid:
            number = 0
            for name, array in arrays.items():
                if (axes := mantid_axes(array)) is not None:  # else a member Mantid cannot hold: skipped
                    number += 1
                    write_mantid_workspace(nexus, MANTID_ENTRY.format(number), name, array, axes)
    return Path(path)


def _members(data: object) -> dict[str, sc.DataArray]:
    """The arrays to write, NXdata name -> DataArray, validated (see :func:`save_nexus`)."""
    if isinstance(data, sc.DataArray):
        members: Mapping[str, object] = {data.name or SIGNAL: data}
    elif isinstance(data, sc.Dataset | sc.DataGroup):
        members = {str(name): data[name] for name in data}
    else:
        raise TypeError(f"save_nexus writes a scipp DataArray, Dataset or DataGroup, not {type(data).__name__}")
    if not members:
        raise ValueError(f"save_nexus: the {type(data).__name__} is empty: nothing to write")
    for name, member in members.items():
        _check_name(name, "member")
        if name in _RESERVED:
            raise ValueError(f"save_nexus: the name {name!r} is reserved for {_RESERVED[name]}; rename the member")
        if not isinstance(member, sc.DataArray):
            raise TypeError(
                f"save_nexus: member {name!r} is a {type(member).__name__}; each member must be a DataArray "
                "(nested DataGroups are not written)"
            )
    return dict(members)


def _check_name(name: str, what: str) -> None:
    """An HDF5 link name: not empty, no '/', not '.' or '..'."""
    if not name or "/" in name or name in {".", ".."}:
        raise ValueError(f"save_nexus: {what} name {name[:200]!r} is not a valid HDF5 name (empty, '/', '.')")


def _write_nxdata(parent: h5py.Group, name: str, array: sc.DataArray, metadata: _Metadata) -> None:
    """Write one ``NXdata`` group; collect the array's logs and monitors (0-D object coordinates) into
    ``metadata``."""
    where = f"save_nexus: {name!r}"
    if array.bins is not None:
        raise TypeError(
            f"{where} holds binned (event) data, which NXdata cannot hold: histogram it first, "
            "e.g. data.hist(event_time_offset=EDGES) or data.bins.sum()"
        )
    if array.dtype not in _NUMERIC:
        raise TypeError(f"{where}: data of dtype {array.dtype} is not numeric (NXdata signal: NX_NUMBER)")
    if array.ndim == 0:
        raise ValueError(f"{where} is 0-D; NXdata needs a signal of rank 1 or more (use a 1-D array)")
    if array.masks:
        raise TypeError(
            f"{where} has masks {sorted(array.masks)[:10]}, which NXdata cannot hold: apply them to the "
            "values if needed, then drop them: data.drop_masks(list(data.masks))"
        )
    axes = [dim if _is_scale(array, dim) else "." for dim in array.dims]
    labels = {
        dim: axis if axis != "." else f"dim_{index}"
        for index, (dim, axis) in enumerate(zip(array.dims, axes, strict=True))
    }
    group = snx.create_class(parent, name, "NXdata")
    group.attrs["signal"] = SIGNAL
    group.attrs["axes"] = axes
    if array.variances is None:
        _label(snx.create_field(group, SIGNAL, array.data), array.dims, labels)
    else:  # the standard deviations go to "errors", not to scippnexus's "data_errors"
        _label(snx.create_field(group, SIGNAL, sc.values(array.data)), array.dims, labels)
        _label(snx.create_field(group, ERRORS, sc.stddevs(array.data)), array.dims, labels)
    for coord_name, coord in array.coords.items():
        _check_name(coord_name, f"{name!r}: coordinate")
        if coord_name in {SIGNAL, ERRORS}:
            raise ValueError(f"{where}: a coordinate may not be named {coord_name!r} (the NXdata signal/errors)")
        if coord.ndim == 0 and coord.dtype in _OBJECT_DTYPES:
            metadata.add(coord_name, coord.value)
            continue
        if coord.dtype not in _FIELD_DTYPES:
            raise TypeError(
                f"{where}: coordinate {coord_name!r} of dtype {coord.dtype} cannot be written to NeXus; "
                f"drop it first: data.drop_coords({coord_name!r})"
            )
        _label(snx.create_field(group, coord_name, coord), coord.dims, labels)
        if coord.ndim:
            group.attrs[f"{coord_name}_indices"] = np.array([array.dims.index(d) for d in coord.dims], np.int32)


def _is_scale(array: sc.DataArray, dim: str) -> bool:
    """Whether ``dim`` has a dimension scale: a 1-D coordinate of the same name along it (points or edges)."""
    scale = array.coords.get(dim)
    return scale is not None and scale.dims == (dim,) and scale.dtype in _FIELD_DTYPES


def _label(dataset: h5py.Dataset, dims: tuple[str, ...], labels: dict[str, str]) -> None:
    """Label the HDF5 dimensions of a field with the NXdata dimension names.

    A dimension with a scale is named after it; one without is ``dim_<index>``, the name NeXus readers give it
    (scippnexus reads the labels of a field whose ``_indices`` point at a ``"."`` axis).
    """
    for index, dim in enumerate(dims):
        dataset.dims[index].label = labels[dim]


class _Metadata:
    """What the members' 0-D object coordinates add to the ``NXentry``, each written once however many members
    carry it: time-series logs (``NXlog`` in ``DASlogs``) and beam monitors (``NXmonitor``). What NeXus has no
    place for is left out with one warning per name and process (:func:`_leave_out`)."""

    def __init__(self) -> None:
        self.logs: dict[str, sc.DataArray] = {}
        self.monitors: dict[str, sc.DataArray] = {}

    def add(self, name: str, value: object) -> None:
        """Collect the value of the 0-D coordinate ``name``: a log (a DataArray), the monitors (a DataGroup named
        :data:`MONITORS`), else nothing (with a warning).

        Raises:
            ValueError: a log or monitor of this name, collected from another member, is different.
        """
        if isinstance(value, sc.DataArray):
            log = _as_nxlog(value)
            if isinstance(log, str):
                _leave_out(f"log {name!r}", log)
            else:
                _add_once(self.logs, name, log, "logs")
        elif name == MONITORS and isinstance(value, sc.DataGroup):
            for monitor_name, monitor in value.items():
                problem = _event_monitor_problem(str(monitor_name), monitor)
                if problem is None:
                    _add_once(self.monitors, str(monitor_name), monitor, "monitors")
                else:
                    _leave_out(f"monitor {monitor_name!r}", problem)
        else:
            _leave_out(f"coordinate {name!r}", f"a 0-D {type(value).__name__}, which NeXus has no field for")

    def write(self, entry: h5py.Group, taken: set[str]) -> None:
        """Write the logs into ``ENTRY/DASlogs`` and each monitor as ``ENTRY/<name>`` unless a member (``taken``),
        ``DASlogs`` or ``livereduce`` (the provenance) has that name."""
        if self.logs:
            collection = snx.create_class(entry, LOGS, "NXcollection")
            for name, log in self.logs.items():
                _write_nxlog(collection, name, log)
        for name, monitor in self.monitors.items():
            if name in taken or name in _RESERVED:
                _leave_out(f"monitor {name!r}", f"the NXentry already has a group {name!r}")
            else:
                _write_nxmonitor(entry, name, monitor)


def _add_once(collected: dict[str, sc.DataArray], name: str, value: sc.DataArray, what: str) -> None:
    if name in collected and not sc.identical(collected[name], value):
        raise ValueError(f"save_nexus: two members carry different {what} named {name!r}; only one can be written")
    collected[name] = value


def _as_nxlog(log: sc.DataArray) -> sc.DataArray | str:
    """``log`` as ``NXlog`` can hold it, or the reason it cannot.

    ``NXlog`` (NeXus base class): ``value`` over ``time`` (its first dimension), of rank 1, or more for an array
    per time. A log with one bin of values per time (an array-valued process variable) is made 2-D (time, value)
    when every bin has the same length; ragged bins have no ``NXlog`` form.
    """
    time = log.coords.get(log.dims[0]) if log.ndim else None
    if time is None or time.dims != log.dims[:1] or time.dtype not in _FIELD_DTYPES:
        return "not a time series (a DataArray with a coordinate along its first dimension)"
    if log.masks:
        return "a time series with masks, which NXlog cannot hold"
    if log.bins is not None:
        sizes = log.bins.size().values
        if log.ndim != 1 or np.unique(sizes).size > 1:
            return "arrays of different lengths per time, which NXlog cannot hold"
        constituents = log.data.bins.constituents
        content = constituents["data"]
        buffer = content.data if isinstance(content, sc.DataArray) else content
        take = constituents["begin"].values[:, np.newaxis] + np.arange(sizes[0] if sizes.size else 0)
        variances = None if buffer.variances is None else buffer.variances[take]
        values = sc.array(
            dims=[log.dim, constituents["dim"]], values=buffer.values[take], variances=variances, unit=buffer.unit
        )
        log = sc.DataArray(values, coords={log.dim: time})
    if log.dtype not in _FIELD_DTYPES:
        return f"values of dtype {log.dtype}, which NXlog cannot hold"
    return log


def _write_nxlog(parent: h5py.Group, name: str, log: sc.DataArray) -> None:
    """Write a time series as ``NXlog``: ``value`` and its time axis ``time`` (NeXus ``NXlog`` base class)."""
    group = snx.create_class(parent, name, "NXlog")
    snx.create_field(group, "value", log.data)
    snx.create_field(group, "time", log.coords[log.dims[0]])


def _event_monitor_problem(name: str, monitor: object) -> str | None:
    """Why ``monitor`` cannot be written as the events of an ``NXmonitor``, or None if it can.

    It can when it is a monitor's events as the scipp engine makes them (``chunk.monitor_events``): a 1-D
    DataArray of weights 1 (no variances, or variances 1), coordinates ``event_time_offset`` (numeric) and
    ``event_time_zero`` (datetime64) along its dimension and no others, no masks, and ``name`` is an HDF5 name.
    """
    if not name or "/" in name or name in {".", ".."}:
        return "its name is not a valid HDF5 name (empty, '/', '.')"
    if not isinstance(monitor, sc.DataArray) or monitor.ndim != 1 or monitor.bins is not None:
        return f"a {type(monitor).__name__} that is not a 1-D table of events"
    coords = monitor.coords
    if set(coords) != {"event_time_offset", "event_time_zero"} or monitor.masks:
        return "events need exactly the coordinates event_time_offset and event_time_zero, and no masks"
    tof, pulse = coords["event_time_offset"], coords["event_time_zero"]
    if tof.dims != monitor.dims or tof.dtype not in AXIS_DTYPES:
        return "event_time_offset must be numeric, one per event"
    if pulse.dims != monitor.dims or pulse.dtype != sc.DType.datetime64:
        return "event_time_zero must be datetime64, one per event"
    weights_one = monitor.dtype in _NUMERIC and bool(np.all(monitor.values == 1))
    if not weights_one or (monitor.variances is not None and not np.all(monitor.variances == 1)):
        return "its events have weights other than 1, which NXmonitor events cannot hold"
    return None


def _write_nxmonitor(parent: h5py.Group, name: str, events: sc.DataArray) -> None:
    """Write a monitor's events as an ``NXmonitor`` holding the ``NXevent_data`` fields without ``event_id``
    (as SNS event files do; scippnexus reads them as the monitor's events).

    ``event_time_offset`` as given (e.g. float32 µs); consecutive events of the same ``event_time_zero`` form a
    pulse: ``event_time_zero`` (int64 ns since ``@offset``, the Unix epoch) and ``event_index`` (int64, the first
    event of each pulse). Events are kept in their order; pulses may repeat or go back in time. ``integral``
    (``NXmonitor``: total monitor counts): the number of events, int64 [counts].
    """
    group = snx.create_class(parent, name, "NXmonitor")
    pulse = events.coords["event_time_zero"].to(unit="ns", copy=False).values.astype(np.int64)
    first = np.flatnonzero(pulse[1:] != pulse[:-1]) + 1
    index = np.concatenate([[0], first]) if pulse.size else first
    snx.create_field(group, "event_time_offset", events.coords["event_time_offset"])
    zero = group.create_dataset("event_time_zero", data=pulse[index])
    zero.attrs["units"] = "ns"
    zero.attrs["offset"] = EPOCH
    group.create_dataset("event_index", data=index.astype(np.int64))
    snx.create_field(group, "integral", sc.scalar(pulse.size, unit="counts"))


def _leave_out(what: str, reason: str) -> None:
    """Log once per process that ``what`` (a log, monitor or coordinate name) is not written, and why."""
    if what not in _left_out:
        _left_out.add(what)
        _log.warning("save_nexus leaves out %s: %s (warned once per process)", what, reason)
