"""``python -m livereduce [CONFIG]``."""

from livereduce.launch import main

raise SystemExit(main())
