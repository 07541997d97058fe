"""The daemon's HTTP server: starlette routes served by uvicorn in a thread of the daemon (``http_port``).

| route | what |
|---|---|
| ``GET /`` | the live page (jinja2 template; its script and styles are static files, no inline script) |
| ``GET /page.json`` | the page's state (:func:`livereduce.web.page.page_state`) |
| ``GET /status.json`` | the status file's content (:meth:`livereduce.status.Status.to_json`) |
| ``GET /figures.json`` | the figure board: ``{"version": int, "figures": [summary, ...]}`` newest first |
| ``GET /figures/{id}`` | one figure: the image file, the plotly JSON, or an HTML fragment (sandboxed) |
| ``GET /events`` | server-sent events ``page`` and ``figures`` at every change (the page updates without reloads) |
| ``GET /metrics`` | Prometheus (``prometheus-client``'s exposition of the daemon's registry, as the scraper asks) |
| ``GET /static/...`` | the page's script and style sheet, and ``plotly.min.js`` from the installed plotly package |
| ``POST /plots/{instrument}/{run}/upload_plot_data/`` | SNS live data server's upload route (``http_upload``) |

Read-only except the upload route, which is refused unless ``http_upload`` names credentials, and keeps what it
receives in memory on the figure board (bounded by ``max_bytes`` and ``max_plots``): nothing is written to disk.
No route takes a path: an image is served by its figure id from the board. Every answer carries a
Content-Security-Policy (scripts from the daemon only, no inline script), ``X-Content-Type-Options: nosniff`` and
``Referrer-Policy: no-referrer``; there is no directory listing.

The page's state is computed once per status (the supervisor publishes about once a second and at every change)
in the supervisor's thread and handed to the server's event loop, which sends the newest state to every viewer
(a slow viewer skips states, it never queues them). :meth:`WebServer.close` ends every event stream, then the
server, within :data:`CLOSE_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import BinaryIO, Final

import plotly
import uvicorn
from jinja2 import Environment, PackageLoader, select_autoescape
from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from livereduce import __version__
from livereduce.config import HttpUploadConfig
from livereduce.figures import IMAGE_TYPES, FigureBoard
from livereduce.metrics import Metrics
from livereduce.status import Status
from livereduce.web.page import RateHistory, page_state
from livereduce.web.uploads import UploadRefused, check_credentials, figure_from_upload
from livereduce.web.views import publish_view

_log = logging.getLogger("livereduce")

CLOSE_TIMEOUT_S: Final = 2.0
"""Seconds :meth:`WebServer.close` waits for the server thread (event streams end at once)."""
KEEPALIVE_S: Final = 15.0
"""Seconds between two comments on an idle event stream (proxies close silent connections)."""
RETRY_MS: Final = 1000
"""The ``retry:`` an event stream sends: a viewer that lost the connection reconnects after 1 s."""
BACKLOG: Final = 2048
"""Connections the kernel queues before the server accepts them (uvicorn's default ``backlog``)."""
MAX_CONNECTIONS: Final = 1000
"""Connections served at once (uvicorn's ``limit_concurrency``); beyond, 503."""
PLOTLY_JS: Final = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
"""plotly.js as the installed plotly package ships it (the page works without internet)."""
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; frame-src 'self'; frame-ancestors 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'"
)
"""The page's Content-Security-Policy: no inline script; inline styles because plotly.js sets them."""
FRAGMENT_CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; sandbox"
"""An HTML fragment's (scipp's representation): styles only, no script, a sandbox of its own."""
HEADERS: Final = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)


class _Headers:
    """ASGI middleware: the standard headers on every HTTP answer (a route's own CSP wins)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in HEADERS if h[0] not in present)]
            await send(message)

        await self.app(scope, receive, with_headers)


class _Hub:
    """The newest page state and figure list, and a wake-up for the event streams (event loop thread only)."""

    def __init__(self) -> None:
        self.latest: dict[str, tuple[int, str, bytes]] = {"page": (0, "{}", b""), "figures": (0, "{}", b"")}
        self.closing = False
        self._changed = asyncio.Event()

    def set(self, name: str, data: str) -> None:
        """A new version of ``name`` (its JSON ``data``); its event-stream frame is encoded once for every viewer."""
        self.latest[name] = (self.latest[name][0] + 1, data, f"event: {name}\ndata: {data}\n\n".encode())
        self._wake()

    def close(self) -> None:
        self.closing = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, timeout: float) -> bool:
        """Wait for a change; False after ``timeout`` seconds without one."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            return False
        return True


