"""The figures of the run, for the daemon's page: what the scripts saved, published or uploaded.

Scripts run in the daemon's process, so every figure they make is registered here, in one bounded
:class:`FigureBoard` per process (:data:`board`), and the page (:mod:`livereduce.web`) shows the board:

* ``image``: a file written by :func:`livereduce.outputs.save_figure` (PNG, SVG, JPEG, GIF, WebP); the page
  serves it by its id, never by a path taken from a request.
* ``plotly``: a plotly figure as JSON (``{"data": [...], "layout": {...}}``) from
  :func:`livereduce.outputs.publish_plot` or uploaded the way SNS's ``plot_publisher`` uploads it
  (``POST /plots/<instrument>/<run>/upload_plot_data/``).
* ``html``: scipp's HTML representation of an accumulation the built-in view cannot draw.

A figure is identified by its ``key`` (the file's absolute path, the published name, the upload's
instrument and run, ``view``): a new figure with the key of an old one replaces it and moves to the front. Each
figure records the run and the chunk count of the accumulation it shows (from :func:`livereduce.provenance.current`
in the thread that runs post_proc; 0 outside a cycle). The board keeps the newest :data:`MAX_FIGURES` and
counts a version that changes with every change, so the page knows when to fetch it again.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from livereduce import provenance

_log = logging.getLogger("livereduce")

MAX_FIGURES: Final = 50
"""Most figures the board keeps (the oldest goes first)."""
IMAGE_TYPES: Final = {
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}
"""Image files the page shows, by suffix, with their media type; other formats (PDF, EPS) are not shown."""

Kind = Literal["image", "plotly", "html"]


@dataclass(frozen=True)
class Figure:
    """One figure on the board.

    Attributes:
        id: short unique id (the page's handle; never a path).
        key: what identifies it across updates (see the module docstring).
        kind: ``image``, ``plotly`` or ``html``.
        title: what the page writes above it.
        origin: ``save_figure``, ``publish_plot``, ``upload`` or ``view``.
        run_number: run of the accumulation it shows (0: unknown).
        chunks: chunks accumulated when it was made (0: unknown).
        time: when it was registered, seconds since the Unix epoch.
        path: the image file (``image``), else None.
        plotly: the plotly figure JSON (``plotly``), else None.
        html: the HTML fragment (``html``), else None.
    """

    id: str
    key: str
    kind: Kind
    title: str
    origin: str
    run_number: int
    chunks: int
    time: float
    path: Path | None = None
    plotly: dict[str, Any] | None = None
    html: str | None = None

    def summary(self) -> dict[str, Any]:
        """What the page lists (no figure content): id, slot (the same for every figure of one key, so that the page
        updates a figure in place and keeps its zoom), kind, title, origin, run_number, chunks, time."""
        return {
            "id": self.id,
            "slot": hashlib.sha256(self.key.encode()).hexdigest()[:12],
            "kind": self.kind,
            "title": self.title,
            "origin": self.origin,
            "run_number": self.run_number,
            "chunks": self.chunks,
            "time": self.time,
        }


class FigureBoard:
    """The newest figures of this process, thread-safe (scripts add from the cycle thread, the page reads).

    Args:
        limit: most figures kept.
    """

    def __init__(self, limit: int = MAX_FIGURES) -> None:
        self.limit = limit
        self.version = 0
        self._figures: OrderedDict[str, Figure] = OrderedDict()  # by key, newest last
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._subscribers: list[Callable[[], None]] = []
        self.view_maker: Callable[[object], None] | None = None
        self._view_failure = ""

    def add(
        self,
        key: str,
        kind: Kind,
        title: str,
        origin: str,
        *,
        path: Path | None = None,
        plotly: dict[str, Any] | None = None,
        html: str | None = None,
        run_number: int | None = None,
    ) -> Figure:
        """Register a figure (replacing the one with the same ``key``); ``run_number`` defaults to that of the
        accumulation being post-processed in this thread."""
        made = provenance.current()
        figure = Figure(
            id=f"f{next(self._ids)}",
            key=key,
            kind=kind,
            title=title,
            origin=origin,
            run_number=run_number if run_number is not None else (made.run_number if made else 0),
            chunks=made.chunks if made else 0,
            time=time.time(),
            path=path,
            plotly=plotly,
            html=html,
        )
        with self._lock:
            self._figures.pop(key, None)
            self._figures[key] = figure
            while len(self._figures) > self.limit:
                self._figures.popitem(last=False)
            self.version += 1
        self._changed()
        return figure

    def offer_view(self, output: object) -> None:
        """The output of a cycle's post_proc (the engine's cycle thread): while a page is served
        (:attr:`view_maker` set) and no script has put a figure on the board, make the built-in view of it. A
        failure of the view is logged once per kind of failure and never fails the cycle."""
        maker = self.view_maker
        if maker is None:
            return
        with self._lock:
            if any(figure.origin != "view" for figure in self._figures.values()):
                return
        try:
            maker(output)
        except Exception as err:  # noqa: BLE001 - the page's view must never fail a cycle: logged once
            kind = f"{type(err).__name__}: {err}"[:200]
            if kind != self._view_failure:
                self._view_failure = kind
                _log.warning("The page's view of the output failed (the cycle goes on): %s", kind)

    def subscribe(self, changed: Callable[[], None]) -> None:
        """Call ``changed()`` after every change (in the thread that made it; it must not block)."""
        with self._lock:
            self._subscribers.append(changed)

    def unsubscribe(self, changed: Callable[[], None]) -> None:
        """Stop calling ``changed`` (no error if it was not subscribed)."""
        with self._lock:
            if changed in self._subscribers:
                self._subscribers.remove(changed)

    def _changed(self) -> None:
        for changed in list(self._subscribers):
            changed()

    def remove(self, key: str) -> bool:
        """Take the figure with ``key`` off the board; False when there was none."""
        with self._lock:
            if self._figures.pop(key, None) is None:
                return False
            self.version += 1
        self._changed()
        return True

    def figures(self) -> tuple[int, list[Figure]]:
        """(version, the figures newest first)."""
        with self._lock:
            return self.version, list(reversed(self._figures.values()))

    def get(self, figure_id: str) -> Figure | None:
        """The figure with this id, if it is still on the board."""
        with self._lock:
            return next((f for f in self._figures.values() if f.id == figure_id), None)

    def clear(self) -> None:
        """Forget every figure (a new process, a test)."""
        with self._lock:
            self._figures.clear()
            self.version += 1
        self._changed()


board = FigureBoard()
"""The board of this process."""


def saved_image(path: Path) -> Figure | None:
    """Register an image file a script wrote (:func:`livereduce.outputs.save_figure`); None for a format the
    page does not show (PDF, EPS, ...)."""
    if path.suffix.lower() not in IMAGE_TYPES:
        return None
    absolute = path.absolute()
    return board.add(f"file:{absolute}", "image", absolute.name, "save_figure", path=absolute)
