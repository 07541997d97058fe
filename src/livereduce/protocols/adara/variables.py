"""The process variables of an ADARA stream: what DEVICE_DESC packets declare [NP 6.2] and the values VAR_VALUE
packets carry [NP 6.3-6.7], typed as declared. Used by :class:`~livereduce.protocols.adara.client.ClientState`,
which turns the values into logs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from livereduce.protocols.adara import decode
from livereduce.protocols.adara.decode import PacketError
from livereduce.protocols.adara.framing import Frame
from livereduce.protocols.adara.segments import LogValue
from livereduce.protocols.log_values import UnusableLog, check_log_value

_INTEGER_TYPES = ("integer", "unsigned", "boolean", "enum")
MAX_PROCESS_VARIABLES = 5_000
"""Most process variables (DEVICE_DESC ``process_variable`` entries over all devices) a client tracks. SNS
beamlines declare hundreds to a few thousand; every tracked one is a log of the first chunk of each run."""


@dataclass(frozen=True)
class Variable:
    """A process variable of a device: its log name, type and units (from DEVICE_DESC) [NP 6.2]."""

    name: str
    pv_type: str
    units: str


class ProcessVariables:
    """The declared process variables, at most :data:`MAX_PROCESS_VARIABLES` over all devices.

    Args:
        skip: ``skip(reason, n)`` counts packets or entries skipped (``process variable without name or id``,
            ``process variable beyond the maximum``).

    Attributes:
        units: ``pv_units`` by log name, as declared.
    """

    def __init__(self, skip: Callable[[str, int], None]) -> None:
        self._skip = skip
        self._devices: dict[int, dict[int, Variable]] = {}
        self._count = 0
        self.units: dict[str, str] = {}

    def declare(self, payload: bytes) -> None:
        """A DEVICE_DESC: the device's variables replace its previous declaration.

        Raises:
            PacketError: the descriptor cannot be decoded.
        """
        device = decode.decode_device_descriptor(payload)
        if device.invalid:
            self._skip("process variable without name or id", device.invalid)
        self._count -= len(self._devices.pop(device.device_id, {}))
        room = max(0, MAX_PROCESS_VARIABLES - self._count)
        declared = list(device.variables.items())
        if len(declared) > room:
            self._skip("process variable beyond the maximum", len(declared) - room)
            declared = declared[:room]
        self._devices[device.device_id] = {
            pv_id: Variable(pv.name, pv.pv_type.strip().lower(), pv.units) for pv_id, pv in declared
        }
        self._count += len(declared)
        for _, pv in declared:
            if pv.units:
                self.units[pv.name] = pv.units

    def value(self, frame: Frame) -> tuple[str, LogValue]:
        """A VAR_VALUE packet's log name and value, typed as declared.

        Raises:
            PacketError: no descriptor declares the variable, the value cannot have the declared type, or no chunk
                can hold it (an array beyond ``MAX_LOG_ELEMENTS``).
        """
        value = decode.decode_variable_value(frame.header, frame.payload)
        variable = self._devices.get(value.device_id, {}).get(value.variable_id)
        if variable is None:
            raise PacketError("variable without descriptor", f"device {value.device_id} pv {value.variable_id}")
        typed = _typed(variable.pv_type, value.value)
        if typed is None:
            raise PacketError("variable value of the wrong type", f"{variable.name}: {type(value.value).__name__}")
        try:
            check_log_value(typed)
        except UnusableLog as err:  # an array beyond MAX_LOG_ELEMENTS (the packet types hold nothing else)
            raise PacketError(err.reason, f"{variable.name}: {err.detail}") from None
        return variable.name, typed


def _typed(pv_type: str, value: LogValue) -> LogValue | None:
    """A VAR_VALUE in the type its DEVICE_DESC declares [device.xsd; Mantid]; None if it cannot be.

    ``double`` -> float (integers converted); ``string`` -> str; integer types (``integer``, ``unsigned``,
    ``boolean``, ``enum_NN``; ``signed integer`` reads the u32 as two's complement) -> int; arrays stay arrays
    of their own type; any other declared type: the packet's own type.
    """
    if isinstance(value, np.ndarray):
        return value
    if pv_type in {"double", "float"}:
        return float(value) if isinstance(value, int | float) else None
    if pv_type == "string":
        return value if isinstance(value, str) else None
    if any(word in pv_type for word in _INTEGER_TYPES):
        if not isinstance(value, int):
            return None
        return value - (1 << 32) if pv_type.startswith("signed") and value >= 1 << 31 else value
    return value
