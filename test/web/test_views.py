"""livereduce.web.views: the page's built-in view of an accumulation when the scripts made no figure.

Real scipp arrays in, plotly figure JSON out: every figure is checked against plotly's schema (``go.Figure``
validates every attribute) and must be strict JSON (no NaN); downsampled arrays must keep their sums.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pytest
import scipp as sc

from livereduce import figures
from livereduce.web import views
from livereduce.web.views import publish_view, view_of


@pytest.fixture(autouse=True)
def empty_board() -> Iterator[None]:
    figures.board.clear()
    yield
    figures.board.clear()


def plotly_view(output: object) -> dict[str, Any]:
    """The plotly view of ``output``, checked: plotly accepts every attribute, strict JSON."""
    view = view_of(output)
    assert view is not None
    kind, figure = view
    assert kind == "plotly"
    assert isinstance(figure, dict)
    go.Figure(figure)  # raises for an attribute plotly does not know
    json.dumps(figure, allow_nan=False)
    return figure


def same_html(html: str) -> str:
    """scipp's HTML with its element ids (fresh UUIDs every time) made equal."""
    return re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<uuid>", html)


def html_view(output: object) -> str:
    view = view_of(output)
    assert view is not None
    kind, html = view
    assert kind == "html"
    assert isinstance(html, str)
    return html


def spectrum(edges: bool) -> sc.DataArray:
    tof = [0.0, 10.0, 20.0, 40.0] if edges else [5.0, 15.0, 30.0]
    return sc.DataArray(
        sc.array(dims=["tof"], values=[4.0, 9.0, 16.0], variances=[4.0, 9.0, 16.0], unit="counts"),
        coords={"tof": sc.array(dims=["tof"], values=tof, unit="us")},
        name="monitor",
    )


def test_a_1d_array_is_a_line_with_titled_axes_and_error_bars() -> None:
    figure = plotly_view(spectrum(edges=False))

    (trace,) = figure["data"]
    assert (trace["type"], trace["x"], trace["y"]) == ("scatter", [5.0, 15.0, 30.0], [4.0, 9.0, 16.0])
    assert trace["error_y"] == {"type": "data", "array": [2.0, 3.0, 4.0], "visible": True}
    assert figure["layout"]["xaxis"]["title"]["text"] == "tof [µs]"
    assert figure["layout"]["yaxis"]["title"]["text"] == "monitor [counts]"
    assert "title" not in figure["layout"]  # nothing summed


def test_a_1d_histogram_is_drawn_at_the_bins_midpoints() -> None:
    (trace,) = plotly_view(spectrum(edges=True))["data"]

    assert trace["x"] == [5.0, 15.0, 30.0]
    assert trace["y"] == [4.0, 9.0, 16.0]


def test_nan_and_masked_values_are_gaps() -> None:
    array = spectrum(edges=True)
    array.values[0] = np.nan
    array.masks["bad"] = sc.array(dims=["tof"], values=[False, False, True])

    (trace,) = plotly_view(array)["data"]

    assert trace["y"] == [None, 9.0, None]
    assert trace["error_y"]["array"] == [None, 3.0, None]


def test_a_long_1d_array_is_summed_in_blocks_keeping_its_sum() -> None:
    size = 25_001
    rng = np.random.default_rng(1)
    counts = rng.poisson(5.0, size).astype(np.float64)
    array = sc.DataArray(
        sc.array(dims=["tof"], values=counts, variances=counts, unit="counts"),
        coords={"tof": sc.linspace("tof", 0.0, 20_000.0, size + 1, unit="us")},
    )

    figure = plotly_view(array)

    (trace,) = figure["data"]
    assert len(trace["y"]) == 8_334 <= views.MAX_LINE_POINTS  # blocks of 3, the last one of 2
    assert sum(trace["y"]) == pytest.approx(counts.sum())
    assert trace["y"][0] == counts[:3].sum()
    assert trace["y"][-1] == counts[-2:].sum()
    assert trace["x"][0] == pytest.approx(20_000.0 / size * 1.5)  # the middle of the first block's edges
    assert trace["x"][-1] == pytest.approx(20_000.0 * (1 - 1 / size))
    assert np.all(np.diff(trace["x"]) > 0)
    assert "error_y" not in trace  # more points than MAX_ERROR_BARS
    assert figure["layout"]["title"]["text"] == "each point sums blocks of bins: 3 along tof"


