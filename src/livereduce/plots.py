"""Interactive plotly figures on the daemon's page: :func:`publish_plot` for post_proc scripts, and the checks and
the encoding that every plotly figure of the board (:mod:`livereduce.figures`) goes through.

A figure is kept as plain JSON (``{"data": [...], "layout": {...}}``: dicts, lists, strings, numbers, booleans,
None; no NaN, no numpy), encoded by plotly's own encoder, so the page hands it to ``Plotly.newPlot`` as it is.
plotly encodes the numpy arrays of a ``plotly.graph_objects.Figure`` as typed-array specs
(``{"dtype": "f8", "bdata": "<base64>"}``, plotly.py >= 6), which plotly.js reads since 2.28; the page loads the
plotly.js bundled with the installed plotly package (``plotly/package_data/plotly.min.js``, 4.x with plotly 7).
The arrays of a plain dict become lists, NaN ``null``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import plotly.io as pio
from plotly.basedatatypes import BaseFigure
from plotly.io.json import to_json_plotly

from livereduce import figures

MAX_FIGURE_BYTES: Final = 20 * 1024 * 1024
"""Largest plotly figure the board takes, in bytes of its JSON (a published figure, an upload)."""


def figure_problem(figure: object) -> str | None:
    """What makes decoded JSON unusable as a plotly figure, in one line; None when it is one: an object with a
    ``data`` list of trace objects and, if present, a ``layout`` object (plotly.js's ``Plotly.newPlot`` figure)."""
    if not isinstance(figure, Mapping):
        return f"a plotly figure is a JSON object with a 'data' list, not {type(figure).__name__}"
    data = figure.get("data")
    if not isinstance(data, list):
        return f"the figure's 'data' must be a list of traces, not {type(data).__name__}"
    wrong = next((k for k, trace in enumerate(data) if not isinstance(trace, Mapping)), None)
    if wrong is not None:
        return f"the figure's data[{wrong}] is {type(data[wrong]).__name__}, not a trace object"
    layout = figure.get("layout", {})
    if not isinstance(layout, Mapping):
        return f"the figure's 'layout' must be an object, not {type(layout).__name__}"
    return None


def size_problem(size: int) -> str | None:
    """A one-line refusal when a figure of ``size`` bytes is over :data:`MAX_FIGURE_BYTES`, else None."""
    if size > MAX_FIGURE_BYTES:
        return f"the figure is {size} bytes of JSON, over the limit of {MAX_FIGURE_BYTES} bytes (20 MiB)"
    return None


def figure_json(figure: object) -> dict[str, Any]:
    """The plain JSON of a plotly figure (see the module docstring), encoded by plotly.

    Args:
        figure: a ``plotly.graph_objects.Figure`` (validated by plotly when it was built), or a mapping
            ``{"data": [trace, ...], "layout": {...}}`` whose values may hold numpy arrays, NaN, datetimes (encoded
            by plotly's ``PlotlyJSONEncoder``; the traces' attributes are not checked against plotly's schema:
            plotly.js ignores the ones it does not know).

    Returns:
        ``{"data": [...], "layout": {...}}`` (``frames`` and other keys are left out).

    Raises:
        TypeError: ``figure`` is neither.
        ValueError: no ``data`` list of trace objects, a ``layout`` that is not an object, a value plotly cannot
            encode, or JSON over :data:`MAX_FIGURE_BYTES`.
    """
    if isinstance(figure, BaseFigure):
        text = pio.to_json(figure, validate=False)
    elif isinstance(figure, Mapping):
        if problem := figure_problem(figure):
            raise ValueError(problem)
        try:
            text = to_json_plotly({"data": figure["data"], "layout": figure.get("layout", {})})
        except TypeError as error:  # the encoder's message names the type it cannot encode
            raise ValueError(f"plotly cannot encode the figure: {error}") from None
    else:
        raise TypeError(
            f"a plotly figure is a plotly.graph_objects.Figure or a dict {{'data': [...], 'layout': {{...}}}}, "
            f"not {type(figure).__name__}"
        )
    if problem := size_problem(len(text.encode())):
        raise ValueError(problem)
    decoded = json.loads(text)
    return {"data": decoded["data"], "layout": decoded.get("layout", {})}


def title_text(layout: Mapping[str, Any]) -> str | None:
    """The text of a layout's title (plotly takes ``"title": "..."`` or ``"title": {"text": "..."}``), if any."""
    title = layout.get("title")
    if isinstance(title, Mapping):
        title = title.get("text")
    return title if isinstance(title, str) and title.strip() else None


def publish_plot(figure: object, name: str | None = None, title: str | None = None) -> str:
    """Show an interactive plotly figure on the daemon's page (for post_proc scripts).

    The figure goes on the process's figure board (:data:`livereduce.figures.board`) under the key
    ``plot:<name>``: publishing again under the same name replaces it (each cycle's update of the same plot). It
    is cheap and needs no web server: without one the board just keeps the newest figures.

    Args:
        figure: a ``plotly.graph_objects.Figure``, or a dict ``{"data": [trace, ...], "layout": {...}}`` (see
            :func:`figure_json`).
        name: what identifies the plot across cycles; defaults to the layout's title text, else ``"plot"``.
        title: what the page writes above it; defaults to the layout's title text, else ``name``.

    Returns:
        The figure's id on the board (the page's handle).

    Raises:
        TypeError: ``figure`` is neither a Figure nor a dict, or ``name``/``title`` is not a string.
        ValueError: the figure has no ``data`` list of traces, cannot be encoded, or is over
            :data:`MAX_FIGURE_BYTES` of JSON; ``name`` is empty.
    """
    for label, value in (("name", name), ("title", title)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"publish_plot: {label} must be a string, not {type(value).__name__}")
    if name is not None and not name.strip():
        raise ValueError("publish_plot: name must not be empty")
    encoded = figure_json(figure)
    layout_title = title_text(encoded["layout"])
    name = name or layout_title or "plot"
    published = figures.board.add(
        f"plot:{name}", "plotly", title or layout_title or name, "publish_plot", plotly=encoded
    )
    return published.id
