"""Waiting for a condition with a deadline: a test that depends on timing polls, never sleeps a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.05) -> T:
    """Poll until `predicate()` is truthy and return its value; fail the test at the deadline.

    The deadline is generous (the CI machine is loaded); the condition usually holds in milliseconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
