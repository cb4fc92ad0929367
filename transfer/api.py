"""The library calls: `transfer_weights` and `verify_weights`. A thin front door: inputs are
resolved into adapters (`transfer.resolve`) and the engine's one pipeline does the work."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from transfer import engine
from transfer.mapping import MappingInput, load_mapping
from transfer.output import check_writable
from transfer.report import Report
from transfer.resolve import (
    SourceInput,
    SourceWeights,
    TargetInput,
    check_source_files,
    open_converted,
    open_source_input,
    open_target,
)


class TransferResult(NamedTuple):
    """What `transfer_weights` returns: the target model (with its new weights) and the report.
    Unpacks as `model, report = transfer_weights(...)`."""

    model: Any
    report: Report


def transfer_weights(mapping: MappingInput, source: SourceInput = None, target: TargetInput = None, *,
                     source_weights: SourceWeights = None, strict: bool = False,
                     check: bool = False, verify: bool = False, checksums: bool = False,
                     out: str | Path | None = None, restore_on_failure: bool = True) -> TransferResult:
    """Move weights from `source` into `target` as `mapping` says, all or nothing.

    Args:
        mapping: a mapping file path, a YAML string or a dict (format 1, see README).
        source: None (the mapping's `source:`), a weights file path, a known model name
            (`vgg16`, `vgg16_bn`), or a live `keras.Model` / `torch.nn.Module`. With several
            sources (`sources:` in the mapping): {NAME: any of those}, for some or all names.
        target: None (the mapping's `target:`), a `.keras` file, a shipped builder name, a
            live model (changed in place), or a callable (or "module:callable") called with
            the mapping's `target.config` as keyword arguments that returns one.
        source_weights: overrides the mapping's `source.weights` (a path or `imagenet`); with
            several sources {NAME: PATH} (or "NAME=PATH" strings, as the command line gives them).
        strict: fail on any undeclared skipped source layer or untouched target layer.
        check: validate everything and read no tensor (and download nothing: a known
            model's layers come from its architecture); the target is left unchanged.
        verify: after the transfer, compare every moved layer (and the mapped stack) with
            the source on a probe input, in memory and again on the written file.
        checksums: record the sha256 of the source file and of every target tensor.
        out: write the target there (`.keras`, `.weights.h5`, `.pth`, `.pt`, `.safetensors`).
        restore_on_failure: for a target the caller holds, snapshot the layers about to change
            and put them back on any failure (the default). The snapshot costs a second buffer
            for each moved tensor (memory, or a temporary folder past 256 MiB); pass False
            only when a failed run's model is discarded anyway.

    Returns:
        `TransferResult(model, report)`.

    Raises:
        TransferWeightsError subclasses (see `transfer.errors`). On any of them no output
        file exists and a target the caller holds (a live model, or a factory's model) is
        exactly as it was: tensors, BatchNorm statistics and trainable flags (unless
        `restore_on_failure=False`).
    """
    spec = load_mapping(mapping)
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        check_writable(out_path, spec.target.framework)
    check_source_files(spec, source, source_weights)  # a missing file is said before any build
    opened = open_target(spec, target)
    with open_source_input(spec, source, source_weights, architecture_only=check) as source_adapter:
        options = engine.Options(strict=strict, check=check, verify=verify, checksums=checksums,
                                 out=out_path, protect=opened.caller_owned and restore_on_failure,
                                 target_built_here=not opened.caller_owned)
        report = engine.run(spec, source_adapter, opened.weights, options)
    return TransferResult(opened.weights.model, report)


def verify_weights(mapping: MappingInput, target: str | Path | Any, source: SourceInput = None, *,
                   source_weights: SourceWeights = None, target_factory: TargetInput = None) -> Report:
    """Check a model converted earlier (by this tool, another one, or by hand) against its
    source under `mapping`. Nothing is changed or written.

    Args:
        mapping: as for `transfer_weights`; its `target:` gives the architecture when
            `target` is a weights file.
        target: the converted model: a live model, a `.keras` file, or a weights file
            (`.weights.h5`, `.pth`, `.pt`, `.safetensors`) of the mapping's target.
        source, source_weights: as for `transfer_weights`.
        target_factory: builds the architecture a weights-file `target` is loaded into (a
            callable or "module:callable", called with `target.config`); default: the
            mapping's target.

    Returns:
        The report, every check in `report.verification[0]`.

    Raises:
        VerificationError (exit code 6) naming each diverging layer; its `.report` holds
        every check. Other TransferWeightsError subclasses for unreadable input.
    """
    spec = load_mapping(mapping)
    with open_converted(spec, target, target_factory) as converted, \
            open_source_input(spec, source, source_weights) as source_adapter:
        return engine.verify_converted(spec, source_adapter, converted)
