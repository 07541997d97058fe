"""The daemon's web server (``http_port``): the live page ``/``, ``/status.json``, ``/metrics`` and the figures.

* :mod:`.page`: the page's JSON from the status (the same words as ``livereduce --status``).
* :mod:`.views`: the built-in view of an accumulation when no script made a figure.
* :mod:`.uploads`: SNS's live data server upload contract (``plot_publisher``).
* :mod:`.server`: the HTTP server (starlette on uvicorn, in a thread of the daemon), its routes and headers.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from livereduce.config import Config
from livereduce.errors import EngineError
from livereduce.figures import board
from livereduce.packages import WEB, missing_packages

if TYPE_CHECKING:
    from livereduce.web.server import WebServer


def web_server(config: Config, instrument: str) -> WebServer | None:
    """The daemon's web server (not yet listening) when ``http_port`` or its alias ``metrics_port`` is set, else
    None. starlette, uvicorn and plotly are imported only then.

    Raises:
        EngineError: a package of the web stack is missing (exit 4, as for the engines' packages).
    """
    if config.web_server is None:
        return None
    missing = missing_packages(WEB)
    if missing:
        raise EngineError(
            f"the page (http_port) needs {', '.join(missing)}, missing in the environment of {sys.executable}; "
            f"install with: {sys.executable} -m pip install {' '.join(missing)}"
        )
    from livereduce.web.server import WebServer  # noqa: PLC0415 - the web stack only for a daemon that serves

    return WebServer(instrument, None, board, config.http_upload)
