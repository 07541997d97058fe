"""The built-in view of an accumulation, for the daemon's page when the scripts made no figure.

:func:`view_of` turns the accumulation (whatever the last script returned) into something the page shows:

* a dense 1-D scipp ``DataArray`` (or ``Variable``): a plotly line, x from the dimension's coordinate (the
  midpoints of bin edges), error bars from the variances when there are at most :data:`MAX_ERROR_BARS` points;
* a dense 2-D ``DataArray``: a plotly heatmap of log10 of the values (zeros, negatives, NaN and masked values
  blank), the inner dimension along x, both coordinates as given (plotly.js draws ``n + 1`` coordinates as the
  bricks' edges), the colour bar labelled with the real values;
* a binned (event) ``DataArray`` of at most :data:`MAX_ELEMENTS` events: the same, after ``hist()`` over its
  bins (the events summed per bin);
* any other scipp object (``Dataset``, ``DataGroup``, a 0-D or 3-D array, one too large, strings...): scipp's
  HTML representation; another object with ``_repr_html_`` (pandas, a Mantid object that has one): that.

Views are cheap enough for the cycle thread: at most :data:`MAX_ELEMENTS` values or events are reduced, and a
large array is summed in blocks (``numpy.add.reduceat``; sums preserved, NaN and masked values left out) to at
most :data:`MAX_LINE_POINTS` points (1-D) or :data:`MAX_IMAGE_POINTS` per axis (2-D). A coordinate that is
missing, not numeric or datetime, not 1-D, or not monotonic is replaced by the index. The plotly figure is plain
JSON: lists of numbers (NaN as None), strings (ISO dates for a datetime coordinate).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import scipp as sc

from livereduce import figures
from livereduce.figures import Kind

MAX_LINE_POINTS: Final = 10_000
"""Most points of a 1-D view; longer arrays are summed in blocks."""
MAX_IMAGE_POINTS: Final = 512
"""Most points along each axis of a 2-D view; larger arrays are summed in blocks."""
MAX_ERROR_BARS: Final = 2_000
"""Most points of a 1-D view drawn with error bars (more would hide the line and double the JSON)."""
MAX_ELEMENTS: Final = 50_000_000
"""Most values (dense) or events (binned) a view reduces in the cycle thread; larger arrays get the HTML view."""
MAX_HTML_CHARS: Final = 2_000_000
"""Longest HTML view, characters; longer representations are cut at a tag's end."""
VIEW_KEY: Final = "view"
"""Key (and origin) of the view on the figure board."""
VIEW_TITLE: Final = "Accumulation (no figure from the scripts)"
"""The view's title on the page."""
LOG_DIGITS: Final = 4
"""Decimals kept of log10 of a 2-D view's values (a colour needs no more; the JSON is half as long)."""

_NUMERIC: Final = (sc.DType.float64, sc.DType.float32, sc.DType.int64, sc.DType.int32, sc.DType.bool)
_logger = logging.getLogger(__name__)


def view_of(output: object) -> tuple[Kind, dict[str, Any] | str] | None:
    """The page's view of an accumulation (see the module docstring).

    Args:
        output: what the scripts returned (a scipp object, a Mantid workspace, anything).

    Returns:
        ``("plotly", {"data": [...], "layout": {...}})``, ``("html", fragment)`` (at most :data:`MAX_HTML_CHARS`
        characters), or None when the object has no representation (or its ``_repr_html_`` failed: logged).
    """
    if isinstance(output, sc.Variable) and output.ndim in (1, 2):
        output = sc.DataArray(output)
    if isinstance(output, sc.DataArray):
        dense = _dense(output)
        if dense is not None and dense.ndim == 1:
            return "plotly", _line(dense)
        if dense is not None and dense.ndim == 2:
            return "plotly", _heatmap(dense)
    if isinstance(output, (sc.Variable, sc.DataArray, sc.Dataset, sc.DataGroup)):
        return "html", _bounded(sc.make_html(output))
    represent = getattr(output, "_repr_html_", None)
    if not callable(represent):
        return None
    try:
        html = represent()
    except Exception:  # a foreign object's repr: the view is not worth a failed cycle
        _logger.warning("no view of the accumulation: its _repr_html_ failed", exc_info=True)
        return None
    return ("html", _bounded(html)) if isinstance(html, str) and html else None


