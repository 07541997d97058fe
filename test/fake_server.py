"""Upstream's manual check, server side: Mantid's FakeISISHistoDAE on 127.0.0.1:56789 (TEST_LIVE facility).

Run with real Mantid: ``python test/fake_server.py`` (Ctrl-C or SIGTERM stops it).
"""

import signal
import sys

from mantid.kernel import ConfigService
from mantid.simpleapi import AlgorithmManager, FakeISISHistoDAE


def main() -> int:
    facility = ConfigService.getFacility().name()
    ConfigService.setFacility("TEST_LIVE")
    signal.signal(signal.SIGTERM, lambda *_: AlgorithmManager.cancelAll())
    try:
        FakeISISHistoDAE(NPeriods=5, NSpectra=10, NBins=100)  # runs until cancelled
    except (RuntimeError, KeyboardInterrupt):
        pass
    finally:
        AlgorithmManager.cancelAll()
        ConfigService.setFacility(facility)
    return 0


if __name__ == "__main__":
    sys.exit(main())
