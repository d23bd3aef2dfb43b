"""Claim tokens: the fencing rule every store applies the same way.

Each claim of a task gets a token larger than every earlier one of that task, so a write
or renewal carrying an older token can be refused (the run that holds it was superseded).
A token is the previous one plus one; the first one a store hands out for a task (or the
first after it forgot the task: TTL, a Redis restart, a swept claim file) is the wall-clock
time in milliseconds instead. So even a store that forgot the old token hands out a newer
one, as long as the instances' clocks agree (NTP) to well within the time between two
claims, and no token can ever come back to a run that held it before.
"""

from __future__ import annotations


def token_floor(now: float) -> int:
    """The smallest token a claim made at unix time `now` may get (milliseconds)."""
    return int(now * 1000)


def next_token(previous: int | None, now: float) -> int:
    """The token of a new claim made at `now`, after `previous` (None: none remembered)."""
    if previous is None:
        return token_floor(now)
    return previous + 1
