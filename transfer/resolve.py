"""From what a caller passes (paths, names, live models, factories) to adapters.

A target is a live model (changed in place: the caller owns it), a callable or a
`module:callable` factory (the caller may keep what it returns), a `.keras` file, or a shipped
builder named in the mapping. A source is a live model, a weights file, a known model name, or
the mapping's `source:`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from collections.abc import Mapping as TypingMapping
from pathlib import Path
from typing import Any

from transfer import _frameworks
from transfer.adapter import Weights
from transfer.composed import ComposedSource
from transfer.errors import CheckpointError, MappingError
from transfer.formats import is_whole_model, output_format
from transfer.live import adapter_for
from transfer.mapping import Mapping, ModelSpec, did_you_mean

SourceInput = str | Path | Any | None
TargetInput = str | Path | Callable[..., Any] | Any | None
# `source_weights`: one path (or 'imagenet'); with several sources {NAME: PATH}, or 'NAME=PATH'
# strings (the command line's repeatable --source-weights NAME=PATH)
SourceWeights = str | Path | TypingMapping[str, str | Path] | Sequence[str] | None


@dataclasses.dataclass(frozen=True)
class OpenedTarget:
    """A target adapter, and whether the caller holds the model (so a failure must restore it)."""

    weights: Weights
    caller_owned: bool


def open_target(spec: Mapping, target: TargetInput = None) -> OpenedTarget:
    """Build, load or wrap the target a mapping and a caller's `target` argument describe."""
    from transfer.keras_models import load_keras_file
    from transfer.targets import build_target, call_builder, load_callable

    target_spec = spec.target
    if target is None and target_spec.file:
        target = spec.resolve_path(target_spec.file)
    config_where = f"{spec.origin}: target.config"
    if isinstance(target, Path) or (isinstance(target, str) and is_whole_model(target)):
        model, owned = load_keras_file(Path(target)), False
    elif isinstance(target, str) and ":" in target:
        factory = load_callable(target, user_code=True)
        model = call_builder(factory, target_spec.config, config_where, target_spec.seed, target_spec.framework,
                             user_code=f"the target factory {target}")
        owned = True
    elif isinstance(target, str):
        model = build_target(dataclasses.replace(target_spec, model=target), spec.origin)
        owned = False
    elif target is None:
        model, owned = build_target(target_spec, spec.origin), False
    elif callable(target) and _frameworks.framework_of(target) is None:
        name = getattr(target, "__qualname__", None) or type(target).__name__
        model = call_builder(target, target_spec.config, config_where, target_spec.seed, target_spec.framework,
                             user_code=f"the target factory {getattr(target, '__module__', None) or '?'}.{name}")
        owned = True
    else:
        model, owned = target, True
    return OpenedTarget(_target_adapter(model, target_spec), owned)


def _target_adapter(model: Any, spec: ModelSpec) -> Weights:
    framework = _frameworks.framework_of(model)
    if framework is None:
        raise MappingError(f"the target must be a keras.Model or a torch.nn.Module; received "
                           f"{type(model).__name__}.")
    if framework != spec.framework:
        raise MappingError(f"the mapping's target.framework is {spec.framework}, but the target "
                           f"model is a {framework} model.")
    description = f"{model.name} (keras)" if framework == "keras" else \
        f"{spec.model or type(model).__name__} (torch)"
    return adapter_for(model, description, preprocessing=spec.preprocessing)


def source_spec(spec: Mapping, source: str | Path | None = None,
                source_weights: str | Path | None = None, name: str | None = None) -> ModelSpec:
    """The mapping's `source:` (with several sources: `sources[name]`) with a caller's path or
    model name and `source_weights` applied, paths resolved against the mapping's folder."""
    model_spec = spec.sources[name] if name is not None else spec.source
    if source is not None:
        text = str(source)
        if Path(text).exists() or Path(text).suffix:
            model_spec = dataclasses.replace(model_spec, weights=text)
        else:
            model_spec = dataclasses.replace(model_spec, model=text)
    elif model_spec.weights:
        model_spec = dataclasses.replace(model_spec, weights=spec.resolve_path(model_spec.weights))
    if source_weights is not None:
        model_spec = dataclasses.replace(model_spec, weights=str(source_weights))
    return model_spec


def check_source_file(model_spec: ModelSpec) -> None:
    """A local source file that does not exist is said before any model is built."""
    weights = model_spec.weights or model_spec.file
    if weights and weights != "imagenet" and not weights.startswith("pkg:") and not Path(weights).exists():
        raise CheckpointError(f"{weights}: no such file (the source weights).")


def single_source_weights(spec: Mapping, source_weights: SourceWeights) -> str | Path | None:
    """`source_weights` for a mapping with one `source:`: one path (a list of one, from the
    command line, is that path)."""
    if isinstance(source_weights, TypingMapping):
        raise MappingError(f"{spec.origin}: the mapping has one source (`source:`); source_weights is one path, "
                           "not {NAME: PATH}.")
    if isinstance(source_weights, (list, tuple)):
        if len(source_weights) != 1:
            raise MappingError(f"{spec.origin}: the mapping has one source (`source:`); give one --source-weights, "
                               f"not {len(source_weights)}.")
        return str(source_weights[0])
    return source_weights  # type: ignore[return-value]


