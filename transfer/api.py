"""The library call: `transfer_weights(mapping, source=..., target=...) -> Report`."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Callable, Union

from transfer import __version__
from transfer.checksums import file_sha256, tensor_sha256
from transfer.engine import Pair, Plan, WeightTarget, adapted_channels, execute, plan_transfer
from transfer.errors import MappingError
from transfer.keras_models import KerasModelWeights
from transfer.mapping import Mapping, MappingInput, ModelSpec, load_mapping
from transfer.output import check_writable, reload_model, save_model
from transfer.report import Report
from transfer.sources import Source, load_keras_file, open_source, runnable_model, source_from_object
from transfer.sources.known_models import PREPROCESSING_HELP
from transfer.targets import build_target, call_builder, load_callable
from transfer.torch_models import TorchModuleWeights
from transfer.verify import verify_transfer

SourceInput = Union[str, Path, Any, None]
TargetInput = Union[str, Path, Callable[..., Any], Any, None]


def transfer_weights(mapping: MappingInput, source: SourceInput = None, target: TargetInput = None, *,
                     source_weights: str | Path | None = None, strict: bool = False,
                     check: bool = False, verify: bool = False, checksums: bool = False,
                     out: str | Path | None = None) -> Report:
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
        verify: after the transfer, compare every moved layer (and the mapped stack) with
            the source on a probe input, in memory and again on the written file.
        checksums: record the sha256 of the source file and of every written tensor.
        out: write the target there (`.keras`, `.weights.h5`, `.pth`, `.pt`, `.safetensors`).

    Returns:
        The `Report`; `report.model` is the target model.

    Raises:
        TransferWeightsError subclasses (see `transfer.errors`). On any of them no output
        file exists, and the target is unchanged, with one exception: when writing `out`
        fails after a successful transfer, the live target keeps the transferred weights.
    """
    spec = load_mapping(mapping)
    target_model, target_weights = _resolve_target(spec, target)
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        check_writable(out_path, target_weights.framework)
    weights_source, source_spec = _resolve_source(spec, source, source_weights)
    try:
        plan = plan_transfer(spec, weights_source, target_weights, strict=strict)
        report = _new_report(spec, plan, weights_source, target_weights, target_model, check)
        if check:
            return report
        backup = {p.target.name: target_weights.read(p.target.name) for p in plan.pairs} if verify else {}
        moved = execute(plan, weights_source, target_weights, spec.origin)
        report.transferred = [_row(m.pair, list(m.notes)) for m in moved]
        if verify:
            source_model, why_not = runnable_model(weights_source, source_spec)
            result = verify_transfer(plan.pairs, weights_source, target_weights, "in memory", source_model)
            result.stack_note = result.stack_note or why_not
            report.verification.append(result.to_dict())
            if not result.ok:
                target_weights.assign(backup)  # put the target back as it was
                result.raise_if_failed(spec.origin)
        target_weights.freeze(plan.frozen)
        if checksums:
            report.source_sha256 = file_sha256(getattr(weights_source, "path", None))
            report.tensor_sha256 = {name: [tensor_sha256(a) for a in target_weights.read(name)]
                                    for name in target_weights.layers()}
        if out_path is not None:
            check_file = None
            if verify:
                check_file = _verify_written(plan, weights_source, target_weights, source_model, report, spec)
            save_model(target_model, target_weights.framework, out_path, check_file)
            report.output = str(out_path)
        return report
    finally:
        close = getattr(weights_source, "close", None)
        if close is not None:
            close()


def _new_report(spec: Mapping, plan: Plan, source: Source, target: WeightTarget, model: Any,
                check: bool) -> Report:
    report = Report(
        mapping=spec.origin, mapping_sha256=spec.sha256, source=source.description,
        target=target.description, skipped=plan.skipped, untouched=plan.untouched,
        frozen=plan.frozen, notes=plan.notes, checked_only=check, model=model,
        preprocessing=_preprocessing(spec, source), versions=_versions(),
        transferred=[_row(p, []) for p in plan.pairs],
        params_moved=sum(p.target.params for p in plan.pairs),
    )
    report.warnings += report.preprocessing.pop("warnings")
    return report


def _row(pair: Pair, notes: list[str]) -> dict[str, Any]:
    channels = adapted_channels(pair)
    adapted = ({"in_channels": list(channels), "policy": pair.rule.adapt} if channels else None)
    return {"source": pair.source.name, "target": pair.target.name, "kind": pair.kind,
            "conversion": pair.conversion, "params": pair.target.params, "notes": notes,
            "shapes": {"source": pair.source.shapes, "target": pair.target.shapes},
            "adapted": adapted}


def _verify_written(plan: Plan, source: Source, target: WeightTarget, source_model: Any,
                    report: Report, spec: Mapping) -> Callable[[Path], None]:
    """The check run on the written (temporary) file before it takes its final name."""
    def check_file(path: Path) -> None:
        reloaded = reload_model(target.model, target.framework, path)
        adapter = _adapter(reloaded, spec.target)
        result = verify_transfer(plan.pairs, source, adapter, "written file, reloaded", source_model)
        report.verification.append(result.to_dict())
        result.raise_if_failed(f"{spec.origin}: output {path.name}")

    return check_file


def _resolve_source(spec: Mapping, source: SourceInput,
                    source_weights: str | Path | None) -> tuple[Source, ModelSpec]:
    if source is not None and not isinstance(source, (str, Path)):
        return source_from_object(source), spec.source
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
    return open_source(model_spec), model_spec


def _resolve_target(spec: Mapping, target: TargetInput) -> tuple[Any, WeightTarget]:
    target_spec = spec.target
    if target is None and target_spec.file:
        target = spec.resolve_path(target_spec.file)
    if isinstance(target, Path) or (isinstance(target, str) and target.endswith(".keras")):
        model = load_keras_file(Path(target))
    elif isinstance(target, str):
        if ":" in target:
            model = call_builder(load_callable(target), target_spec.config, f"{spec.origin}: target.config",
                                 target_spec.seed, target_spec.framework)
        else:
            model = build_target(dataclasses.replace(target_spec, model=target), spec.origin)
    elif target is None:
        model = build_target(target_spec, spec.origin)
    elif callable(target) and not _is_model(target):
        model = call_builder(target, target_spec.config, f"{spec.origin}: target.config",
                             target_spec.seed, target_spec.framework)
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

