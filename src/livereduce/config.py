"""The ``/etc/livereduce.conf`` schema: every upstream key with upstream's default, the new keys, validation.

The file is one JSON object. Upstream reads it with ``json.load`` and ignores what it does not know; here it
is validated with pydantic, and every problem is reported as one line naming the file, the key, the value and
what was expected (:class:`~livereduce.errors.ConfigError`, exit code 2). See ``docs/configuration.md``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from livereduce import instruments
from livereduce.errors import ConfigError
from livereduce.files import is_regular_file, permission_problem, read_regular_file

MAX_EVENT_ID = 2**31 - 1

DEFAULT_CONFIG_PATH = Path("/etc/livereduce.conf")
"""Upstream's configuration file, used when no path is given on the command line."""

DEFAULT_PIXI_ENV = "mantid_dev"
"""Upstream's default pixi environment name (``livereduce.sh``)."""

MANTID_LISTENERS = (
    "SNSLiveEventDataListener",
    "ISISHistoDataListener",
    "ISISLiveEventDataListener",
    "KafkaEventListener",
    "KafkaHistoListener",
    "FileEventDataListener",
    "FakeEventDataListener",
    "TOPAZLiveEventDataListener",
)
"""Mantid's registered live listener class names: the vocabulary of the ``listener`` key."""

OBSOLETE_KEYS = {
    "mantid_loc": "directory of Mantid, replaced by CONDA_ENV/PIXI_ENV in 2022",
    "post_process": "post-processing runs whenever the post-processing script exists (since 2017)",
}
"""Keys older upstream versions read; accepted with a warning and ignored, so old files keep working."""


def _not_boolean(value: Any) -> Any:
    """JSON ``true``/``false`` is not a number (pydantic would read it as 1/0)."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    return value


Number = Annotated[float, BeforeValidator(_not_boolean), Field(allow_inf_nan=False)]
Integer = Annotated[int, BeforeValidator(_not_boolean)]
StartOption = Literal["from_start_of_run", "now"] | datetime
TopicRole = Literal["events", "runInfo", "sampleEnv", "monitors"]
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._\-]{1,249}")


def _topic_name(value: str) -> str:
    if not _TOPIC_NAME.fullmatch(value):
        raise ValueError("expected a Kafka topic name (letters, digits, '.', '_' and '-', at most 249 characters)")
    return value


TopicName = Annotated[str, AfterValidator(_topic_name)]
"""A Kafka topic name: letters, digits, ``.``, ``_`` and ``-``, at most 249 characters (Kafka's own rule)."""
TopicSpec = Annotated[list[TopicName], Field(min_length=1, max_length=64)] | None
"""The topics of one role: 1 to 64 names (one name is read as a list of one), or null (not read)."""
DAY = 86400.0

MAX_CONFIG_BYTES = 1 << 20
"""Largest configuration file read (1 MiB; real files are a few hundred bytes)."""
MAX_QUOTED = 200
"""Characters of a bad value quoted in a message."""
MAX_UPLOADED_PLOTS = 1000
"""Most uploaded plots ``http_upload.max_plots`` may keep."""
_INSTRUMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}")
"""An instrument name: letters, digits, ``_`` and ``-`` (Facilities.xml names), at most 64 characters. It becomes
part of a script file name, so a path separator or ``..`` could load a script from outside ``script_dir``."""


def _zero_or_at_least(low: float) -> Any:
    """A validator: 0 (disabled) or at least ``low``."""

    def check(value: float) -> float:
        if 0 < value < low:
            raise ValueError(f"must be 0 (disabled) or at least {low:g}")
        return value

    return check


def _within(low: float, high: float, *, low_inclusive: bool = True) -> Any:
    """A finite number in [low, high] (or (low, high] when ``low_inclusive`` is false)."""
    bound = Field(ge=low, le=high) if low_inclusive else Field(gt=low, le=high)
    return Annotated[Number, bound]


class WatchdogConfig(BaseModel):
    """The ``watchdog`` section, read by ``livereduce_watchdog.sh`` (upstream defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval: Annotated[Integer, Field(ge=1, le=int(DAY))] = 60
    """Seconds between two checks of the log file's age."""
    threshold: Annotated[Integer, Field(ge=20, le=int(DAY))] = 300
    """Seconds without a change of the log file before the watchdog restarts the service (minimum 20)."""


