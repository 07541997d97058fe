"""livereduce.web.uploads: the plotly figure of an upload to SNS's live data server route, and its credentials.

The uploads are made by real plotly, the way neutrons/plot_publisher makes them (``plotly.offline.plot(...,
output_type="div", include_plotlyjs=False)``, with its ``plotlyjs-version`` attribute on the
first div) and the way ``plotly.io.to_html(full_html=False, include_plotlyjs=False)`` does; what is read back is
compared with what plotly encodes for the figure. Then hostile uploads.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable

import numpy as np
import plotly
import plotly.graph_objects as go
import plotly.io as pio
import plotly.offline
import pytest
from pydantic import SecretStr

from livereduce.config import HttpUploadConfig
from livereduce.plots import MAX_FIGURE_BYTES
from livereduce.web.uploads import UploadRefused, check_credentials, figure_from_upload


def reflectivity() -> go.Figure:
    """What plot_publisher's plot1d builds: markers with error bars, titled axes, log y."""
    q = np.geomspace(0.008, 0.2, 300)
    r = np.exp(-q * 40.0)
    r[7] = np.nan
    return go.Figure(
        go.Scatter(x=q, y=r, error_y={"type": "data", "array": r / 10, "visible": True}, mode="markers"),
        layout={
            "title": "REF_L 201234",
            "xaxis": {"title": "Q [1/Å]"},
            "yaxis": {"title": "R", "type": "log"},
            "width": 600,
            "height": 400,
        },
    )


def heatmap() -> go.Figure:
    """What plot_publisher's plot_heatmap builds."""
    z = np.arange(12.0).reshape(3, 4)
    return go.Figure(go.Heatmap(z=z, x=[0.5, 1.5, 2.5, 3.5], y=["a", "b", "c"]), layout={"title": "detector"})


def plotly_json(figure: go.Figure) -> dict[str, object]:
    """The figure as plotly encodes it (typed arrays for numpy arrays, NaN as null)."""
    encoded = json.loads(pio.to_json(figure))
    return {"data": encoded["data"], "layout": encoded["layout"]}


def publisher_div(figure: go.Figure) -> str:
    """A div as plot_publisher uploads it: plotly.offline.plot's div (plot_publisher passes show_link=False too,
    which plotly 7 no longer takes), plus the plotlyjs-version attribute that plot_publisher's
    _inject_plotlyjs_version writes into the first div with an id."""
    div = plotly.offline.plot(figure, output_type="div", include_plotlyjs=False)
    version = rf'\1 plotlyjs-version="{plotly.__version__}"\2'
    return re.sub(r"(<div[^>]*id=[\"'][^\"']*[\"'][^>]*)(>)", version, div, count=1)


def to_html_div(figure: go.Figure) -> str:
    return pio.to_html(figure, full_html=False, include_plotlyjs=False)


@pytest.mark.parametrize("make", [reflectivity, heatmap])
@pytest.mark.parametrize("write", [publisher_div, to_html_div])
@pytest.mark.parametrize("data_type", [None, "", "1", "101"])
def test_a_plotly_div_gives_back_the_figure_plotly_encoded(
    make: Callable[[], go.Figure], write: Callable[[go.Figure], str], data_type: str | None
) -> None:
    figure = make()
    div = write(figure)
    assert "Plotly.newPlot(" in div

    assert figure_from_upload(div.encode(), data_type) == plotly_json(figure)


def test_the_figure_read_from_a_div_decodes_to_the_script_s_arrays() -> None:
    """The typed arrays in the div are plotly's encoding of the numpy arrays (the page's plotly.js reads them)."""
    figure = reflectivity()

    trace = figure_from_upload(publisher_div(figure).encode(), None)["data"][0]

    x = np.frombuffer(base64.b64decode(trace["x"]["bdata"]), dtype=trace["x"]["dtype"])
    np.testing.assert_array_equal(x, figure.data[0].x)
    y = np.frombuffer(base64.b64decode(trace["y"]["bdata"]), dtype=trace["y"]["dtype"])
    np.testing.assert_array_equal(y, figure.data[0].y)  # NaN included, as plotly.js reads it


def test_a_full_html_page_is_read_too() -> None:
    """Without data_type, anything starting with '<' is HTML (the live server checks '<div'; JSON cannot start
    with '<'): a whole page from plotly.io.to_html is read as well."""
    page = pio.to_html(heatmap(), full_html=True, include_plotlyjs=False)
    assert not page.lstrip().startswith("<div")

    assert figure_from_upload(f"\n  {page}".encode(), None) == plotly_json(heatmap())


def test_a_div_without_a_layout_argument_gets_an_empty_layout() -> None:
    div = '<div id="p"></div><script>Plotly.newPlot( "p" , [{"y": [1, 2]}] )</script>'

    assert figure_from_upload(div.encode(), None) == {"data": [{"y": [1, 2]}], "layout": {}}


@pytest.mark.parametrize("data_type", [None, "0", "100"])
def test_a_json_plotly_figure_is_read(data_type: str | None) -> None:
    content = pio.to_json(reflectivity()).encode()

    assert figure_from_upload(content, data_type) == plotly_json(reflectivity())