def publish_view(output: object) -> None:
    """Put the view of ``output`` (:func:`view_of`) on the figure board under :data:`VIEW_KEY`, origin ``view``,
    replacing the previous one; take the previous one off when ``output`` has no view."""
    view = view_of(output)
    if view is None:
        figures.board.remove(VIEW_KEY)
        return
    kind, content = view
    if isinstance(content, dict):
        figures.board.add(VIEW_KEY, kind, VIEW_TITLE, VIEW_KEY, plotly=content)
    else:
        figures.board.add(VIEW_KEY, kind, VIEW_TITLE, VIEW_KEY, html=content)


def _dense(array: sc.DataArray) -> sc.DataArray | None:
    """The array to plot (binned data histogrammed over its bins), or None when it cannot be plotted cheaply."""
    if array.bins is not None:
        if array.bins.constituents["data"].dtype not in _NUMERIC or array.bins.size().sum().value > MAX_ELEMENTS:
            return None
        array = array.hist()
    if array.dtype not in _NUMERIC or array.ndim not in (1, 2) or not 0 < array.size <= MAX_ELEMENTS:
        return None
    return array


@dataclass(frozen=True)
class _Axis:
    """One axis of a view, after block summing."""

    title: str
    positions: np.ndarray  # float64: n points, or n + 1 edges
    edges: bool
    datetime_unit: str | None  # the positions are datetime64[unit] ticks

    def values(self, *, midpoints: bool) -> list[Any] | np.ndarray:
        """What plotly gets: numbers, or ISO date strings for a datetime coordinate."""
        positions = (self.positions[:-1] + self.positions[1:]) / 2 if midpoints and self.edges else self.positions
        if self.datetime_unit is None:
            return positions
        ticks = np.round(positions).astype(np.int64).astype(f"datetime64[{self.datetime_unit}]")
        return np.datetime_as_string(ticks).tolist()


def _axis(array: sc.DataArray, dim: str, starts: np.ndarray) -> _Axis:
    """The axis of ``dim`` summed in blocks beginning at ``starts``: edges are taken at the blocks' bounds, points
    are averaged over the blocks; the index when the coordinate cannot be drawn."""
    size = array.sizes[dim]
    coord = array.coords.get(dim)
    datetime_unit = None
    if coord is not None and coord.dims == (dim,) and coord.dtype in (*_NUMERIC, sc.DType.datetime64):
        if coord.dtype == sc.DType.datetime64:
            datetime_unit = str(coord.unit)
            positions = coord.values.astype(np.int64).astype(np.float64)
        else:
            positions = coord.values.astype(np.float64)
        steps = np.diff(positions)
        if np.all(steps > 0) or np.all(steps < 0):
            unit = "" if coord.unit in (None, sc.units.one) or datetime_unit else f" [{coord.unit}]"
            edges = array.coords.is_edges(dim)
            if edges:
                positions = positions[np.append(starts, size)]
            else:
                positions = np.add.reduceat(positions, starts) / np.diff(np.append(starts, size))
            return _Axis(f"{dim}{unit}", positions, edges, datetime_unit)
    index = np.add.reduceat(np.arange(size, dtype=np.float64), starts) / np.diff(np.append(starts, size))
    return _Axis(f"{dim} (index)", index, False, None)


def _blocks(size: int, most: int) -> tuple[int, np.ndarray]:
    """The block length and the first index of each block when ``size`` points are summed in equal blocks (the
    last one may be shorter) to at most ``most`` points."""
    length = math.ceil(size / most)
    return length, np.arange(0, size, length)


