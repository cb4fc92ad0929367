"""The mapping file (format 1): parse, validate, and match layer names.

A mapping file is data. It names a source, a target among the shipped builders (or a
`.keras` file), and rules from source layer names to target layer names. Everything is
validated here, before any weight is read; errors name the file, the line and the key.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import re
from collections.abc import Mapping as TypingMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from transfer.errors import MappingError
from transfer.layout import ADAPT_POLICIES

FORMAT_VERSION = 1
FRAMEWORKS = ("keras", "torch")
PREPROCESSING = ("caffe", "torch", "tf", "none")

_TOP_KEYS = ("format", "description", "source", "target", "layers", "skip", "untouched", "freeze")
_SOURCE_KEYS = ("framework", "model", "weights", "include_top", "batchnorm_epsilon", "preprocessing")
_TARGET_KEYS = ("framework", "model", "file", "config", "preprocessing", "seed")
_RULE_KEYS = ("target", "flatten", "epsilon", "adapt")
# A rule key holding any of these characters is a regular expression; otherwise it is a
# literal layer name (so the dots of `features.0` stay literal).
REGEX_CHARS = frozenset("\\()[]*+?|^${}")

# Bounds on hostile input: a mapping is a few kilobytes written by a person.
MAX_BYTES = 1 << 20  # 1 MiB of text
MAX_NODES = 100_000  # YAML nodes after alias expansion (a billion-laughs document has 10**9)
MAX_DEPTH = 32  # nesting of mappings and lists

MappingInput = str | Path | TypingMapping[str, Any]


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

    def target_for(self, source_layer: str) -> str | None:
        """The target layer name for `source_layer`, or None if this rule does not apply."""
        if not self.is_pattern:
            return self.target if source_layer == self.source else None
        found = re.fullmatch(self.source, source_layer)
        return found.expand(self.target) if found else None


@dataclass(frozen=True)
class Mapping:
    """A validated mapping file."""

    source: ModelSpec
    target: ModelSpec
    rules: tuple[Rule, ...]
    skip: tuple[str, ...] = ()
    untouched: tuple[str, ...] = ()
    freeze: tuple[str, ...] = ()
    description: str = ""
    path: Path | None = None
    sha256: str | None = None

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
    """A ' Did you mean ...?' suffix, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    if not close and len(name) >= 3:  # a shortened name: 'unet' for 'unet_vgg16'
        close = [c for c in candidates if name.lower() in c.lower()][:3]
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def load_mapping(mapping: MappingInput) -> Mapping:
    """Parse and validate a mapping given as a path, a YAML string or a dict."""
    if isinstance(mapping, TypingMapping):
        return _Validator(None, {}).mapping(dict(mapping), None)
    path: Path | None = None
    if isinstance(mapping, Path) or (isinstance(mapping, str) and "\n" not in mapping
                                     and (mapping.endswith((".yaml", ".yml")) or Path(mapping).is_file())):
        path = Path(mapping)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise MappingError(f"{path}: cannot read the mapping file: {exc.strerror or exc}.") from exc
        except UnicodeDecodeError as exc:
            raise MappingError(f"{path}: the mapping file is not UTF-8 text ({exc.reason}).") from exc
    else:
        text = str(mapping)
    origin = str(path) if path else "<mapping>"
    if len(text) > MAX_BYTES:
        raise MappingError(f"{origin}: {len(text):,} characters; a mapping file may have at most "
                           f"{MAX_BYTES:,}.")
    lines = _parse_lines(text, origin)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # e.g. a python/object tag, which safe_load refuses
        raise MappingError(f"{origin}: not a plain-data YAML document: {exc}.") from exc
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return _Validator(path, lines).mapping(data, digest)


def _parse_lines(text: str, origin: str) -> dict[tuple[str, ...], int]:
    """Line numbers of every mapping key; also rejects duplicate keys, which YAML would
    silently collapse (two rules for one source layer must be an error)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise MappingError(f"{origin}{where}: not valid YAML: {problem}.") from exc
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                if key in seen:
                    where = ".".join(prefix + (key,))
                    raise MappingError(
                        f"{origin}:{line}: key '{where}' appears twice (first on line "
                        f"{seen[key]}); each key may appear once."
                    )
                seen[key] = line
                lines[prefix + (key,)] = line
                walk(value_node, prefix + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[prefix + (str(index),)] = item.start_mark.line + 1
                walk(item, prefix + (str(index),))

    if root is not None:
        _check_size(root, origin)
        walk(root, ())
    return lines


def _check_size(root: yaml.Node, origin: str) -> None:
    """Refuse documents whose aliases expand past MAX_NODES nodes or that nest deeper than
    MAX_DEPTH, before anything walks them. Sizes are memoised per node, so a document of
    nested aliases costs its own size to measure, not its expansion."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise MappingError(f"{origin}:{node.start_mark.line + 1}: nested deeper than {MAX_DEPTH} levels.")
        if id(node) in sizes:
            return sizes[id(node)]
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        total = 1
        for child in children:
            total += size(child, depth + 1)
            if total > MAX_NODES:
                raise MappingError(f"{origin}: the document expands to more than {MAX_NODES:,} "
                                   "values (aliases of aliases?); a mapping file is refused past that.")
        sizes[id(node)] = total
        return total

    size(root, 0)


