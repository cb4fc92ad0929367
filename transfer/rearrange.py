"""A layout conversion that knows its inverse: `Rearrange("O I H W -> H W I O")`.

A pattern names the axes of the tensor on each side. A parenthesised group is several axes
stored as one (`(C m)`: C blocks of m, C the slower), a `1` an axis of size one that exists on
one side only. The conversion splits the source's groups, permutes, drops or adds the ones and
merges the target's groups: a pure reordering of the same numbers, so it never "makes a shape
fit" and its inverse (the sides swapped) undoes it exactly. The description that reports show
is derived from the same pattern, so the conversion, its inverse and what the report says
cannot drift apart (as the `to_keras` / `to_torch` pairs written by hand once could).

Pure numpy; the kinds (`transfer.kinds`) build their layouts from these.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from math import prod

import numpy as np

from transfer.errors import IncompatibleWeightsError

Axes = tuple[tuple[str, ...], ...]  # one side: its axes, each a group of elementary axes
_ONE = "1"


def _parse_side(text: str, pattern: str) -> Axes:
    groups: list[tuple[str, ...]] = []
    current: list[str] | None = None
    for token in text.replace("(", " ( ").replace(")", " ) ").split():
        if token == "(":
            if current is not None:
                raise ValueError(f"nested group in layout pattern {pattern!r}")
            current = []
        elif token == ")":
            if not current:
                raise ValueError(f"empty or unopened group in layout pattern {pattern!r}")
            groups.append(tuple(current))
            current = None
        elif current is not None:
            current.append(token)
        else:
            groups.append((token,))
    if current is not None:
        raise ValueError(f"unclosed group in layout pattern {pattern!r}")
    return tuple(groups)


def _elementary(side: Axes) -> list[str]:
    return [axis for group in side for axis in group if axis != _ONE]


def _render(side: Axes, compact: bool) -> str:
    if compact:
        return "".join(group[0] for group in side)
    return "(" + ",".join("*".join(group) for group in side) + ")"


@dataclass(frozen=True)
class Rearrange:
    """One layout conversion; `names` say what the tensor is on each side (for errors)."""

    pattern: str
    names: tuple[str, str] = ("tensor", "tensor")

    @cached_property
    def _sides(self) -> tuple[Axes, Axes]:
        left, arrow, right = self.pattern.partition("->")
        if not arrow:
            raise ValueError(f"a layout pattern has the form 'source -> target'; received {self.pattern!r}")
        source, target = _parse_side(left, self.pattern), _parse_side(right, self.pattern)
        axes = _elementary(source)
        if sorted(axes) != sorted(_elementary(target)) or len(set(axes)) != len(axes):
            raise ValueError(f"layout pattern {self.pattern!r}: each axis once on each side")
        return source, target

    @cached_property
    def inverse(self) -> Rearrange:
        left, _, right = self.pattern.partition("->")
        return Rearrange(f"{right.strip()} -> {left.strip()}", (self.names[1], self.names[0]))

    def describe(self) -> str:
        """'OIHW -> HWIO' where every axis is one letter, else '(C*m,1,H,W) -> (H,W,C,m)'."""
        source, target = self._sides
        compact = all(len(group) == 1 and len(group[0]) == 1 and group[0].isalpha()
                      for group in source + target)
        return f"{_render(source, compact)} -> {_render(target, compact)}"

    def __call__(self, array: np.ndarray, **sizes: int) -> np.ndarray:
        """The tensor in the target layout. `sizes` give the axes a group of the source cannot
        tell (one unknown per group is inferred)."""
        source, target = self._sides
        expected = f"a {len(source)}-D {self.names[0]} {_render(source, compact=False)}"
        if array.ndim != len(source):
            raise IncompatibleWeightsError(f"expected {expected}; received shape {array.shape}.")
        known: dict[str, int] = {}
        split: list[int] = []
        for group, size in zip(source, array.shape):
            split.extend(self._split(group, size, sizes, expected, array.shape, known))
        elementary = [axis for group in source for axis in group]
        ones = tuple(i for i, axis in enumerate(elementary) if axis == _ONE)
        flat = array.reshape(split)
        if ones:
            flat = flat.squeeze(ones)
        order = [axis for axis in elementary if axis != _ONE]
        moved = flat.transpose([order.index(axis) for axis in _elementary(target)])
        return moved.reshape([prod(1 if axis == _ONE else known[axis] for axis in group) for group in target])

    @staticmethod
    def _split(group: tuple[str, ...], size: int, sizes: dict[str, int], expected: str,
               shape: tuple[int, ...], known: dict[str, int]) -> list[int]:
        """The sizes of one source group's elementary axes (recorded in `known`)."""
        unknown = [axis for axis in group if axis != _ONE and axis not in sizes]
        if len(group) > 1 and len(unknown) > 1:
            raise ValueError(f"group ({' '.join(group)}) needs the sizes of all but one of its axes")
        fixed = prod(1 if axis == _ONE else sizes[axis] for axis in group if axis not in unknown)
        if (group == (_ONE,) and size != 1) or (unknown and size % fixed) or (not unknown and size != fixed):
            given = ", ".join(f"{axis}={sizes[axis]}" for axis in group if axis in sizes)
            raise IncompatibleWeightsError(f"expected {expected}{' with ' + given if given else ''}; "
                                           f"received shape {shape}.")
        out = []
        for axis in group:
            value = 1 if axis == _ONE else sizes[axis] if axis in sizes else size // fixed
            if axis != _ONE:
                known[axis] = value
            out.append(value)
        return out