def test_a_datetime_coordinate_gives_dates() -> None:
    times = sc.datetimes(dims=["time"], values=["2025-03-01T10:00:00", "2025-03-01T10:00:02"], unit="ns")
    array = sc.DataArray(sc.array(dims=["time"], values=[300.0, 301.0], unit="K"), coords={"time": times})

    figure = plotly_view(array)

    assert figure["data"][0]["x"] == ["2025-03-01T10:00:00.000000000", "2025-03-01T10:00:02.000000000"]
    assert figure["layout"]["xaxis"]["title"]["text"] == "time"


def test_a_coordinate_that_cannot_be_an_axis_gives_the_index() -> None:
    array = sc.DataArray(
        sc.array(dims=["pixel"], values=[1.0, 2.0, 3.0]),
        coords={"pixel": sc.array(dims=["pixel"], values=[3.0, 1.0, 2.0], unit="m")},  # not monotonic
    )

    figure = plotly_view(array)

    assert figure["data"][0]["x"] == [0.0, 1.0, 2.0]
    assert figure["layout"]["xaxis"]["title"]["text"] == "pixel (index)"
    assert figure["layout"]["yaxis"]["title"]["text"] == "data"  # dimensionless, no name
    assert plotly_view(sc.array(dims=["x"], values=[1, 2]))["data"][0]["x"] == [0.0, 1.0]  # a Variable


def detector_image() -> sc.DataArray:
    values = np.array([[1.0, 10.0, 100.0], [0.0, -5.0, np.nan]])
    return sc.DataArray(
        sc.array(dims=["y", "x"], values=values, unit="counts"),
        coords={
            "x": sc.array(dims=["x"], values=[0.0, 1.0, 2.0, 4.0], unit="mm"),
            "y": sc.array(dims=["y"], values=[-1.0, 0.0, 1.0], unit="mm"),
        },
    )


def test_a_2d_array_is_a_log_heatmap_labelled_with_real_values() -> None:
    figure = plotly_view(detector_image())

    (trace,) = figure["data"]
    assert trace["type"] == "heatmap"
    assert trace["z"] == [[0.0, 1.0, 2.0], [None, None, None]]  # log10; zero, negative, NaN blank
    assert trace["x"] == [0.0, 1.0, 2.0, 4.0]  # edges: plotly.js draws n + 1 coordinates as the bricks' edges
    assert trace["y"] == [-1.0, 0.0, 1.0]
    assert trace["colorbar"]["tickvals"] == [0.0, 1.0, 2.0]
    assert trace["colorbar"]["ticktext"] == ["1", "10", "100"]
    assert trace["colorbar"]["title"]["text"] == "data [counts]"
    assert figure["layout"]["xaxis"]["title"]["text"] == "x [mm]"
    assert figure["layout"]["yaxis"]["title"]["text"] == "y [mm]"


def test_a_narrow_range_of_values_gets_ticks_at_1_2_5() -> None:
    array = sc.DataArray(sc.array(dims=["y", "x"], values=[[1.5, 3.0], [6.0, 40.0]]))

    colorbar = plotly_view(array)["data"][0]["colorbar"]

    assert colorbar["ticktext"] == ["2", "5", "10", "20"]
    assert np.allclose(colorbar["tickvals"], np.log10([2, 5, 10, 20]))


def test_a_big_2d_array_is_summed_in_blocks_keeping_its_sums() -> None:
    rows, columns = 1_000, 1_301  # blocks of 2 rows (500), of 3 columns (434, the last one of 2)
    counts = np.random.default_rng(2).poisson(20.0, (rows, columns)).astype(np.float64) + 1.0
    array = sc.DataArray(
        sc.array(dims=["y", "x"], values=counts, unit="counts"),
        coords={"x": sc.arange("x", columns + 1.0, unit="mm"), "y": sc.arange("y", float(rows), unit="mm")},
    )

    figure = plotly_view(array)

    (trace,) = figure["data"]
    summed = 10 ** np.array(trace["z"])
    assert summed.shape == (500, 434)
    assert max(summed.shape) <= views.MAX_IMAGE_POINTS
    np.testing.assert_allclose(summed[0, 0], counts[:2, :3].sum(), rtol=1e-3)
    np.testing.assert_allclose(summed[-1, -1], counts[-2:, -2:].sum(), rtol=1e-3)
    np.testing.assert_allclose(summed.sum(), counts.sum(), rtol=1e-3)
    assert trace["x"][:2] == [0.0, 3.0]
    assert trace["x"][-1] == float(columns)  # the last edge closes the short block
    assert len(trace["x"]) == 435
    assert trace["y"][:2] == [0.5, 2.5]  # the mean of each block's points
    assert figure["layout"]["title"]["text"] == "each point sums blocks of bins: 2 along y, 3 along x"


