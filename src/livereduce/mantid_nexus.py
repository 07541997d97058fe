"""Mantid's processed-workspace layout for :func:`livereduce.outputs.save_nexus`: the ``mantid_workspace_K``
entries that Mantid's ``LoadNexusProcessed`` reads (as ``SaveNexusProcessed`` writes them; Mantid's
``Framework/DataHandling/src/SaveNexusProcessed.cpp`` and ``Framework/Nexus/src/NexusFileIO.cpp``)."""

from __future__ import annotations

import contextlib
import dataclasses

import h5py
import numpy as np
import scipp as sc

AXIS_DTYPES = (sc.DType.float64, sc.DType.float32, sc.DType.int64, sc.DType.int32)
"""Numeric dtypes an axis (coordinate) may have to be written as one."""
_MANTID_UNITS: tuple[tuple[frozenset[str], sc.Unit, str], ...] = (
    (frozenset({"tof", "time_of_flight", "event_time_offset"}), sc.Unit("us"), "TOF"),
    (frozenset({"wavelength"}), sc.Unit("angstrom"), "Wavelength"),
    (frozenset({"dspacing", "d_spacing"}), sc.Unit("angstrom"), "dSpacing"),
    (frozenset({"Q", "q"}), sc.Unit("1/angstrom"), "MomentumTransfer"),
    (frozenset({"energy_transfer"}), sc.Unit("meV"), "DeltaE"),
    (frozenset({"energy"}), sc.Unit("meV"), "Energy"),
)
"""Dimension names, unit and the Mantid unit id of the axes Mantid converts (Framework/Kernel/src/Unit.cpp:
``DECLARE_UNIT(TOF)`` in microseconds, ``Wavelength`` and ``dSpacing`` in Angstrom, ``MomentumTransfer`` in
inverse Angstrom, ``DeltaE`` and ``Energy`` in meV). A coordinate in another unit of the same dimension is
converted (e.g. ms to µs); any other axis gets Mantid's ``Label`` unit (caption = dimension, label = unit)."""
_NXPROCESSED_DEFINITION = (
    "Mantid Processed Workspace",
    "http://www.nexusformat.org/instruments/xml/NXprocessed.xml",
    "http://www.isis.rl.ac.uk/xml/IXmantid.xml",
)


@dataclasses.dataclass(frozen=True)
class MantidAxis:
    """One axis of a Mantid workspace as written to ``axis1`` (x) or ``axis2`` (spectra).

    ``values``: float64 (1-D; or 2-D (spectra, x) for per-spectrum x), or for a ``TextAxis`` one fixed-length
    byte string holding the labels, each followed by a newline. ``unit``: a Mantid unit id (UnitFactory),
    ``spectraNumber`` or ``TextAxis``. ``caption`` and ``label``: for the ``Label`` unit only.
    """

    values: np.ndarray
    unit: str
    caption: str = ""
    label: str = ""


def mantid_axes(array: sc.DataArray) -> tuple[MantidAxis, MantidAxis] | None:
    """The x and spectrum axes of ``array`` as a Mantid Workspace2D, or None if Mantid cannot hold it.

    Workspace2D is (spectra, channels): LoadNexusProcessed.cpp ``loadNonEventEntry`` reads ``values`` as
    ``nspectra = dim0``, ``nchannels = dim1``, so 1 or 2 dimensions; NexusClasses.h ``NXDataSetTyped::alloc``
    refuses an empty dataset ("Attempt to load from an empty dataset").
    """
    if array.ndim not in (1, 2) or 0 in array.shape:
        return None
    x_axis = _mantid_x_axis(array)
    spectrum_axis = _mantid_spectrum_axis(array)
    return None if x_axis is None or spectrum_axis is None else (x_axis, spectrum_axis)


