"""Writing files atomically: a temporary file in the same folder, then a rename. A failure
or an interruption leaves no partial file at the requested path."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transfer.errors import CheckpointError
from transfer.formats import output_format


def check_writable(path: Path, framework: str) -> None:
    """Fail before any work when the output cannot be written."""
    output_format(path, framework)  # says which suffixes a target can have
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise CheckpointError(f"{path}: the output folder {folder} does not exist.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CheckpointError(f"{path}: the output folder {folder} is not writable.")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a file name.")


def atomic_write(path: Path, suffix: str, write: Callable[[Path], Any],
                 check: Callable[[Path], Any] | None = None) -> None:
    """Call `write(temporary_path)` and `check(temporary_path)`, then rename onto `path`;
    remove the temporary on any failure, so `path` only ever holds a complete, checked file."""
    temporary = path.with_name(f".{path.name[: -len(suffix)]}.partial-{uuid.uuid4().hex[:8]}{suffix}")
    try:
        write(temporary)
        if check is not None:
            check(temporary)
        os.replace(temporary, path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot write: {exc.strerror or exc}.") from exc
    finally:
        if temporary.exists():
            temporary.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, path.suffix, lambda temporary: temporary.write_text(text, encoding="utf-8"))
