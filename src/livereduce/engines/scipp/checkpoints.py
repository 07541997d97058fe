"""Checkpoints: the accumulation and the source position it covers, on disk, so that a restart resumes the run.

Layout of ``checkpoint_dir`` (one daemon per directory; the default is per instrument)::

    checkpoint.json                      the manifest: the one commit point (written last, renamed into place)
    <lineage>/events-<first>-<end>.h5    an event accumulation: the pulses [first, end) added since the previous
                                         checkpoint (scipp HDF5, binned DataArray over event_time_zero)
    <lineage>/accumulation-<seq>.h5      any other accumulation (dense or binned DataArray, Dataset, DataGroup):
                                         the whole object, rewritten at each checkpoint (scipp HDF5)
    <lineage>/metadata-<seq>.h5          the run metadata (run number, start, instrument, logs, properties,
                                         monitors) as a scipp DataGroup

A **lineage** is one accumulation: it begins when the accumulation is replaced (the first chunk, a run transition,
a data reset) and is named ``run-<number>-<seq>``. Event accumulations only grow by appending pulses, so each of
their checkpoints writes only what was added: the disk time is proportional to what changed. Every file is
written to a temporary name, fsynced and renamed; the manifest, written the same way after them, is what makes a
checkpoint exist. A process killed at any moment leaves the previous checkpoint whole; files no manifest names are
removed at the next write. When a new lineage's first checkpoint is committed, the previous lineage (an ended run)
is removed: disk use is bounded by one accumulation plus one metadata file.

The manifest (JSON, :data:`FORMAT`) holds what the accumulation depends on (instrument, source, proc script md5,
``accum_method``, ``preserve_events``), compared by :func:`mismatch` before a checkpoint is used, and its
provenance (``provenance.py``): run, chunks, events, first/last position and pulse.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipp as sc

from livereduce.engines.scipp.chunk import PULSE_DIM, RunMetadata
from livereduce.errors import ConfigError
from livereduce.files import permission_problem, read_regular_file
from livereduce.provenance import Provenance

FORMAT = 1
"""Version of the layout and manifest; a checkpoint of another format is not used."""
MANIFEST = "checkpoint.json"
MAX_MANIFEST_BYTES = 16 << 20
"""Largest manifest read (16 MiB; one is a few kB)."""
_FILE_NAME = re.compile(r"(events-\d+-\d+|accumulation-\d+|metadata-\d+)\.h5")
_LINEAGE = re.compile(r"run-\d+-\d+")
_log = logging.getLogger("livereduce.checkpoint")

Kind = Literal["events", "object"]


class CheckpointUnusable(Exception):
    """A checkpoint exists but cannot be used; ``str()`` is the reason, for the line
    ``checkpoint of run N not used: <reason>``."""


@dataclass(frozen=True)
class Manifest:
    """One committed checkpoint.

    Attributes:
        written: when it was committed (Unix seconds).
        lineage: the accumulation's directory name, ``run-<number>-<seq>``.
        seq: the checkpoint's sequence number in this directory (grows by one per checkpoint).
        depends: what the accumulation depends on (see :func:`depends_on`).
        provenance: ``Provenance.to_json()`` of the accumulation (run_number, chunks, events, positions, pulses).
        position: the source position after the last chunk accumulated (``listeners.base.SourcePosition``).
        kind: ``events`` (pulses in ``files``, in order) or ``object`` (one file).
        files: data files in the lineage directory, in order.
        metadata_file: the run metadata's file in the lineage directory.
        replace_next: the next chunk starts a new accumulation (the checkpoint's chunk ended a run).
        previous_run: run of the last transition (for ``run_transition`` Rename).
        ended: the source had delivered everything (a replayed file read to its end).
        accumulated_events: events in the accumulation (0 for histograms).
        n_pulses: pulses in an event accumulation (0 for ``object``).
        nbytes: bytes of its files on disk.
    """

    written: float
    lineage: str
    seq: int
    depends: dict[str, Any]
    provenance: dict[str, Any]
    position: dict[str, Any]
    kind: Kind
    files: list[str]
    metadata_file: str
    replace_next: bool = False
    previous_run: int = 0
    ended: bool = False
    accumulated_events: int = 0
    n_pulses: int = 0
    nbytes: int = 0

    @property
    def run_number(self) -> int:
        """The accumulation's run (0: none)."""
        return int(self.provenance.get("run_number", 0))

    def to_json(self) -> dict[str, Any]:
        """The manifest as a JSON object (with ``format``)."""
        return {"format": FORMAT, **{name: getattr(self, name) for name in self.__dataclass_fields__}}

    @classmethod
    def from_json(cls, data: object) -> Manifest:
        """Parse a manifest read from disk (hostile input: every field's type is checked).

        Raises:
            CheckpointUnusable: not a manifest of :data:`FORMAT`, or a field has the wrong type.
        """
        if not isinstance(data, dict):
            raise CheckpointUnusable("its manifest is not a JSON object")
        if data.get("format") != FORMAT:
            raise CheckpointUnusable(f"written in checkpoint format {data.get('format')!r} (this livereduce: {FORMAT})")
        types = {
            "written": (int, float),
            "lineage": str,
            "seq": int,
            "depends": dict,
            "provenance": dict,
            "position": dict,
            "kind": str,
            "files": list,
            "metadata_file": str,
            "replace_next": bool,
            "previous_run": int,
            "ended": bool,
            "accumulated_events": int,
            "n_pulses": int,
            "nbytes": int,
        }
        for name, kind in types.items():
            if not isinstance(data.get(name), kind) or (kind is int and isinstance(data.get(name), bool)):
                raise CheckpointUnusable(f"its manifest's '{name}' is {data.get(name)!r}")
        names = [*data["files"], data["metadata_file"]]
        if (
            not _LINEAGE.fullmatch(data["lineage"])
            or data["kind"] not in ("events", "object")
            or not all(isinstance(name, str) and _FILE_NAME.fullmatch(name) for name in names)
            or (data["kind"] == "object" and len(data["files"]) != 1)
        ):
            raise CheckpointUnusable(f"its manifest names no valid files ({data['lineage']!r}: {names!r})")
        return cls(**{name: data[name] for name in types})


@dataclass
class Snapshot:
    """What the cycle thread hands to the writer: consistent with one position, safe to write from another thread.

    Attributes:
        lineage: the accumulation's lineage (a new name when the accumulation was replaced).
        depends, provenance, position, replace_next, previous_run, ended, accumulated_events: see :class:`Manifest`.
        metadata: the run metadata (written as :func:`metadata_group` by the writer: packing thousands of logs
            takes a while).
        events: an event accumulation: the pulses added since the lineage's last committed checkpoint, holding only
            their events (``EventAccumulator.pulses_since``: a view; appended pulses never change it).
        first_pulse: index of ``events``' first pulse in the accumulation.
        accumulation: any other accumulation: a deep copy without its run metadata.
    """

    lineage: str
    depends: dict[str, Any]
    provenance: dict[str, Any]
    position: dict[str, Any]
    metadata: RunMetadata
    replace_next: bool = False
    previous_run: int = 0
    ended: bool = False
    accumulated_events: int = 0
    events: sc.DataArray | None = None
    first_pulse: int = 0
    accumulation: object = None


def depends_on(provenance: Provenance) -> dict[str, Any]:
    """What an accumulation made as ``provenance`` says depends on: instrument, source, proc script md5 ("" without
    one), ``accum_method``, ``preserve_events``. A checkpoint is used only when all of it is equal."""
    return {
        "instrument": provenance.instrument,
        "source": provenance.source,
        "proc_md5": provenance.scripts.get("proc", {}).get("md5", ""),
        "accum_method": provenance.accum_method,
        "preserve_events": provenance.preserve_events,
    }


def mismatch(saved: dict[str, Any], now: dict[str, Any]) -> str | None:
    """Why a checkpoint that depends on ``saved`` cannot be used now, or None (see :func:`depends_on`)."""
    if saved.get("proc_md5") != now["proc_md5"]:
        return f"proc script changed (md5 {saved.get('proc_md5') or 'none'} -> {now['proc_md5'] or 'none'})"
    for key in ("instrument", "source", "accum_method", "preserve_events"):
        if saved.get(key) != now[key]:
            return f"{key} changed ({_short(saved.get(key))} -> {_short(now[key])})"
    return None


def _short(value: object) -> str:
    text = json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else str(value)
    return text if len(text) <= 200 else text[:197] + "..."


# --- run metadata <-> DataGroup -------------------------------------------------------------------------------
def metadata_group(metadata: RunMetadata) -> sc.DataGroup:
    """The run metadata as a DataGroup scipp's HDF5 I/O writes (names in lists: a log name may hold ``/``)."""

    def named(items: dict[str, Any], wrap: Any) -> sc.DataGroup:
        names = list(items)
        return sc.DataGroup(
            {"names": sc.scalar(json.dumps(names)), **{str(i): wrap(items[name]) for i, name in enumerate(names)}}
        )

    def prop(value: object) -> sc.Variable:
        return sc.scalar(value, unit="ns") if isinstance(value, np.datetime64) else sc.scalar(value)

    packed, others = _packed_logs(metadata.logs)
    group = sc.DataGroup(
        {
            "run_number": sc.scalar(metadata.run_number, unit=None, dtype="int64"),
            "instrument_name": sc.scalar(metadata.instrument_name),
            "packed_logs": sc.DataGroup({str(i): table for i, table in enumerate(packed)}),
            "logs": named(others, lambda log: log),
            "properties": named(metadata.properties, prop),
            "monitors": named(metadata.monitors, lambda events: events),
        }
    )
    if metadata.start_time is not None:
        group["start_time"] = sc.scalar(np.datetime64(metadata.start_time, "ns"), unit="ns")
    return group


def metadata_from_group(group: sc.DataGroup) -> RunMetadata:
    """Inverse of :func:`metadata_group`.

    Raises:
        CheckpointUnusable: the group lacks a member or has a wrong type.
    """
    try:

        def named(sub: sc.DataGroup) -> dict[str, Any]:
            return {str(name): sub[str(i)] for i, name in enumerate(json.loads(sub["names"].value))}

        start = group.get("start_time")
        logs = {name: log for table in group["packed_logs"].values() for name, log in _unpacked_logs(table)}
        return RunMetadata(
            run_number=int(group["run_number"].value),
            start_time=None if start is None else start.value,
            instrument_name=str(group["instrument_name"].value),
            logs={**logs, **named(group["logs"])},
            properties={name: var.value for name, var in named(group["properties"]).items()},
            monitors=named(group["monitors"]),
        )
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        raise CheckpointUnusable(f"its run metadata is incomplete ({type(err).__name__}: {err})") from None


def _packed_logs(logs: dict[str, sc.DataArray]) -> tuple[list[sc.DataGroup], dict[str, sc.DataArray]]:
    """The logs of one value per time, packed by dtype and unit into one table each (an instrument may have tens of
    thousands of logs: scipp's HDF5 I/O takes about a millisecond per group and per string); the others (arrays
    per time) as they are.

    Returns:
        (tables: DataGroups of ``names`` (a JSON list of the logs' names, one scalar string), ``sizes`` (int64, the
        number of values of each), ``time`` (datetime64 [ns], every log's times one after the other), ``values``
        (their values, with the unit; strings as one JSON list)), the other logs by name.
    """
    groups: dict[tuple[str, str], list[tuple[str, sc.Variable, sc.Variable]]] = {}
    others: dict[str, sc.DataArray] = {}
    for name, log in logs.items():
        data = log.data
        if data.ndim == 1 and data.bins is None and data.variances is None and len(log.coords) == 1 and not log.masks:
            groups.setdefault((str(data.dtype), str(data.unit)), []).append((name, data, log.coords["time"]))
        else:
            others[name] = log
    tables = []
    for (dtype, _), members in groups.items():
        values = [data.values for _, data, _ in members]
        if dtype == "string":
            column = sc.scalar(json.dumps([v for part in values for v in part]))
        else:
            column = sc.array(dims=["time"], values=np.concatenate(values), unit=members[0][1].unit, dtype=dtype)
        tables.append(
            sc.DataGroup(
                {
                    "names": sc.scalar(json.dumps([name for name, _, _ in members])),
                    "sizes": sc.array(dims=["name"], values=[len(v) for v in values], unit=None, dtype="int64"),
                    "time": sc.array(dims=["time"], values=np.concatenate([t.values for *_, t in members]), unit="ns"),
                    "values": column,
                }
            )
        )
    return tables, others


def _unpacked_logs(group: sc.DataGroup) -> list[tuple[str, sc.DataArray]]:
    """The logs of one table of :func:`_packed_logs`, by name."""
    names, sizes, times, values = group["names"], group["sizes"].values, group["time"], group["values"]
    if values.ndim == 0:
        values = sc.array(dims=["time"], values=json.loads(values.value), dtype="str")
    ends = np.cumsum(sizes)
    return [
        (str(name), sc.DataArray(values["time", b:e].copy(), coords={"time": times["time", b:e].copy()}))
        for name, b, e in zip(json.loads(names.value), (ends - sizes).tolist(), ends.tolist(), strict=True)
    ]


def without_metadata(data: object, metadata: RunMetadata) -> object:
    """``data`` without the run metadata coordinates attached by the accumulator (re-attached on load)."""
    names = {"run_number", "instrument_name", "start_time", "monitors", *metadata.logs, *metadata.properties}
    if isinstance(data, sc.DataArray | sc.Dataset):
        drop = [name for name, coord in data.coords.items() if name in names and coord.ndim == 0]
        return data.drop_coords(drop) if drop else data
    if isinstance(data, sc.DataGroup):
        return sc.DataGroup({key: without_metadata(value, metadata) for key, value in data.items()})
    return data


# --- the directory ------------------------------------------------------------------------------------------------
class CheckpointStore:
    """The checkpoints of one daemon in ``directory`` (see the module docstring).

    Args:
        directory: ``checkpoint_dir``, made if missing (mode 0700).

    Raises:
        ConfigError: (constructor) the directory cannot be made, is not a directory, is writable by any user or is
            not owned by this user (a checkpoint is loaded into the daemon, like a script).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"checkpoint_dir '{directory}' cannot be made: {err.strerror}") from None
        if not directory.is_dir():
            raise ConfigError(f"checkpoint_dir '{directory}' is not a directory")
        problem = permission_problem(directory, directory=True)
        if problem:
            raise ConfigError(f"checkpoint_dir: {problem}")
        owner = directory.stat().st_uid
        if owner != os.geteuid():
            raise ConfigError(
                f"checkpoint_dir '{directory}' is owned by uid {owner}, not by the daemon's user (uid {os.geteuid()})"
            )

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST

    def read(self) -> Manifest | None:
        """The committed checkpoint, or None when there is none.

        Raises:
            CheckpointUnusable: the manifest cannot be read or parsed, or a file it names is missing.
        """
        path = self.manifest_path
        if not path.exists():
            return None
        try:
            manifest = Manifest.from_json(json.loads(read_regular_file(path, MAX_MANIFEST_BYTES)))
        except (OSError, ValueError) as err:
            raise CheckpointUnusable(f"its manifest '{path}' cannot be read ({err})") from None
        for name in [*manifest.files, manifest.metadata_file]:
            if not (self.directory / manifest.lineage / name).is_file():
                raise CheckpointUnusable(f"its file '{manifest.lineage}/{name}' is missing")
        return manifest

    def load_metadata(self, manifest: Manifest) -> RunMetadata:
        """The checkpoint's run metadata.

        Raises:
            CheckpointUnusable: its file cannot be read.
        """
        group = self._load(manifest, manifest.metadata_file)
        if not isinstance(group, sc.DataGroup):
            raise CheckpointUnusable(f"'{manifest.metadata_file}' holds a {type(group).__name__}, not a DataGroup")
        return metadata_from_group(group)

    def load_parts(self, manifest: Manifest) -> list[object]:
        """The accumulation's parts in order: event files (binned DataArrays over pulses), or the one object.

        Raises:
            CheckpointUnusable: a file cannot be read.
        """
        return [self._load(manifest, name) for name in manifest.files]

    def _load(self, manifest: Manifest, name: str) -> object:
        path = self.directory / manifest.lineage / name
        try:
            return sc.io.load_hdf5(path)
        except Exception as err:  # noqa: BLE001 - h5py and scipp raise many types for a corrupt file
            raise CheckpointUnusable(
                f"'{manifest.lineage}/{name}' cannot be read ({type(err).__name__}: {err})"
            ) from None

    def write(self, snapshot: Snapshot, seq: int, previous: Manifest | None) -> Manifest:
        """Write a checkpoint and commit it; remove what no manifest names any more.

        Args:
            snapshot: what to write.
            seq: its sequence number.
            previous: the last committed manifest (its event files are kept when the lineage goes on).

        Raises:
            OSError: the disk refused (full, read-only); the previous checkpoint stays committed.
        """
        lineage_dir = self.directory / snapshot.lineage
        lineage_dir.mkdir(mode=0o700, exist_ok=True)
        same = previous is not None and previous.lineage == snapshot.lineage
        if snapshot.events is not None:
            files = list(previous.files) if same and previous.kind == "events" else []
            n_pulses = (previous.n_pulses if files else 0) + snapshot.events.sizes[PULSE_DIM]
            if snapshot.events.sizes[PULSE_DIM] or not files:  # a lineage has at least one event file
                name = f"events-{snapshot.first_pulse:012d}-{n_pulses:012d}.h5"
                self._write_object(lineage_dir / name, snapshot.events)
                files.append(name)
            kind: Kind = "events"
        else:
            name = f"accumulation-{seq:09d}.h5"
            self._write_object(lineage_dir / name, snapshot.accumulation)
            files, kind, n_pulses = [name], "object", 0
        metadata_file = f"metadata-{seq:09d}.h5"
        self._write_object(lineage_dir / metadata_file, metadata_group(snapshot.metadata))
        _fsync_directory(lineage_dir)
        nbytes = sum((lineage_dir / name).stat().st_size for name in [*files, metadata_file])
        manifest = Manifest(
            written=time.time(),
            lineage=snapshot.lineage,
            seq=seq,
            depends=snapshot.depends,
            provenance=snapshot.provenance,
            position=snapshot.position,
            kind=kind,
            files=files,
            metadata_file=metadata_file,
            replace_next=snapshot.replace_next,
            previous_run=snapshot.previous_run,
            ended=snapshot.ended,
            accumulated_events=snapshot.accumulated_events,
            n_pulses=n_pulses,
            nbytes=nbytes,
        )
        data = json.dumps(manifest.to_json(), sort_keys=True, indent=1).encode()
        _atomic_write(self.manifest_path, lambda path: path.write_bytes(data))
        _fsync_directory(self.directory)
        self.remove_unreferenced(manifest)
        return manifest

    def remove_unreferenced(self, manifest: Manifest | None) -> None:
        """Remove every lineage and file ``manifest`` does not name (all of them for None), and temporary files."""
        keep = set() if manifest is None else {*manifest.files, manifest.metadata_file}
        for entry in self.directory.iterdir():
            if entry.name == MANIFEST and manifest is not None:
                continue
            if entry.is_dir() and not entry.is_symlink() and manifest is not None and entry.name == manifest.lineage:
                for file in entry.iterdir():
                    if file.name not in keep:
                        _remove(file)
            elif entry.is_dir() and not entry.is_symlink() and _LINEAGE.fullmatch(entry.name):
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.name == MANIFEST or entry.name.startswith(f"{MANIFEST}.tmp"):
                _remove(entry)

    def discard(self) -> None:
        """Remove the committed checkpoint and its files."""
        self.remove_unreferenced(None)

    @staticmethod
    def _write_object(path: Path, data: object) -> None:
        """Write a scipp object with scipp's HDF5 I/O, atomically.

        Raises:
            OSError: the disk refused.
            CheckpointUnusable: scipp cannot write a part of it (e.g. a Python object): nothing is committed.
        """

        def save(target: Path) -> None:
            caught = _Refusals()
            scipp_log = logging.getLogger("scipp")  # scipp's HDF5 I/O logs what it skips, and writes the rest
            scipp_log.addHandler(caught)
            try:
                sc.io.save_hdf5(data, target)
            finally:
                scipp_log.removeHandler(caught)
            if caught.messages:
                raise CheckpointUnusable(f"scipp cannot write all of it: {caught.messages[0]}")

        _atomic_write(path, save)


class _Refusals(logging.Handler):
    """Collects the warnings scipp's HDF5 writer logs for what it skips (e.g. a Python object)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _atomic_write(path: Path, write: Any) -> None:
    """``write(tmp)`` then fsync and rename ``tmp`` to ``path`` (a reader sees the old or the new file, whole)."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
