"""Upstream's manual check, server side: Mantid's FakeISISEventDAE on 127.0.0.1:59876 (TEST_LIVE facility).

Run with real Mantid: ``python test/fake_event_server.py`` (Ctrl-C or SIGTERM stops it).
"""

import signal
import sys

from mantid.kernel import ConfigService
from mantid.simpleapi import AlgorithmManager, FakeISISEventDAE


def main() -> int:
    facility = ConfigService.getFacility().name()
    ConfigService.setFacility("TEST_LIVE")
    signal.signal(signal.SIGTERM, lambda *_: AlgorithmManager.cancelAll())
    try:
        FakeISISEventDAE(NEvents=1000000)  # runs until cancelled
    except (RuntimeError, KeyboardInterrupt):
        pass
    finally:
        AlgorithmManager.cancelAll()
        ConfigService.setFacility(facility)
    return 0


if __name__ == "__main__":
    sys.exit(main())