def test_the_cost_of_a_1000_by_1000_view() -> None:
    array = sc.DataArray(
        sc.array(dims=["y", "x"], values=np.random.default_rng(3).random((1_000, 1_000)), unit="counts"),
        coords={"x": sc.arange("x", 1_001.0), "y": sc.arange("y", 1_000.0)},
    )
    view_of(array)
    start = time.perf_counter()
    view_of(array)
    print(f"view of a 1000 x 1000 array: {time.perf_counter() - start:.3f} s")


def test_binned_events_are_histogrammed_over_their_bins() -> None:
    events = sc.data.table_xyz(2_000)

    (line,) = plotly_view(events.bin(x=10))["data"]
    (image,) = plotly_view(events.bin(x=4, y=3))["data"]

    np.testing.assert_allclose(line["y"], events.bin(x=10).hist().values)
    assert len(line["x"]) == 10
    expected = np.log10(events.bin(x=4, y=3).hist().values)
    np.testing.assert_allclose(np.array(image["z"], dtype=float), expected, atol=1e-4)
    assert len(image["x"]) == 4  # x edges: 3 columns
    assert len(image["y"]) == 5  # y edges: 4 rows


def test_too_many_events_get_the_html_view(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(views, "MAX_ELEMENTS", 999)
    assert "scipp" in html_view(sc.data.table_xyz(1_000).bin(x=10))
    plotly_view(sc.data.table_xyz(999).bin(x=10))


@pytest.mark.parametrize(
    "output",
    [
        sc.DataGroup({"sample": sc.scalar(1.0, unit="K"), "spectrum": sc.arange("tof", 3.0)}),
        sc.Dataset({"a": sc.arange("x", 3.0), "b": sc.arange("x", 3.0)}),
        sc.DataArray(sc.ones(dims=["x", "y", "z"], shape=[2, 3, 4])),
        sc.DataArray(sc.scalar(3.0)),
        sc.DataArray(sc.array(dims=["x"], values=["a", "b"])),
        sc.DataArray(sc.zeros(dims=["x"], shape=[0])),
    ],
    ids=["DataGroup", "Dataset", "3-D", "0-D", "strings", "empty"],
)
def test_other_scipp_objects_get_scipp_s_html(output: object) -> None:
    html = html_view(output)
    assert same_html(html) == same_html(sc.make_html(output))


def test_the_html_view_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(views, "MAX_HTML_CHARS", 5_000)
    group = sc.DataGroup({f"entry_{k}": sc.arange("x", float(k + 1)) for k in range(200)})
    assert len(sc.make_html(group)) > 5_000

    html = html_view(group)

    assert len(html) <= 5_000
    body, note = html.split("<p>(cut:")
    assert body.endswith(">")
    assert same_html(sc.make_html(group)).startswith(same_html(body))
    assert f"{len(sc.make_html(group))} characters" in note


class Frame:
    """A foreign object with an HTML representation (as pandas has)."""

    def _repr_html_(self) -> str:
        return "<table><tr><td>1</td></tr></table>"


class BrokenFrame:
    def _repr_html_(self) -> str:
        raise RuntimeError("repr failed")


class Workspace:
    """A Mantid-like object without an HTML representation."""

    def __str__(self) -> str:
        return "Workspace2D"


def test_other_objects_get_their_own_html_or_no_view(caplog: pytest.LogCaptureFixture) -> None:
    assert view_of(Frame()) == ("html", "<table><tr><td>1</td></tr></table>")
    assert view_of(Workspace()) is None
    assert view_of(None) is None
    with caplog.at_level(logging.WARNING, logger="livereduce.web.views"):
        assert view_of(BrokenFrame()) is None
    assert "_repr_html_ failed" in caplog.text


def test_publish_view_keeps_one_view_on_the_board() -> None:
    publish_view(spectrum(edges=True))
    publish_view(detector_image())

    _, listed = figures.board.figures()
    assert len(listed) == 1
    (shown,) = listed
    assert (shown.key, shown.kind, shown.origin, shown.title) == (
        "view",
        "plotly",
        "view",
        "Accumulation (no figure from the scripts)",
    )
    assert shown.plotly == view_of(detector_image())[1]

    publish_view(sc.DataGroup({"a": sc.scalar(1.0)}))
    (shown,) = figures.board.figures()[1]
    assert (shown.kind, shown.plotly) == ("html", None)
    assert same_html(shown.html or "") == same_html(sc.make_html(sc.DataGroup({"a": sc.scalar(1.0)})))

    publish_view(Workspace())
    assert figures.board.figures()[1] == []
