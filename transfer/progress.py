"""Progress on the long steps of a command, on a terminal only.

The command line turns it on (`enable`); a library call never shows any. Even then nothing is
drawn unless stderr is a terminal, `--quiet` is off, and the run is not in CI (`CI` set to
`true` or `1`, as CI services set it); `TRANSFER_WEIGHTS_PROGRESS=0` turns it off too. Bars
are drawn by `rich` (Keras depends on it, so it costs no install) on stderr and vanish when
their step ends, so a finished run's output is the summary alone.

    with progress.step("reading 13 layers' tensors (58.9 MB)", total=13) as advance:
        for layer in layers:
            ...
            advance()
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

_state: dict[str, Any] = {"enabled": False, "display": None, "depth": 0}


class Advance(Protocol):
    """What `step` yields: call it when `count` more of the step's `total` are done."""

    def __call__(self, count: int = 1) -> None: ...


def wanted(quiet: bool = False) -> bool:
    """Whether progress may be drawn now: stderr is a terminal, not `--quiet`, not CI."""
    if quiet or os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        return False
    if os.environ.get("TRANSFER_WEIGHTS_PROGRESS", "").strip() == "0" or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def enable(quiet: bool = False) -> bool:
    """Turn progress on for this process when `wanted(quiet)`; returns whether it is on."""
    _state["enabled"] = wanted(quiet)
    return bool(_state["enabled"])


def disable() -> None:
    _state["enabled"] = False


@contextmanager
def shown(quiet: bool = False) -> Iterator[bool]:
    """Progress on (when `wanted`) for the block, off again after it; yields whether it is on."""
    try:
        yield enable(quiet)
    finally:
        disable()


def enabled() -> bool:
    return bool(_state["enabled"])


def _noop(count: int = 1) -> None:
    del count


@contextmanager
def step(description: str, total: int | None = None) -> Iterator[Advance]:
    """Show `description` while the block runs: a spinner, or a bar of `total` steps that the
    yielded function advances (by 1, or by its argument). Steps nest: an inner step is a line
    below the outer one, in the same display."""
    if not _state["enabled"]:
        yield _noop
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    display = _state["display"]
    if display is None:
        display = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                           TextColumn("{task.fields[count]}"), TimeElapsedColumn(),
                           console=Console(stderr=True), transient=True)
        display.start()
        _state["display"] = display
    _state["depth"] += 1
    task = display.add_task(description, total=total, count=f"0/{total}" if total else "")
    done = 0

    def advance(count: int = 1) -> None:
        nonlocal done
        done += count
        display.update(task, advance=count, count=f"{done}/{total}" if total else "")

    try:
        yield advance
    finally:
        display.remove_task(task)
        _state["depth"] -= 1
        if _state["depth"] == 0:
            display.stop()
            _state["display"] = None