class WebServer:
    """The daemon's web server.

    Args:
        instrument: the instrument's full name (the page's title; the upload route's instrument).
        metrics: the daemon's metrics (their registry is served at ``/metrics``); None: metrics made from the
            statuses :meth:`publish` receives.
        board: the figure board the page shows.
        upload: the upload route's credentials and limits; None: uploads refused (403).

    Attributes:
        url: the page's URL once :meth:`serve` succeeded, else None.
    """

    def __init__(
        self, instrument: str, metrics: Metrics | None, board: FigureBoard, upload: HttpUploadConfig | None = None
    ) -> None:
        self.instrument = instrument
        self.metrics = metrics or Metrics(lambda: self._status, instrument)
        self.board = board
        self.upload = upload
        self.url: str | None = None
        self._status: Status | None = None
        self._history = RateHistory()
        self._state = page_state(instrument, None, self._history, time.time())
        self._hub: _Hub | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._templates = Environment(loader=PackageLoader("livereduce.web"), autoescape=select_autoescape())
        self.app = _Headers(self._routes())

    # --- the daemon's side ------------------------------------------------------------------------------------
    def serve(self, address: str, port: int) -> str | None:
        """Listen on ``address``:``port`` (0: a free port) and serve in a thread; returns the page's URL, or None
        (logged as an error) when it cannot listen: the daemon runs without its page."""
        try:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            listener = socket.socket(family, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((address, port))
            listener.listen(BACKLOG)  # now: a client that connects as soon as serve() returns waits, not refused
        except OSError as err:
            _log.error(
                "The web server cannot listen on %s:%d (keys http_address, http_port): %s; the daemon runs without "
                "its page and metrics",
                address,
                port,
                err.strerror or err,
            )
            return None
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=1,
            limit_concurrency=MAX_CONNECTIONS,
            backlog=BACKLOG,
            server_header=False,
        )
        # uvicorn's errors only: no "Started server process", no line per malformed request (a port scan)
        logging.getLogger("uvicorn.error").setLevel(logging.ERROR)
        self._server = uvicorn.Server(config)
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(listener, started), name="livereduce-web", daemon=True)
        self._thread.start()
        started.wait(CLOSE_TIMEOUT_S)
        self.board.view_maker = publish_view  # the built-in view while a page is served
        host, bound = listener.getsockname()[:2]
        self.url = f"http://{host if ':' not in host else f'[{host}]'}:{bound}/"
        _log.info("Live page on %s (metrics on %smetrics)", self.url, self.url)
        return self.url

    @property
    def metrics_url(self) -> str | None:
        """``/metrics`` of the server, once it serves."""
        return f"{self.url}metrics" if self.url else None

    def publish(self, status: Status) -> None:
        """A new status (the supervisor's thread): compute the page's state and hand it to the viewers."""
        self._status = status
        if status.engine is not None and status.updated is not None:
            self._history.add(status.updated, status.engine.events)
        self._state = page_state(self.instrument, status, self._history, time.time())
        self._send("page", json.dumps(self._state))

    def close(self) -> None:
        """End every event stream and the server (idempotent; bounded by :data:`CLOSE_TIMEOUT_S`)."""
        self.board.unsubscribe(self._figures_changed)
        self.board.view_maker = None
        if self._server is None:
            return
        if self._loop is not None and self._hub is not None:
            self._loop.call_soon_threadsafe(self._hub.close)
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(CLOSE_TIMEOUT_S)
            if self._thread.is_alive():
                _log.warning("The web server did not stop within %.0f s; left to end with the process", CLOSE_TIMEOUT_S)
        self._server = None

    def _run(self, listener: socket.socket, started: threading.Event) -> None:
        async def main() -> None:
            self._loop, self._hub = asyncio.get_running_loop(), _Hub()
            self._hub.set("page", json.dumps(self._state))
            self._hub.set("figures", self._figure_list())
            self.board.subscribe(self._figures_changed)
            started.set()
            assert self._server is not None
            await self._server.serve(sockets=[listener])

        try:
            asyncio.run(main())
        except Exception:  # noqa: BLE001 - the page must never take the daemon down: say why it is gone
            _log.exception("The web server stopped")
        finally:
            started.set()
            listener.close()

    def _send(self, name: str, data: str) -> None:
        loop, hub = self._loop, self._hub
        if loop is not None and hub is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(hub.set, name, data)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def _figures_changed(self) -> None:
        self._send("figures", self._figure_list())

    def _figure_list(self) -> str:
        version, figures = self.board.figures()
        return json.dumps({"version": version, "figures": [figure.summary() for figure in figures]})

    # --- routes -----------------------------------------------------------------------------------------------
    def _routes(self) -> Starlette:
        static = StaticFiles(packages=[("livereduce.web", "static")])
        return Starlette(
            routes=[
                Route("/", self._page),
                Route("/page.json", self._latest_json("page")),
                Route("/status.json", self._status_json),
                Route("/figures.json", self._latest_json("figures")),
                Route("/figures/{figure_id}", self._figure),
                Route("/events", self._events),
                Route("/static/plotly.min.js", lambda _: FileResponse(PLOTLY_JS, media_type="text/javascript")),
                Mount("/static", static),
                Route("/metrics", self._metrics),
                Route("/plots/{instrument}/{run:int}/upload_plot_data/", self._upload, methods=["POST"]),
            ]
        )

    def _latest_json(self, name: str) -> Callable[[Request], Awaitable[Response]]:
        """A handler answering the newest JSON of ``name`` as the event streams send it (made once per version, in
        the supervisor's thread; an async handler, so no hop to starlette's thread pool)."""

        async def answer(_: Request) -> Response:
            data = self._hub.latest[name][1] if self._hub is not None else "{}"
            return Response(data, media_type="application/json")

        return answer

    async def _page(self, _: Request) -> HTMLResponse:
        template = self._templates.get_template("page.html")
        return HTMLResponse(template.render(instrument=self.instrument, version=__version__))

    async def _metrics(self, request: Request) -> Response:
        """The text format, or OpenMetrics when the scraper's Accept header asks for it (a starlette Route takes a
        plain function for a request handler, so prometheus-client's ASGI app cannot be one)."""
        encode, media_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(self.metrics.registry), media_type=media_type)

    async def _status_json(self, _: Request) -> Response:
        if self._status is None:
            return _refused(503, "no status yet")
        return JSONResponse(self._status.to_json())

    async def _figure(self, request: Request) -> Response:
        figure = self.board.get(request.path_params["figure_id"])
        if figure is None:
            return _refused(404, "no such figure (it may have been replaced)")
        if figure.kind == "plotly":
            return JSONResponse(figure.plotly)
        if figure.kind == "html":
            return HTMLResponse(figure.html or "", headers={"content-security-policy": FRAGMENT_CSP})
        path = figure.path
        gone = _refused(404, "the figure's file is gone")
        if path is None or path.suffix.lower() not in IMAGE_TYPES or not path.is_file():
            return gone
        try:  # the length and the bytes of one open file: save_figure replaces the file by a rename every cycle
            handle = path.open("rb")
        except OSError:
            return gone
        return StreamingResponse(
            _read(handle),
            media_type=IMAGE_TYPES[path.suffix.lower()],
            headers={
                "content-length": str(os.fstat(handle.fileno()).st_size),
                "cache-control": "no-cache",
                "content-security-policy": FRAGMENT_CSP,
            },
        )

    async def _events(self, _: Request) -> StreamingResponse:
        hub = self._hub
        assert hub is not None

        async def stream() -> AsyncIterator[bytes]:
            seen = dict.fromkeys(hub.latest, -1)
            yield f"retry: {RETRY_MS}\n\n".encode()
            while not hub.closing:
                for name, (version, _, frame) in list(hub.latest.items()):
                    if version != seen[name]:
                        seen[name] = version
                        yield frame
                if not await hub.wait(KEEPALIVE_S) and not hub.closing:
                    yield b": keep-alive\n\n"

        headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def _upload(self, request: Request) -> Response:
        """SNS live data server's ``upload_plot_data`` (neutrons/live_data_server, plots/views.py): multipart
        ``file`` (a plotly div, or JSON with ``data_type`` 0), ``username``, ``password``; 200 with an empty body,
        401 for wrong credentials, 400 without a file or with content that is not a plotly figure, 413 too large."""
        upload = self.upload
        if upload is None:
            return _refused(403, "plot uploads are off (no http_upload in the daemon's configuration)")
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            return _refused(411, "the upload needs a Content-Length")
        too_large = f"the upload is larger than {upload.max_bytes} bytes (http_upload.max_bytes)"
        if int(length) > upload.max_bytes:
            return _refused(413, too_large)
        try:
            body = await _body(request, upload.max_bytes)
        except ClientDisconnect:  # gone before the end of its body: no one reads the answer, no traceback logged
            return _refused(400, "the upload ended before its Content-Length")
        if body is None:
            return _refused(413, too_large)
        try:
            form = await _form(request, body, upload.max_bytes)
        except (HTTPException, MultiPartException) as err:  # a torn or hostile body: one line, never a traceback
            return _refused(400, f"the upload is not a readable multipart form: {getattr(err, 'detail', err)}")
        try:
            user, password = form.get("username"), form.get("password")
            if (
                not isinstance(user, str)
                or not isinstance(password, str)
                or not check_credentials(user, password, upload)
            ):
                return _refused(401, "wrong user name or password")
            file = form.get("file")
            if file is None or isinstance(file, str):
                return _refused(400, "the upload has no file")
            data_type = form.get("data_type")
            figure = figure_from_upload(await file.read(), data_type if isinstance(data_type, str) else None)
        except UploadRefused as err:
            return _refused(400, str(err))
        finally:
            await form.close()
        instrument, run = request.path_params["instrument"], request.path_params["run"]
        key = f"upload:{instrument.upper()}/{run}"
        self.board.add(
            key, "plotly", f"{instrument.upper()} run {run} (uploaded)", "upload", plotly=figure, run_number=run
        )
        uploads = [f for f in self.board.figures()[1] if f.origin == "upload"]
        for old in uploads[upload.max_plots :]:
            self.board.remove(old.key)
        return Response(status_code=200)


