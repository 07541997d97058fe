"""The daemon's web server, safe by construction (issue 18): a :class:`WebServer` in this process on 127.0.0.1 (a
free port), talked to over real HTTP. ``requests`` where a client behaves, raw sockets where it must not: paths a
client would normalize (traversal), malformed HTTP, a framing that lies, viewers that never read. The event
streams are read with h11 (HTTP/1.1 framing) and parsed as server-sent events (WHATWG HTML, "Server-sent events").
Last, once, the real daemon with 200 viewers: ``--status`` shows the page, SIGTERM stops it in time.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import re
import selectors
import signal
import socket
import struct
import tempfile
import termios
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

import h11
import matplotlib.pyplot as plt
import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import plotly.offline
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from conftest import ROOT, poll_until, run_cli
from livereduce import __version__
from livereduce.config import HttpUploadConfig
from livereduce.engines.base import CycleCompleted
from livereduce.figures import FigureBoard
from livereduce.metrics import Metrics
from livereduce.status import EngineStatus, Status
from livereduce.web.server import CLOSE_TIMEOUT_S, WebServer

from .conftest import page_url

UPLOAD = HttpUploadConfig(username="plot_publisher", password=SecretStr("s3cret-upload"), max_plots=3)
DEADLINE_S = 5.0
"""Generous bound of what should take well under a second (a change reaching a viewer, a page answer) on a loaded
CI machine; the measured figures are in docs/performance.md ("Web page")."""
SERVER_PY = b"class WebServer"
"""Text of server.py that a traversal would leak."""
PASSWD = b"root:"
"""Text of /etc/passwd that a traversal would leak."""


# --- the server and its clients ----------------------------------------------------------------------------------
@pytest.fixture
def serve() -> Iterator[Callable[..., WebServer]]:
    """``serve(upload=UPLOAD, status=None)``: a WebServer of its own board on 127.0.0.1; its metrics read
    ``status``. Every server is closed at the end, and its thread is gone."""
    servers: list[WebServer] = []

    def start(upload: HttpUploadConfig | None = UPLOAD, status: Status | None = None) -> WebServer:
        server = WebServer("SANS2D", Metrics(lambda: status, "SANS2D"), FigureBoard(), upload)
        servers.append(server)
        assert server.serve("127.0.0.1", 0) is not None
        return server

    yield start
    for server in servers:
        server.close()
    assert "livereduce-web" not in {thread.name for thread in threading.enumerate()}


def port(server: WebServer) -> int:
    assert server.url is not None
    return urlsplit(server.url).port or 80


def running(chunks: int = 3, **engine: object) -> Status:
    """The status of a daemon that runs, as the supervisor publishes it (``chunks`` tells statuses apart)."""
    now = time.time()
    return Status(
        pid=os.getpid(),
        version=__version__,
        state="running",
        state_since=now - 10,
        updated=now,
        started=now - 20,
        update_every=1.0,
        engine=EngineStatus(
            name="scipp",
            state="running",
            chunks=chunks,
            events=1000 * chunks,
            run_number=7,
            last_cycle_end=now,
            **engine,
        ),
    )


def raw(server: WebServer, request: bytes, *, half_close: bool = False) -> bytes:
    """Send ``request`` as it is (then end the sending side if ``half_close``) and read the answer until the server
    closes the connection; fails if it does not within :data:`DEADLINE_S`."""
    with socket.create_connection(("127.0.0.1", port(server)), timeout=DEADLINE_S) as client:
        client.sendall(request)
        if half_close:
            client.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := client.recv(1 << 16):
            answer += chunk
    return answer


def raw_get(server: WebServer, path: str) -> bytes:
    return raw(server, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())


def code(answer: bytes) -> int:
    """The status code of a raw HTTP answer."""
    return int(answer.split(b" ", 2)[1])


@dataclass
class Viewer:
    """One event stream: its socket, its h11 framing, and the events read (receipt time, name, data)."""

    client: socket.socket
    http: h11.Connection
    events: list[tuple[float, str, str]] = field(default_factory=list)
    text: bytes = b""
    ended: bool = False

    def received(self, name: str, matches: Callable[[dict], object]) -> float | None:
        """When the first ``name`` event whose JSON data ``matches`` arrived (None: none yet)."""
        return next((t for t, event, data in self.events if event == name and matches(json.loads(data))), None)


class Viewers:
    """``count`` viewers of ``/events`` on raw sockets, read by one thread (selectors): every event each received,
    and when. ``slow`` more that connect and never read a byte (a receive buffer of 4 KiB)."""

    def __init__(self, address: tuple[str, int], count: int, slow: int = 0) -> None:
        self.viewers = [self._connect(address) for _ in range(count)]
        self.slow = [self._connect(address, buffer=4096) for _ in range(slow)]
        self._selector = selectors.DefaultSelector()
        for viewer in self.viewers:
            viewer.client.setblocking(False)
            self._selector.register(viewer.client, selectors.EVENT_READ, viewer)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="test viewers", daemon=True)
        self._thread.start()

    @staticmethod
    def _connect(address: tuple[str, int], buffer: int | None = None) -> Viewer:
        client = socket.socket()
        if buffer is not None:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
        client.connect(address)
        http = h11.Connection(h11.CLIENT)
        client.sendall(http.send(h11.Request(method="GET", target="/events", headers=[("Host", address[0])])))
        client.sendall(http.send(h11.EndOfMessage()))
        return Viewer(client, http)

    def _read(self) -> None:
        while not self._stop.is_set() and self._selector.get_map():
            for key, _ in self._selector.select(0.1):
                viewer: Viewer = key.data
                try:
                    data = viewer.client.recv(1 << 16)
                except OSError:
                    data = b""
                viewer.http.receive_data(data)
                try:
                    while (event := viewer.http.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
                        if isinstance(event, h11.Data):
                            self._parse(viewer, bytes(event.data))
                        viewer.ended |= isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed))
                except h11.RemoteProtocolError:  # closed in the middle of the stream
                    viewer.ended = True
                if viewer.ended or not data:
                    viewer.ended = True
                    self._selector.unregister(viewer.client)

    @staticmethod
    def _parse(viewer: Viewer, data: bytes) -> None:
        """Server-sent events: blocks separated by a blank line, ``event:`` and ``data:`` fields."""
        viewer.text += data
        *blocks, viewer.text = viewer.text.split(b"\n\n")
        for block in blocks:
            fields = dict(line.split(": ", 1) for line in block.decode().splitlines() if not line.startswith(":"))
            if "event" in fields:
                viewer.events.append((time.monotonic(), fields["event"], fields.get("data", "")))

    def page_received(self, chunks: int) -> list[float | None]:
        """When each viewer received a ``page`` event with ``chunks`` chunks (None: not yet)."""
        return [viewer.received("page", lambda page: page.get("chunks") == chunks) for viewer in self.viewers]

    def queued_for_slow(self) -> list[int]:
        """Bytes waiting in each slow viewer's receive buffer."""
        return [struct.unpack("i", fcntl.ioctl(v.client, termios.FIONREAD, b"\0" * 4))[0] for v in self.slow]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(DEADLINE_S)
        for viewer in self.viewers + self.slow:
            viewer.client.close()


