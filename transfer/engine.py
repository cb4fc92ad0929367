r"""The engine: the one pipeline every transfer runs through.

    plan -> check every tensor -> snapshot -> assign -> verify -> freeze -> write
                                     \_______ restore on any failure ________/

`run` plans (metadata only), reads, converts and checks every planned tensor, snapshots the
target layers it is about to change (copies), assigns, verifies, freezes and writes the output
(verified, atomic). Any failure from the snapshot on puts the target back exactly as it was,
tensors and trainable flags alike, and leaves no output file. `verify_converted` checks a
model converted earlier, changing nothing.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transfer import progress
from transfer._version import __version__
from transfer.adapter import Weights
from transfer.checksums import file_sha256, tensor_sha256
from transfer.errors import IncompatibleWeightsError, StrictModeError, VerificationError
from transfer.mapping import Mapping
from transfer.plan import Pair, Plan, adapted_channels, convert_pair, plan_transfer
from transfer.report import Proof, Report, TransferredLayer, Verification, compact
from transfer.sources.known_models import PREPROCESSING_HELP
from transfer.verify import compare_written, verify_transfer


@dataclass(frozen=True)
class Options:
    """How `run` behaves. `protect`: snapshot the target and restore it on failure (needed
    when the caller holds the model; a model built for this run is simply discarded)."""

    strict: bool = False
    check: bool = False
    verify: bool = False
    checksums: bool = False
    out: Path | None = None
    protect: bool = True


def run(mapping: Mapping, source: Weights, target: Weights, options: Options) -> Report:
    """Move the weights as the mapping says, all or nothing; the report of what was done."""
    plan = plan_transfer(mapping, source, target, strict=options.strict, establish=not options.check)
    report = new_report(mapping, plan, source, target, checked_only=options.check)
    if options.check:
        return report
    staged = check_tensors(plan, source, mapping.origin)
    # A streamed (large) transfer keeps memory near the target plus two tensors: its snapshot
    # goes to disk layer by layer too.
    snapshot = (target.snapshot([pair.target.name for pair in plan.pairs], 0 if staged is None else None)
                if options.protect else None)
    try:
        report.transferred = assign(plan, staged, source, target, mapping.origin)
        if options.verify:
            _verify(report, plan, source, target, "in memory", source.runnable(), mapping.origin)
            if options.strict:
                _refuse_unproven(report, [(p.target, p.unproven) for p in report.unproven], mapping.origin,
                                 "no check that runs the models reached them")
        target.freeze(plan.frozen)
        if options.checksums:
            report.source_sha256 = file_sha256(source.path)
            report.tensor_sha256 = {name: [tensor_sha256(a) for a in target.read(name)] for name in target.layers()}
        if options.out is not None:
            def check_written(path: Path) -> None:
                with target.reload(path) as reloaded:
                    _record(report, compare_written(plan.pairs, target, reloaded, "written file, reloaded"),
                            f"{mapping.origin}: output {path.name}")

            checked = ", then reloading and comparing it" if options.verify else ""
            with progress.step(f"writing {options.out}{checked}"):
                target.save(options.out, check_written if options.verify else None)
            report.output = str(options.out)
    except BaseException:  # errors, Ctrl-C and SIGTERM alike: put the target back, then re-raise
        if snapshot is not None:
            target.restore(snapshot)
        raise
    finally:
        if snapshot is not None:
            snapshot.close()
    return report


def verify_converted(mapping: Mapping, source: Weights, target: Weights) -> Report:
    """Check a target converted earlier (by this tool or by hand) against its source under the
    mapping, changing and writing nothing. Raises `VerificationError` (with `.report`) when a
    layer or the stack diverges."""
    plan = plan_transfer(mapping, source, target)
    report = new_report(mapping, plan, source, target, checked_only=False)
    report.verified_only = True
    _verify(report, plan, source, target, "converted model", source.runnable(), mapping.origin)
    return report


def _verify(report: Report, plan: Plan, source: Weights, target: Weights, stage: str,
            runnable: Any, where: str) -> None:
    with progress.step(f"verifying {len(plan.pairs)} layers ({stage})"):
        result = verify_transfer(plan.pairs, source, target, stage, runnable)
    report.coverage, report.model_coverage = coverage(plan, result)
    _record(report, result, where)


def coverage(plan: Plan, result: Verification) -> tuple[list[Proof], str]:
    """For every moved layer, the checks that proved it and what none covered; and what no
    check covers beyond single layers."""
    by_target = {c.target: c for c in result.layers}
    covered = set(result.stack_covered)
    proofs = []
    for pair in plan.pairs:
        name = pair.target.name
        checks = [by_target[name].method] if name in by_target and by_target[name].ok else []
        if pair.inputs is not None and not pair.assumptions and (pair.inputs.source or pair.inputs.target):
            checks.append("flatten order read from both models")
        if name in covered:
            checks.append(f"stack check: the models' outputs at '{name}' agree")
        proofs.append(Proof(pair.source.name, name, tuple(checks), () if name in covered else pair.assumptions))
    if result.stack is None:
        model = (f"how the layers are connected (padding, activations, layers without weights) is unchecked: "
                 f"{result.stack_note or 'no stack check'}")
    elif result.stack_note.startswith("the stack check stops"):
        model = result.stack_note
    else:
        model = ""
    return proofs, model


def _refuse_unproven(report: Report, unproven: list[tuple[str, tuple[str, ...]]], origin: str, why: str) -> None:
    if not unproven:
        return
    listed = "; ".join(f"'{name}': {', '.join(reasons)}" for name, reasons in unproven[:10])
    more = f"; and {len(unproven) - 10} more (see --report)" if len(unproven) > 10 else ""
    raise StrictModeError(f"{origin}: --strict: {len(unproven)} moved layer(s) unproven ({why}): {listed}{more}. "
                          "Map the layers in between so that the stack check reaches them, or run without "
                          "--strict to accept them as declared.", report=report)


def _record(report: Report, result: Verification, where: str) -> None:
    report.verification.append(result)
    if not result.ok:
        raise VerificationError(result.error_message(where), report=report)


# Up to this many source bytes, every tensor is read once and held until all are checked
# (fast). Above it, a first pass reads and checks every tensor without keeping it, and a
# second pass reads, converts and assigns one layer at a time, so peak memory stays near the
# target plus twice the largest tensor, at the cost of reading the source twice.
STAGE_LIMIT_BYTES = 256 << 20


def check_tensors(plan: Plan, source: Weights, origin: str,
                  stage_limit: int | None = None) -> list[tuple[Pair, list[np.ndarray], tuple[str, ...]]] | None:
    """Read, convert and check every planned tensor before anything is assigned. Small
    transfers keep the prepared tensors (returned); large ones are checked and dropped (None),
    and `assign` reads them again one layer at a time."""
    total = sum(t.size * np.dtype(_numpy_dtype(t.dtype)).itemsize for p in plan.pairs for t in p.source.tensors)
    keep = total <= (STAGE_LIMIT_BYTES if stage_limit is None else stage_limit)
    staged = []
    with progress.step(f"reading and checking the tensors of {len(plan.pairs)} layers ({total / 1e6:,.1f} MB)",
                       total=len(plan.pairs)) as advance:
        for pair in plan.pairs:
            prepared = _prepare(pair, source, origin)
            if keep:
                staged.append(prepared)
            advance()
    return staged if keep else None


def assign(plan: Plan, staged: list[tuple[Pair, list[np.ndarray], tuple[str, ...]]] | None,
           source: Weights, target: Weights, origin: str) -> list[TransferredLayer]:
    """Write the checked tensors into the target; the rows of the report."""
    if staged is not None:
        target.assign({pair.target.name: arrays for pair, arrays, _ in staged})
        return [transferred_row(pair, notes) for pair, _, notes in staged]
    rows = []
    for pair in plan.pairs:
        _, arrays, notes = _prepare(pair, source, origin)
        target.assign({pair.target.name: arrays})
        rows.append(transferred_row(pair, notes))
    return rows


def transferred_row(pair: Pair, notes: tuple[str, ...] = ()) -> TransferredLayer:
    channels = adapted_channels(pair)
    return TransferredLayer(
        source=pair.source.name, target=pair.target.name, kind=pair.kind, conversion=pair.conversion,
        params=pair.target.params, shapes={"source": pair.source.shapes, "target": pair.target.shapes},
        notes=notes, adapted={"in_channels": list(channels), "policy": pair.rule.adapt} if channels else None,
        inputs=pair.inputs.describe() if pair.inputs is not None and (pair.inputs.source or pair.inputs.target)
        else None, assumptions=pair.assumptions)


def new_report(mapping: Mapping, plan: Plan, source: Weights, target: Weights, checked_only: bool) -> Report:
    preprocessing, warnings = preprocessing_contract(mapping, source)
    lossy = narrowed(plan)
    if lossy:
        warnings.append(f"{len(lossy)} target layer(s) hold a narrower float type than the source "
                        f"({compact(lossy)}): the values are rounded; --verify tolerances follow the "
                        "narrower type.")
    return Report(
        mapping=mapping.origin, mapping_sha256=mapping.sha256, source=source.description,
        target=target.description, skipped=plan.skipped, untouched=plan.untouched,
        frozen=plan.frozen, notes=plan.notes, warnings=warnings, checked_only=checked_only,
        preprocessing=preprocessing, versions=versions(),
        transferred=[transferred_row(p) for p in plan.pairs],
        params_moved=sum(p.target.params for p in plan.pairs),
    )


def preprocessing_contract(mapping: Mapping, source: Weights) -> tuple[dict[str, Any], list[str]]:
    """What input the source weights expect, what the target declares, and a warning when
    they differ."""
    expected = source.preprocessing or mapping.source.preprocessing
    declared = mapping.target.preprocessing
    info: dict[str, Any] = {"source_expects": expected,
                            "source_expects_help": PREPROCESSING_HELP.get(expected or "", "unknown"),
                            "target_declares": declared}
    warnings = []
    detail = source.preprocessing_detail
    if detail:
        info["source_config"] = detail
        if expected is None and declared:
            warnings.append(f"the source's {detail['file']} says mean {detail['mean']}, std {detail['std']}, "
                            f"which is none of the named conventions; the target declares '{declared}' "
                            f"({PREPROCESSING_HELP[declared]}): check the target's input pipeline.")
    if expected and declared and expected != declared:
        warnings.append(
            f"the source weights expect '{expected}' input ({PREPROCESSING_HELP[expected]}), but "
            f"the target declares '{declared}' ({PREPROCESSING_HELP[declared]}); the transferred "
            "features will be wrong unless the target's input pipeline is changed.")
    return info, warnings


def versions() -> dict[str, str]:
    """Versions of this package and of every framework this run loaded."""
    found = {"transfer-weights": __version__}
    for name in ("numpy", "keras", "tensorflow", "torch", "torchvision", "h5py", "safetensors"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "__version__"):
            found[name] = str(module.__version__)
    return found


def _numpy_dtype(name: str) -> str:
    return "float32" if name == "bfloat16" else name


def narrowed(plan: Plan) -> list[str]:
    """Target layers whose tensors are narrower than the source's (float32 into float16)."""
    def bits(dtype: str) -> int:
        return 16 if dtype == "bfloat16" else np.finfo(dtype).bits if np.dtype(dtype).kind == "f" else 64

    return [p.target.name for p in plan.pairs
            if any(bits(t.dtype) < bits(s.dtype) for s, t in zip(p.source.tensors, p.target.tensors))]


