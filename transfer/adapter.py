"""The one interface every source and target implements, whatever its format or framework.

A `Weights` adapter lists weighted layers (metadata only), reads one layer's tensors on demand,
and, where it wraps a live model, assigns, snapshots and restores, freezes, saves and reloads.
File sources are read-only (`ReadOnlyWeights`): the engine never writes to them, and saying so
is an error rather than a silent no-op. Adapters are context managers (`close` on exit).
"""

from __future__ import annotations

import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import numpy as np

from transfer.buffers import Allocate
from transfer.errors import MappingError
from transfer.kinds import LayerSpec

# The model a source can run for the stack check, or None and why not.
Runnable = tuple[Any, str]


SPILL_ABOVE_BYTES = 256 << 20  # snapshots larger than this go to a temporary folder


@dataclass
class Snapshot:
    """Copies (never views) of the tensors of some layers, and every trainable flag.

    Up to `spill_above` bytes the copies stay in memory; past it they are written to a private
    temporary folder (our own pickles, read back only by us), so protecting a large live
    target does not double its memory. `close()` removes the folder.
    """

    flags: list[tuple[Any, bool]] = field(default_factory=list)
    spill_above: int | None = None  # None: SPILL_ABOVE_BYTES
    _memory: dict[str, list[Any]] = field(default_factory=dict)
    _spilled: dict[str, Path] = field(default_factory=dict)
    _bytes: int = 0
    _folder: Path | None = None

    def put(self, name: str, copies: list[Any], nbytes: int) -> None:
        """Keep `copies` of layer `name`: arrays or tensors that no later change of the model
        can alter (the caller copied them, or they are immutable); `nbytes` in all."""
        self._bytes += nbytes
        if self._bytes <= (SPILL_ABOVE_BYTES if self.spill_above is None else self.spill_above):
            self._memory[name] = copies
            return
        copies = [c if type(c).__module__.startswith("torch") else np.asarray(c) for c in copies]
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="transfer-weights-snapshot-"))
        path = self._folder / f"{len(self._spilled)}.pickle"
        with open(path, "wb") as file:
            pickle.dump(copies, file, protocol=pickle.HIGHEST_PROTOCOL)
        self._spilled[name] = path

    @property
    def folder(self) -> Path | None:
        """The temporary folder holding spilled copies, if any."""
        return self._folder

    def names(self) -> list[str]:
        return [*self._memory, *self._spilled]

    def get(self, name: str) -> list[Any]:
        if name in self._memory:
            return self._memory[name]
        with open(self._spilled[name], "rb") as file:
            return list(pickle.load(file))

    def close(self) -> None:
        self._memory.clear()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


class WrittenFile(Protocol):
    """A file an adapter has just written, its tensors read back from the file by layer name
    (in `read`'s order), with no model built; `how` says how it was read."""

    how: str

    def read(self, name: str) -> list[np.ndarray]: ...

    def __enter__(self) -> WrittenFile: ...  # noqa: PYI034

    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class Weights(Protocol):
    """A model or a weights file, read and (a model) written layer by layer.

    `memory`: where a target has memory of its own to offer (`transfer.buffers.Allocate`), a
    source that reads into new memory reads into it (`read(name, allocate)`), and `assign`
    keeps such arrays with no copy; it copies any other array it is given."""

    framework: str
    description: str

    path: Path | None
    preprocessing: str | None
    preprocessing_detail: dict[str, Any] | None  # what a checkpoint folder's config says, if any
    model: Any

    @property
    def memory(self) -> Allocate | None: ...

    def layers(self) -> dict[str, LayerSpec]: ...

    def read(self, name: str, allocate: Allocate | None = None) -> list[np.ndarray]: ...

    def view(self, name: str) -> list[np.ndarray]:
        """The layer's tensors to look at only (a check): read-only, and possibly views of
        the file's pages, valid until the source closes; the same values `read` gives."""
        ...

    def assign(self, updates: dict[str, list[np.ndarray]]) -> None: ...

    def snapshot(self, names: Iterable[str], spill_above: int | None = None) -> Snapshot: ...

    def restore(self, snapshot: Snapshot) -> None: ...

    def freeze(self, names: list[str]) -> None: ...

    def save(self, path: Path, check: Callable[[Path], None] | None = None) -> None: ...

    def written(self, path: Path) -> WrittenFile | None: ...

    def reload(self, path: Path) -> Weights: ...

    def runnable(self) -> Runnable: ...

    def close(self) -> None: ...

    def __enter__(self) -> Weights: ...  # noqa: PYI034  (Self needs Python 3.11)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None: ...


class Closing:
    """Context-manager behaviour for adapters: `with adapter:` closes it on the way out."""

    preprocessing_detail: dict[str, Any] | None = None

    def close(self) -> None:
        """Release open files; a no-op for live models."""

    def __enter__(self) -> Any:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


class ReadOnlyWeights(Closing):
    """Base of file sources: reading only. `runnable_factory` (set by whoever knows the
    architecture) builds a model that holds the file's weights, for the stack check."""

    framework: str = ""
    description: str = ""
    path: Path | None = None
    preprocessing: str | None = None
    model: Any = None
    memory: Allocate | None = None  # a file source receives no weights
    runnable_factory: Callable[[], Runnable] | None = None
    _runnable: Runnable | None = None

    def _read_only(self, action: str) -> MappingError:
        return MappingError(f"{self.description} is a weights file read as a source; it cannot "
                            f"{action}. Targets are models (a builder, a .keras file, or a live model).")

    def read(self, name: str, allocate: Allocate | None = None) -> list[np.ndarray]:
        raise NotImplementedError(f"{type(self).__name__} reads no tensors")  # each file source does

    def view(self, name: str) -> list[np.ndarray]:
        return self.read(name)  # a format that can map its file's pages does so instead

    def assign(self, updates: dict[str, list[np.ndarray]]) -> None:
        raise self._read_only("receive weights")

    def snapshot(self, names: Iterable[str], spill_above: int | None = None) -> Snapshot:
        raise self._read_only("be snapshot")

    def restore(self, snapshot: Snapshot) -> None:
        raise self._read_only("be restored")

    def freeze(self, names: list[str]) -> None:
        raise self._read_only("freeze layers")

    def save(self, path: Path, check: Callable[[Path], None] | None = None) -> None:
        raise self._read_only("be saved")

    def written(self, path: Path) -> WrittenFile | None:
        raise self._read_only("have written a file")

    def reload(self, path: Path) -> Weights:
        raise self._read_only("be reloaded")

    def runnable(self) -> Runnable:
        """Built once: the plan may need it (a dense layer's flatten order) and so does --verify."""
        if self.runnable_factory is None:
            return None, "no runnable source model (a weights file of an unknown architecture)"
        if self._runnable is None:
            self._runnable = self.runnable_factory()
        return self._runnable

    def release_runnable(self) -> None:
        """Drop the rebuilt model once verification is done: the written-file check needs only
        tensors, and the model would otherwise stay in memory until the source is closed."""
        self._runnable = None