@pytest.fixture
def viewers() -> Iterator[Callable[..., Viewers]]:
    """``viewers(address, count, slow=0)``: :class:`Viewers`, closed at the end."""
    opened: list[Viewers] = []

    def open_(address: tuple[str, int], count: int, slow: int = 0) -> Viewers:
        opened.append(Viewers(address, count, slow))
        return opened[-1]

    yield open_
    for group in opened:
        group.close()


def png(path: Path, size: int = 4) -> Path:
    """A PNG image of ``size`` x ``size`` random pixels (its length in bytes grows with ``size``)."""
    plt.imsave(path, np.random.default_rng(size).random((size, size)))
    return path


def publisher_div(y: Sequence[float] | np.ndarray) -> str:
    """A figure as neutrons/plot_publisher uploads it (plot1d: ``plotly.offline.plot(..., output_type="div",
    include_plotlyjs=False)``)."""
    return plotly.offline.plot(go.Figure(go.Scatter(y=y)), output_type="div", include_plotlyjs=False)


def publish(server: WebServer, run: int, div: str, password: str = "s3cret-upload") -> requests.Response:
    """The request of plot_publisher's ``publish_plot``: ``requests.post(url, data={username, password},
    files={"file": div})`` to the live data server's route."""
    url = f"{server.url}plots/SANS2D/{run}/upload_plot_data/"
    return requests.post(
        url, data={"username": "plot_publisher", "password": password}, files={"file": div}, timeout=30
    )


