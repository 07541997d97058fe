"""Which third-party packages are missing, found without importing them (standard library only, so that the
entry point can check before any heavy import; :mod:`livereduce.launch`, :mod:`livereduce.engines`)."""

from __future__ import annotations

import importlib.util

REQUIRED = {
    "numpy": "numpy",
    "pydantic": "pydantic",
    "psutil": "psutil",
    "watchdog": "watchdog",
    "sdnotify": "sdnotify",
    "prometheus_client": "prometheus-client",
}
"""Modules the daemon imports whatever the engine -> the package that provides each (pip/conda name)."""
WEB = {
    "starlette": "starlette",
    "uvicorn": "uvicorn",
    "jinja2": "jinja2",
    "python_multipart": "python-multipart",
    "plotly": "plotly",
}
"""Modules of the daemon's web server (``http_port``), looked up only when it is configured."""


def missing_packages(modules: dict[str, str] = REQUIRED) -> list[str]:
    """The packages of ``modules`` whose module cannot be found in this interpreter (nothing is imported)."""
    missing = []
    for module, package in modules.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(package)
    return missing
