"""Keeping up with the beam, in process: the buffer bound (sizing.py), the lag and its warning (lag.py), and the
BufferedSource's back-pressure bookkeeping — with numbers chosen by the test and no waiting."""

from __future__ import annotations

import logging
import threading

import pytest

from conftest import FakeClock, poll_until
from livereduce.engines.scipp.lag import LAGGING_CYCLES, CycleLag, LagMeter
from livereduce.engines.scipp.listeners.buffered import READY_BUFFER, READY_RUN_END, BufferedSource
from livereduce.engines.scipp.listeners.sizing import FLOOR_BYTES, HEADROOM_CYCLES, PEAK_FACTOR, BufferBound

MiB = 2**20
GiB = 2**30


# --- the buffer bound -------------------------------------------------------------------------------------------------
def test_an_explicit_source_buffer_mb_is_a_hard_bound() -> None:
    bound = BufferBound(64, memory_limit=16 * GiB, resident=lambda: 0)
    assert not bound.cycle(1 * GiB, paused=True)
    assert bound.limit == 64 * MiB
    assert not bound.short


def test_the_automatic_bound_holds_two_cycles_of_the_measured_stream() -> None:
    bound = BufferBound(None, memory_limit=16 * GiB, resident=lambda: 1 * GiB)
    assert bound.limit == FLOOR_BYTES  # before any data: the former fixed default
    assert bound.cap == (15 * GiB) // PEAK_FACTOR
    assert not bound.cycle(100 * MiB, paused=False)  # 2 x 100 MiB fits the floor
    assert bound.cycle(400 * MiB, paused=False)  # 1e7 events/s x 5 s x 8 bytes
    assert bound.limit == HEADROOM_CYCLES * 400 * MiB
    assert not bound.cycle(10 * MiB, paused=False)  # a quiet cycle does not shrink it: memory stays flat
    assert bound.limit == 800 * MiB


def test_a_cycle_that_paused_reading_doubles_the_automatic_bound_up_to_the_memory_cap() -> None:
    bound = BufferBound(None, memory_limit=3 * GiB, resident=lambda: 0)
    assert bound.cap == GiB
    assert bound.cycle(FLOOR_BYTES, paused=True)  # the cycle took a full buffer: the stream sent more
    assert bound.limit == 2 * FLOOR_BYTES
    assert bound.cycle(2 * FLOOR_BYTES, paused=True)
    assert bound.limit == GiB
    assert not bound.short
    bound.cycle(GiB, paused=True)
    assert bound.limit == GiB  # capped: memory does not allow 2 cycles of this stream
    assert bound.short
    assert bound.wanted == 2 * GiB


def test_without_a_memory_limit_the_cap_follows_the_memory_available() -> None:
    bound = BufferBound(None, memory_limit=None, resident=lambda: 0)
    assert FLOOR_BYTES <= bound.cap


# --- the buffered source ----------------------------------------------------------------------------------------------
def _source(bound: BufferBound) -> BufferedSource:
    return BufferedSource(
        "Test", "host:1", "the test", bound=bound, clock=FakeClock(), log=logging.getLogger("test.buffered")
    )


def test_a_full_buffer_pauses_reading_until_a_take_which_grows_the_automatic_bound(caplog) -> None:
    caplog.set_level(logging.INFO)
    feed = _source(BufferBound(None, memory_limit=16 * GiB, resident=lambda: 0))
    pending = [FLOOR_BYTES]  # a full buffer
    waited: list[bool] = []
    reader = threading.Thread(target=lambda: waited.append(feed.wait_for_room(lambda: pending[0])), daemon=True)
    reader.start()
    poll_until(lambda: feed.health().counters["back_pressure_pauses"], "the reader to pause")
    assert "reading paused: buffer full (256 MiB)" in feed.health().state
    with feed.lock:  # the cycle's extract()
        held, pending[0] = pending[0], 0
        feed.taken(held)
    reader.join(5)
    assert waited == [True]
    assert feed.bound.limit == 2 * FLOOR_BYTES  # the cycle took a full buffer: the stream sent more, doubled
    assert feed.health().counters["buffer_limit_bytes"] == 2 * FLOOR_BYTES
    assert any("buffer bound raised from 256 MiB" in r.getMessage() for r in caplog.records)
    assert not feed.wait_for_room(lambda: pending[0])  # room again: no pause