def uploads(server: WebServer) -> dict[int, dict]:
    """The uploaded figures on the board by run: their plotly JSON."""
    return {f.run_number: f.plotly for f in server.board.figures()[1] if f.origin == "upload"}


# --- headers, paths ---------------------------------------------------------------------------------------------
def test_every_answer_carries_the_security_headers(serve, tmp_path: Path) -> None:
    server = serve()
    server.publish(running())
    image = server.board.add("file:a", "image", "a.png", "save_figure", path=png(tmp_path / "a.png"))
    plot = server.board.add("plot:b", "plotly", "b", "publish_plot", plotly={"data": [], "layout": {}})
    html = server.board.add("view", "html", "c", "view", html="<b>scipp</b>")
    gets = ["", "page.json", "status.json", "figures.json", "metrics", "static/page.js", "static/page.css"]
    gets += ["static/plotly.min.js", f"figures/{image.id}", f"figures/{plot.id}", f"figures/{html.id}"]
    gets += ["figures/gone", "static/", "no/such/page"]
    answers = {path: requests.get(f"{server.url}{path}", timeout=30) for path in gets}
    answers["upload"] = publish(server, 7, publisher_div([1.0]), password="wrong-password")
    with requests.get(f"{server.url}events", stream=True, timeout=30) as stream:
        answers["events"] = stream
    refused = {p: answers[p].status_code for p in ("static/", "no/such/page", "figures/gone", "upload")}
    assert refused == {"static/": 404, "no/such/page": 404, "figures/gone": 404, "upload": 401}
    for path, answer in answers.items():
        assert answer.headers["x-content-type-options"] == "nosniff", path
        assert answer.headers["referrer-policy"] == "no-referrer", path
        directives = (d.split() for d in answer.headers["content-security-policy"].split(";") if d.strip())
        policy = {name: values for name, *values in directives}
        assert "'unsafe-inline'" not in policy.get("script-src", policy["default-src"]), path
        assert policy["frame-ancestors"] == ["'self'"], path
    assert "sandbox" in answers[f"figures/{html.id}"].headers["content-security-policy"]
    assert answers[f"figures/{image.id}"].headers["content-type"] == "image/png"
    page = answers[""].text
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page, re.DOTALL | re.IGNORECASE)
    assert scripts, "the page has its scripts"
    for attributes, text in scripts:  # each from the daemon's static files, none inline
        assert urljoin(server.url, re.search(r'\bsrc="([^"]+)"', attributes)[1]).startswith(f"{server.url}static/")
        assert not text.strip()
    assert not re.search(r"<[^>]*\son\w+\s*=", page), "no inline event handler"


TRAVERSALS = """
/static/ /static/../server.py /static/../web/server.py /static/%2e%2e/server.py
/static/%2E%2E/%2E%2E/config.py /static/..%2fserver.py /static/%2e%2e%2fserver.py /static/..%5cserver.py
/static/%252e%252e/server.py /static/../../../../../../etc/passwd /static//etc/passwd /static/%2fetc%2fpasswd
/static/page.js%00.png /figures/../../etc/passwd /figures/..%2f..%2fetc%2fpasswd /figures/%2e%2e%2f%2e%2e%2fetc%2fpasswd
/figures/%2Fetc%2Fpasswd /%2e%2e/%2e%2e/etc/passwd //etc/passwd
""".split()


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_directory_listing_and_no_path_leaves_the_static_files(serve, path: str) -> None:
    answer = raw_get(serve(), path)
    assert code(answer) == 404, answer[:300]
    assert SERVER_PY not in answer
    assert PASSWD not in answer


