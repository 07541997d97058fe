"""Upstream's manual check, server side: Mantid's FakeISISHistoDAE on 127.0.0.1:56789 (TEST_LIVE facility).

Run with real Mantid: ``pixi run -e mantid python test/fake_server.py`` (Ctrl-C or SIGTERM stops it). Without
Mantid it prints one line saying so and exits 2.
"""

import signal
import sys
from pathlib import Path

EXIT_NO_MANTID = 2


def serve(algorithm: str, **properties: int) -> int:
    """Run a fake DAE algorithm of the TEST_LIVE facility until cancelled; restore the default facility.

    Returns 0 after a stop, :data:`EXIT_NO_MANTID` (one line on stderr) when Mantid cannot be imported.
    """
    try:
        from mantid import simpleapi  # here, so that its absence is one line, not a traceback
        from mantid.kernel import ConfigService
        from mantid.simpleapi import AlgorithmManager
    except ImportError as err:
        script = f"test/{Path(sys.argv[0]).name}"
        print(
            f"{script}: needs Mantid ({algorithm}), which cannot be imported here ({err}); run it in the Mantid "
            f"environment: pixi run -e mantid python {script}",
            file=sys.stderr,
        )
        return EXIT_NO_MANTID
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
