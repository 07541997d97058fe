#!/usr/bin/python3
"""Thin entry point, installed as ``/usr/bin/livereduce.py``: ``python scripts/livereduce.py [CONFIG]``.

The package is taken from ``../src`` in a source checkout, from ``/usr/share/livereduce`` where the RPM installs it
(so whatever Python the wrapper launches finds it), else from wherever Python finds it. :mod:`livereduce.launch`
installs the signal handlers before it imports anything heavy.
"""

import sys
from pathlib import Path

_here = Path(__file__).resolve().parent
for _candidate in (_here.parent / "src", _here.parent / "share" / "livereduce"):
    if (_candidate / "livereduce" / "__init__.py").is_file():
        sys.path.insert(0, str(_candidate))
        break

from livereduce.launch import main  # noqa: E402 - after the path set-up above

raise SystemExit(main())