def test_an_image_is_served_by_its_id_only_and_not_once_gone(serve, tmp_path: Path) -> None:
    server = serve()
    path = png(tmp_path / "tof.png")
    first = server.board.add(f"file:{path}", "image", "tof.png", "save_figure", path=path)
    answer = requests.get(f"{server.url}figures/{first.id}", timeout=30)
    assert (answer.status_code, answer.content) == (200, path.read_bytes())
    for name in ("tof.png", quote(str(path), safe=""), f"{first.id}/../{first.id}"):
        assert code(raw_get(server, f"/figures/{name}")) == 404, name
    second = server.board.add(f"file:{path}", "image", "tof.png", "save_figure", path=png(path))  # the next cycle
    assert requests.get(f"{server.url}figures/{first.id}", timeout=30).status_code == 404  # replaced: gone
    assert requests.get(f"{server.url}figures/{second.id}", timeout=30).status_code == 200
    path.unlink()
    assert requests.get(f"{server.url}figures/{second.id}", timeout=30).status_code == 404
    for hostile in (Path("/etc/passwd"), ROOT / "src" / "livereduce" / "web" / "server.py", tmp_path):
        figure = server.board.add(f"file:{hostile}", "image", hostile.name, "save_figure", path=hostile)
        answer = raw_get(server, f"/figures/{figure.id}")
        assert code(answer) == 404, hostile
        assert PASSWD not in answer
        assert SERVER_PY not in answer


def test_an_image_replaced_while_it_is_read_is_sent_whole(serve, tmp_path: Path, caplog) -> None:
    """save_figure replaces the file by a rename every cycle (before: the length of one file, the bytes of the next:
    81 of 500 answers broken, each an 'Exception in ASGI application' in the log)."""
    server = serve()
    path = png(tmp_path / "tof.png")
    figure = server.board.add(f"file:{path}", "image", "tof.png", "save_figure", path=path)
    stop = threading.Event()

    def save_figure() -> None:
        for size in itertools.takewhile(lambda _: not stop.is_set(), itertools.cycle(range(10, 200, 30))):
            os.replace(png(tmp_path / "next.png", size), path)

    saving = threading.Thread(target=save_figure)
    saving.start()
    try:
        with requests.Session() as session:
            answers = [session.get(f"{server.url}figures/{figure.id}", timeout=30) for _ in range(300)]
    finally:
        stop.set()
        saving.join()
    assert {(a.status_code, a.content[:8], a.content[-8:-4]) for a in answers} == {(200, b"\x89PNG\r\n\x1a\n", b"IEND")}
    assert not [r for r in caplog.records if r.exc_info], "no traceback in the log"


def test_the_status_is_503_until_one_is_published_then_the_status_json(serve) -> None:
    server = serve()
    assert requests.get(f"{server.url}status.json", timeout=30).status_code == 503
    status = running(chunks=5)
    server.publish(status)
    answer = requests.get(f"{server.url}status.json", timeout=30)
    assert (answer.status_code, answer.json()) == (200, json.loads(json.dumps(status.to_json())))
    assert requests.get(f"{server.url}page.json", timeout=30).json()["chunks"] == 5


def test_metrics_are_the_prometheus_text_of_the_daemons_registry(serve) -> None:
    server = serve(status=running(chunks=4, lag=2.5))
    server.metrics.cycle(CycleCompleted(duration=0.3, failed="post_proc", lag=2.5))
    answer = requests.get(f"{server.url}metrics", timeout=30)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    samples = {s.name: s for family in text_string_to_metric_families(answer.text) for s in family.samples}
    assert samples["livereduce_chunks_total"].value == 4
    assert samples["livereduce_lag_seconds"].value == 2.5
    assert samples["livereduce_cycle_duration_seconds_count"].value == 1
    assert samples["livereduce_info"].labels["instrument"] == "SANS2D"
    assert server.metrics_url == f"{server.url}metrics"


