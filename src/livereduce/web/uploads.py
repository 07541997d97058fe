"""SNS's live data server upload contract, as ``plot_publisher`` uses it: what an uploaded plot is, and who may
upload one. Parsing only; :mod:`livereduce.web.server` serves the route.

The contract (neutrons/live_data_server: ``plots/urls.py``, ``plots/views.py`` ``upload_plot_data``/``_store``,
``plots/models.py``; neutrons/plot_publisher: ``publish_plot``, ``plot1d``, ``plot_heatmap``):

* ``POST /plots/<instrument>/<run digits>/upload_plot_data/``, a multipart form with the file field ``file`` and
  the fields ``username``, ``password`` and, optionally, ``data_type`` and ``expiration_date`` (not used here).
* ``file`` is UTF-8 text. ``plot_publisher`` sends a plotly div, made by
  ``plotly.offline.plot(fig, output_type="div", include_plotlyjs=False)`` (``plotly.io.to_html(fig,
  full_html=False, include_plotlyjs=False)`` makes the same): an inline ``<script>`` calling
  ``Plotly.newPlot("<div id>", <data JSON>, <layout JSON>, <config JSON>)``.
* ``data_type``: ``0`` JSON, ``1`` HTML (the server keeps it modulo 100: ``PlotData.is_data_type_valid``); without
  it the server guesses HTML when the text starts with ``<div`` (``PlotData.get_data_type_from_data``).

The figure is read out of the div without executing anything: the arguments of ``Plotly.newPlot`` are read with
``json.JSONDecoder.raw_decode``, so any JSON plotly writes is read, and nothing else is. Unlike the live data
server, which stores and shows any text, this daemon shows only plotly figures: JSON uploads must be a plotly
figure object too.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import TYPE_CHECKING, Any, Final

from livereduce.plots import figure_problem, size_problem

if TYPE_CHECKING:
    from livereduce.config import HttpUploadConfig

JSON_TYPE: Final = 0
"""``data_type`` of a JSON upload (live_data_server ``DATA_TYPES["json"]``)."""
HTML_TYPE: Final = 1
"""``data_type`` of an HTML upload (``DATA_TYPES["html"]``)."""
NEW_PLOT: Final = "Plotly.newPlot("
"""The call whose arguments are the figure."""
_SPACE: Final = re.compile(r"\s*")


class UploadRefused(ValueError):
    """An upload that is not a plotly figure; the message is one line, fit for the HTTP answer."""


def figure_from_upload(content: bytes, data_type: str | None) -> dict[str, Any]:
    """The plotly figure of an uploaded ``file``, as plain JSON.

    Args:
        content: the file's bytes: a plotly div (HTML) or a JSON plotly figure object; at most
            :data:`livereduce.plots.MAX_FIGURE_BYTES`.
        data_type: the form's ``data_type`` (``"0"`` JSON, ``"1"`` HTML, the live server's ``100``/``101`` too);
            None or empty: HTML when the text starts with ``<`` after white space (the live server checks
            ``<div``; JSON never starts with ``<``), else JSON.

    Returns:
        ``{"data": [trace, ...], "layout": {...}}``; NaN and infinities in the JSON are read as None.

    Raises:
        UploadRefused: too large, not UTF-8, an unknown ``data_type``, no ``Plotly.newPlot`` call in the HTML,
            arguments that are not JSON (or nested too deeply), no ``data`` list of trace objects, a ``layout``
            that is not an object.
    """
    if problem := size_problem(len(content)):
        raise UploadRefused(problem)
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UploadRefused(f"the upload is not UTF-8 text (byte {error.start} is not UTF-8)") from None
    kind = _data_type(data_type, text)
    figure = _figure_of_div(text) if kind == HTML_TYPE else _figure_of_json(text)
    if problem := figure_problem(figure):
        raise UploadRefused(problem)
    return {"data": figure["data"], "layout": figure.get("layout", {})}


def check_credentials(given_user: str, given_password: str, configured: HttpUploadConfig | None) -> bool:
    """Whether an upload's ``username`` and ``password`` are the configured ones (``http_upload``), compared in
    constant time (``secrets.compare_digest`` on the UTF-8 bytes, both compared whatever the first gives).
    False when uploads are not configured."""
    if configured is None:
        return False
    user_matches = secrets.compare_digest(given_user.encode(), configured.username.encode())
    password_matches = secrets.compare_digest(given_password.encode(), configured.password.get_secret_value().encode())
    return user_matches & password_matches


def _data_type(given: str | None, text: str) -> int:
    if given is None or not given.strip():
        return HTML_TYPE if text.lstrip().startswith("<") else JSON_TYPE
    try:
        kind = int(given) % 100
    except ValueError:
        kind = -1
    if kind not in (JSON_TYPE, HTML_TYPE):
        raise UploadRefused(f"unknown data_type {given[:20]!r}: 0 (JSON) or 1 (HTML)")
    return kind


def _decoder() -> json.JSONDecoder:
    """A JSON decoder that reads NaN and infinities (Python's json writes them) as None."""
    return json.JSONDecoder(parse_constant=lambda _constant: None)


def _figure_of_json(text: str) -> object:
    try:
        return _decoder().decode(text)
    except json.JSONDecodeError as error:
        raise UploadRefused(f"the upload is not JSON: {error}") from None
    except RecursionError:
        raise UploadRefused("the upload's JSON is nested too deeply") from None


def _figure_of_div(text: str) -> dict[str, Any]:
    """The figure in the first ``Plotly.newPlot("<id>", data, layout, ...)`` call of a div."""
    start = text.find(NEW_PLOT)
    if start < 0:
        raise UploadRefused("the upload has no Plotly.newPlot call: not a plotly div")
    decoder = _decoder()
    div_id, position = _argument(decoder, text, start + len(NEW_PLOT), "div id")
    if not isinstance(div_id, str):
        raise UploadRefused("the first argument of the Plotly.newPlot call is not a div id")
    data, position = _argument(decoder, text, _comma(text, position, "data"), "data")
    if text.startswith(")", _space(text, position)):
        return {"data": data, "layout": {}}  # Plotly.newPlot(id, data)
    layout, _ = _argument(decoder, text, _comma(text, position, "layout"), "layout")
    return {"data": data, "layout": layout}


def _space(text: str, position: int) -> int:
    """The position of the first character at or after ``position`` that is not white space."""
    found = _SPACE.match(text, position)
    return found.end() if found else position


def _comma(text: str, position: int, what: str) -> int:
    """The position after the comma that separates two arguments."""
    position = _space(text, position)
    if not text.startswith(",", position):
        raise UploadRefused(f"the Plotly.newPlot call ends before its {what} argument (character {position})")
    return position + 1


def _argument(decoder: json.JSONDecoder, text: str, position: int, what: str) -> tuple[object, int]:
    """The JSON value starting at ``position`` (after white space) and the position after it."""
    try:
        return decoder.raw_decode(text, _space(text, position))
    except json.JSONDecodeError as error:
        raise UploadRefused(f"the {what} argument of the Plotly.newPlot call is not JSON: {error}") from None
    except RecursionError:
        raise UploadRefused(f"the {what} argument of the Plotly.newPlot call is nested too deeply") from None
