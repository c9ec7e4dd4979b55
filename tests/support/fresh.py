"""Run a test's body in a new interpreter, for what is process-wide (the gc policy's gc.freeze(),
thresholds and gc.callbacks): a test process also runs servers whose threads make and free objects the
whole time, which such a test would count."""

from __future__ import annotations

import functools
import inspect
import multiprocessing
import sys
import traceback
from collections.abc import Callable
from typing import Any

import pytest

PREFIX = "_fresh_body_"


def fresh_interpreter(test: Callable[..., None]) -> Callable[[], None]:
    """Decorate a test: its body runs in a spawned interpreter, each of its parameters given an empty list
    (the tests' fixtures that collect objects to clean up); a failure there fails the test here."""
    module = sys.modules[test.__module__]
    test.__qualname__ = PREFIX + test.__name__  # where the child finds the body (pickled by name)
    setattr(module, test.__qualname__, test)

    @functools.wraps(test)
    def run() -> None:
        context = multiprocessing.get_context("spawn")
        outcome = context.Queue()
        child = context.Process(target=_child, args=(test, len(inspect.signature(test).parameters), outcome))
        child.start()
        try:
            failure = outcome.get(timeout=300)
        finally:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
        if failure is not None:
            pytest.fail(f"in a fresh interpreter:\n{failure}", pytrace=False)

    run.__signature__ = inspect.Signature()  # type: ignore[attr-defined]  # no fixtures here
    return run


def _child(test: Callable[..., None], params: int, outcome: Any) -> None:
    try:
        test(*([] for _ in range(params)))
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the test
        outcome.put(traceback.format_exc())
    else:
        outcome.put(None)
