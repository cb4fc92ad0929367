"""Several sources read as one (issue 21): a mapping with `sources: {NAME: ...}` takes layers
from each, and the plan sees one source whose layer names are `NAME:layer`.

`ComposedSource` lists every part's weighted layers under its name, reads a layer from the part
that holds it, and is read-only like every source. It has no runnable model: no one source
model runs the whole mapped stack, so each moved layer is checked on its own (said in the
report). Closing it closes every part.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from transfer.adapter import ReadOnlyWeights, Runnable, Weights
from transfer.buffers import Allocate
from transfer.errors import MappingError
from transfer.kinds import LayerSpec

SEPARATOR = ":"


class ComposedSource(ReadOnlyWeights):
    """The parts, by name, in the mapping's order; layers named `NAME:layer`."""

    def __init__(self, parts: dict[str, Weights]):
        self.parts = dict(parts)
        frameworks = {part.framework for part in self.parts.values()}
        self.framework = frameworks.pop() if len(frameworks) == 1 else "mixed"
        self.description = f"{len(self.parts)} sources: " + "; ".join(
            f"{name} = {part.description}" for name, part in self.parts.items())
        self.path: Path | None = None
        self.preprocessing = None  # each part's own: see `part`
        self._layers: dict[str, LayerSpec] | None = None

    def layers(self) -> dict[str, LayerSpec]:
        if self._layers is None:
            self._layers = {f"{name}{SEPARATOR}{layer}": dataclasses.replace(spec, name=f"{name}{SEPARATOR}{layer}")
                            for name, part in self.parts.items() for layer, spec in part.layers().items()}
        return self._layers

    def part(self, layer: str) -> tuple[str, Weights, str]:
        """(NAME, the part's adapter, the layer's name in that part) of a `NAME:layer` name."""
        name, _, inner = layer.partition(SEPARATOR)
        if name not in self.parts:
            raise MappingError(f"'{layer}' names no source of this mapping ({', '.join(self.parts)}).")
        return name, self.parts[name], inner

    def read(self, name: str, allocate: Allocate | None = None) -> list[np.ndarray]:
        _, part, inner = self.part(name)
        return part.read(inner, allocate)

    def runnable(self) -> Runnable:
        return None, (f"{len(self.parts)} sources ({', '.join(self.parts)}): no one source model runs the whole "
                      "mapped stack, so each moved layer is checked on its own")

    def close(self) -> None:
        for part in self.parts.values():
            part.close()

    def names(self) -> Iterable[str]:
        return self.parts.keys()


def unprefixed(spec: LayerSpec, inner: str) -> LayerSpec:
    """A part's layer as the part itself names it (for what reads the part's own model)."""
    return dataclasses.replace(spec, name=inner)


def is_composed(source: Any) -> bool:
    return isinstance(source, ComposedSource)
