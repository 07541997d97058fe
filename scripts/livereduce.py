#!/usr/bin/env python3
"""Thin entry point, installed as ``/usr/bin/livereduce.py``: ``python scripts/livereduce.py [CONFIG]``.

From a source checkout the package is taken from ``../src``; installed, from wherever Python finds it.
"""

import sys
from pathlib import Path

_checkout = Path(__file__).resolve().parent.parent / "src"
if (_checkout / "livereduce" / "__init__.py").is_file():
    sys.path.insert(0, str(_checkout))

from livereduce.cli import main  # noqa: E402 - after the path set-up above

raise SystemExit(main())
