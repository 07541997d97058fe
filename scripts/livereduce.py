#!/usr/bin/python3
"""Thin entry point, installed as ``/usr/bin/livereduce.py``: ``python scripts/livereduce.py [CONFIG]``.

The package is taken from ``../src`` in a source checkout, from ``/usr/share/livereduce`` where the RPM installs it
(so whatever Python the wrapper launches finds it), else from wherever Python finds it. This file's own directory
is taken off ``sys.path`` first: Python puts it there, and this file, named ``livereduce.py``, would otherwise be
imported in place of the package (``'livereduce' is not a package``, e.g. as ``/usr/local/bin/livereduce.py``
beside a pip-installed package). :mod:`livereduce.launch` installs the signal handlers before it imports anything
heavy.
"""

import sys
from pathlib import Path

_here = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _here]
for _candidate in (_here.parent / "src", _here.parent / "share" / "livereduce"):
    if (_candidate / "livereduce" / "__init__.py").is_file():
        sys.path.insert(0, str(_candidate))
        break

from livereduce.launch import main  # noqa: E402 - after the path set-up above

raise SystemExit(main())
