"""Upstream's manual check, server side: Mantid's FakeISISEventDAE on 127.0.0.1:59876 (TEST_LIVE facility),
a firehose of events for the memory limit. Run with real Mantid: ``pixi run -e mantid python
test/fake_event_server.py``; without Mantid it prints one line saying so and exits 2."""

import sys

from fake_server import serve

if __name__ == "__main__":
    sys.exit(serve("FakeISISEventDAE", NEvents=1000000))
