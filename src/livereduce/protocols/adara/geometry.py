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
parsed with :mod:`xml.etree.ElementTree` by local names (the IDF has a default namespace); ranges are never
expanded, so a hostile ``end`` cannot exhaust memory.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from livereduce.protocols.adara.decode import local_name

IDF_NAMESPACE = "http://www.mantidproject.org/IDF/1.0"
_GRID_TYPES = ("rectangular_detector", "structured_detector")
_MAX_DEPTH = 64


class GeometryError(ValueError):
    """The IDF is not well-formed XML or not an ``<instrument>`` document."""


@dataclass(frozen=True)
class DetectorIds:
    """Detector ids of an IDF (monitors excluded), as ranges: never expanded.

    Attributes:
        first: smallest detector id (may be negative), or None if the IDF has none.
        last: largest detector id, or None.
        count: number of ids declared (overlapping declarations counted twice).
        invalid: id declarations that could not be read (non-integer values, zero steps); ignored.
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


def detector_ids(xml: str | bytes) -> DetectorIds:
    """The detector ids declared in an IDF (see the module description).

    Raises:
        GeometryError: not well-formed XML, or the root is not ``<instrument>``.
    """
    try:
        root = ET.fromstring(xml)  # noqa: S314 - expat: no external entities; bounded by the packet cap
    except (ET.ParseError, LookupError, ValueError) as err:  # LookupError: unknown declared encoding
        raise GeometryError(f"instrument definition is not well-formed XML: {err}") from None
    if local_name(root) != "instrument":
        raise GeometryError(f"instrument definition has root <{local_name(root)}>, expected <instrument>")
    types = {el.get("name", ""): el for el in root if local_name(el) == "type"}
    components = [el for el in root.iter() if local_name(el) == "component"]
    monitor_lists = {c.get("idlist", "") for c in components if c.get("idlist") and _only_monitors(c, types)}
    ranges: list[tuple[int, int, int]] = []  # (low, high, count)
    invalid = 0
    for idlist in (el for el in root.iter() if local_name(el) == "idlist"):
        if idlist.get("idname", "") in monitor_lists:
            continue
        for entry in (el for el in idlist if local_name(el) == "id"):
            declared = _id_entry(entry)
            if declared is None:
                invalid += 1
            else:
                ranges.append(declared)
    for component in components:
        grid = _grid(component, types)
        if grid is False:
            invalid += 1
        elif grid is not None:
            ranges.append(grid)
    if not ranges:
        return DetectorIds(None, None, 0, invalid)
    return DetectorIds(min(r[0] for r in ranges), max(r[1] for r in ranges), sum(r[2] for r in ranges), invalid)


def _int(value: str | None, default: int | None = None) -> int | None:
    if value is None:
        return default
    try:
        return int(value.strip())
    except ValueError:
        return None


def _id_entry(entry: ET.Element) -> tuple[int, int, int] | None:
    """``<id val=..>`` or ``<id start=.. end=.. [step=..]>`` as (low, high, count), None if unreadable."""
    if entry.get("val") is not None:
        value = _int(entry.get("val"))
        return None if value is None else (value, value, 1)
    start, end, step = _int(entry.get("start")), _int(entry.get("end")), _int(entry.get("step"), 1)
    if start is None or end is None or not step or (end - start) * step < 0:
        return None
    count = (end - start) // step + 1
    last = start + (count - 1) * step
    return min(start, last), max(start, last), count


def _type_of(component: ET.Element, types: dict[str, ET.Element]) -> ET.Element | None:
    return types.get(component.get("type", ""))


def _only_monitors(component: ET.Element, types: dict[str, ET.Element], depth: int = 0) -> bool:
    """True if every leaf type under ``component`` is a monitor (``is="monitor"``)."""
    kind = _type_of(component, types)
    if kind is None or depth > _MAX_DEPTH:
        return False
    if kind.get("is"):
        return kind.get("is", "").lower() == "monitor"
    children = [el for el in kind if local_name(el) == "component"]
    return bool(children) and all(_only_monitors(child, types, depth + 1) for child in children)


def _grid(component: ET.Element, types: dict[str, ET.Element]) -> tuple[int, int, int] | bool | None:
    """Ids of a rectangular/structured detector component as (low, high, count); None if the component is not
    one; False if it is but its attributes cannot be read."""
    kind = _type_of(component, types)
    if kind is None or kind.get("is", "").lower() not in _GRID_TYPES:
        return None
    nx, ny = _int(kind.get("xpixels")), _int(kind.get("ypixels"))
    by_y = component.get("idfillbyfirst", "y").strip().lower() != "x"
    start = _int(component.get("idstart"), 0)
    row = _int(component.get("idstepbyrow"), ny if by_y else nx)
    step = _int(component.get("idstep"), 1)
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
