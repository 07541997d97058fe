"""The daemon's entry point (``livereduce``, ``scripts/livereduce.py``): signals first, then dependencies, then
everything else.

1. The signal handlers are installed before any other import (:mod:`livereduce.events` needs only the standard
   library), so a SIGTERM/SIGINT/SIGHUP during the second it takes to import scipp or Mantid is recorded and
   acted on once the supervisor runs, never the default action.
2. The third-party packages the daemon needs are looked up without importing them; if any is missing, one line
   names every missing package, the Python environment looked in, and the command that installs them (exit 4),
   instead of an ImportError traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Sequence

from livereduce.errors import EXIT_ENGINE
from livereduce.events import EventQueue, record_signals
from livereduce.packages import missing_packages


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``livereduce`` command; returns its exit code."""
    events = EventQueue()
    record_signals(events)
    missing = missing_packages()
    if missing:
        print(
            f"livereduce: missing Python package{'s' if len(missing) > 1 else ''} {', '.join(missing)} in the "
            f"environment of {sys.executable} (prefix {sys.prefix}); install with: "
            f"{sys.executable} -m pip install {' '.join(missing)}  (or in a pixi/conda environment: "
            f"pixi add {' '.join(missing)} / conda install -c conda-forge {' '.join(missing)})",
            flush=True,
        )
        return EXIT_ENGINE
    from livereduce.cli import main as cli_main  # noqa: PLC0415 - after the handlers and the dependency check

    code = cli_main(argv, events)
    if any(thread.name == "Checkpoint" and thread.is_alive() for thread in threading.enumerate()):
        # a checkpoint write that outlived the stop's bound (logged) is abandoned: its manifest is written last, so
        # the previous checkpoint stays whole; the interpreter must not finalize under a thread inside HDF5
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
