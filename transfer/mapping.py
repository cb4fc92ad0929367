"""The mapping file (format 1): parse, validate, and match layer names.

A mapping file is data. It names a source, a target among the shipped builders (or a
`.keras` file), and rules from source layer names to target layer names. Everything is
validated here, before any weight is read; errors name the file, the line and the key.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping as TypingMapping
from pathlib import Path
from typing import Any, Literal

from transfer import shipped
from transfer.errors import CheckpointError, MappingError
from transfer.layout import ADAPT_POLICIES
from transfer.mapping_types import SOURCE_NAME, Mapping, ModelSpec, Rule, did_you_mean, is_declared
from transfer.mapping_yaml import MAX_BYTES, parse_yaml, read_mapping_file
from transfer.patterns import REGEX_CHARS, is_regex, pattern_problem
from transfer.resample import MODES as RESAMPLE_MODES

__all__ = ["REGEX_CHARS", "Mapping", "ModelSpec", "Rule", "did_you_mean", "is_declared", "is_regex",
           "load_mapping", "parse_model_spec"]

FORMAT_VERSION = 1
FRAMEWORKS = ("keras", "torch")
PREPROCESSING = ("caffe", "torch", "tf", "none")

_TOP_KEYS = ("format", "description", "source", "sources", "target", "layers", "skip", "untouched", "freeze")
_SOURCE_KEYS = ("framework", "model", "weights", "include_top", "batchnorm_epsilon", "preprocessing", "bands")
_TARGET_KEYS = ("framework", "model", "file", "config", "preprocessing", "seed", "bands")
_RULE_KEYS = ("target", "flatten", "epsilon", "adapt", "resample", "bands", "fold_preprocessing")
BAND_RESERVED = ("mean", "zero")  # a rule's `bands:` values besides source band names
# the name of one of several sources (`sources: {NAME: ...}`), and the prefix `NAME:` of rule keys

# Bounds on hostile input: a mapping is a few kilobytes written by a person.

MappingInput = str | Path | TypingMapping[str, Any]


def load_mapping(mapping: MappingInput) -> Mapping:
    """Parse and validate a mapping given as a path, the name of a shipped mapping
    (`unet_vgg16_hed`, `.yaml` optional; a path that exists wins), a YAML string or a dict.

    Raises `MappingError` (exit 3) for a malformed mapping or an unknown name, and
    `CheckpointError` (exit 5) for a file that cannot be read."""
    if isinstance(mapping, TypingMapping):
        return _Validator(None, {}).mapping(dict(mapping), None)
    path = _mapping_path(mapping)
    if path is not None:
        text = read_mapping_file(path)
    else:
        text = str(mapping)
        if len(text) > MAX_BYTES:
            raise MappingError(f"<mapping>: {len(text):,} characters; a mapping may have at most {MAX_BYTES:,}.")
    origin = str(path) if path else "<mapping>"
    lines, data = parse_yaml(text, origin)
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


def parse_model_spec(data: Any, role: str) -> ModelSpec:
    """A `source:` or `target:` section given as data (as `suggest` and `inspect` take them)."""
    allowed = _SOURCE_KEYS if role == "source" else _TARGET_KEYS
    return _Validator(None, {}).model_spec(data, (role,), allowed)


def split_source_name(key: str, names: list[str] | tuple[str, ...]) -> tuple[str, str] | None:
    """(NAME, rest) when `key` is `NAME:rest` and NAME is one of `names`, else None."""
    name, colon, rest = key.partition(":")
    if colon and name in names:
        return name, rest
    return None


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
        if "source" in data and "sources" in data:
            raise self.fail(("sources",), "a mapping has either `source:` (one source) or `sources:` (several, "
                                          "by name), not both.")
        for required in ("format", "source", "target", "layers"):
            if required == "source" and "sources" in data:
                continue
            if required not in data:
                raise self.fail((), f"the key '{required}' is required"
                                    + (" (or `sources:`, several sources by name)." if required == "source" else "."))
        if data["format"] != FORMAT_VERSION or isinstance(data["format"], bool):
            raise self.fail(("format",), f"expected {FORMAT_VERSION}; received {data['format']!r}.")
        sources = self.sources(data["sources"]) if "sources" in data else {}
        source = next(iter(sources.values())) if sources else self.model_spec(data["source"], ("source",),
                                                                              _SOURCE_KEYS)
        target = self.model_spec(data["target"], ("target",), _TARGET_KEYS)
        rules = self.rules(data["layers"], tuple(sources), target.preprocessing)
        for rule in rules:
            self.check_rule_bands(rule, source if not sources else sources[str(rule.source_name)], target)
        skip = self.patterns(data.get("skip", []), ("skip",))
        if sources:
            for index, entry in enumerate(skip):
                if split_source_name(entry, tuple(sources)) is None:
                    raise self.fail(("skip", str(index)), f"'{entry}': with several sources, a skip entry starts "
                                                          f"with the source's name: NAME:pattern (one of "
                                                          f"{', '.join(sources)}).")
        return Mapping(
            source=source,
            target=target,
            rules=rules,
            skip=skip,
            untouched=self.patterns(data.get("untouched", []), ("untouched",)),
            freeze=self.patterns(data.get("freeze", []), ("freeze",)),
            description=self.string(data.get("description", ""), ("description",)),
            path=self.path,
            sha256=digest,
            sources=sources,
        )

    def sources(self, data: Any) -> dict[str, ModelSpec]:
        """`sources: {NAME: source spec, ...}`: each spec as `source:` is, named."""
        keys = ("sources",)
        if not isinstance(data, dict) or not data:
            raise self.fail(keys, "expected a mapping of NAME -> source (framework, model, weights, ...), at least "
                                  f"one; received {_describe(data)}.")
        found = {}
        for name, spec in data.items():
            if not isinstance(name, str) or not SOURCE_NAME.fullmatch(name):
                raise self.fail(keys + (str(name),), "a source's name is a letter or '_' then letters, digits, "
                                                     "'_' or '-' (rule keys start with NAME:).")
            found[name] = self.model_spec(spec, keys + (name,), _SOURCE_KEYS)
        return found

    def check_rule_bands(self, rule: Rule, source: ModelSpec, target: ModelSpec) -> None:
        """What the mapping alone can say about a rule's bands: its entries name bands the two
        sides declare (where they declare them), a fold names the target's convention, and a
        band map is not also an adaptation or a resampling."""
        keys = ("layers", rule.source)
        if not rule.maps_bands:
            return
        if rule.adapt:
            raise self.fail(keys + ("bands",), "a rule maps its input bands by name (`bands:`) or adapts its "
                                               "channel count (`adapt:`), not both.")
        if rule.resample:
            raise self.fail(keys + ("bands",), "`bands:` applies to a first conv or dense layer, not to a "
                                               "resampled embedding.")
        for band, origin in rule.bands or ():
            where = keys + ("bands", band)
            if target.bands is not None and band not in target.bands:
                hint = did_you_mean(band, target.bands)
                raise self.fail(where, f"'{band}' is not one of target.bands ({', '.join(target.bands)}).{hint}")
            if source.bands is not None and origin not in source.bands and origin not in BAND_RESERVED:
                hint = did_you_mean(origin, (*source.bands, *BAND_RESERVED))
                raise self.fail(where, f"'{origin}' is neither a source band ({', '.join(source.bands)}) nor "
                                       f"{' or '.join(BAND_RESERVED)}.{hint}")

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
                         preprocessing=preprocessing, config=dict(config),
                         bands=self.band_names(data["bands"], keys + ("bands",)) if "bands" in data else None, **text)

    def band_names(self, value: Any, keys: tuple[str, ...]) -> tuple[str, ...]:
        """`bands: [R, G, B]`: the input bands by name, each once, in the order the first layer reads them."""
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise self.fail(keys, f"expected a list of band names in input order ([R, G, B], [IR, R, G]); "
                                  f"received {_describe(value)}.")
        for index, band in enumerate(value):
            if band in BAND_RESERVED:
                raise self.fail(keys + (str(index),), f"'{band}' cannot name a band: a rule's `bands:` uses "
                                                      f"{' and '.join(BAND_RESERVED)} for its two policies.")
            if value.index(band) != index:
                raise self.fail(keys + (str(index),), f"the band '{band}' is listed twice.")
        return tuple(value)

    def patterns(self, value: Any, keys: tuple[str, ...]) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(keys, f"expected a list of layer names or glob patterns; "
                                  f"received {_describe(value)}.")
        return tuple(self.string(item, keys + (str(i),)) for i, item in enumerate(value))

    def rules(self, data: Any, names: tuple[str, ...] = (), convention: str | None = None) -> tuple[Rule, ...]:
        if not isinstance(data, dict):
            raise self.fail(("layers",), "expected a mapping of source layer -> target layer "
                                         f"(`{{}}` for none); received {_describe(data)}.")
        return tuple(self.rule(str(source), value, names, convention) for source, value in data.items())

    def rule(self, source: str, value: Any, names: tuple[str, ...] = (), convention: str | None = None) -> Rule:
        keys = ("layers", source)
        source_name = None
        pattern_text = source
        if names:  # several sources: every key is NAME:layer (the rest literal or a regular expression)
            split = split_source_name(source, names)
            if split is None:
                given = source.partition(":")[0] if ":" in source else ""
                hint = did_you_mean(given, names) if given else ""
                raise self.fail(keys, f"with several sources, a rule's key starts with the source's name: "
                                      f"NAME:layer (one of {', '.join(names)}).{hint}")
            source_name, pattern_text = split
        options: dict[str, Any] = {}
        if isinstance(value, dict):
            self.check_keys(value, keys, _RULE_KEYS)
            if "target" not in value:
                raise self.fail(keys, "a rule written as a mapping needs 'target'.")
            options = value
            value = value["target"]
        target = self.string(value, keys + (("target",) if options else ()))
        is_pattern = is_regex(pattern_text)
        if is_pattern:
            problem = pattern_problem(pattern_text)  # before compiling: `re`'s parser recurses too
            if problem:
                raise self.fail(keys, problem)
            try:
                compiled = re.compile(pattern_text)
            except (re.error, OverflowError, RecursionError) as exc:
                raise self.fail(keys, f"the pattern '{pattern_text}' is not a valid regular expression: "
                                      f"{exc}.") from exc
            self.check_template(keys, target, compiled.groups)
        fold = options.get("fold_preprocessing", False)
        if not isinstance(fold, bool):
            raise self.fail(keys + ("fold_preprocessing",), f"expected true or false; received {fold!r}.")
        if fold and not convention:
            raise self.fail(keys + ("fold_preprocessing",),
                            "folding the preprocessing needs the target's convention: set target.preprocessing "
                            f"({', '.join(PREPROCESSING)}), what the target will be fed.")
        return Rule(source=source, target=target, is_pattern=is_pattern,
                    line=self.lines.get(keys), flatten=self.flatten(options.get("flatten", "auto"), keys),
                    epsilon=self.choice(options, "epsilon", ("match", "rescale"), "match", keys),
                    adapt=self.adapt(options.get("adapt"), keys),
                    resample=self.resample(options.get("resample"), keys),
                    bands=self.rule_bands(options["bands"], keys + ("bands",)) if "bands" in options else None,
                    fold_into=convention if fold else None, source_name=source_name)

    def rule_bands(self, value: Any, keys: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
        """`bands: {TARGET_BAND: SOURCE_BAND | mean | zero}` (`{}`: same-named bands only)."""
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) and k and v
                                                  for k, v in value.items()):
            raise self.fail(keys, "expected {TARGET_BAND: SOURCE_BAND | mean | zero, ...} (`{}`: same-named bands "
                                  f"only); received {_describe(value)}.")
        return tuple(value.items())

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

    def resample(self, value: Any, keys: tuple[str, ...]) -> tuple[str, int | None] | None:
        """`resample: bicubic|bilinear` or `{mode: bicubic|bilinear, prefix_tokens: N}` (N: the
        class and other tokens kept in front of the grid; found from the shapes when absent)."""
        if value is None:
            return None
        if isinstance(value, str) and value in RESAMPLE_MODES:
            return value, None
        if isinstance(value, dict) and value.get("mode") in RESAMPLE_MODES and set(value) <= {"mode", "prefix_tokens"}:
            prefix = value.get("prefix_tokens")
            if prefix is None or (isinstance(prefix, int) and not isinstance(prefix, bool) and prefix >= 0):
                return value["mode"], prefix
        modes = " | ".join(RESAMPLE_MODES)
        raise self.fail(keys + ("resample",), f"expected {modes}, or {{mode: {modes}, prefix_tokens: N}} (N a "
                                              f"non-negative int); received {value!r}.")

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
