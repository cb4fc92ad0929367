"""A mapping as data: the source and target specs, the rules and the whole mapping, and the two
name helpers every stage uses (`is_declared`, `did_you_mean`). `transfer.mapping` reads and
validates mapping files into these."""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from transfer.patterns import GLOB_CHARS, glob_suggestions

SOURCE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class ModelSpec:
    """Where a model or its weights come from (`source:` or `target:` of a mapping)."""

    framework: Literal["keras", "torch"]
    model: str | None = None
    weights: str | None = None
    file: str | None = None
    include_top: bool = False
    batchnorm_epsilon: float | None = None
    preprocessing: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    seed: int = 0  # targets built from a mapping are initialised under this seed
    bands: tuple[str, ...] | None = None  # the input bands by name, in the order the first layer reads them


@dataclass(frozen=True)
class Rule:
    """One `layers:` entry: a source name (or regex) and the target name (or template)."""

    source: str
    target: str
    is_pattern: bool
    line: int | None = None
    flatten: tuple[int, int, int] | Literal["auto"] | None = "auto"
    epsilon: Literal["match", "rescale"] = "match"
    adapt: str | None = None
    # `resample: bicubic` or `{mode: bicubic, prefix_tokens: 1}`: (mode, prefix tokens or None)
    resample: tuple[str, int | None] | None = None
    # `bands: {TARGET_BAND: SOURCE_BAND | mean | zero}` ({} too: same-named bands only), in order; None: no band map
    bands: tuple[tuple[str, str], ...] | None = None
    # `fold_preprocessing: true`: the target's convention (`target.preprocessing`) the layer is folded into
    fold_into: str | None = None
    source_name: str | None = None  # with several sources: the `NAME` of the key's `NAME:` prefix

    @property
    def pattern(self) -> str:
        """The key without its `NAME:` prefix: a literal layer name or a regular expression."""
        return self.source[len(self.source_name) + 1:] if self.source_name else self.source

    @property
    def fold_preprocessing(self) -> bool:
        """The source's input convention is folded into the layer, so the target's one is fed."""
        return self.fold_into is not None

    @property
    def maps_bands(self) -> bool:
        """The rule declares a change of the first layer's input bands (or folds its preprocessing)."""
        return self.bands is not None or self.fold_preprocessing

    def target_for(self, source_layer: str) -> str | None:
        """The target layer name for `source_layer`, or None if this rule does not apply. With
        several sources, `source_layer` is `NAME:layer` and the rest of the key is matched
        against `layer`."""
        if not self.is_pattern:
            return self.target if source_layer == self.source else None
        if self.source_name is not None:
            prefix = f"{self.source_name}:"
            if not source_layer.startswith(prefix):
                return None
            source_layer = source_layer[len(prefix):]
        found = re.fullmatch(self.pattern, source_layer)
        return found.expand(self.target) if found else None


@dataclass(frozen=True)
class Mapping:
    """A validated mapping file. With `sources:` (several sources), `sources` holds each by
    name, in the file's order, and `source` is the first of them (rule keys and skip entries
    then start with `NAME:`)."""

    source: ModelSpec
    target: ModelSpec
    rules: tuple[Rule, ...]
    skip: tuple[str, ...] = ()
    untouched: tuple[str, ...] = ()
    freeze: tuple[str, ...] = ()
    description: str = ""
    path: Path | None = None
    sha256: str | None = None
    sources: dict[str, ModelSpec] = field(default_factory=dict)

    @property
    def composed(self) -> bool:
        """True for a mapping with `sources:` (layers taken from several sources)."""
        return bool(self.sources)

    @property
    def origin(self) -> str:
        """How messages name this mapping: its path, or '<mapping>' when given as data."""
        return str(self.path) if self.path else "<mapping>"

    def resolve_path(self, value: str) -> str:
        """Paths inside a mapping file are relative to the file's folder."""
        if value == "imagenet" or value.startswith("pkg:") or self.path is None or Path(value).is_absolute():
            return value
        return str((self.path.parent / value).resolve())


def is_declared(name: str, patterns: tuple[str, ...]) -> bool:
    """True when `name` matches one of the glob `patterns` (`skip`, `untouched`, `freeze`)."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def did_you_mean(name: str, candidates: list[str] | tuple[str, ...]) -> str:
    """A ' Did you mean ...?' suffix, or '' when nothing is close. For a glob (`blok*`), the
    closest glob that matches one of the candidates (`block*`)."""
    if GLOB_CHARS & set(name):
        suggestions = glob_suggestions(name, candidates)
        return f" Did you mean {suggestions[0]!r}?" if suggestions else ""
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    if not close and len(name) >= 3:  # a shortened name: 'unet' for 'unet_vgg16'
        close = [c for c in candidates if name.lower() in c.lower()][:3]
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
