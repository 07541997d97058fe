"""livereduce.outputs.publish_plot (livereduce.plots): a post_proc script's plotly figure on the daemon's page.

The figures are real plotly figures; the stored JSON is compared with what plotly itself encodes, and the typed
arrays plotly writes are decoded back to the script's numpy arrays.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import plotly
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from livereduce import figures, plots
from livereduce.outputs import publish_plot


@pytest.fixture(autouse=True)
def empty_board() -> Iterator[None]:
    figures.board.clear()
    yield
    figures.board.clear()


def typed_array(spec: dict[str, str]) -> np.ndarray:
    """Decode plotly's typed-array spec ({"dtype": "f8", "bdata": base64}) as plotly.js does."""
    return np.frombuffer(base64.b64decode(spec["bdata"]), dtype=np.dtype(spec["dtype"]))


def only_figure() -> figures.Figure:
    _, listed = figures.board.figures()
    assert len(listed) == 1
    return listed[0]


def test_a_plotly_figure_goes_on_the_board_as_plotly_encodes_it() -> None:
    x = np.linspace(0.0, 1.0, 50)
    figure = go.Figure(go.Scatter(x=x, y=x**2, name="I(Q)"), layout={"title": {"text": "Reduced"}})

    figure_id = publish_plot(figure)

    shown = only_figure()
    assert (shown.id, shown.key, shown.kind, shown.origin, shown.title) == (
        figure_id,
        "plot:Reduced",
        "plotly",
        "publish_plot",
        "Reduced",
    )
    assert figures.board.get(figure_id) is shown
    expected = json.loads(pio.to_json(figure))
    assert shown.plotly == {"data": expected["data"], "layout": expected["layout"]}
    trace = shown.plotly["data"][0]
    np.testing.assert_array_equal(typed_array(trace["x"]), x)
    np.testing.assert_array_equal(typed_array(trace["y"]), x**2)
    json.dumps(shown.plotly, allow_nan=False)  # plain JSON


def test_the_page_s_plotly_js_reads_plotly_s_typed_arrays() -> None:
    """plotly encodes numpy arrays as typed-array specs, which plotly.js reads from 2.28 on; the page loads the
    plotly.js of the installed plotly package."""
    bundled = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    with bundled.open() as script:
        header = script.read(200)
    found = re.search(r"plotly\.js v(\d+)\.(\d+)\.(\d+)", header)
    assert found, header
    assert tuple(int(part) for part in found.groups()) >= (2, 28, 0)


def test_a_dict_with_numpy_arrays_and_nan_becomes_plain_json() -> None:
    figure = {
        "data": [{"type": "scatter", "x": np.arange(3), "y": np.array([1.0, np.nan, 3.0])}],
        "layout": {"title": "Monitor", "xaxis": {"title": {"text": "tof [µs]"}}},
    }

    publish_plot(figure)

    shown = only_figure()
    assert shown.key == "plot:Monitor"
    assert shown.plotly == {
        "data": [{"type": "scatter", "x": [0, 1, 2], "y": [1.0, None, 3.0]}],
        "layout": {"title": "Monitor", "xaxis": {"title": {"text": "tof [µs]"}}},
    }
    json.dumps(shown.plotly, allow_nan=False)


@pytest.mark.parametrize(
    ("layout", "name", "title", "key", "shown_title"),
    [
        ({}, None, None, "plot:plot", "plot"),
        ({"title": {"text": "  "}}, None, None, "plot:plot", "plot"),
        ({"title": "From layout"}, None, None, "plot:From layout", "From layout"),
        ({"title": "From layout"}, "sample", None, "plot:sample", "From layout"),
        ({}, "sample", None, "plot:sample", "sample"),
        ({"title": "From layout"}, "sample", "Given", "plot:sample", "Given"),
    ],
)
def test_name_and_title_default_to_the_layout_s_title(
    layout: dict[str, object], name: str | None, title: str | None, key: str, shown_title: str
) -> None:
    publish_plot({"data": [], "layout": layout}, name=name, title=title)

    shown = only_figure()
    assert (shown.key, shown.title) == (key, shown_title)


def test_publishing_the_same_name_again_replaces_the_figure() -> None:
    first = publish_plot({"data": [{"y": [1, 2]}]}, name="spectrum")
    publish_plot({"data": [{"y": [5]}]}, name="other")
    second = publish_plot({"data": [{"y": [3, 4]}]}, name="spectrum")

    _, listed = figures.board.figures()
    assert [f.key for f in listed] == ["plot:spectrum", "plot:other"]
    assert listed[0].id == second != first
    assert figures.board.get(first) is None
    assert listed[0].plotly == {"data": [{"y": [3, 4]}], "layout": {}}


@pytest.mark.parametrize(
    ("figure", "error", "message"),
    [
        ([{"y": [1]}], TypeError, "not list"),
        ("<div>", TypeError, "not str"),
        (None, TypeError, "not NoneType"),
        ({"layout": {}}, ValueError, "'data' must be a list of traces, not NoneType"),
        ({"data": {"y": [1]}}, ValueError, "'data' must be a list of traces, not dict"),
        ({"data": [{"y": [1]}, 3]}, ValueError, "data[1] is int, not a trace object"),
        ({"data": [], "layout": [1]}, ValueError, "'layout' must be an object, not list"),
        ({"data": [{"y": {1, 2}}]}, ValueError, "plotly cannot encode the figure"),
    ],
)
def test_a_figure_that_is_not_one_is_refused_with_one_line(figure: object, error: type, message: str) -> None:
    with pytest.raises(error, match=re.escape(message)) as raised:
        publish_plot(figure)
    assert "\n" not in str(raised.value)
    assert figures.board.figures()[1] == []


@pytest.mark.parametrize(
    ("name", "title", "error"), [(3, None, TypeError), (None, b"t", TypeError), ("  ", None, ValueError)]
)
def test_a_name_or_title_that_is_not_a_string_is_refused(name: object, title: object, error: type) -> None:
    with pytest.raises(error):
        publish_plot({"data": []}, name=name, title=title)  # type: ignore[arg-type]
    assert figures.board.figures()[1] == []


def test_a_figure_over_the_size_limit_is_refused_naming_the_limit() -> None:
    huge = go.Figure(go.Scattergl(y=np.zeros(plots.MAX_FIGURE_BYTES // 8 + 1)))  # base64 of the float64s alone

    with pytest.raises(ValueError, match=f"over the limit of {plots.MAX_FIGURE_BYTES} bytes"):
        publish_plot(huge)
    assert figures.board.figures()[1] == []


def test_a_figure_just_under_the_size_limit_is_kept() -> None:
    bytes_left = plots.MAX_FIGURE_BYTES - 1000
    figure = {"data": [{"text": "x" * bytes_left}]}
    assert len(json.dumps(figure)) <= plots.MAX_FIGURE_BYTES

    publish_plot(figure)

    assert len(only_figure().plotly["data"][0]["text"]) == bytes_left
