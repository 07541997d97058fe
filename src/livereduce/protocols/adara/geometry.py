"""The instrument geometry of an ADARA stream: detector ids from the GEOMETRY packet's Mantid Instrument
Definition File (IDF), and a minimal IDF for a fake SMS.

The GEOMETRY packet carries a complete IDF [NP 5.17]; its detector ids are the pixel ids of BANKED_EVENT
packets, and Mantid builds one spectrum per detector id [Mantid]. Ids are declared in the IDF by

* ``<idlist idname="..."><id start="a" end="b" [step="s"]/> <id val="v"/></idlist>``, used by components with
  ``idlist="..."``;
* rectangular and structured detectors: a ``<component type="T" idstart=.. idfillbyfirst=.. idstepbyrow=..
  idstep=..>`` whose type has ``is="rectangular_detector"`` (or ``structured_detector``) with ``xpixels``,
  ``ypixels``.

Id lists used only by monitor components (``<type is="monitor">``) are monitors, not detectors. The XML is
read as a stream with expat (:mod:`xml.parsers.expat`, no tree is built) by local names (the IDF has a default
namespace), and only a summary is kept — per id list its first and
last id and count, per type its kind, grid size and child component types, the distinct id attributes of
components — so memory grows with the number of distinct declarations (at most :data:`MAX_DECLARATIONS` of each
kind), not with the size of the document. Ranges are never expanded, so a hostile ``end`` cannot exhaust memory.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from xml.parsers import expat

IDF_NAMESPACE = "http://www.mantidproject.org/IDF/1.0"
_GRID_TYPES = ("rectangular_detector", "structured_detector")
_MAX_DEPTH = 64
MAX_DECLARATIONS = 100_000
"""Most distinct types, id lists and component id attributes :func:`detector_ids` keeps (each); those beyond
are counted as invalid. A real IDF has hundreds to a few thousand of each."""
_FEED_BYTES = 1 << 20
_ID_ATTRIBUTES = ("idlist", "idstart", "idfillbyfirst", "idstepbyrow", "idstep")


class GeometryError(ValueError):
    """The IDF is not well-formed XML or not an ``<instrument>`` document."""


@dataclass(frozen=True)
class DetectorIds:
    """Detector ids of an IDF (monitors excluded), as ranges: never expanded.

    Attributes:
        first: smallest detector id (may be negative), or None if the IDF has none.
        last: largest detector id, or None.
        count: number of ids declared (overlapping declarations counted twice).
        invalid: id declarations that could not be read (non-integer values, zero steps, beyond
            :data:`MAX_DECLARATIONS`); ignored.
    """

    first: int | None
    last: int | None
    count: int
    invalid: int = 0

    def valid_range(self, limit: int = 2**31 - 1) -> tuple[int, int] | None:
        """The non-negative part of ``first..last`` clipped to ``limit``, or None if empty."""
        if self.first is None or self.last is None or self.last < 0:
            return None
        first = max(self.first, 0)
        last = min(self.last, limit)
        return (first, last) if first <= last else None


@dataclass
class _Type:
    """What a ``<type>`` says about detector ids: its kind (``is``), grid size and child component types."""

    kind: str = ""
    xpixels: str | None = None
    ypixels: str | None = None
    children: set[str] = field(default_factory=set)


@dataclass
class _Ranges:
    """Running summary of id ranges: (low, high, count) folded into first/last/count."""

    first: int | None = None
    last: int | None = None
    count: int = 0

    def add(self, low: int, high: int, count: int) -> None:
        self.first = low if self.first is None else min(self.first, low)
        self.last = high if self.last is None else max(self.last, high)
        self.count += count


@dataclass
class _Summary:
    """What :func:`detector_ids` keeps of the document while it streams."""

    types: dict[str, _Type] = field(default_factory=dict)
    idlists: dict[str, _Ranges] = field(default_factory=dict)
    components: set[tuple[str | None, ...]] = field(default_factory=set)  # (type, idlist, idstart, fill, row, step)
    invalid: int = 0


def detector_ids(xml: str | bytes | memoryview) -> DetectorIds:
    """The detector ids declared in an IDF (see the module description), read as a stream.

    Raises:
        GeometryError: not well-formed XML, or the root is not ``<instrument>``.
    """
    data = xml.encode("utf-8") if isinstance(xml, str) else memoryview(xml)
    reader = _Reader()
    parser = expat.ParserCreate(namespace_separator="}")  # names "uri}local"; no external entities
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    try:
        for at in range(0, len(data), _FEED_BYTES):
            parser.Parse(bytes(data[at : at + _FEED_BYTES]), False)
        parser.Parse(b"", True)
    except (expat.ExpatError, LookupError, ValueError) as err:  # LookupError: unknown declared encoding
        raise GeometryError(f"instrument definition is not well-formed XML: {err}") from None
    return _detector_ids(reader.summary)


class _Reader:
    """expat handlers folding the document into a :class:`_Summary`; keeps only the open elements' names and the
    attributes it needs (the ``name`` of an open ``<type>``, the ``idname`` of an open ``<idlist>``)."""

    def __init__(self) -> None:
        self.summary = _Summary()
        self.stack: list[tuple[str, str]] = []  # (local name, name/idname) of the open elements

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        name = tag.rsplit("}", 1)[-1]
        stack, summary = self.stack, self.summary
        if not stack and name != "instrument":
            raise GeometryError(f"instrument definition has root <{name}>, expected <instrument>")
        parent = stack[-1] if stack else ("", "")
        label = ""
        if name == "type" and len(stack) == 1:
            label = attrs.get("name", "")
            if len(summary.types) >= MAX_DECLARATIONS:
                summary.invalid += 1
            else:
                summary.types[label] = _Type(attrs.get("is", "").lower(), attrs.get("xpixels"), attrs.get("ypixels"))
        elif name == "component":
            kind = attrs.get("type", "")
            owner = summary.types.get(parent[1]) if len(stack) == 2 and parent[0] == "type" else None
            if owner is not None and len(owner.children) < MAX_DECLARATIONS:
                owner.children.add(kind)
            if len(summary.components) >= MAX_DECLARATIONS:
                summary.invalid += 1
            else:
                summary.components.add((kind, *(attrs.get(attribute) for attribute in _ID_ATTRIBUTES)))
        elif name == "idlist":
            label = attrs.get("idname", "")
        elif name == "id" and parent[0] == "idlist":
            declared = _id_entry(attrs)
            if declared is None or (parent[1] not in summary.idlists and len(summary.idlists) >= MAX_DECLARATIONS):
                summary.invalid += 1
            else:
                summary.idlists.setdefault(parent[1], _Ranges()).add(*declared)
        stack.append((name, label))

    def end(self, _: str) -> None:
        self.stack.pop()


def _detector_ids(summary: _Summary) -> DetectorIds:
    types = summary.types
    monitor_lists = {
        component[1] for component in summary.components if component[1] and _only_monitors(component[0] or "", types)
    }
    ranges = _Ranges()
    for idname, declared in summary.idlists.items():
        if idname not in monitor_lists and declared.first is not None and declared.last is not None:
            ranges.add(declared.first, declared.last, declared.count)
    invalid = summary.invalid
    for component in summary.components:
        grid = _grid(component, types)
        if grid is False:
            invalid += 1
        elif grid is not None:
            ranges.add(*grid)
    return DetectorIds(ranges.first, ranges.last, ranges.count, invalid)


def _int(value: str | None, default: int | None = None) -> int | None:
    if value is None:
        return default
    try:
        return int(value.strip())
    except ValueError:
        return None


def _id_entry(entry: Mapping[str, str]) -> tuple[int, int, int] | None:
    """``<id val=..>`` or ``<id start=.. end=.. [step=..]>`` (its attributes) as (low, high, count), None if
    unreadable."""
    if entry.get("val") is not None:
        value = _int(entry.get("val"))
        return None if value is None else (value, value, 1)
    start, end, step = _int(entry.get("start")), _int(entry.get("end")), _int(entry.get("step"), 1)
    if start is None or end is None or not step or (end - start) * step < 0:
        return None
    count = (end - start) // step + 1
    last = start + (count - 1) * step
    return min(start, last), max(start, last), count


def _only_monitors(kind_name: str, types: dict[str, _Type], depth: int = 0) -> bool:
    """True if every leaf type under a component of type ``kind_name`` is a monitor (``is="monitor"``)."""
    kind = types.get(kind_name)
    if kind is None or depth > _MAX_DEPTH:
        return False
    if kind.kind:
        return kind.kind == "monitor"
    return bool(kind.children) and all(_only_monitors(child, types, depth + 1) for child in kind.children)


def _grid(component: tuple[str | None, ...], types: dict[str, _Type]) -> tuple[int, int, int] | bool | None:
    """Ids of a rectangular/structured detector component as (low, high, count); None if the component is not
    one; False if it is but its attributes cannot be read."""
    kind_name, _, idstart, fill, idstepbyrow, idstep = component
    kind = types.get(kind_name or "")
    if kind is None or kind.kind not in _GRID_TYPES:
        return None
    nx, ny = _int(kind.xpixels), _int(kind.ypixels)
    by_y = (fill or "y").strip().lower() != "x"
    start = _int(idstart, 0)
    row = _int(idstepbyrow, (ny if by_y else nx) if nx is not None and ny is not None else None)
    step = _int(idstep, 1)
    if None in (nx, ny, start, row, step) or nx <= 0 or ny <= 0:
        return False
    outer, inner = (nx, ny) if by_y else (ny, nx)
    corners = [start + i * row + j * step for i in (0, outer - 1) for j in (0, inner - 1)]
    return min(corners), max(corners), nx * ny


def minimal_idf(name: str, first: int, last: int, monitors: tuple[int, ...] = ()) -> str:
    """A small, valid Mantid IDF with detector ids ``first..last`` on a square grid of pixels 1 cm apart, 5 m
    from the sample, and one monitor per id in ``monitors`` (negative ids, as at SNS).

    Enough for Mantid's LoadInstrument and for :func:`detector_ids`; not a real instrument.

    Raises:
        ValueError: ``last < first``.
    """
    if last < first:
        raise ValueError(f"no detector ids: last {last} < first {first}")
    root = ET.Element("instrument", {"xmlns": IDF_NAMESPACE, "name": name, "valid-from": "1900-01-31 23:59:59"})
    defaults = ET.SubElement(root, "defaults")
    ET.SubElement(defaults, "length", unit="meter")
    ET.SubElement(defaults, "angle", unit="degree")
    frame = ET.SubElement(defaults, "reference-frame")
    ET.SubElement(frame, "along-beam", axis="z")
    ET.SubElement(frame, "pointing-up", axis="y")
    ET.SubElement(frame, "handedness", val="right")
    _place(root, "moderator", z="-10.0")
    ET.SubElement(root, "type", name="moderator", attrib={"is": "Source"})
    _place(root, "sample-position")
    ET.SubElement(root, "type", name="sample-position", attrib={"is": "SamplePos"})
    n = last - first + 1
    side = math.isqrt(n - 1) + 1 if n > 0 else 0
    panel = ET.SubElement(root, "component", type="pixels", idlist="pixels")
    ET.SubElement(panel, "location", z="5.0")
    pixels = ET.SubElement(root, "type", name="pixels")
    grid = ET.SubElement(pixels, "component", type="pixel")
    for row, begin in enumerate(range(0, n, side)):
        count = min(side, n - begin)
        y = f"{0.01 * row:.2f}"
        if count == 1:
            ET.SubElement(grid, "location", x="0.0", y=y)
        else:
            end = f"{0.01 * (count - 1):.2f}"
            ET.SubElement(grid, "locations", {"x": "0.0", "x-end": end, "y": y, "n-elements": str(count)})
    _cuboid(ET.SubElement(root, "type", name="pixel", attrib={"is": "detector"}))
    ids = ET.SubElement(root, "idlist", idname="pixels")
    ET.SubElement(ids, "id", start=str(first), end=str(last))
    if monitors:
        holder = ET.SubElement(root, "component", type="monitors", idlist="monitors")
        ET.SubElement(holder, "location")
        group = ET.SubElement(root, "type", name="monitors")
        for index, _ in enumerate(monitors):
            placed = ET.SubElement(group, "component", type="monitor")
            ET.SubElement(placed, "location", z=f"{-1.0 - index:.1f}", name=f"monitor{index + 1}")
        _cuboid(ET.SubElement(root, "type", name="monitor", attrib={"is": "monitor"}))
        listed = ET.SubElement(root, "idlist", idname="monitors")
        for monitor in monitors:
            ET.SubElement(listed, "id", val=str(monitor))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _place(root: ET.Element, kind: str, **location: str) -> None:
    component = ET.SubElement(root, "component", type=kind)
    ET.SubElement(component, "location", location)


def _cuboid(kind: ET.Element) -> None:
    shape = ET.SubElement(kind, "cuboid", id="shape")
    for corner, (x, y, z) in {
        "left-front-bottom-point": (-0.005, -0.005, 0.0),
        "left-front-top-point": (-0.005, 0.005, 0.0),
        "left-back-bottom-point": (-0.005, -0.005, 0.01),
        "right-front-bottom-point": (0.005, -0.005, 0.0),
    }.items():
        ET.SubElement(shape, corner, x=str(x), y=str(y), z=str(z))
    ET.SubElement(kind, "algebra", val="shape")
