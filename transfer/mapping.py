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

from transfer import shipped
from transfer.errors import CheckpointError, MappingError
from transfer.layout import ADAPT_POLICIES
from transfer.patterns import GLOB_CHARS, REGEX_CHARS, glob_suggestions, is_regex, pattern_problem

__all__ = ["REGEX_CHARS", "Mapping", "ModelSpec", "Rule", "did_you_mean", "is_declared", "is_regex",
           "load_mapping", "parse_model_spec"]

FORMAT_VERSION = 1
FRAMEWORKS = ("keras", "torch")
PREPROCESSING = ("caffe", "torch", "tf", "none")

_TOP_KEYS = ("format", "description", "source", "target", "layers", "skip", "untouched", "freeze")
_SOURCE_KEYS = ("framework", "model", "weights", "include_top", "batchnorm_epsilon", "preprocessing")
_TARGET_KEYS = ("framework", "model", "file", "config", "preprocessing", "seed")
_RULE_KEYS = ("target", "flatten", "epsilon", "adapt")

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
    """A ' Did you mean ...?' suffix, or '' when nothing is close. For a glob (`blok*`), the
    closest glob that matches one of the candidates (`block*`)."""
    if GLOB_CHARS & set(name):
        suggestions = glob_suggestions(name, candidates)
        return f" Did you mean {suggestions[0]!r}?" if suggestions else ""
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    if not close and len(name) >= 3:  # a shortened name: 'unet' for 'unet_vgg16'
        close = [c for c in candidates if name.lower() in c.lower()][:3]
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def load_mapping(mapping: MappingInput) -> Mapping:
    """Parse and validate a mapping given as a path, the name of a shipped mapping
    (`unet_vgg16_hed`, `.yaml` optional; a path that exists wins), a YAML string or a dict.

    Raises `MappingError` (exit 3) for a malformed mapping or an unknown name, and
    `CheckpointError` (exit 5) for a file that cannot be read."""
    if isinstance(mapping, TypingMapping):
        return _Validator(None, {}).mapping(dict(mapping), None)
    path = _mapping_path(mapping)
    if path is not None:
        text = _read_mapping_file(path)
    else:
        text = str(mapping)
        if len(text) > MAX_BYTES:
            raise MappingError(f"<mapping>: {len(text):,} characters; a mapping may have at most {MAX_BYTES:,}.")
    origin = str(path) if path else "<mapping>"
    lines, data = _parse(text, origin)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return _Validator(path, lines).mapping(data, digest)


def _mapping_path(mapping: str | Path) -> Path | None:
    """The file a `--map` value names, or None when it is YAML text. A path that exists wins; a
    bare name (`unet_vgg16_hed`, `unet_vgg16_hed.yaml`) is looked up among the shipped mappings."""
    if isinstance(mapping, Path):
        return mapping
    if "\n" in mapping:
        return None
    path = Path(mapping)
    if path.is_file():
        return path
    if path.exists():
        raise CheckpointError(f"{path}: is not a file; expected a mapping file (YAML) or the name of a "
                              "shipped mapping (`transfer-weights mappings` lists them).")
    is_name = bool(_NAME.fullmatch(mapping))
    found = shipped.shipped_path(mapping) if is_name else None
    if found is not None:
        return found
    if mapping.endswith(shipped.SUFFIXES) and not is_name:  # a path to a file that is not there
        raise CheckpointError(f"{path}: no such mapping file (relative paths start in {Path.cwd()}).")
    if mapping.endswith(shipped.SUFFIXES):  # a file name here, or a shipped name: neither exists
        hint = did_you_mean(shipped.bare_name(mapping), shipped.shipped_names())
        raise CheckpointError(f"{path}: no such mapping file in {Path.cwd()}, and no shipped mapping has that "
                              f"name.{hint} `transfer-weights mappings` lists the shipped ones.")
    if is_name:
        hint = did_you_mean(mapping, shipped.shipped_names())
        raise MappingError(f"{mapping}: no mapping file of that name here, and no shipped mapping called "
                           f"{mapping!r}.{hint} `transfer-weights mappings` lists the shipped ones.")
    return None


_NAME = re.compile(r"[\w.+-]+")


def _read_mapping_file(path: Path) -> str:
    """The text of a mapping file, read at most MAX_BYTES + 1 bytes far (a 50 MB file costs no
    more memory than a 1 MiB one)."""
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_BYTES + 1)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the mapping file: {exc.strerror or exc}.") from exc
    if len(raw) > MAX_BYTES:
        raise MappingError(f"{path}: more than {MAX_BYTES:,} bytes; a mapping file may have at most "
                           f"{MAX_BYTES:,}.")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise MappingError(f"{path}:{line}: the mapping file is not UTF-8 text ({exc.reason} at byte "
                           f"{exc.start:,}).") from exc