def _block_sums(
    array: sc.DataArray, starts: list[np.ndarray], *, variances: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Sums of the values (and, if asked and present, of the variances) over blocks, leaving out NaN and masked
    values; NaN where a block has none left. Dims in the array's order, one ``starts`` per dim."""
    values = np.asarray(array.values, dtype=np.float64)
    valid = np.isfinite(values)
    for mask in array.masks.values():
        valid &= ~sc.broadcast(mask, sizes=array.sizes).values
    everything = bool(valid.all())  # the usual case: no counting of the values left in each block
    summed = [values]
    if variances and array.variances is not None:
        summed.append(np.asarray(array.variances, dtype=np.float64))
    if not everything:
        summed = [np.where(valid, each, 0.0) for each in summed] + [valid.astype(np.int64)]
    for axis, first in enumerate(starts):
        summed = [np.add.reduceat(each, first, axis=axis) for each in summed]
    if not everything:
        empty = summed.pop() == 0
        for each in summed:
            each[empty] = np.nan
    return summed[0], summed[1] if len(summed) > 1 else None


def _plain(values: np.ndarray | list[Any]) -> list[Any]:
    """Numbers as JSON: a (nested) list of floats, NaN and infinities as None."""
    if isinstance(values, list):
        return values
    return np.where(np.isfinite(values), values, None).tolist()


def _value_title(array: sc.DataArray) -> str:
    unit = "" if array.unit in (None, sc.units.one) else f" [{array.unit}]"
    return f"{array.name or 'data'}{unit}"


def _summed_note(array: sc.DataArray, lengths: list[int]) -> dict[str, Any]:
    """A layout title saying how many bins each drawn point sums, when it sums more than one."""
    if all(length == 1 for length in lengths):
        return {}
    blocks = ", ".join(f"{length} along {dim}" for dim, length in zip(array.dims, lengths, strict=True))
    return {"title": {"text": f"each point sums blocks of bins: {blocks}", "font": {"size": 12}}}


def _line(array: sc.DataArray) -> dict[str, Any]:
    (dim,) = array.dims
    length, starts = _blocks(array.sizes[dim], MAX_LINE_POINTS)
    sums, variances = _block_sums(array, [starts], variances=True)
    axis = _axis(array, dim, starts)
    x, y = _plain(axis.values(midpoints=True)), _plain(sums)
    trace: dict[str, Any] = {"type": "scatter", "mode": "lines", "x": x, "y": y}
    if variances is not None and len(sums) <= MAX_ERROR_BARS:
        trace["error_y"] = {"type": "data", "array": _plain(np.sqrt(variances)), "visible": True}
    layout = {
        "xaxis": {"title": {"text": axis.title}},
        "yaxis": {"title": {"text": _value_title(array)}},
        **_summed_note(array, [length]),
    }
    return {"data": [trace], "layout": layout}


def _heatmap(array: sc.DataArray) -> dict[str, Any]:
    rows, columns = array.dims
    lengths, starts = zip(*(_blocks(array.sizes[dim], MAX_IMAGE_POINTS) for dim in array.dims), strict=True)
    sums, _ = _block_sums(array, list(starts), variances=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.round(np.where(sums > 0, np.log10(sums), np.nan), LOG_DIGITS)
    x, y = _axis(array, columns, starts[1]), _axis(array, rows, starts[0])
    trace = {
        "type": "heatmap",
        "x": _plain(x.values(midpoints=False)),
        "y": _plain(y.values(midpoints=False)),
        "z": _plain(logs),
        "colorscale": "Viridis",
        "colorbar": {"title": {"text": _value_title(array)}, **_log_ticks(logs)},
        "hovertemplate": f"{x.title}: %{{x}}<br>{y.title}: %{{y}}<br>log10: %{{z:.3f}}<extra></extra>",
    }
    layout = {
        "xaxis": {"title": {"text": x.title}},
        "yaxis": {"title": {"text": y.title}},
        **_summed_note(array, list(lengths)),
    }
    return {"data": [trace], "layout": layout}


def _log_ticks(logs: np.ndarray) -> dict[str, list[Any]]:
    """Colour bar ticks of a log10 image labelled with the real values: at the powers of ten, or at 1, 2 and 5
    times them when the values span less than two decades, or at the ends when not even those fall inside."""
    finite = logs[np.isfinite(logs)]
    if finite.size == 0:
        return {}
    low, high = float(finite.min()), float(finite.max())
    decades = range(math.floor(low), math.ceil(high) + 1)
    mantissas = (1,) if high - low >= 2 else (1, 2, 5)
    ticks = [math.log10(m) + k for k in decades for m in mantissas if low <= math.log10(m) + k <= high]
    if not ticks:
        ticks = sorted({low, high})
    return {"tickvals": ticks, "ticktext": [f"{10**tick:.3g}" for tick in ticks]}


def _bounded(html: str) -> str:
    """``html`` cut at the end of a tag to at most :data:`MAX_HTML_CHARS` characters, with a note that it was."""
    if len(html) <= MAX_HTML_CHARS:
        return html
    note = f"<p>(cut: the representation has {len(html)} characters, the page shows the first ones)</p>"
    end = html.rfind(">", 0, MAX_HTML_CHARS - len(note)) + 1
    return html[:end] + note