class HttpUploadConfig(BaseModel):
    """The ``http_upload`` section: the page's plot upload route (SNS live data server's), off without it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: Annotated[str, Field(min_length=1, max_length=200)]
    """User name ``plot_publisher`` sends (its ``publisher_username``)."""
    password: Annotated[SecretStr, Field(min_length=8, max_length=200)]
    """Password it sends (``publisher_password``); never logged or shown."""
    max_bytes: Annotated[Integer, Field(ge=1024, le=1 << 30)] = 10 << 20
    """Largest upload (the whole request), bytes; larger ones are answered 413."""
    max_plots: Annotated[Integer, Field(ge=1, le=MAX_UPLOADED_PLOTS)] = 20
    """Uploaded plots kept (one per instrument and run, as the live data server keeps them); the oldest goes."""


class Config(BaseModel):
    """All configuration keys with their defaults. Unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- upstream keys ---------------------------------------------------------------------------------------
    instrument: str | None = None
    """Full or short instrument name; default: Mantid's ``default.instrument`` property."""
    CONDA_ENV: str | None = None
    """Legacy name of the environment (``-dev``/``-qa`` suffixes map to ``_dev``/``_qa``)."""
    PIXI_ENV: str | None = None
    """Pixi environment the wrapper ``livereduce.sh`` launches the daemon in (wins over CONDA_ENV)."""
    script_dir: str | None = None
    """Directory of the processing scripts; default ``/SNS/<short name>/shared/livereduce``."""
    update_every: _within(0.01, DAY) = 30
    """Seconds between the starts of two cycles (StartLiveData ``UpdateEvery``)."""
    preserve_events: StrictBool = True
    """Keep events in the accumulation (StartLiveData ``PreserveEvents``); false histograms each chunk."""
    accum_method: Literal["Add", "Replace", "Append"] = "Add"
    """StartLiveData ``AccumulationMethod``."""
    periods: Annotated[list[Annotated[Integer, Field(ge=1, le=1_000_000)]], Field(max_length=100_000)] | None = None
    """Periods to read (``PeriodList``, ISIS histogram listener only)."""
    spectra: Annotated[list[Annotated[Integer, Field(ge=0, le=MAX_EVENT_ID)]], Field(max_length=1 << 24)] | None = None
    """Spectra to read (``SpectraList``, ISIS histogram listener only)."""
    system_mem_limit_perc: _within(-100, 100) = 70
    """Memory limit of the daemon in percent of the total RAM; 0 or less disables the limit."""
    mem_check_interval_sec: _within(0.1, 3600) = 1
    """Seconds between two memory checks."""
    watchdog: WatchdogConfig = WatchdogConfig()

    # --- new keys --------------------------------------------------------------------------------------------
    engine: Literal["auto", "mantid", "scipp"] = "auto"
    """``auto``: mantid if it can be imported, else scipp."""
    listener: Literal[MANTID_LISTENERS] | None = None  # type: ignore[valid-type]
    """Listener class (Mantid's names); default: the instrument's live-data listener."""
    address: str | None = None
    """``host:port`` of the data source; default: the instrument's live-data address."""
    filename: str | None = None
    """NeXus file replayed by ``FileEventDataListener``."""
    replay_speed: _within(0, 1e6) = 1
    """File replay speed: 1 real time, N times faster, 0 as fast as possible."""
    replay_chunk_pulses: Annotated[Integer, Field(ge=1, le=1 << 30)] | None = None
    """At most this many pulses per chunk in a file replay (default: no limit)."""
    event_rate: _within(0, 1e9, low_inclusive=False) = 20000
    """Events per second of ``FakeEventDataListener``."""
    end_run_every: _within(0, 365 * DAY) = 0
    """Seconds after which ``FakeEventDataListener`` ends a run and begins the next; 0: never."""
    start: StartOption = "from_start_of_run"
    """Where in the stream to start: ``from_start_of_run``, ``now`` or an ISO-8601 time (UTC if no zone)."""
    run_transition: Literal["Restart", "Stop", "Rename"] = "Restart"
    """Mantid's ``RunTransitionBehavior`` at the end of a run."""
    log_file: str | None = None
    """Log file; default as upstream (``/var/log/SNS_applications/livereduce.log`` for ``snsdata``)."""
    poll_interval_sec: _within(0.1, DAY) = 10
    """Seconds between two hash comparisons of scripts and configuration (edits inotify cannot see)."""
    mem_limit_mb: _within(0, 1 << 30, low_inclusive=False) | None = None
    """Absolute memory limit in MiB (RSS with children); with ``system_mem_limit_perc`` the smaller applies."""
    stop_timeout_sec: _within(0.1, 3600) = 30
    """Seconds the engine gets to stop (SIGTERM, restart) before the daemon exits non-zero instead of hanging."""
    status_file: str | None = None
    """Status file (JSON); default ``/run/livereduce/status.json`` where writable (see docs/operations.md)."""
    strict_permissions: StrictBool = True
    """Refuse world-writable scripts, ``script_dir`` and configuration (like sshd's StrictModes)."""
    keep_paused_events: StrictBool = False
    """ADARA: keep the events the SMS sends while the run is paused (Mantid's ``livelistener.keeppausedevents``)."""
    early_chunks: StrictBool = True
    """``accum_method`` Add: when the source's buffer is full before a cycle is due, take the chunk early (proc and
    accumulate; post_proc keeps its ``update_every`` cadence) instead of pausing the source."""
    source_buffer_mb: _within(1, 1 << 20) | None = None
    """MiB a network source may buffer between the socket/consumer and the cycle; beyond it, reading pauses.
    Default: automatic, from 256 MiB up to what a cycle of the stream needs within the memory limit."""
    topics: dict[TopicRole, TopicSpec] | None = None
    """Kafka topics by role (``events``, ``runInfo``, ``sampleEnv``, ``monitors``): a name, a list of names (e.g.
    LOKI's nine detector-bank topics), or null (not read; ``runInfo`` null: the stream has no run information);
    default ``<INSTRUMENT>_<role>``."""
    kafka: dict[Annotated[str, Field(min_length=1, max_length=200)], str | int | float | bool] | None = None
    """Extra librdkafka consumer settings (security protocol, SASL, TLS); values never logged in clear."""
    http_port: Annotated[Integer, Field(ge=0, le=65535)] | None = None
    """TCP port of the daemon's web server: the live page ``/``, ``/status.json`` and ``/metrics`` (0: any free
    port, logged and shown by ``--status``); default: no server."""
    http_address: str = "127.0.0.1"
    """Address the web server binds to (loopback: put a reverse proxy with TLS and authentication in front)."""
    http_upload: HttpUploadConfig | None = None
    """Credentials and limits of the plot upload route (``/plots/<instrument>/<run>/upload_plot_data/``); default:
    uploads refused."""
    metrics_port: Annotated[Integer, Field(ge=0, le=65535)] | None = None
    """Alias of ``http_port`` (the metrics endpoint is the web server's ``/metrics``); default: no endpoint."""
    metrics_address: str = "127.0.0.1"
    """Alias of ``http_address``, used with ``metrics_port``."""
    checkpoint_every: Annotated[_within(0, DAY), AfterValidator(_zero_or_at_least(0.1))] = 60
    """scipp engine: seconds between two checkpoints of the accumulation (also written at every clean stop), so
    that a restart resumes the run; 0 disables checkpoints; else 0.1 to 86400."""
    checkpoint_dir: str | None = None
    """Directory of the checkpoints; default ``$STATE_DIRECTORY/<instrument>`` under systemd (``StateDirectory=``,
    ``/var/lib/livereduce/<instrument>``), else ``$XDG_STATE_HOME/livereduce/<instrument>`` (``~/.local/state``)."""

    @model_validator(mode="before")
    @classmethod
    def _reject_non_object(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError(f"the configuration must be a JSON object, got {type(data).__name__}")
        return data

    @field_validator("instrument")
    @classmethod
    def _plain_instrument_name(cls, value: str | None) -> str | None:
        if value is not None and not _INSTRUMENT_NAME.fullmatch(value.strip()):
            raise ValueError(
                "expected an instrument name (letters, digits, '_' and '-', at most 64 characters; no path)"
            )
        return value

    @field_validator(
        "log_file",
        "status_file",
        "filename",
        "script_dir",
        "address",
        "http_address",
        "metrics_address",
        "checkpoint_dir",
    )
    @classmethod
    def _not_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("expected a non-empty string (leave the key out for the default)")
        if value is not None and "\0" in value:
            raise ValueError("expected a string without NUL characters")
        return value

    @field_validator("topics", mode="before")
    @classmethod
    def _one_topic_is_a_list_of_one(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {role: [names] if isinstance(names, str) else names for role, names in value.items()}
        return value

    @field_validator("topics")
    @classmethod
    def _topics_once_each(cls, value: dict[str, list[str] | None] | None) -> dict[str, list[str] | None] | None:
        if value is None:
            return None
        if "events" in value and value["events"] is None:
            raise ValueError("'events' needs a topic (null is allowed for runInfo, sampleEnv and monitors)")
        seen: dict[str, str] = {}
        for role, names in value.items():
            for name in names or []:
                if name in seen:
                    where = "twice" if seen[name] == role else f"for both {seen[name]} and {role}"
                    raise ValueError(f"topic '{name[:MAX_QUOTED]}' is named {where}")
                seen[name] = role
        return value

    @model_validator(mode="after")
    def _one_web_server(self) -> Config:
        if self.http_port is not None and self.metrics_port is not None and self.http_port != self.metrics_port:
            raise ValueError(
                f"http_port {self.http_port} and metrics_port {self.metrics_port} name two ports, but the daemon has "
                "one web server (its /metrics is the metrics endpoint): set http_port only"
            )
        return self

    @property
    def web_server(self) -> tuple[str, int] | None:
        """(address, port) of the web server: ``http_port``, else its alias ``metrics_port``; None: no server."""
        if self.http_port is not None:
            return self.http_address, self.http_port
        if self.metrics_port is not None:
            return self.metrics_address, self.metrics_port
        return None

    @model_validator(mode="after")
    def _run_information_for_from_start_of_run(self) -> Config:
        if self.topics is not None and "runInfo" in self.topics and self.topics["runInfo"] is None:
            if self.start == "from_start_of_run":
                raise ValueError(
                    'start \'from_start_of_run\' needs run information, but "topics": {"runInfo": null} says the '
                    'stream has none: use "start": "now" or a start time'
                )
        return self

    @field_validator("start", mode="before")
    @classmethod
    def _parse_start(cls, value: Any) -> Any:
        if value in ("from_start_of_run", "now"):
            return value
        if isinstance(value, str):
            try:
                when = datetime.fromisoformat(value)
            except ValueError:
                pass
            else:
                return when if when.tzinfo else when.replace(tzinfo=UTC)
        raise ValueError("expected 'from_start_of_run', 'now' or an ISO-8601 time such as '2026-01-31T12:00:00'")

    # --- derived values --------------------------------------------------------------------------------------
    @property
    def env_name(self) -> str:
        """Environment name as ``livereduce.sh`` chooses it: PIXI_ENV, else CONDA_ENV with its suffix mapped."""
        if self.PIXI_ENV:
            return self.PIXI_ENV
        if self.CONDA_ENV:
            for old, new in (("-dev", "_dev"), ("-qa", "_qa")):
                if self.CONDA_ENV.endswith(old):
                    return self.CONDA_ENV[: -len(old)] + new
            return self.CONDA_ENV
        return DEFAULT_PIXI_ENV

    def instrument_info(self) -> instruments.InstrumentInfo:
        """The instrument: the configured name, else Mantid's ``default.instrument`` property.

        Raises:
            ConfigError: no instrument is configured anywhere (upstream's message).
        """
        name = self.instrument or instruments.default_instrument()
        if not name or not name.strip():
            raise ConfigError("No instrument found in the configuration or Mantid.user.properties files")
        return instruments.resolve(name.strip(), default_facility=instruments.mantid_property("default.facility"))

    def resolved_checkpoint_dir(self) -> Path:
        """``checkpoint_dir`` made absolute, else ``$STATE_DIRECTORY/<instrument>`` (systemd's ``StateDirectory=``;
        the first of several), else ``$XDG_STATE_HOME/livereduce/<instrument>`` (default ``~/.local/state``).

        Raises:
            ConfigError: no instrument is configured (the default directory is named after it).
        """
        if self.checkpoint_dir:
            return Path(os.path.abspath(self.checkpoint_dir))
        name = self.instrument_info().name
        state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        if state:
            return Path(state) / name
        xdg = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
        return Path(xdg) / "livereduce" / name

    def resolved_script_dir(self) -> Path:
        """``script_dir`` made absolute against the working directory, or ``/SNS/<short name>/shared/livereduce``."""
        if self.script_dir:
            return Path(os.path.abspath(self.script_dir))
        return Path("/SNS") / self.instrument_info().short_name / "shared" / "livereduce"


@dataclass(frozen=True)
class LoadedConfig:
    """A validated configuration and where it came from.

    Attributes:
        config: the validated keys with defaults applied.
        path: absolute path of the file read, or None when the defaults are used.
        sha256: hex SHA-256 of the file's bytes ("" for defaults), to recognise an identical re-save.
        obsolete_keys: obsolete upstream keys found in the file (ignored; logged as warnings).
    """

    config: Config
    path: Path | None
    sha256: str
    obsolete_keys: tuple[str, ...] = ()


def choose_config_file(argument: str | None) -> Path | None:
    """The configuration file to read, as upstream chooses it.

    A path given on the command line must exist (upstream silently fell back to ``/etc/livereduce.conf``).
    Without an argument, ``/etc/livereduce.conf`` is used if it exists and is not empty, else the defaults.

    Raises:
        ConfigError: the given path does not exist or is not a regular file.
    """
    if argument is not None:
        path = Path(argument)
        if not path.exists():
            raise ConfigError(f"configuration file '{argument}' does not exist")
        return path.absolute()  # anything but a regular file is refused when it is read (never opened blocking)
    if DEFAULT_CONFIG_PATH.exists() and (
        not is_regular_file(DEFAULT_CONFIG_PATH) or DEFAULT_CONFIG_PATH.stat().st_size > 0
    ):
        return DEFAULT_CONFIG_PATH
    return None


def load_config(argument: str | None) -> LoadedConfig:
    """Choose, read and validate the configuration.

    Args:
        argument: the path given on the command line, or None.

    Raises:
        ConfigError: missing file, not a regular file, unreadable file, invalid JSON, invalid keys/values, or
            (``strict_permissions``) a file any user may write; the message is one line per problem naming the
            file and the key.
    """
    path = choose_config_file(argument)
    if path is None:
        return LoadedConfig(Config(), None, "")
    try:
        raw = read_regular_file(path, MAX_CONFIG_BYTES)
    except OSError as err:
        raise ConfigError(f"cannot read configuration file '{path}': {err.strerror or err}") from None
    data = parse_json(raw, str(path))
    obsolete = tuple(key for key in OBSOLETE_KEYS if isinstance(data, dict) and key in data)
    if obsolete:
        data = {key: value for key, value in data.items() if key not in OBSOLETE_KEYS}
    config = validate(data, str(path))
    problem = permission_problem(path) if config.strict_permissions else None
    if problem is not None:
        raise ConfigError(f'configuration file refused: {problem} (or set "strict_permissions": false)')
    return LoadedConfig(config, path, hashlib.sha256(raw).hexdigest(), obsolete)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key '{_quoted(key)}'")
        result[key] = value
    return result


def parse_json(raw: bytes, source: str) -> Any:
    """Decode a configuration file's bytes as strict JSON.

    ``NaN``/``Infinity`` (not JSON) and duplicate keys are rejected, and so is nesting too deep to decode.

    Raises:
        ConfigError: one line naming ``source`` and the problem.
    """
    try:
        return json.loads(raw, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{source}: invalid JSON: {_quoted(str(err))}") from None
    except ValueError as err:
        raise ConfigError(f"{source}: invalid JSON: {err}") from None
    except RecursionError:
        raise ConfigError(f"{source}: invalid JSON: nested too deeply") from None


def _quoted(text: str) -> str:
    """``text`` cut to :data:`MAX_QUOTED` characters (a bad value may be megabytes long)."""
    return text if len(text) <= MAX_QUOTED else f"{text[:MAX_QUOTED]}... ({len(text)} characters)"


def validate(data: Any, source: str) -> Config:
    """Validate a decoded JSON value as a :class:`Config`.

    Raises:
        ConfigError: one line per problem, ``<source>: key '<key>' = <value>: expected ...``.
    """
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError("\n".join(_describe(source, problem) for problem in err.errors())) from None


def _describe(source: str, problem: Any) -> str:
    key = ".".join(str(part) for part in problem["loc"])
    if problem["type"] == "extra_forbidden":
        known = list(Config.model_fields) if len(problem["loc"]) == 1 else list(WatchdogConfig.model_fields)
        close = difflib.get_close_matches(str(problem["loc"][-1]), known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(known)})"
        return f"{source}: unknown key '{_quoted(key)}'{hint}"
    message = str(problem["msg"]).removeprefix("Value error, ").replace("Input should be", "expected")
    if not key:
        return f"{source}: {message}"
    return f"{source}: key '{_quoted(key)}' = {_quoted(json.dumps(problem['input'], default=str))}: {message}"


def effective(loaded: LoadedConfig, engine: str) -> dict[str, Any]:
    """The effective configuration as JSON-ready data: every key with its default, derived values resolved.

    ``instrument`` is the resolved full name, ``script_dir`` the resolved directory, ``engine`` the engine that
    would run, ``PIXI_ENV`` the environment name, ``listener``/``address`` the instrument's live-data defaults
    when not configured. The result is itself a valid configuration file with the same behaviour.
    """
    config = loaded.config
    values = config.model_dump(mode="json")
    values["instrument"] = config.instrument_info().name
    values["script_dir"] = str(config.resolved_script_dir())
    values["engine"] = engine
    values["PIXI_ENV"] = config.env_name
    info = config.instrument_info()
    values["listener"] = config.listener or info.listener
    values["address"] = config.address or info.address
    return values
