"""``python -m livereduce [CONFIG]``."""

from livereduce.cli import main

raise SystemExit(main())
