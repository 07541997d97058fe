"""Upstream's manual check, server side: Mantid's FakeISISHistoDAE on 127.0.0.1:56789 (TEST_LIVE facility).

Run with real Mantid: ``python test/fake_server.py`` (Ctrl-C or SIGTERM stops it).
"""

import signal
import sys

from mantid import simpleapi
from mantid.kernel import ConfigService
from mantid.simpleapi import AlgorithmManager


def serve(algorithm: str, **properties: int) -> int:
    """Run a fake DAE algorithm of the TEST_LIVE facility until cancelled; restore the default facility."""
    facility = ConfigService.getFacility().name()
    ConfigService.setFacility("TEST_LIVE")
    signal.signal(signal.SIGTERM, lambda *_: AlgorithmManager.cancelAll())
    try:
        getattr(simpleapi, algorithm)(**properties)  # runs until cancelled
    except (RuntimeError, KeyboardInterrupt):
        pass
    finally:
        AlgorithmManager.cancelAll()
        ConfigService.setFacility(facility)
    return 0


if __name__ == "__main__":
    sys.exit(serve("FakeISISHistoDAE", NPeriods=5, NSpectra=10, NBins=100))