def test_nan_and_infinity_in_uploaded_json_become_null() -> None:
    content = b'{"data": [{"y": [1, NaN, Infinity, -Infinity]}]}'

    figure = figure_from_upload(content, "0")

    assert figure == {"data": [{"y": [1, None, None, None]}], "layout": {}}
    json.dumps(figure, allow_nan=False)


def refused(content: bytes, data_type: str | None = None) -> str:
    with pytest.raises(UploadRefused) as raised:
        figure_from_upload(content, data_type)
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_a_truncated_div_is_refused() -> None:
    div = publisher_div(reflectivity()).encode()
    data_start = div.index(b"[{")
    for cut in (data_start - 3, data_start + 40, len(div) // 2):
        assert "Plotly.newPlot" in refused(div[:cut])
    data = pio.json.to_json_plotly(reflectivity().to_dict()["data"]).encode()
    data_end = div.index(data) + len(data)
    assert "ends before its layout argument" in refused(div[:data_end] + b" \n")


def test_html_without_a_plotly_call_is_refused() -> None:
    page = b"<div><script>document.body.innerHTML = 'hello'; fetch('/steal')</script></div>"
    assert "no Plotly.newPlot call" in refused(page)
    assert "no Plotly.newPlot call" in refused(b"<div>just text</div>", "1")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("Plotly.newPlot(gd, [], {})", "div id argument of the Plotly.newPlot call is not JSON"),
        ("Plotly.newPlot('p', [], {})", "div id argument of the Plotly.newPlot call is not JSON"),
        ("Plotly.newPlot(3, [], {})", "first argument of the Plotly.newPlot call is not a div id"),
        ('Plotly.newPlot("p", data, layout)', "data argument of the Plotly.newPlot call is not JSON"),
        ('Plotly.newPlot("p" [], {})', "ends before its data argument"),
        ('Plotly.newPlot("p", [], {title: "x"})', "layout argument of the Plotly.newPlot call is not JSON"),
        ('Plotly.newPlot("p", {"y": [1]}, {})', "'data' must be a list of traces, not dict"),
        ('Plotly.newPlot("p", [1, 2], {})', "data[0] is int, not a trace object"),
        ('Plotly.newPlot("p", [], "layout")', "'layout' must be an object, not str"),
    ],
)
def test_a_plotly_call_that_is_not_plain_json_is_refused(call: str, message: str) -> None:
    assert message in refused(f"<div><script>{call}</script></div>".encode())


def test_deep_nesting_is_refused_not_a_crash() -> None:
    deep = b"[" * 200_000 + b"]" * 200_000
    assert "nested too deeply" in refused(b'<div><script>Plotly.newPlot("p", ' + deep + b", {})</script></div>")
    assert "nested too deeply" in refused(b'{"data": ' + deep + b"}", "0")


def test_non_utf8_is_refused() -> None:
    div = publisher_div(heatmap()).encode()
    assert "not UTF-8" in refused(div[:100] + b"\xff\xfe" + div[100:])
    assert "not UTF-8" in refused("<div>é</div>".encode("latin-1"))


@pytest.mark.parametrize(
    ("content", "data_type", "message"),
    [
        (b'{"data": {"q": [0.1], "r": [1.0]}}', "0", "'data' must be a list of traces, not dict"),  # live server JSON
        (b"[1, 2]", "0", "not list"),
        (b"not json", None, "not JSON"),
        (b'{"data": []} trailing', "0", "not JSON"),
        (b"", None, "not JSON"),
        (b'{"data": []}', "2", "unknown data_type '2'"),
        (b'{"data": []}', "json", "unknown data_type 'json'"),
    ],
)
def test_json_uploads_that_are_not_a_plotly_figure_are_refused(
    content: bytes, data_type: str | None, message: str
) -> None:
    assert message in refused(content, data_type)


def test_an_upload_over_the_size_limit_is_refused_before_it_is_read() -> None:
    content = b" " * (MAX_FIGURE_BYTES + 1)
    assert f"over the limit of {MAX_FIGURE_BYTES} bytes" in refused(content)


@pytest.fixture
def configured() -> HttpUploadConfig:
    return HttpUploadConfig(username="publisher", password=SecretStr("s3cret-pässword"))


@pytest.mark.parametrize(
    ("user", "password", "accepted"),
    [
        ("publisher", "s3cret-pässword", True),
        ("publisher", "s3cret-password", False),
        ("publisher", "s3cret-pässword ", False),
        ("Publisher", "s3cret-pässword", False),
        ("", "", False),
        ("publisher", "", False),
    ],
)
def test_credentials_are_the_configured_ones(
    configured: HttpUploadConfig, user: str, password: str, accepted: bool
) -> None:
    assert check_credentials(user, password, configured) is accepted


def test_no_credentials_are_accepted_when_uploads_are_not_configured() -> None:
    assert check_credentials("publisher", "s3cret-pässword", None) is False
