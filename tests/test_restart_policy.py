"""RestartBackoff: capped doubling, reset after a stable child or a requested restart."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from comfyui.restart_policy import RestartBackoff


def test_crash_loop_doubles_up_to_the_cap() -> None:
    backoff = RestartBackoff(0.5, 4.0, stable_after=60)
    delays = [backoff.next_delay(requested=False, uptime=1.0) for _ in range(6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_stable_child_starts_the_delays_over() -> None:
    backoff = RestartBackoff(0.5, 30.0, stable_after=60)
    for _ in range(4):
        backoff.next_delay(requested=False, uptime=1.0)
    assert backoff.next_delay(requested=False, uptime=60.0) == 0.5
    assert backoff.next_delay(requested=False, uptime=None) == 1.0


def test_a_requested_restart_is_immediate_and_resets() -> None:
    backoff = RestartBackoff(0.5, 30.0, stable_after=60)
    for _ in range(4):
        backoff.next_delay(requested=False, uptime=1.0)
    assert backoff.next_delay(requested=True, uptime=1.0) == 0.0
    assert backoff.next_delay(requested=False, uptime=1.0) == 0.5


@given(
    st.floats(0.01, 10),
    st.floats(0.01, 100),
    st.lists(st.tuples(st.booleans(), st.none() | st.floats(0, 200)), max_size=40),
)
def test_delays_stay_within_bounds(
    initial: float, extra: float, events: list[tuple[bool, float | None]]
) -> None:
    maximum = initial + extra
    backoff = RestartBackoff(initial, maximum, stable_after=60)
    previous = None
    for requested, uptime in events:
        delay = backoff.next_delay(requested=requested, uptime=uptime)
        if requested:
            assert delay == 0.0
        else:
            assert initial <= delay <= maximum
            stable = uptime is not None and uptime >= 60
            if previous is not None and not stable:
                assert delay == min(previous * 2, maximum)
        previous = None if requested else delay