def _prepare(pair: Pair, source: Weights, origin: str) -> tuple[Pair, list[np.ndarray], tuple[str, ...]]:
    """One pair's source tensors, checked and converted to the target's layout and dtype."""
    arrays = source.read(pair.source.name)
    notes = _check_values(pair, arrays, source)
    final = []
    # a kind may hold more tensors on the target's side (an attention's 4 torch tensors are 8 in
    # Keras): every converted tensor is kept, each compared with the source tensor at its place
    # (or the last one) for the dtype note
    stored_specs = [pair.source.tensors[min(i, len(pair.source.tensors) - 1)] for i in range(len(pair.target.tensors))]
    for array, spec, stored in zip(convert_pair(pair, arrays, origin), pair.target.tensors, stored_specs):
        if list(array.shape) != list(spec.shape):  # planned shapes were checked; files can lie
            raise IncompatibleWeightsError(
                f"{source.path or source.description}: layer '{pair.source.name}' "
                f"holds shape {array.shape}, but its header said otherwise; target "
                f"'{pair.target.name}' needs {spec.shape}.")
        if stored.dtype != spec.dtype:  # as stored (bfloat16 is read as float32, exactly)
            lossy = np.finfo(_numpy_dtype(spec.dtype)).bits < np.finfo(_numpy_dtype(stored.dtype)).bits
            notes.append(f"cast {stored.dtype} -> {spec.dtype}" + (" (LOSSY: narrower)" if lossy else ""))
        final.append(np.ascontiguousarray(array, dtype=np.dtype(spec.dtype)))
    return pair, final, tuple(dict.fromkeys(notes))


def _all_finite(array: np.ndarray) -> bool:
    """Fast path: a NaN or an infinity makes the sum of squares non-finite (one BLAS pass, no
    temporary array). A non-finite sum can also come from huge finite values, so the caller
    then counts exactly."""
    flat = array.reshape(-1)
    return bool(np.isfinite(np.vdot(flat, flat))) if flat.dtype.kind == "f" and flat.size else True


def _check_values(pair: Pair, arrays: list[np.ndarray], source: Weights) -> list[str]:
    notes: list[str] = []
    for spec, array in zip(pair.source.tensors, arrays):
        if not np.issubdtype(array.dtype, np.floating):
            raise IncompatibleWeightsError(
                f"{source.path or source.description}: tensor '{spec.name}' of layer "
                f"'{pair.source.name}' has dtype {array.dtype}; weights must be floating point.")
        if _all_finite(array):
            continue
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise IncompatibleWeightsError(
                f"{source.path or source.description}: tensor '{spec.name}' of layer "
                f"'{pair.source.name}' holds {bad} NaN or infinite value(s); nothing was transferred.")
    return notes