# --- the event stream -------------------------------------------------------------------------------------------
def test_the_event_stream_sends_page_and_figures_and_each_change_at_once(serve, viewers) -> None:
    server = serve()
    viewer = viewers(("127.0.0.1", port(server)), 1).viewers[0]
    poll_until(lambda: {name for _, name, _ in viewer.events} == {"page", "figures"}, "the first two events")
    first = {name: json.loads(data) for _, name, data in viewer.events}
    assert first["page"]["health"] == "starting"
    assert first["figures"] == {"version": 0, "figures": []}
    published = time.monotonic()
    server.publish(running(chunks=9))
    seen = poll_until(lambda: viewer.received("page", lambda page: page.get("chunks") == 9), "the published page")
    assert seen - published < DEADLINE_S, f"a status reached the viewer {seen - published:.3f} s after publish()"
    added = time.monotonic()
    figure = server.board.add("plot:counts", "plotly", "counts", "publish_plot", plotly={"data": [], "layout": {}})
    shown = lambda board: [f["id"] for f in board["figures"]] == [figure.id]  # noqa: E731
    seen = poll_until(lambda: viewer.received("figures", shown), "the figure")
    assert seen - added < DEADLINE_S, f"a figure reached the viewer {seen - added:.3f} s after board.add()"
    server.close()
    poll_until(lambda: viewer.ended, "the stream ended by close()", timeout=CLOSE_TIMEOUT_S + DEADLINE_S)


def test_200_viewers_and_slow_clients_do_not_hold_up_the_page_or_close(serve, viewers) -> None:
    server = serve()
    address = ("127.0.0.1", port(server))
    slow = viewers(address, 0, slow=5)
    queued = poll_until(lambda: min(slow.queued_for_slow()) > 0 and slow.queued_for_slow(), "the slow viewers' start")
    server.publish(running(chunks=1, last_error="x" * (4 << 20)))  # 4 MiB: more than a slow viewer's buffers
    poll_until(lambda: min(slow.queued_for_slow()) > max(queued), "the slow viewers stuck in the big page")
    server.publish(running(chunks=2))
    group = viewers(address, 200)
    poll_until(lambda: None not in group.page_received(2), "the page at 200 viewers", timeout=60)
    for chunks in range(3, 6):
        published = time.monotonic()
        server.publish(running(chunks=chunks))
        received = poll_until(lambda c=chunks: None not in (r := group.page_received(c)) and r, "200 viewers")
        assert max(received) - published < DEADLINE_S, f"the last of 200 viewers {max(received) - published:.3f} s"
        asked = time.monotonic()
        answer = requests.get(f"{server.url}page.json", timeout=30)
        assert (answer.status_code, answer.json()["chunks"]) == (200, chunks)
        assert time.monotonic() - asked < DEADLINE_S
    assert not any(v.ended for v in group.viewers)
    closing = time.monotonic()
    server.close()
    assert time.monotonic() - closing < CLOSE_TIMEOUT_S + 1.0
    assert "livereduce-web" not in {thread.name for thread in threading.enumerate()}
    poll_until(lambda: all(v.ended for v in group.viewers), "every stream ended")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(200),  # a TLS ClientHello
        b"\x00\xff garbage \r\n\r\n",
        b"\r\n\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Huge: " + b"a" * (1 << 20) + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"X-Many: b\r\n" * 20000 + b"\r\n",
        b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["tls", "garbage", "blank", "no-colon", "huge-header", "many-headers", "nul"],
)
def test_malformed_http_is_4xx_or_closed_and_the_server_serves_on(serve, request_bytes: bytes) -> None:
    server = serve()
    try:
        answer = raw(server, request_bytes)
    except ConnectionResetError:  # closed while we were still sending
        answer = b""
    assert answer == b"" or 400 <= code(answer) < 500, answer[:200]
    assert requests.get(f"{server.url}page.json", timeout=30).status_code == 200


# --- the upload route -------------------------------------------------------------------------------------------
def test_a_plot_publisher_upload_is_200_with_an_empty_body_and_on_the_board(serve) -> None:
    server = serve()
    answer = publish(server, 7, publisher_div([1.0, 4.0, 9.0]))
    assert (answer.status_code, answer.content) == (200, b"")
    (figure,) = server.board.figures()[1]
    assert (figure.origin, figure.run_number, figure.title) == ("upload", 7, "SANS2D run 7 (uploaded)")
    expected = json.loads(pio.to_json(go.Figure(go.Scatter(y=[1.0, 4.0, 9.0]))))
    served = requests.get(f"{server.url}figures/{figure.id}", timeout=30).json()
    assert served["data"] == expected["data"]


