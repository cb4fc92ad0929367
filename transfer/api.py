"""The library call: `transfer_weights(mapping, source=..., target=...) -> Report`."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Callable, Union

from transfer import __version__
from transfer.engine import WeightTarget, execute, plan_transfer
from transfer.errors import MappingError
from transfer.keras_models import KerasModelWeights
from transfer.mapping import Mapping, MappingInput, ModelSpec, load_mapping
from transfer.output import check_writable, save_model
from transfer.report import Report
from transfer.sources import Source, load_keras_file, open_source, source_from_object
from transfer.sources.known_models import PREPROCESSING_HELP
from transfer.targets import build_target, call_builder, load_callable
from transfer.torch_models import TorchModuleWeights

SourceInput = Union[str, Path, Any, None]
TargetInput = Union[str, Path, Callable[..., Any], Any, None]


def transfer_weights(mapping: MappingInput, source: SourceInput = None, target: TargetInput = None, *,
                     source_weights: str | Path | None = None, strict: bool = False,
                     check: bool = False, out: str | Path | None = None) -> Report:
    """Move weights from `source` into `target` as `mapping` says, all or nothing.

    Args:
        mapping: a mapping file path, a YAML string or a dict (format 1, see README).
        source: None (the mapping's `source:`), a weights file path, a known model name
            (`vgg16`, `vgg16_bn`), or a live `keras.Model` / `torch.nn.Module`.
        target: None (the mapping's `target:`), a `.keras` file, a shipped builder name, a
            live model (changed in place), or a callable called with the mapping's
            `target.config` that returns one.
        source_weights: overrides the mapping's `source.weights` (a path or `imagenet`).
        strict: fail on any undeclared skipped source layer or untouched target layer.
        check: validate everything and read no tensor; the target is left unchanged.
        out: write the target there (`.keras`, `.weights.h5`, `.pth`, `.pt`, `.safetensors`).

    Returns:
        The `Report`; `report.model` is the target model.

    Raises:
        TransferWeightsError subclasses (see `transfer.errors`); on any of them the target
        is unchanged and no output file exists.
    """
    spec = load_mapping(mapping)
    target_model, target_weights = _resolve_target(spec, target)
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        check_writable(out_path, target_weights.framework)
    weights_source = _resolve_source(spec, source, source_weights)
    try:
        plan = plan_transfer(spec, weights_source, target_weights, strict=strict)
        report = Report(
            mapping=spec.origin, mapping_sha256=spec.sha256, source=weights_source.description,
            target=target_weights.description, skipped=plan.skipped, untouched=plan.untouched,
            frozen=plan.frozen, notes=plan.notes, checked_only=check, model=target_model,
            preprocessing=_preprocessing(spec, weights_source), versions=_versions(),
        )
        report.warnings += report.preprocessing.pop("warnings")
        moved = [] if check else execute(plan, weights_source, target_weights, spec.origin)
    finally:
        close = getattr(weights_source, "close", None)
        if close is not None:
            close()
    pairs = [m.pair for m in moved] if not check else plan.pairs
    notes = {m.pair.target.name: list(m.notes) for m in moved}
    report.transferred = [{
        "source": p.source.name, "target": p.target.name, "kind": p.kind, "conversion": p.conversion,
        "shapes": {"source": p.source.shapes, "target": p.target.shapes},
        "params": p.target.params, "notes": notes.get(p.target.name, []),
    } for p in pairs]
    report.params_moved = sum(p.target.params for p in pairs)
    if out_path is not None and not check:
        save_model(target_model, target_weights.framework, out_path)
        report.output = str(out_path)
    return report


def _resolve_source(spec: Mapping, source: SourceInput, source_weights: str | Path | None) -> Source:
    if source is not None and not isinstance(source, (str, Path)):
        return source_from_object(source)
    model_spec = spec.source
    if isinstance(source, (str, Path)):
        text = str(source)
        if Path(text).exists() or Path(text).suffix:
            model_spec = dataclasses.replace(model_spec, weights=text)
        else:
            model_spec = dataclasses.replace(model_spec, model=text)
    elif model_spec.weights:
        model_spec = dataclasses.replace(model_spec, weights=spec.resolve_path(model_spec.weights))
    if source_weights is not None:
        model_spec = dataclasses.replace(model_spec, weights=str(source_weights))
    return open_source(model_spec)


def _resolve_target(spec: Mapping, target: TargetInput) -> tuple[Any, WeightTarget]:
    target_spec = spec.target
    if target is None and target_spec.file:
        target = spec.resolve_path(target_spec.file)
    if isinstance(target, Path) or (isinstance(target, str) and target.endswith(".keras")):
        model = load_keras_file(Path(target))
    elif isinstance(target, str):
        if ":" in target:
            model = call_builder(load_callable(target), target_spec.config, f"{spec.origin}: target.config")
        else:
            model = build_target(dataclasses.replace(target_spec, model=target), spec.origin)
    elif target is None:
        model = build_target(target_spec, spec.origin)
    elif callable(target) and not _is_model(target):
        model = call_builder(target, target_spec.config, f"{spec.origin}: target.config")
    else:
        model = target
    return model, _adapter(model, target_spec)


def _is_model(obj: Any) -> bool:
    return (("torch" in sys.modules and isinstance(obj, sys.modules["torch"].nn.Module))
            or ("keras" in sys.modules and isinstance(obj, sys.modules["keras"].Model)))


def _adapter(model: Any, spec: ModelSpec) -> WeightTarget:
    if "torch" in sys.modules and isinstance(model, sys.modules["torch"].nn.Module):
        weights: WeightTarget = TorchModuleWeights(model, f"{spec.model or type(model).__name__} (torch)")
    elif "keras" in sys.modules and isinstance(model, sys.modules["keras"].Model):
        weights = KerasModelWeights(model, f"{model.name} (keras)")
    else:
        raise MappingError(f"the target must be a keras.Model or a torch.nn.Module; received "
                           f"{type(model).__name__}.")
    if weights.framework != spec.framework:
        raise MappingError(f"the mapping's target.framework is {spec.framework}, but the target "
                           f"model is a {weights.framework} model.")
    return weights


def _preprocessing(spec: Mapping, source: Any) -> dict[str, Any]:
    expected = getattr(source, "preprocessing", None) or spec.source.preprocessing
    declared = spec.target.preprocessing
    info: dict[str, Any] = {"source_expects": expected,
                            "source_expects_help": PREPROCESSING_HELP.get(expected or "", "unknown"),
                            "target_declares": declared, "warnings": []}
    if expected and declared and expected != declared:
        info["warnings"].append(
            f"the source weights expect '{expected}' input ({PREPROCESSING_HELP[expected]}), but "
            f"the target declares '{declared}' ({PREPROCESSING_HELP[declared]}); the transferred "
            "features will be wrong unless the target's input pipeline is changed.")
    return info


def _versions() -> dict[str, str]:
    versions = {"transfer-weights": __version__}
    for name in ("numpy", "keras", "tensorflow", "torch", "h5py"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "__version__"):
            versions[name] = str(module.__version__)
    return versions