async def _read(handle: BinaryIO) -> AsyncIterator[bytes]:
    """The bytes of an open file, 64 KiB at a time, read in a worker thread; closes it. (starlette's FileResponse
    takes the length from the path's stat and opens the path again to read it: a file replaced in between was
    sent with the other file's length, a broken image and an 'Exception in ASGI application' in the log.)"""
    with handle:
        while chunk := await asyncio.to_thread(handle.read, 1 << 16):
            yield chunk


def _refused(code: int, why: str) -> JSONResponse:
    return JSONResponse({"error": why}, status_code=code)


async def _body(request: Request, limit: int) -> bytes | None:
    """The request's body, or None as soon as it passes ``limit`` bytes. Counted as it arrives, whatever the
    Content-Length header said: a body sent chunked under a Content-Length header is framed by its chunks."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def _form(request: Request, body: bytes, limit: int) -> FormData:
    """The multipart form in ``body``, parsed in memory: starlette's ``request.form()`` would write a file part
    larger than 1 MiB to a temporary file (its ``MultiPartParser.spool_max_size``); ``body`` is at most ``limit``
    bytes. Raises MultiPartException when the body is not a multipart form."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise MultiPartException("its Content-Type is not multipart/form-data")

    async def stream() -> AsyncIterator[bytes]:
        yield body

    parser = MultiPartParser(request.headers, stream(), max_files=1, max_fields=8)
    parser.spool_max_size = limit
    return await parser.parse()
