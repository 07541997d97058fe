"""The exception hierarchy and the exit-code contract (one place; see ``docs/operations.md``).

| code | meaning |
|------|---------|
| 0    | clean stop: SIGTERM/SIGINT, ``run_transition`` Stop at the end of a run |
| 1    | unexpected internal error (a bug: the traceback is in the log) |
| 2    | configuration error: config file, processing scripts, ``--check`` found a problem |
| 3    | data source error: file missing/unreadable/not NeXus, connection failed |
| 4    | engine unavailable: ``engine`` names an engine that cannot be loaded here |
| 5    | memory: still above the limit after repeated in-process restarts (systemd starts a fresh process) |
| 6    | the engine did not stop within ``stop_timeout_sec`` (stop or restart) |
| 7    | SIGQUIT: thread stacks dumped to the log, then exit |
"""

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_CONFIG = 2
EXIT_SOURCE = 3
EXIT_ENGINE = 4
EXIT_MEMORY = 5
EXIT_STOP_TIMEOUT = 6
EXIT_SIGQUIT = 7


class LiveReduceError(Exception):
    """Base class of every error livereduce reports as one clear message.

    ``exit_code`` is the process exit status the command line maps the error to. ``recoverable`` says whether
    retrying later may succeed without anyone changing anything in the configuration (a network source that may
    come back, a script that may be fixed): the supervisor then retries with back-off instead of exiting.
    """

    exit_code = EXIT_INTERNAL
    recoverable = False

    def __init__(self, message: str, *, recoverable: bool | None = None) -> None:
        super().__init__(message)
        if recoverable is not None:
            self.recoverable = recoverable


class ConfigError(LiveReduceError):
    """The configuration file (or a value in it) is invalid. Exit code 2."""

    exit_code = EXIT_CONFIG


class ScriptError(LiveReduceError):
    """A processing script is missing, empty, does not compile, or raised. Exit code 2 at start-up (a script
    that fails while running is retried: the file watcher picks up a fix)."""

    exit_code = EXIT_CONFIG
    recoverable = True


class SourceError(LiveReduceError):
    """The data source (file, socket, broker) cannot be read or sent invalid data. Exit code 3."""

    exit_code = EXIT_SOURCE


class EngineError(LiveReduceError):
    """The requested engine cannot be loaded in this environment. Exit code 4."""

    exit_code = EXIT_ENGINE


class AccumulationError(LiveReduceError):
    """A processed chunk cannot be accumulated onto the accumulation (incompatible shapes or types)."""
