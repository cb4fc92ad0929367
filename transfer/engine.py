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

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transfer import bands as band_maps
from transfer import progress
from transfer._version import __version__
from transfer.adapter import Weights
from transfer.band_check import check_band_pair
from transfer.checksums import file_sha256, tensor_sha256
from transfer.composed import ComposedSource
from transfer.errors import IncompatibleWeightsError, StrictModeError, VerificationError
from transfer.mapping import Mapping
from transfer.plan import Pair, Plan, adapted_channels, convert_pair, plan_transfer, source_convention, source_side
from transfer.report import Proof, Report, TransferredLayer, Verification, compact
from transfer.sources.known_models import PREPROCESSING_HELP
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
    staged = check_tensors(plan, source, mapping.origin)
    # A streamed (large) transfer keeps memory near the target plus two tensors: its snapshot
    # goes to disk layer by layer too.
    snapshot = (target.snapshot([pair.target.name for pair in plan.pairs], 0 if staged is None else None)
                if options.protect else None)
    try:
        report.transferred = assign(plan, staged, source, target, mapping.origin)
        name_sources(report, plan, mapping, source, hashed=mapping.composed or options.checksums)
        _border_notes(report, plan, source)
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


def name_sources(report: Report, plan: Plan, mapping: Mapping, source: Weights, hashed: bool) -> None:
    """Every transferred row names its source (several: by name) and file, and the file's sha256
    when `hashed` (always with several sources); `report.sources` lists them."""
    parts: dict[str | None, Weights] = {None: source}
    if isinstance(source, ComposedSource):
        parts = {name: part for name, part in source.parts.items()}
    digests = {name: file_sha256(part.path) if hashed else None for name, part in parts.items()}
    files = {name: str(part.path) if part.path is not None else None for name, part in parts.items()}
    rows = []
    for pair, row in zip(plan.pairs, report.transferred):
        name, _, _ = source_side(mapping, source, pair.source.name)
        rows.append(dataclasses.replace(row, source_name=name, source_file=files[name],
                                        source_sha256=digests[name]))
    report.transferred = rows
    if isinstance(source, ComposedSource):
        report.sources = {name: {"description": part.description, "file": files[name], "sha256": digests[name],
                                 "layers": sum(1 for row in rows if row.source_name == name)}
                          for name, part in source.parts.items() if name is not None}


def _border_notes(report: Report, plan: Plan, source: Weights) -> None:
    """A folded conv is exact away from zero-padded borders: say by how much a border pixel can
    differ (before the activation), from the source kernel and the folded offsets."""
    rows = []
    for pair, row in zip(plan.pairs, report.transferred):
        if pair.bands is not None and pair.bands.fold is not None and row.bands is not None:
            _, offset = pair.bands.input_map()
            info = dict(row.bands)
            if pair.kind == "conv2d" and offset.any():
                kernel = source.read(pair.source.name)[0]
                hwio = kernel if pair.source.framework == "keras" else kernel.transpose(2, 3, 1, 0)
                bound = band_maps.border_bound(hwio, offset)
                info["border"] = (f"exact at every output pixel whose window stays inside the image; where a window "
                                  f"reaches the zero padding, the target sees what the source would see padded with "
                                  f"the target convention's mean instead of its own: at most {bound:.3g} per output "
                                  "there, before the activation")
                info["border_bound"] = bound
            elif pair.kind == "dense" or not offset.any():
                info["border"] = "exact everywhere (no offset to pad, or no padding)"
            else:
                info["border"] = ("exact away from zero-padded borders; at the border the padded pixels stand for the "
                                  "target convention's mean instead of the source's")
            row = dataclasses.replace(row, bands=info)
        rows.append(row)
    report.transferred = rows


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
    bands = pair.bands
    band_info = None if bands is None else {
        "source": list(bands.source), "target": list(bands.target),
        "origin": dict(zip(bands.target, bands.origins)),
        "folded": {"from": bands.fold[0], "to": bands.fold[1]} if bands.fold else None}
    changed = (f"resampled ({pair.rule.resample[0]}) from {pair.source.shapes[0]} to {pair.target.shapes[0]}"
               if pair.rule.resample else bands.changed() if bands is not None and not bands.identity else None)
    return TransferredLayer(
        source=pair.source.name, target=pair.target.name, kind=pair.kind, conversion=pair.conversion,
        params=pair.target.params, shapes={"source": pair.source.shapes, "target": pair.target.shapes},
        notes=notes, adapted={"in_channels": list(channels), "policy": pair.rule.adapt} if channels else None,
        inputs=pair.inputs.describe() if pair.inputs is not None and (pair.inputs.source or pair.inputs.target)
        else None, assumptions=pair.assumptions, changed=changed, bands=band_info)


