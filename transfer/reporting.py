"""The report of a run, built in one place from the plan, the source and the checks: the
transferred rows (each naming its source file), the preprocessing contract, the coverage of
each moved layer by the checks that proved it, the versions loaded. The engine calls these;
`transfer.report` holds the report as data and renders it."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from transfer import bands as band_maps
from transfer import kinds
from transfer._version import __version__
from transfer.adapter import Weights
from transfer.checksums import file_sha256
from transfer.composed import ComposedSource
from transfer.layers import float_bits
from transfer.mapping import Mapping
from transfer.plan import Pair, Plan, adapted_channels, source_convention, source_side
from transfer.report import Proof, Report, TransferredLayer, Verification, compact
from transfer.sources.known_models import PREPROCESSING_HELP


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


def border_notes(report: Report, plan: Plan, source: Weights) -> None:
    """A folded conv is exact away from zero-padded borders: say by how much a border pixel can
    differ (before the activation), from the source kernel and the folded offsets."""
    rows = []
    for pair, row in zip(plan.pairs, report.transferred):
        if pair.bands is not None and pair.bands.fold is not None and row.bands is not None:
            _, offset = pair.bands.input_map()
            info = dict(row.bands)
            if pair.kind is kinds.CONV2D and offset.any():
                kernel = source.read(pair.source.name)[0]
                hwio = kernel if pair.source.framework == "keras" else kernel.transpose(2, 3, 1, 0)
                bound = band_maps.border_bound(hwio, offset)
                info["border"] = (f"exact at every output pixel whose window stays inside the image; where a window "
                                  f"reaches the zero padding, the target sees what the source would see padded with "
                                  f"the target convention's mean instead of its own: at most {bound:.3g} per output "
                                  "there, before the activation")
                info["border_bound"] = bound
            elif pair.kind is kinds.DENSE or not offset.any():
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
        source=pair.source.name, target=pair.target.name, kind=pair.kind.name, conversion=pair.conversion,
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


def narrowed(plan: Plan) -> list[str]:
    """Target layers whose tensors are narrower than the source's (float32 into float16)."""
    return [p.target.name for p in plan.pairs
            if any(float_bits(t.dtype) < float_bits(s.dtype) for s, t in zip(p.source.tensors, p.target.tensors))]
