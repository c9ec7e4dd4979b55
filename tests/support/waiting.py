"""Waiting for a condition with a deadline: a test that depends on timing polls, never sleeps a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.05,
    explain: Callable[[], str] | None = None,
) -> T:
    """Poll until `predicate()` is truthy and return its value; fail the test at the deadline.

    The deadline is generous (the CI machine is loaded); the condition usually holds in milliseconds.
    `explain`: what the failure message should also say (the state the test waited on), read at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            said = f": {explain()}" if explain is not None else ""
            raise AssertionError(f"condition not met within {timeout} s{said}")
        time.sleep(interval)


def holds_for(predicate: Callable[[], Any], seconds: float = 1.0, interval: float = 0.05) -> None:
    """Something that must NOT happen: check it keeps not happening for a while (well past the scheduler's
    look, READ_INTERVAL). The one place a test waits for a time, not a condition: an absence has no event."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate()
        time.sleep(interval)