def is_regex(key: str) -> bool:
    """A rule key is a regular expression when it holds one of `REGEX_CHARS`."""
    return bool(REGEX_CHARS & set(key))


def nested_quantifier(pattern: str) -> str:
    """The first group that holds a repetition and is itself repeated (`(a+)+`, `(\\w*)*`,
    `(x|y+){2,}`), the shape of catastrophic backtracking; '' when there is none."""
    stack: list[tuple[int, bool]] = []  # (start, holds a repetition) per open group
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index += 2
            continue
        if char == "[":  # a character class: skip to its end
            index = pattern.find("]", index + 2) + 1 or len(pattern)
            continue
        if char == "(":
            stack.append((index, False))
        elif char in "*+{" and stack:
            stack[-1] = (stack[-1][0], True)
        elif char == ")" and stack:
            start, repeats_inside = stack.pop()
            follower = pattern[index + 1: index + 2]
            if repeats_inside and follower in ("*", "+", "{"):
                return pattern[start: index + 2]
            if repeats_inside and stack:
                stack[-1] = (stack[-1][0], True)
        index += 1
    return ""


def parse_model_spec(data: Any, role: str) -> ModelSpec:
    """A `source:` or `target:` section given as data (as `suggest` and `inspect` take them)."""
    allowed = _SOURCE_KEYS if role == "source" else _TARGET_KEYS
    return _Validator(None, {}).model_spec(data, (role,), allowed)