@pytest.mark.parametrize(
    ("form", "status"),
    [
        ({"data": {"username": "plot_publisher", "password": "wrong-password"}, "files": {"file": "<div>"}}, 401),
        ({"data": {"username": "someone", "password": "s3cret-upload"}, "files": {"file": "<div>"}}, 401),
        ({"data": {"username": "plot_publisher"}, "files": {"file": "<div>"}}, 401),
        ({"data": {"username": "plot_publisher", "password": "s3cret-upload"}}, 400),
        (
            {"data": {"username": "plot_publisher", "password": "s3cret-upload"}, "files": {"file": "<div>hi</div>"}},
            400,
        ),
        ({"data": {"username": "plot_publisher", "password": "s3cret-upload"}, "files": {"file": b"\xff\xfe"}}, 400),
        ({"data": {"username": "plot_publisher", "password": "s3cret-upload"}, "files": {"file": "{}"}}, 400),
    ],
    ids=["wrong-password", "wrong-user", "no-password", "no-file", "not-plotly", "not-utf8", "json-not-a-figure"],
)
def test_a_refused_upload_says_why_and_changes_nothing(serve, form: dict, status: int) -> None:
    server = serve()
    answer = requests.post(f"{server.url}plots/SANS2D/7/upload_plot_data/", timeout=30, **form)
    assert answer.status_code == status
    assert "\n" not in answer.json()["error"]
    assert server.board.figures() == (0, [])


def test_uploads_are_refused_without_http_upload(serve) -> None:
    server = serve(upload=None)
    answer = publish(server, 7, publisher_div([1.0]))
    assert answer.status_code == 403
    assert "http_upload" in answer.json()["error"]
    assert server.board.figures() == (0, [])


def post(server: WebServer, headers: str, body: bytes, boundary: str = "b", *, half_close: bool = False) -> bytes:
    """A raw POST to the upload route (``headers``: lines to add, each ending in CRLF) and its answer."""
    head = f"POST /plots/SANS2D/7/upload_plot_data/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}"
    head += f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
    return raw(server, head.encode() + body, half_close=half_close)


def form(div: bytes, files: int = 1) -> bytes:
    """plot_publisher's multipart form (boundary ``b``) with ``files`` file parts."""
    fields = [(b'name="username"', b"plot_publisher"), (b'name="password"', b"s3cret-upload")]
    fields += [(b'name="file"; filename="file"', div)] * files
    return b"".join(b"--b\r\nContent-Disposition: form-data; %s\r\n\r\n%s\r\n" % part for part in fields) + b"--b--\r\n"


