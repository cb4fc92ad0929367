"""Writing files atomically: a temporary file in the same folder, then a rename. A failure
or an interruption leaves no partial file at the requested path."""

from __future__ import annotations

import copy
import os
import uuid
from pathlib import Path
from typing import Any, Callable

from transfer import _frameworks
from transfer.errors import CheckpointError

KERAS_OUTPUTS = (".weights.h5", ".keras")
TORCH_OUTPUTS = (".pth", ".pt", ".safetensors")


def output_suffix(path: Path, framework: str) -> str:
    """The recognised suffix of an output path, or a CheckpointError saying which exist."""
    allowed = KERAS_OUTPUTS if framework == "keras" else TORCH_OUTPUTS
    for suffix in allowed:
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return suffix
    raise CheckpointError(f"{path}: a {framework} target is written as {' or '.join(allowed)}; "
                          f"received '{path.name}'.")


def check_writable(path: Path, framework: str) -> None:
    """Fail before any work when the output cannot be written."""
    output_suffix(path, framework)
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


def save_model(model: Any, framework: str, path: Path,
               check: Callable[[Path], Any] | None = None) -> None:
    """Write a target: Keras `.keras` / `.weights.h5`, torch `.pth`/`.pt` / `.safetensors`.
    `check(temporary_path)` runs on the written file before it takes the final name."""
    suffix = output_suffix(path, framework)
    if suffix == ".keras":
        atomic_write(path, suffix, model.save, check)
    elif suffix == ".weights.h5":
        atomic_write(path, suffix, model.save_weights, check)
    elif suffix == ".safetensors":
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        atomic_write(path, suffix, lambda temporary: save_file(state, str(temporary)), check)
    else:
        torch = _frameworks.torch()

        def write(temporary: Path) -> None:
            # A file object, not a path: torch names the zip's inner folder after a path's
            # stem, which would put our random temporary name into the bytes.
            with open(temporary, "wb") as file:
                torch.save(model.state_dict(), file)

        atomic_write(path, suffix, write, check)


def reload_model(model: Any, framework: str, path: Path) -> Any:
    """A fresh copy of `model` holding the weights read back from `path`."""
    if framework == "keras":
        keras = _frameworks.keras()
        if path.name.endswith(".keras"):
            from transfer.sources import load_keras_file

            return load_keras_file(path)
        clone = keras.models.clone_model(model)
        clone.load_weights(str(path))
        return clone
    torch = _frameworks.torch()
    clone = copy.deepcopy(model)
    if path.name.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    clone.load_state_dict(state)
    return clone