def _mantid_x_axis(array: sc.DataArray) -> MantidAxis | None:
    """``axis1``: the coordinate of the last dimension (points or bin edges), or the bin indices without one.

    LoadNexusProcessed.cpp ``loadEntry``: ``axis1`` of rank 1 is shared by all spectra, of rank 2 it is one row
    per spectrum; ``loadNonEventEntry`` makes a histogram when it has one value more than ``values`` has columns.
    """
    dim, size = array.dims[-1], array.shape[-1]
    coord = array.coords.get(dim)
    if coord is None:
        return MantidAxis(np.arange(size, dtype=np.float64), "Label", caption=dim)
    if coord.dtype not in AXIS_DTYPES or coord.sizes.get(dim) not in (size, size + 1):
        return None
    if coord.dims != (dim,):
        spectra = array.dims[0]
        if array.ndim != 2 or set(coord.dims) != set(array.dims) or coord.sizes[spectra] != array.shape[0]:
            return None
        coord = coord.transpose([spectra, dim])
    return _mantid_numeric_axis(dim, coord)


def _mantid_spectrum_axis(array: sc.DataArray) -> MantidAxis | None:
    """``axis2``: spectrum numbers, or the coordinate of the first dimension of a 2-D array.

    LoadNexusProcessed.cpp ``loadEntry``: ``units`` ``spectraNumber`` keeps the spectra axis (spectrum numbers
    1..m: without an ``instrument`` group nothing renumbers them), ``TextAxis`` makes a text axis, any other unit
    a numeric axis, a bin-edge axis when ``axis2`` has one value more than there are spectra;
    ``loadNonSpectraAxis`` reads the values, for a text axis the labels split at newlines, empty ones dropped
    (which would shift the labels that follow, so those are not written).
    """
    if array.ndim == 1:
        return MantidAxis(np.ones(1), "spectraNumber")
    dim, size = array.dims[0], array.shape[0]
    coord = array.coords.get(dim)
    if coord is None:
        return MantidAxis(np.arange(1, size + 1, dtype=np.float64), "spectraNumber")
    if coord.dims != (dim,):
        return None
    if coord.dtype == sc.DType.string:
        labels = [str(label) for label in coord.values]
        if len(labels) != size or any(not label or "\n" in label for label in labels):
            return None
        return MantidAxis(np.array(["".join(f"{label}\n" for label in labels).encode()]), "TextAxis")
    if coord.dtype not in AXIS_DTYPES or len(coord) not in (size, size + 1):
        return None
    return _mantid_numeric_axis(dim, coord)


def _mantid_numeric_axis(dim: str, coord: sc.Variable) -> MantidAxis:
    """A numeric axis in float64 with the Mantid unit of :data:`_MANTID_UNITS`, else Mantid's ``Label`` unit."""
    known = next(((unit, unit_id) for dims, unit, unit_id in _MANTID_UNITS if dim in dims), None)
    if known is not None and coord.unit is not None:
        with contextlib.suppress(sc.UnitError):  # a unit of another dimension: written as a Label below
            return MantidAxis(coord.to(unit=known[0], dtype="float64", copy=False).values, known[1])
    return MantidAxis(coord.to(dtype="float64", copy=False).values, "Label", caption=dim, label=_unit_text(coord))


def _unit_text(variable: sc.Variable) -> str:
    """The unit as text, empty for no unit or dimensionless."""
    return "" if variable.unit in (None, sc.units.dimensionless) else str(variable.unit)