def test_an_engine_taking_early_chunks_is_told_at_half_a_buffer_and_at_a_run_end_and_the_bound_stays() -> None:
    feed = _source(BufferBound(None, memory_limit=16 * GiB, resident=lambda: 0))
    told: list[str] = []
    feed.on_ready = told.append
    pending = [FLOOR_BYTES // 2 - 1]
    assert not feed.wait_for_room(lambda: pending[0])
    assert told == []  # under half: nothing
    pending[0] = FLOOR_BYTES // 2
    assert not feed.wait_for_room(lambda: pending[0])  # half full: the engine is told, reading goes on
    assert not feed.wait_for_room(lambda: pending[0])
    assert told == [READY_BUFFER]  # once until the engine takes the data
    with feed.lock:
        feed.taken(pending[0])
    assert feed.bound.limit == FLOOR_BYTES  # early chunks keep the buffer small: no growth
    assert not feed.wait_for_room(lambda: pending[0])
    assert told == [READY_BUFFER, READY_BUFFER]
    feed.run_ended()
    assert told[-1] == READY_RUN_END
    assert feed.health().counters["back_pressure_pauses"] == 0


# --- the lag ----------------------------------------------------------------------------------------------------------
T0 = 1_800_000_000.0


class Stream:
    """Cycles one ``update_every`` apart, fed to a meter: each ``lag`` is how old the newest pulse is at the output
    (None: a cycle without pulses); every cycle lasts ``duration`` s and pauses reading ``paused_ms``."""

    def __init__(self, meter: LagMeter) -> None:
        self.meter, self.k, self.back_pressure_ms = meter, 0, 0

    def cycles(self, lags: list[float | None], *, duration: float = 0.1, paused_ms: int = 0) -> list[float | None]:
        out = []
        for lag in lags:
            now = T0 + self.k * self.meter.update_every
            self.k += 1
            self.back_pressure_ms += paused_ms
            pulse = None if lag is None else now - lag
            out.append(self.meter.cycle(CycleLag(pulse, now, duration, self.back_pressure_ms)))
        return out


def _cycles(meter: LagMeter, lags: list[float | None]) -> list[float | None]:
    return Stream(meter).cycles(lags)


def test_the_lag_is_the_output_time_minus_the_newest_pulse_and_an_idle_cycle_keeps_it() -> None:
    meter = LagMeter(5.0)
    assert _cycles(meter, [0.4, None, 0.6]) == [pytest.approx(0.4), pytest.approx(0.4), pytest.approx(0.6)]
    assert meter.basis == "pulse times"
    assert not meter.lagging


def test_pulse_times_far_from_the_wall_clock_give_a_lag_relative_to_the_best_seen() -> None:
    meter = LagMeter(1.0)
    years = 7 * 365 * 86400.0  # a replay of a file from 2019
    assert _cycles(meter, [years + 0.5, years + 0.2, years + 0.7]) == [
        pytest.approx(0),
        pytest.approx(0),
        pytest.approx(0.5),
    ]
    assert meter.basis == "relative"


@pytest.mark.parametrize(
    ("duration", "paused_ms", "cause"),
    [
        (0.1, 2000, "the source buffer is too small for this stream at this update_every: reading paused 6.0 s"),
        (7.0, 0, "cycles take up to 7.0 s, longer than update_every"),
        (0.1, 0, "the data arrives late"),
    ],
)
def test_a_lag_that_grows_for_three_cycles_is_one_warning_with_its_cause_then_one_caught_up_line(
    caplog, duration: float, paused_ms: int, cause: str
) -> None:
    caplog.set_level(logging.INFO)
    meter = LagMeter(5.0, lambda: "256 MiB, source_buffer_mb")
    stream = Stream(meter)
    stream.cycles([0.5, 9.0, 17.0], duration=duration, paused_ms=paused_ms)
    assert not meter.lagging  # two cycles behind are not yet three
    stream.cycles([25.0, 33.0, 41.0], duration=duration, paused_ms=paused_ms)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("Live data is falling behind real time: lag 25.0 s after 3 cycles (pulse times")
    assert cause in warnings[0]
    assert cause in meter.lagging
    stream.cycles([1.0])
    assert not meter.lagging
    assert [r.getMessage() for r in caplog.records][-1].startswith("Live data caught up: lag 1.0 s")


def test_a_lag_that_shrinks_is_catching_up_and_is_not_warned(caplog) -> None:
    meter = LagMeter(1.0)
    stream = Stream(meter)
    stream.cycles([600.0, 400.0, 200.0, 20.0, 0.5])  # started from the start of a run 10 minutes old
    assert not meter.lagging
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    stream.cycles([30.0] * LAGGING_CYCLES)  # the same meter does warn on a lag that stays behind
    assert meter.lagging
