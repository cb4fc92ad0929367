"""A hang guard for hostile input: not a speed measurement (speed is measured by the scripts in
scripts/, against a baseline run in the same process, never by a timed assertion)."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager

# The guarded inputs take milliseconds; the attacks they stand for (exponential backtracking, an
# alias bomb, a parse that recurses once per nesting level) take minutes or never end. A bound
# this loose still catches those and cannot fail on a slow or loaded machine.
HANG_LIMIT_S = 10.0


@contextmanager
def no_hang(what: str) -> Iterator[None]:
    """Fail when the block runs `HANG_LIMIT_S` or longer. The garbage collector is paused
    inside: a full collection of the frameworks' heap (a second or more, at random moments) is
    not the input's cost."""
    gc.disable()
    started = time.perf_counter()
    try:
        yield
    finally:
        gc.enable()
    elapsed = time.perf_counter() - started
    assert elapsed < HANG_LIMIT_S, f"{what} took {elapsed:.1f} s (a hang guard: the input should take milliseconds)"
