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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transfer import progress
from transfer.adapter import Weights
from transfer.band_check import check_band_pair
from transfer.buffers import Allocate
from transfer.checksums import file_sha256, tensor_sha256
from transfer.errors import IncompatibleWeightsError, StrictModeError, VerificationError
from transfer.layers import float_bits, numpy_dtype
from transfer.mapping import Mapping
from transfer.plan import Pair, Plan, convert_pair, plan_transfer
from transfer.report import Report, TransferredLayer, Verification
from transfer.reporting import border_notes, coverage, name_sources, new_report, transferred_row
from transfer.verify import PROBE_SEED, compare_written, exact_math, verify_transfer


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
    target_built_here: bool = False  # built from the mapping for this run, not a model the caller held


def run(mapping: Mapping, source: Weights, target: Weights, options: Options) -> Report:
    """Move the weights as the mapping says, all or nothing; the report of what was done."""
    plan = plan_transfer(mapping, source, target, strict=options.strict, establish=not options.check)
    report = new_report(mapping, plan, source, target, checked_only=options.check)
    if options.check:
        return report
    staged = check_tensors(plan, source, mapping.origin, memory=target.memory)
    # A streamed (large) transfer keeps memory near the target plus two tensors: its snapshot
    # goes to disk layer by layer too.
    snapshot = (target.snapshot([pair.target.name for pair in plan.pairs], 0 if staged is None else None)
                if options.protect else None)
    try:
        report.transferred = assign(plan, staged, source, target, mapping.origin)
        # the target holds its own copies now (or the very memory these arrays are views of):
        # kept to the end of the run, they would double its memory during verification
        del staged
        name_sources(report, plan, mapping, source, hashed=mapping.composed or options.checksums)
        border_notes(report, plan, source)
        if options.verify:
            _verify(report, plan, source, target, "in memory", source.runnable(), mapping.origin,
                    target_built_here=options.target_built_here)
            release = getattr(source, "release_runnable", None)  # file sources rebuild a model
            if release is not None:
                release()
            if options.strict:
                _refuse_unproven(report, [(p.target, p.unproven) for p in report.unproven], mapping.origin,
                                 "no check that runs the models reached them")
        target.freeze(plan.frozen)
        if options.checksums:
            report.source_sha256 = file_sha256(source.path)
            report.tensor_sha256 = {name: [tensor_sha256(a) for a in target.read(name)] for name in target.layers()}
        if options.out is not None:
            def check_written(path: Path) -> None:
                written = target.written(path)
                how = written.how if written is not None else "the file reloaded as a whole model"
                # a file not accountable layer by layer as written: the model rebuilt from it
                with written if written is not None else target.reload(path) as back:
                    _record(report, compare_written(plan.pairs, target, back, how),
                            f"{mapping.origin}: output {path.name}")

            checked = ", then reading it back and comparing it" if options.verify else ""
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
            runnable: Any, where: str, target_built_here: bool = False) -> None:
    """Every moved layer checked; a band-mapped first layer against its declared band map (its
    own check), and no stack check then: the two models are fed different bands."""
    banded = [pair for pair in plan.pairs if pair.bands is not None and not pair.bands.identity]
    own = {id(pair) for pair in banded}  # checked here, against the declared band map
    if banded:
        names = ", ".join(f"'{pair.target.name}'" for pair in banded)
        why = (f"input bands mapped on {names}: the two models are fed different bands, so the stack check "
               "cannot compare them (each moved layer is checked on its own, the band-mapped one against the "
               "declared band map)")
        runnable = (None, why)
    with progress.step(f"verifying {len(plan.pairs)} layers ({stage})"):
        result = verify_transfer([pair for pair in plan.pairs if id(pair) not in own], source, target, stage, runnable,
                                 target_built_here)
        if banded:
            rng = np.random.default_rng(PROBE_SEED + 21)
            with exact_math():
                checks = {pair.target.name: check_band_pair(pair, source.read(pair.source.name),
                                                            target.read(pair.target.name), rng) for pair in banded}
            others = iter(result.layers)
            result.layers = [checks[pair.target.name] if id(pair) in own else next(others) for pair in plan.pairs]
    report.coverage, report.model_coverage = coverage(plan, result)
    _record(report, result, where)


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


def check_tensors(plan: Plan, source: Weights, origin: str, stage_limit: int | None = None,
                  memory: Allocate | None = None) -> list[tuple[Pair, list[np.ndarray], tuple[str, ...]]] | None:
    """Read, convert and check every planned tensor before anything is assigned. Small
    transfers keep the prepared tensors (returned; read into the target's `memory` where it
    offers some); large ones are checked and dropped (None), and `assign` reads them again one
    layer at a time."""
    total = sum(t.size * np.dtype(numpy_dtype(t.dtype)).itemsize for p in plan.pairs for t in p.source.tensors)
    keep = total <= (STAGE_LIMIT_BYTES if stage_limit is None else stage_limit)
    staged = []
    with progress.step(f"reading and checking the tensors of {len(plan.pairs)} layers ({total / 1e6:,.1f} MB)",
                       total=len(plan.pairs)) as advance:
        for pair in plan.pairs:
            # checked and dropped: the cheapest look at the tensors will do (mapped file pages)
            prepared = _prepare(pair, source, origin, memory if keep else None, look_only=not keep)
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
        _, arrays, notes = _prepare(pair, source, origin, target.memory)
        target.assign({pair.target.name: arrays})
        rows.append(transferred_row(pair, notes))
    return rows


def _prepare(pair: Pair, source: Weights, origin: str, memory: Allocate | None = None,
             look_only: bool = False) -> tuple[Pair, list[np.ndarray], tuple[str, ...]]:
    """One pair's source tensors, checked and converted to the target's layout; `memory`: the
    target's, to read into (it then keeps those arrays as they are, and copies the others
    once, cast on the way); without it, made contiguous in the target's dtype. `look_only`:
    to be checked and dropped (`Weights.view`)."""
    arrays = source.view(pair.source.name) if look_only else source.read(pair.source.name, memory)
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
            lossy = float_bits(spec.dtype) < float_bits(stored.dtype)
            notes.append(f"cast {stored.dtype} -> {spec.dtype}" + (" (LOSSY: narrower)" if lossy else ""))
        final.append(array if memory is not None else np.ascontiguousarray(array, dtype=np.dtype(spec.dtype)))
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