def source_inputs(spec: Mapping, source: Any = None,
                  source_weights: SourceWeights = None) -> dict[str, tuple[SourceInput, str | Path | None]]:
    """With several sources: per NAME, the caller's model or path (or None: the mapping's) and
    its weights override. `source` is {NAME: model or path}; `source_weights` {NAME: PATH}, or
    'NAME=PATH' strings. An unknown NAME is a mapping error (exit 3)."""
    names = list(spec.sources)
    if source is not None and not isinstance(source, TypingMapping):
        raise MappingError(f"{spec.origin}: the mapping has several sources ({', '.join(names)}); pass "
                           "source={NAME: model or path, ...}.")
    given = dict(source or {})
    weights: dict[str, str | Path] = {}
    if isinstance(source_weights, TypingMapping):
        weights = dict(source_weights)
    elif source_weights is not None:
        items = [source_weights] if isinstance(source_weights, (str, Path)) else list(source_weights)
        for item in items:
            name, equals, path = str(item).partition("=")
            if not equals or not path:
                raise MappingError(f"{spec.origin}: the mapping has several sources ({', '.join(names)}); "
                                   f"--source-weights takes NAME=PATH, not {str(item)!r}.")
            if name in weights:
                raise MappingError(f"{spec.origin}: --source-weights names the source '{name}' twice.")
            weights[name] = path
    for name in [*given, *weights]:
        if name not in spec.sources:
            raise MappingError(f"{spec.origin}: '{name}' is not one of the mapping's sources ({', '.join(names)})."
                               f"{did_you_mean(name, names)}")
    return {name: (given.get(name), weights.get(name)) for name in names}


def check_source_files(spec: Mapping, source: Any = None, source_weights: SourceWeights = None) -> None:
    """Every local source file that does not exist is said before any model is built."""
    if spec.composed:
        for name, (given, weights) in source_inputs(spec, source, source_weights).items():
            if given is None or isinstance(given, (str, Path)):
                named = source_spec(spec, given, weights, name=name)
                path = named.weights or named.file
                if path and path != "imagenet" and not path.startswith("pkg:") and not Path(path).exists():
                    raise CheckpointError(f"{path}: no such file (the weights of the source '{name}'); pass yours "
                                          f"with --source-weights {name}=PATH (library: source_weights="
                                          f"{{'{name}': PATH}}).")
    elif source is None or isinstance(source, (str, Path)):
        check_source_file(source_spec(spec, source, single_source_weights(spec, source_weights)))


def open_source_input(spec: Mapping, source: SourceInput = None, source_weights: SourceWeights = None,
                      architecture_only: bool = False) -> Weights:
    """The source adapter: a live model, or `source:` with the caller's overrides applied; with
    several sources, one adapter over all of them (`transfer.composed`), every part opened or
    none. `architecture_only`: a known model's published weights are not downloaded; its layers
    come from the architecture (for `--check` and `inspect`, which read no tensor)."""
    from transfer.sources import open_source

    if spec.composed:
        with contextlib.ExitStack() as opened:
            parts: dict[str, Weights] = {}
            for name, (given, weights) in source_inputs(spec, source, source_weights).items():
                if given is not None and not isinstance(given, (str, Path)):
                    parts[name] = adapter_for(given, f"{name} (a live model)")
                    continue
                part = open_source(source_spec(spec, given, weights, name=name), architecture_only=architecture_only)
                opened.callback(part.close)
                parts[name] = part
            opened.pop_all()  # every part opened: the composed source closes them
        return ComposedSource(parts)
    if source is not None and not isinstance(source, (str, Path)):
        return adapter_for(source)
    return open_source(source_spec(spec, source, single_source_weights(spec, source_weights)),
                       architecture_only=architecture_only)


def open_converted(spec: Mapping, converted: str | Path | Any, architecture: TargetInput = None) -> Weights:
    """A target converted earlier, for checking: a live model; a `.keras` file; or a weights
    file (`.weights.h5`, `.pth`, `.pt`, `.safetensors`) loaded strictly into the architecture:
    `architecture` (a factory or "module:callable", as a target) or else the mapping's target."""
    if not isinstance(converted, (str, Path)):
        return _target_adapter(converted, spec.target)
    path = Path(converted)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file.")
    if is_whole_model(path):
        return open_target(spec, path).weights
    output_format(path, spec.target.framework)  # says which suffixes a target can have
    blank = open_target(dataclasses.replace(spec, target=dataclasses.replace(spec.target, file=None)), architecture)
    try:
        return blank.weights.reload(path)
    except CheckpointError:
        raise
    except Exception as exc:  # Keras' load_weights raises ValueError, KeyError, OSError ...
        raise CheckpointError(f"{path}: cannot be loaded into {blank.weights.description}: "
                              f"{type(exc).__name__}: {str(exc)[:300]}") from exc