def write_mantid_workspace(
    parent: h5py.Group, name: str, title: str, array: sc.DataArray, axes: tuple[MantidAxis, MantidAxis]
) -> None:
    """Write ``array`` as ``/NAME`` in the layout of Mantid's SaveNexusProcessed for a Workspace2D.

    Strings are fixed-length byte strings, as Mantid's NeXus API (napi) writes ``NX_CHAR``. Each item, with the
    line of Mantid that reads it:

    * ``NAME`` ``NXentry``: LoadNexusProcessed.cpp ``execLoader`` (``mantid_workspace_<EntryNumber>``),
      ``confidence`` (``/mantid_workspace_1`` exists);
    * ``title``: ``loadNonEventEntry`` ``setTitle(mtd_entry.getString("title"))`` (optional there);
      ``definition``, ``definition_local`` with ``URL``, ``Version``: not read, written as
      NexusFileIO.cpp ``writeNexusProcessedHeader`` does;
    * ``workspace`` ``NXdata``: ``loadEntry`` opens the group ``workspace`` for a Workspace2D (the other names,
      ``event_workspace``, ``offsets_workspace``, ..., select other workspace types);
    * ``values`` (float64, @signal = 1 int32, @units, @unit_label, @axes): ``NXData::openData`` (the field with
      ``signal == 1``), ``loadNonEventEntry`` (``setYUnit(units)``, ``setYUnitLabel(unit_label)``);
    * ``errors`` (float64): ``loadNonEventEntry`` ``openNXDouble("errors")`` (required);
    * ``axis1`` (float64, @units, @distribution, @caption and @label for ``Label``), ``axis2`` (@units):
      ``loadEntry`` (units through ``UnitFactory``, ``distribution == "1"`` makes a distribution);
    * ``process`` ``NXprocess``, empty: WorkspaceHistory.cpp ``loadNexus`` (without it Mantid warns "Error
      opening the algorithm history field 'process'").
    """
    entry = _mantid_group(parent, name, "NXentry")
    _mantid_text_field(entry, "title", title)
    definition, nxprocessed_url, ixmantid_url = _NXPROCESSED_DEFINITION
    for field, url in (("definition", nxprocessed_url), ("definition_local", ixmantid_url)):
        _mantid_text_attrs(_mantid_text_field(entry, field, definition), URL=url, Version="1.0")
    workspace = _mantid_group(entry, "workspace", "NXdata")
    shape = (1, *array.shape) if array.ndim == 1 else array.shape  # (spectra, channels)
    values = workspace.create_dataset("values", data=np.asarray(array.values, dtype=np.float64).reshape(shape))
    values.attrs.create("signal", 1, dtype=np.int32)
    y_unit = "Counts" if array.unit == sc.units.counts else _unit_text(array.data)
    _mantid_text_attrs(values, axes="axis2,axis1", units=y_unit, unit_label=y_unit)
    if array.variances is None:  # HDF5 returns the fill value for the never-written data: no array of zeros
        workspace.create_dataset("errors", shape=shape, dtype=np.float64, fillvalue=0.0)
    else:
        workspace.create_dataset("errors", data=sc.stddevs(array.data).values.astype(np.float64).reshape(shape))
    x_axis, spectrum_axis = axes
    axis1 = workspace.create_dataset("axis1", data=x_axis.values)
    _mantid_text_attrs(axis1, distribution="0", **_mantid_unit_attrs(x_axis))
    axis2 = workspace.create_dataset("axis2", data=spectrum_axis.values)
    _mantid_text_attrs(axis2, **_mantid_unit_attrs(spectrum_axis))
    _mantid_group(entry, "process", "NXprocess")


def _mantid_unit_attrs(axis: MantidAxis) -> dict[str, str]:
    """``units``, and for Mantid's ``Label`` unit ``caption`` and ``label`` (LoadNexusProcessed.cpp ``loadEntry``:
    ``label->setLabel(ax.attributes("caption"), ax.attributes("label"))``)."""
    if axis.unit == "Label":
        return {"units": axis.unit, "caption": axis.caption, "label": axis.label}
    return {"units": axis.unit}


def _mantid_group(parent: h5py.Group, name: str, nx_class: str) -> h5py.Group:
    group = parent.create_group(name)
    _mantid_text_attrs(group, NX_class=nx_class)
    return group


def _mantid_text_field(parent: h5py.Group, name: str, text: str) -> h5py.Dataset:
    """A string field as napi writes ``NX_CHAR``: shape (1,), fixed length (NexusClasses.cpp ``getString``)."""
    return parent.create_dataset(name, data=np.array([text.encode()]))


def _mantid_text_attrs(target: h5py.Group | h5py.Dataset, **attributes: str) -> None:
    """String attributes as napi writes ``NX_CHAR`` ones: scalar, fixed length (at least 1 byte: "" is a NUL)."""
    for name, text in attributes.items():
        target.attrs[name] = np.bytes_(text.encode())
