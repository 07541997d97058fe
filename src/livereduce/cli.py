"""Command line: ``livereduce [CONFIG]`` runs the daemon; ``--check``, ``--print-config`` and ``--status`` inspect.

Errors map to exit codes here and only here (see :mod:`livereduce.errors`): a
:class:`~livereduce.errors.LiveReduceError` is one line in the log (and on stdout), never a traceback wall. The
inspecting commands exit with their own code also when their output cannot be written (``livereduce --status |
head -1``: the reader went away), as if it had been read.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence

from livereduce import __version__, logs
from livereduce.config import OBSOLETE_KEYS, LoadedConfig, effective, load_config
from livereduce.engines import create_engine, select_engine
from livereduce.engines.base import Engine
from livereduce.errors import EXIT_INTERNAL, EXIT_OK, ConfigError, LiveReduceError
from livereduce.events import EventQueue, SignalReceived, restore_signals
from livereduce.processes import terminate_children
from livereduce.protocols.kafka.topics import without_secrets
from livereduce.scripts import ProcessingScripts, load_scripts, refuse_process_exit
from livereduce.status import STATUS_NOT_RUNNING, STATUS_UNKNOWN, status_code
from livereduce.status_file import (
    check_private_directory,
    config_mismatch,
    find_status_location,
    read_status,
    status_location,
)
from livereduce.status_text import format_status
from livereduce.supervisor import Supervisor

_log = logging.getLogger("livereduce")
_config_log = logging.getLogger("livereduce.Config")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="livereduce",
        description="Live data reduction daemon. Configuration: CONFIG, else /etc/livereduce.conf, else defaults.",
        epilog="Exit codes: 0 clean stop, 1 internal error, 2 configuration/script error, 3 data source error, "
        "4 engine unavailable, 5 memory limit, 6 stop timeout, 7 SIGQUIT. --status: 0 running and healthy, "
        "1 dead (status file left), 3 not running, 4 unknown, 150 running but unhealthy.",
    )
    parser.add_argument("config", nargs="?", help="configuration file (JSON)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="validate configuration and scripts, start nothing")
    mode.add_argument("--print-config", action="store_true", help="print the effective configuration and exit")
    mode.add_argument(
        "--status",
        action="store_true",
        help="show the status of the daemon of CONFIG; exit 0 running and healthy, 1 dead, 3 not running, "
        "4 unknown, 150 running but unhealthy",
    )
    parser.add_argument("--version", action="version", version=f"livereduce {__version__}")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, events: EventQueue | None = None) -> int:
    """The ``livereduce`` command (after :mod:`livereduce.launch`); returns the exit code.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
        events: the queue the signal handlers post to since the process started (default: a new one).
    """
    events = events or EventQueue()
    args = parse_args(argv)
    if args.status or args.check or args.print_config:
        _default_signals(events)
    if args.status:
        return _show_status(args.config)
    if args.check or args.print_config:
        return _inspect(args)
    logs.start_stdout_logging()
    refuse_process_exit()
    try:
        return _run_daemon(args.config, events)
    except LiveReduceError as err:
        _log.error("%s", err)
        return err.exit_code
    except Exception:  # noqa: BLE001 - a bug: logged with its traceback, exit code 1
        _log.exception("internal error")
        return EXIT_INTERNAL
    finally:
        terminate_children()


def _default_signals(events: EventQueue) -> None:
    """For the commands that are not the daemon: default signal actions, and a stop recorded meanwhile acted on."""
    restore_signals()
    while (event := events.get(timeout=0)) is not None:
        if isinstance(event, SignalReceived) and event.signum in (signal.SIGTERM, signal.SIGINT):
            os.kill(os.getpid(), event.signum)


def _run_daemon(config_argument: str | None, events: EventQueue) -> int:
    try:
        loaded = load_config(config_argument)
    except LiveReduceError:
        _start_file_logging(None)
        raise
    log_path = _start_file_logging(loaded.config.log_file)
    _log.info("logging started by user '%s'", logs.user_name())
    _log.info("using python interpreter %s", sys.executable)
    _log.info("log file %s", log_path)
    engine_name = select_engine(loaded.config)
    _log_config(loaded, engine_name)
    _, scripts = _engine_and_scripts(loaded, engine_name)
    settings = effective(loaded, engine_name)
    _log.info("Configuration options: %s", json.dumps(without_secrets(settings), sort_keys=True, indent=2))
    return Supervisor(loaded, lambda: create_engine(engine_name, loaded.config), scripts, events).run()


def _engine_and_scripts(loaded: LoadedConfig, engine_name: str) -> tuple[Engine, ProcessingScripts]:
    """Build the engine (nothing starts) and load the scripts that exist now; both validate the configuration.

    Raises:
        LiveReduceError: the configuration does not suit the engine, or the scripts are invalid.
    """
    config = loaded.config
    engine = create_engine(engine_name, config)
    scripts = load_scripts(
        config.resolved_script_dir(), config.instrument_info().short_name, strict=config.strict_permissions
    )
    return engine, scripts


def _start_file_logging(log_file: str | None) -> str:
    try:
        return str(logs.start_file_logging(log_file))
    except OSError as err:
        if log_file is None:  # the default location is best effort for early errors
            return f"(none: {err})"
        raise ConfigError(f"cannot open log file '{log_file}' (key 'log_file'): {err.strerror}") from None


def config_warnings(loaded: LoadedConfig) -> list[str]:
    """What is odd but not wrong about the configuration (logged by the daemon, printed by ``--check``)."""
    warnings = [f"Ignoring obsolete key '{key}' ({OBSOLETE_KEYS[key]})" for key in loaded.obsolete_keys]
    info = loaded.config.instrument_info()
    if not info.facility:
        warnings.append(
            f"Instrument '{info.name}' is not in the built-in instrument table: its name is used as its short name"
        )
    return warnings


def _log_config(loaded: LoadedConfig, engine_name: str) -> None:
    if loaded.path is None:
        _config_log.info("Using default configuration")
    else:
        _config_log.info("Loading configuration from '%s'", loaded.path)
    _config_log.info("Finished parsing configuration")
    if engine_name == "mantid":  # the environment matters only where Mantid comes from it
        _config_log.info("PIXI_ENV = %s", loaded.config.env_name)
    for warning in config_warnings(loaded):
        _config_log.warning("%s", warning)
    if engine_name == "mantid":
        return  # the mantid engine resolves and logs the instrument through Mantid's ConfigService, as upstream
    if loaded.config.instrument is None:
        _config_log.info("Using default instrument")
    info = loaded.config.instrument_info()
    _config_log.info(
        'self.instrument="%s" (short name %s, facility %s)', info.name, info.short_name, info.facility or "unknown"
    )


def _say(text: str, *, error: bool = False) -> None:
    """Print ``text`` (to stderr for ``error``). A reader that went away (a broken pipe) is not an error: the rest
    of the output goes to /dev/null and the command keeps its exit code."""
    stream = sys.stderr if error else sys.stdout
    try:
        print(text, file=stream, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def _show_status(config_argument: str | None) -> int:
    """``--status``: print the status of the daemon of the configuration; LSB status codes (``status.STATUS_*``):
    0 running and healthy, 1 dead with a status file left, 3 not running, 4 unknown (also: the status file
    belongs to another configuration than the CONFIG given), 150 running but unhealthy."""
    try:
        loaded = load_config(config_argument)
        path = find_status_location(loaded).path
        if not path.exists():
            _say(f"not running: no status file '{path}'")
            return STATUS_NOT_RUNNING
        current = read_status(path)
        problem = config_mismatch(current, path, loaded) if config_argument is not None else None
        if problem is not None:
            raise LiveReduceError(problem)
    except OSError as err:
        _say(f"livereduce: cannot read status file '{err.filename or '?'}': {err.strerror or err}", error=True)
        return STATUS_UNKNOWN
    except LiveReduceError as err:
        _say(f"livereduce: {err}", error=True)
        return STATUS_UNKNOWN
    _say(format_status(current))
    return status_code(current)


def _inspect(args: argparse.Namespace) -> int:
    """``--check`` / ``--print-config``: messages on stdout/stderr, no log file, nothing started.

    ``--check`` reports every problem the daemon would report at start, each on one line (errors on stderr,
    warnings on stdout), and exits with the code of the first error.
    """
    try:
        loaded = load_config(args.config)
        engine_name = select_engine(loaded.config)
        settings = effective(loaded, engine_name)
    except LiveReduceError as err:
        _say(f"livereduce: {err}", error=True)
        return err.exit_code
    if args.print_config:
        _say(json.dumps(settings, sort_keys=True, indent=2))
        return EXIT_OK
    config = loaded.config
    problems: list[LiveReduceError] = []
    log_problem = logs.log_file_problem(config.log_file)
    if log_problem is not None:
        problems.append(
            ConfigError(f"cannot open log file '{config.log_file or logs.default_log_file()}': {log_problem}")
        )
    location = status_location(loaded)
    if location.private and os.path.lexists(location.path.parent):
        try:
            check_private_directory(location.path.parent, create=False)
        except ConfigError as err:
            problems.append(err)
    try:
        create_engine(engine_name, config)
    except LiveReduceError as err:
        problems.append(err)
    scripts = None
    try:
        scripts = load_scripts(
            config.resolved_script_dir(), config.instrument_info().short_name, config.strict_permissions
        )
    except LiveReduceError as err:
        problems.append(err)
    for warning in config_warnings(loaded):
        _say(f"warning: {warning}")
    for problem in problems:
        _say(f"livereduce: {problem}", error=True)
    if problems:
        return problems[0].exit_code
    source = str(loaded.path) if loaded.path else "defaults"
    _say(f"configuration {source}: OK (instrument {settings['instrument']}, engine {engine_name})")
    for script in scripts:
        _say(f"{script.property_name} {script.path}: OK")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