def new_report(mapping: Mapping, plan: Plan, source: Weights, target: Weights, checked_only: bool) -> Report:
    preprocessing, warnings = preprocessing_contract(mapping, source, plan)
    lossy = narrowed(plan)
    if lossy:
        warnings.append(f"{len(lossy)} target layer(s) hold a narrower float type than the source "
                        f"({compact(lossy)}): the values are rounded; --verify tolerances follow the "
                        "narrower type.")
    report = Report(
        mapping=mapping.origin, mapping_sha256=mapping.sha256, source=source.description,
        target=target.description, skipped=plan.skipped, untouched=plan.untouched,
        frozen=plan.frozen, notes=plan.notes, warnings=warnings, checked_only=checked_only,
        preprocessing=preprocessing, versions=versions(),
        transferred=[transferred_row(p) for p in plan.pairs],
        params_moved=sum(p.target.params for p in plan.pairs),
    )
    name_sources(report, plan, mapping, source, hashed=False)
    return report


def _expected_input(mapping: Mapping, source: Weights, info: dict[str, Any], warnings: list[str]) -> str | None:
    """The convention the source weights expect; with several sources, each one's, and the one
    they agree on (a warning when they do not)."""
    if not isinstance(source, ComposedSource):
        return source.preprocessing or mapping.source.preprocessing
    each = {name: part.preprocessing or mapping.sources[name].preprocessing for name, part in source.parts.items()}
    info["sources_expect"] = each
    known = sorted({value for value in each.values() if value})
    if len(known) > 1:
        warnings.append(f"the sources expect different input ({', '.join(f'{n}: {v}' for n, v in each.items() if v)}); "
                        "what the target is fed must suit the source of its first layers.")
        return None
    return known[0] if known else None


def preprocessing_contract(mapping: Mapping, source: Weights,
                           plan: Plan | None = None) -> tuple[dict[str, Any], list[str]]:
    """What input the source weights expect, what the target declares, and a warning when
    they differ (unless a rule folds the one into the other). With band maps: per target band,
    its origin and, where a convention says, its mean and std."""
    warnings: list[str] = []
    declared = mapping.target.preprocessing
    info: dict[str, Any] = {}
    expected = _expected_input(mapping, source, info, warnings)
    info.update({"source_expects": expected,
                 "source_expects_help": PREPROCESSING_HELP.get(expected or "", "unknown"),
                 "target_declares": declared})
    banded = [pair for pair in (plan.pairs if plan else []) if pair.bands is not None]
    folded = [pair for pair in banded if pair.bands is not None and pair.bands.fold is not None]
    for pair in banded:
        assert pair.bands is not None
        _, spec, adapter = source_side(mapping, source, pair.source.name)
        convention = source_convention(spec, adapter)
        rows = pair.bands.target_contract()
        for row in rows:
            origin = str(row["origin"])
            if pair.bands.fold is None and origin in pair.bands.source:
                stats = band_maps.band_stats(convention, origin)
                row.update(convention=convention, mean=stats[0] if stats else None, std=stats[1] if stats else None)
        info.setdefault("bands", {})[pair.target.name] = {"scale": band_maps.SCALE, "target_bands": rows}
    if folded:
        fold = folded[0].bands.fold if folded[0].bands is not None else None
        assert fold is not None
        info["folded"] = {"layers": [pair.target.name for pair in folded], "from": fold[0], "to": fold[1]}
        info["target_feeds"] = fold[1]  # the fold answers a mismatch of the two conventions
    detail = source.preprocessing_detail
    if detail:
        info["source_config"] = detail
        if expected is None and declared:
            warnings.append(f"the source's {detail['file']} says mean {detail['mean']}, std {detail['std']}, "
                            f"which is none of the named conventions; the target declares '{declared}' "
                            f"({PREPROCESSING_HELP[declared]}): check the target's input pipeline.")
    if expected and declared and expected != declared and not folded:
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