class _Validator:
    """Turns parsed YAML into a `Mapping`, raising `MappingError` with file:line context."""

    def __init__(self, path: Path | None, lines: dict[tuple[str, ...], int]):
        self.origin = str(path) if path else "<mapping>"
        self.path = path
        self.lines = lines

    def fail(self, keys: tuple[str, ...], message: str) -> MappingError:
        line = self.lines.get(keys)
        where = f"{self.origin}:{line}" if line else self.origin
        key = ".".join(keys)
        return MappingError(f"{where}: {key + ': ' if key else ''}{message}")

    def mapping(self, data: Any, digest: str | None) -> Mapping:
        if not isinstance(data, dict):
            raise self.fail((), f"expected a mapping with keys {', '.join(_TOP_KEYS)}; "
                                f"received {_describe(data)}.")
        self.check_keys(data, (), _TOP_KEYS)
        for required in ("format", "source", "target", "layers"):
            if required not in data:
                raise self.fail((), f"the key '{required}' is required.")
        if data["format"] != FORMAT_VERSION or isinstance(data["format"], bool):
            raise self.fail(("format",), f"expected {FORMAT_VERSION}; received {data['format']!r}.")
        rules = self.rules(data["layers"])
        return Mapping(
            source=self.model_spec(data["source"], ("source",), _SOURCE_KEYS),
            target=self.model_spec(data["target"], ("target",), _TARGET_KEYS),
            rules=rules,
            skip=self.patterns(data.get("skip", []), ("skip",)),
            untouched=self.patterns(data.get("untouched", []), ("untouched",)),
            freeze=self.patterns(data.get("freeze", []), ("freeze",)),
            description=self.string(data.get("description", ""), ("description",)),
            path=self.path,
            sha256=digest,
        )

    def check_keys(self, data: dict, keys: tuple[str, ...], allowed: tuple[str, ...]) -> None:
        for key in data:
            if not isinstance(key, str) or key not in allowed:
                hint = did_you_mean(str(key), allowed) or f" Allowed keys: {', '.join(allowed)}."
                raise self.fail(keys + (str(key),), f"unknown key.{hint}")

    def string(self, value: Any, keys: tuple[str, ...]) -> str:
        if not isinstance(value, str):
            raise self.fail(keys, f"expected a string; received {_describe(value)}.")
        return value

    def model_spec(self, data: Any, keys: tuple[str, ...], allowed: tuple[str, ...]) -> ModelSpec:
        if not isinstance(data, dict):
            raise self.fail(keys, f"expected a mapping with keys {', '.join(allowed)}; "
                                  f"received {_describe(data)}.")
        self.check_keys(data, keys, allowed)
        framework = data.get("framework")
        if framework not in FRAMEWORKS:
            raise self.fail(keys + ("framework",), f"expected one of {', '.join(FRAMEWORKS)}; received "
                                                   f"{framework!r}.{did_you_mean(str(framework), FRAMEWORKS)}")
        text = {k: self.string(data[k], keys + (k,)) for k in ("model", "weights", "file") if k in data}
        if "model" not in text and "weights" not in text and "file" not in text:
            raise self.fail(keys, "needs 'model' (a shipped or known model name), "
                                  "'weights' or 'file' (a local path).")
        include_top = data.get("include_top", False)
        if not isinstance(include_top, bool):
            raise self.fail(keys + ("include_top",), f"expected true or false; received {include_top!r}.")
        epsilon = data.get("batchnorm_epsilon")
        if epsilon is not None and (isinstance(epsilon, bool) or not isinstance(epsilon, (int, float))
                                    or not epsilon > 0):
            raise self.fail(keys + ("batchnorm_epsilon",),
                            f"expected a positive number; received {epsilon!r}.")
        preprocessing = data.get("preprocessing")
        if preprocessing is not None and preprocessing not in PREPROCESSING:
            hint = did_you_mean(str(preprocessing), PREPROCESSING)
            raise self.fail(keys + ("preprocessing",),
                            f"expected one of {', '.join(PREPROCESSING)}; received {preprocessing!r}.{hint}")
        config = data.get("config", {})
        if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
            raise self.fail(keys + ("config",), f"expected a mapping of builder arguments; "
                                                f"received {_describe(config)}.")
        seed = data.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise self.fail(keys + ("seed",), f"expected a non-negative integer; received {seed!r}.")
        return ModelSpec(framework=framework, include_top=include_top, seed=seed,
                         batchnorm_epsilon=float(epsilon) if epsilon is not None else None,
                         preprocessing=preprocessing, config=dict(config), **text)

    def patterns(self, value: Any, keys: tuple[str, ...]) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(keys, f"expected a list of layer names or glob patterns; "
                                  f"received {_describe(value)}.")
        return tuple(self.string(item, keys + (str(i),)) for i, item in enumerate(value))

    def rules(self, data: Any) -> tuple[Rule, ...]:
        if not isinstance(data, dict):
            raise self.fail(("layers",), "expected a mapping of source layer -> target layer "
                                         f"(`{{}}` for none); received {_describe(data)}.")
        return tuple(self.rule(str(source), value) for source, value in data.items())

    def rule(self, source: str, value: Any) -> Rule:
        keys = ("layers", source)
        options: dict[str, Any] = {}
        if isinstance(value, dict):
            self.check_keys(value, keys, _RULE_KEYS)
            if "target" not in value:
                raise self.fail(keys, "a rule written as a mapping needs 'target'.")
            options = value
            value = value["target"]
        target = self.string(value, keys + (("target",) if options else ()))
        is_pattern = is_regex(source)
        if is_pattern:
            try:
                compiled = re.compile(source)
            except re.error as exc:
                raise self.fail(keys, f"not a valid regular expression: {exc}.") from exc
            nested = nested_quantifier(source)
            if nested:
                raise self.fail(keys, f"the pattern repeats a group that repeats itself ({nested}); "
                                      "such a pattern can take exponential time on a long layer "
                                      "name. Write it without the nested repetition.")
            self.check_template(keys, target, compiled.groups)
        return Rule(source=source, target=target, is_pattern=is_pattern,
                    line=self.lines.get(keys), flatten=self.flatten(options.get("flatten", "auto"), keys),
                    epsilon=self.choice(options, "epsilon", ("match", "rescale"), "match", keys),
                    adapt=self.adapt(options.get("adapt"), keys))

    def check_template(self, keys: tuple[str, ...], target: str, groups: int) -> None:
        for ref in re.findall(r"\\(\d+)|\\g<(\d+)>", target):
            number = int(ref[0] or ref[1])
            if number > groups:
                raise self.fail(keys, f"the target '{target}' uses group \\{number}, but the "
                                      f"pattern has {groups} group(s).")

    def flatten(self, value: Any, keys: tuple[str, ...]) -> tuple[int, int, int] | Literal["auto"] | None:
        if value == "auto":
            return "auto"
        if value is False or value is None:
            return None
        if (isinstance(value, list) and len(value) == 3
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
            return (value[0], value[1], value[2])
        raise self.fail(keys + ("flatten",), "expected [channels, height, width] of the feature "
                                             f"map flattened before this dense layer, false, or "
                                             f"'auto'; received {value!r}.")

    def adapt(self, value: Any, keys: tuple[str, ...]) -> str | None:
        """`adapt: in_channels` (timm's policy) or `adapt: {in_channels: sum|repeat|zero_rest}`."""
        if value is None:
            return None
        if value == "in_channels":
            return "timm"
        if isinstance(value, dict) and list(value) == ["in_channels"] and value["in_channels"] in ADAPT_POLICIES:
            return value["in_channels"]
        raise self.fail(keys + ("adapt",), "expected 'in_channels' or {in_channels: "
                                           f"{' | '.join(ADAPT_POLICIES)}}}; received {value!r}.")

    def choice(self, options: dict, key: str, allowed: tuple, default: Any,
               keys: tuple[str, ...]) -> Any:
        value = options.get(key, default)
        if value != default and value not in allowed:
            raise self.fail(keys + (key,), f"expected one of {', '.join(map(str, allowed))}; "
                                           f"received {value!r}.")
        return value


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"