def _parse(text: str, origin: str) -> tuple[dict[tuple[str, ...], int], Any]:
    """Line numbers of every key, and the plain data. The nesting depth is measured on the
    token stream before the composer (which recurses once per level) sees the text; the
    document's size after alias expansion is measured before anything walks it."""
    _check_depth(text, origin)
    try:
        loader = yaml.SafeLoader(text)  # its reader refuses control characters at once
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, origin) from exc
    try:
        try:
            root = loader.get_single_node()
        except yaml.YAMLError as exc:
            raise _yaml_error(exc, origin) from exc
        if root is None:
            return {}, None
        _check_size(root, origin)
        lines = _key_lines(root, origin)
        try:
            data = loader.construct_document(root)
        except yaml.YAMLError as exc:  # e.g. a python/object tag, which the safe loader refuses
            raise MappingError(f"{origin}: not a plain-data YAML document: {exc}.") from exc
    finally:
        loader.dispose()
    return lines, data


_OPENS = (yaml.FlowSequenceStartToken, yaml.FlowMappingStartToken, yaml.BlockSequenceStartToken,
          yaml.BlockMappingStartToken)
_CLOSES = (yaml.FlowSequenceEndToken, yaml.FlowMappingEndToken, yaml.BlockEndToken)


def _check_depth(text: str, origin: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH from the tokens alone: the scanner does not recurse,
    and stops being asked at the first level too deep, so `[[[[...` 10**5 deep costs a few
    dozen tokens (and the scanner's look-ahead of at most 1024 characters). A sequence written
    at its key's indentation has no start token; it is counted exactly by `_check_size` later,
    the composer's recursion staying bounded either way. A text the scanner cannot read is left
    to the parser, which says where. (libyaml's scanner, through PyYAML's C loader, yields a
    different token stream for the same text: the pure-Python one is used.)"""
    scanner = yaml.SafeLoader
    depth = 0
    try:
        for token in yaml.scan(text, Loader=scanner):
            if isinstance(token, _OPENS):
                depth += 1
                if depth - 1 > MAX_DEPTH:  # the top-level collection is depth 0
                    raise MappingError(f"{origin}:{token.start_mark.line + 1}: nested deeper than "
                                       f"{MAX_DEPTH} levels; a mapping file is refused past that.")
            elif isinstance(token, _CLOSES):
                depth -= 1
    except yaml.YAMLError:
        return


def _yaml_error(exc: yaml.YAMLError, origin: str) -> MappingError:
    """PyYAML's error as one line: where (its marks are 0-based), what, and the construct it
    was reading. An unclosed flow collection is reported on the line that opened it."""
    if isinstance(exc, yaml.reader.ReaderError) and isinstance(exc.character, int):
        return MappingError(f"{origin}: not valid YAML: the character {exc.character:#06x} (at character "
                            f"{exc.position:,}) is not allowed in a YAML document.")
    problem = getattr(exc, "problem", None)
    if problem is None:
        return MappingError(f"{origin}: not valid YAML: {' '.join(str(exc).split())}.")
    problem_mark, context_mark = getattr(exc, "problem_mark", None), getattr(exc, "context_mark", None)
    context = getattr(exc, "context", None)

    def at(mark: Any) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}"

    text = f"{problem}" + (f" ({at(problem_mark)})" if problem_mark is not None else "")
    line = problem_mark.line + 1 if problem_mark is not None else None
    hint = ""
    if context and context_mark is not None:
        text = f"{context} that starts at {at(context_mark)}: {text}"
        if not context.startswith("while parsing a block"):  # a flow collection, a quote, a key
            line = context_mark.line + 1
        for name, closer in (("flow sequence", "]"), ("flow mapping", "}")):
            if name in context:
                hint = f" Is a closing '{closer}' missing on line {context_mark.line + 1}?"
    return MappingError(f"{origin}{f':{line}' if line else ''}: not valid YAML: {text}.{hint}")


def _key_lines(root: yaml.Node, origin: str) -> dict[tuple[str, ...], int]:
    """Line numbers of every mapping key; also rejects duplicate keys, which YAML would
    silently collapse (two rules for one source layer must be an error)."""
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
            problem = pattern_problem(source)  # before compiling: `re`'s parser recurses too
            if problem:
                raise self.fail(keys, problem)
            try:
                compiled = re.compile(source)
            except (re.error, OverflowError, RecursionError) as exc:
                raise self.fail(keys, f"the pattern '{source}' is not a valid regular expression: {exc}.") from exc
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