def chunked(body: bytes, size: int = 4096) -> bytes:
    """``body`` in HTTP/1.1 chunks (RFC 9112 section 7.1), without the last (empty) chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size))


def test_a_body_larger_than_max_bytes_is_413_whatever_its_content_length_says(serve, caplog) -> None:
    """Small bodies (8 KiB bound, 20 kB sent): a refusal comes before the body is read, and a client still sending
    into a connection the server closed would see it reset instead of the answer."""
    server = serve(upload=UPLOAD.model_copy(update={"max_bytes": 8 << 10}))
    big = publisher_div(np.linspace(0.0, 1.0, 2000))  # 16 kB of float64, base64 in the div
    assert publish(server, 7, big).status_code == 413
    assert publish(server, 7, publisher_div([1.0])).status_code == 200  # under the bound
    body = form(big.encode())
    lying = post(server, "Content-Length: 100\r\nTransfer-Encoding: chunked\r\n", chunked(body))
    assert code(lying) == 413  # framed by its chunks, counted as they arrive
    assert code(post(server, "Transfer-Encoding: chunked\r\n", b"")) == 411
    promised = post(server, "Content-Length: 5000\r\n", form(b"<div>")[:100], half_close=True)
    assert promised == b"" or code(promised) == 400  # the client left: no one to answer
    small = form(publisher_div([2.0]).encode())
    shorter = post(server, f"Content-Length: {len(small) - 100}\r\n", small)
    assert code(shorter) == 400  # the form ends at its Content-Length; the rest is no request
    assert [f.plotly["data"][0]["y"] for f in server.board.figures()[1]] == [[1.0]]
    assert requests.get(f"{server.url}page.json", timeout=30).status_code == 200
    assert not [r for r in caplog.records if r.exc_info], "no traceback in the log"


@pytest.mark.parametrize(
    ("boundary", "body"),
    [
        ("", b"--b\r\n"),
        ("b", b"garbage with no boundary"),
        ("b", b"--b\r\nno colon in this header\r\n\r\nx\r\n--b--\r\n"),
        ("b", form(b"<div>", files=2)),
    ],
    ids=["no-boundary", "no-part", "bad-header", "two-files"],
)
def test_a_malformed_multipart_body_is_400(serve, boundary: str, body: bytes) -> None:
    server = serve()
    answer = post(server, f"Content-Length: {len(body)}\r\n", body, boundary=boundary)
    assert code(answer) == 400, answer[:300]
    assert b"not a readable multipart form" in answer


def test_one_upload_per_run_and_only_the_newest_max_plots(serve) -> None:
    server = serve()
    assert publish(server, 7, publisher_div([1.0])).status_code == 200
    first = server.board.figures()[1][0]
    assert publish(server, 7, publisher_div([2.0])).status_code == 200
    assert {run: fig["data"][0]["y"] for run, fig in uploads(server).items()} == {7: [2.0]}  # replaced
    assert requests.get(f"{server.url}figures/{first.id}", timeout=30).status_code == 404
    for run in (8, 9, 10, 11):
        assert publish(server, run, publisher_div([float(run)])).status_code == 200
    assert sorted(uploads(server)) == [9, 10, 11]  # max_plots 3: the newest
    server.board.add("plot:mine", "plotly", "mine", "publish_plot", plotly={"data": [], "layout": {}})
    assert publish(server, 12, publisher_div([12.0])).status_code == 200
    assert sorted(uploads(server)) == [10, 11, 12]
    assert "plot:mine" in {f.key for f in server.board.figures()[1]}  # the script's figure stays


def test_an_upload_is_never_written_to_disk(serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """3 MB (starlette's request.form() spools a file part over 1 MiB to a temporary file)."""
    written: list[str] = []
    for name in ("TemporaryFile", "NamedTemporaryFile", "mkstemp", "mkdtemp"):
        monkeypatch.setattr(tempfile, name, lambda *_, n=name, **__: written.append(n))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LIVEREDUCE_OUTPUT_DIR", str(tmp_path / "out"))
    server = serve(upload=UPLOAD.model_copy(update={"max_bytes": 8 << 20}))
    div = publisher_div(np.random.default_rng(1).random(300_000))
    assert len(div) > 3_000_000
    assert publish(server, 7, div).status_code == 200
    assert len(json.dumps(uploads(server)[7])) > 3_000_000
    assert written == []
    assert list(tmp_path.iterdir()) == []


# --- the real daemon --------------------------------------------------------------------------------------------
def test_the_daemon_with_200_viewers_shows_its_page_in_status_and_stops_in_time(daemon, viewers, tmp_path) -> None:
    demo = json.loads((ROOT / "demo" / "livereduce.conf").read_text())
    config = {**demo, "script_dir": str(ROOT / "demo"), "http_port": 0, "update_every": 1, "stop_timeout_sec": 10}
    process = daemon(config, instrument=demo["instrument"])
    url = page_url(process)
    group = viewers(("127.0.0.1", urlsplit(url).port), 200)
    cycled = lambda page: page.get("chunks")  # noqa: E731
    poll_until(lambda: all(v.received("page", cycled) for v in group.viewers), "a cycle shown to 200 viewers")
    shown = run_cli("--status", str(process.config_path), cwd=tmp_path)
    rows = dict(line.split(": ", 1) for line in shown.stdout.splitlines())
    assert (shown.returncode, rows["page"].strip(), rows["metrics"].strip()) == (0, url, f"{url}metrics")
    stopping = time.monotonic()
    process.send(signal.SIGTERM)
    assert process.finish(timeout=60).returncode == 0
    assert time.monotonic() - stopping < config["stop_timeout_sec"]
    assert all(v.ended for v in group.viewers)
    assert "did not stop" not in process.log()
    assert "Traceback" not in process.log()
