"""The transfer report as data: typed rows, `ok` derived from what happened, and two pure
renderers, `summary` (a few console lines) and `to_dict` (the full JSON record). Writing files
and holding the model belong to the callers (the CLI, `TransferResult`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

LAYER_TOLERANCE = 1e-5  # relative max-abs difference of one layer, float32
STACK_TOLERANCE = 1e-4  # errors of many layers add up
MEASURE = "max|a-b| / max|reference|"


@dataclass(frozen=True)
class TransferredLayer:
    source: str
    target: str
    kind: str
    conversion: str
    params: int
    shapes: dict[str, list[list[int]]]  # {"source": [...], "target": [...]}
    notes: tuple[str, ...] = ()
    adapted: dict[str, Any] | None = None  # {"in_channels": [from, to], "policy": ...}
    inputs: str | None = None  # a dense layer: where each side's inputs come from (flatten order)
    assumptions: tuple[str, ...] = ()  # what the conversion rests on that no model said
    changed: str | None = None  # a declared change of the tensor (a resampled position embedding, mapped bands)
    # a first layer's input bands: {"source": [...], "target": [...], "origin": {band: origin}, "folded": ...}
    bands: dict[str, Any] | None = None
    source_name: str | None = None  # with several sources: the name of the one this layer came from
    source_file: str | None = None  # the file the source layer was read from (None: a live model)
    source_sha256: str | None = None  # that file's sha256 (always with several sources; else with checksums)


@dataclass(frozen=True)
class SkippedLayer:
    layer: str
    reason: str
    declared: bool


@dataclass(frozen=True)
class UntouchedLayer:
    layer: str
    declared: bool


@dataclass(frozen=True)
class LayerCheck:
    """One comparison: a layer on a probe, identical tensors, or model outputs at a layer."""

    source: str
    target: str
    method: str
    max_abs_diff: float
    rel_diff: float
    tolerance: float
    zero_reference: bool = False  # compared by absolute difference: a relative one would divide by 0

    @property
    def ok(self) -> bool:
        return bool(self.rel_diff <= self.tolerance)

    def describe(self) -> str:
        measure = "absolute difference (the reference is all zeros)" if self.zero_reference else \
            "relative difference"
        return (f"'{self.target}' (from '{self.source}', {self.method}): {measure} "
                f"{self.rel_diff:.3g} > {self.tolerance:g}, max abs {self.max_abs_diff:.3g}")


WRITTEN_STAGE = "written file"  # the stage that reads the output back and compares it bit for bit


@dataclass
class Verification:
    """The checks of one stage ("in memory", "written file", "converted model"); `read_back`:
    how the written file was read back (its stage only).

    `stack` compares the two models' outputs at the last mapped layer; when it fails,
    `localized` holds the output comparison at every mapped layer up to the first that diverges.
    """

    stage: str
    layers: list[LayerCheck] = field(default_factory=list)
    stack: LayerCheck | None = None
    stack_note: str = ""
    localized: list[LayerCheck] = field(default_factory=list)
    stack_covered: list[str] = field(default_factory=list)  # target layers whose output the stack matched
    read_back: str = ""
    stack_probe: str = ""  # the stack check's probe, HxWxC

    @property
    def ok(self) -> bool:
        return (all(c.ok for c in self.layers) and (self.stack is None or self.stack.ok)
                and all(c.ok for c in self.localized))

    @property
    def failed(self) -> list[LayerCheck]:
        """Failed checks, most telling first: layers, then where the stack first diverged."""
        failed = [c for c in self.layers if not c.ok]
        first = next((c for c in self.localized if not c.ok), None)
        if first is not None:
            failed.append(first)
        if self.stack is not None and not self.stack.ok and self.stack is not first:
            failed.append(self.stack)
        return failed

    def error_message(self, where: str) -> str:
        failed = self.failed
        lines = [(f"{where}: verification failed ({self.stage}): first diverging layer {failed[0].describe()}; "
                 f"{len(failed)} check(s) failed.")]
        lines += [f"  {check.describe()}" for check in failed[1:21]]
        if len(failed) > 21:
            lines.append(f"  and {len(failed) - 21} more (see --report)")
        return "\n".join(lines)


@dataclass(frozen=True)
class Proof:
    """What proved one moved layer: the checks that reached it, and what none covered."""

    source: str
    target: str
    checks: tuple[str, ...]
    unproven: tuple[str, ...] = ()

    @property
    def proven(self) -> bool:
        return bool(self.checks) and not self.unproven


@dataclass
class Report:
    """What a transfer did (or, with `checked_only`, would do)."""

    mapping: str
    source: str
    target: str
    transferred: list[TransferredLayer] = field(default_factory=list)
    skipped: list[SkippedLayer] = field(default_factory=list)
    untouched: list[UntouchedLayer] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    params_moved: int = 0
    preprocessing: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checked_only: bool = False
    verified_only: bool = False  # `transfer-weights verify`: a model converted earlier checked, nothing changed
    output: str | None = None
    mapping_sha256: str | None = None
    source_sha256: str | None = None
    tensor_sha256: dict[str, list[str]] = field(default_factory=dict)
    verification: list[Verification] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    coverage: list[Proof] = field(default_factory=list)  # --verify: per moved layer, what proved it
    # --verify: what no check covers beyond single layers (no stack check, or where it stopped)
    model_coverage: str = ""
    # several sources: NAME -> {description, file, sha256, layers (how many moved from it)}
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verification)

    @property
    def unproven(self) -> list[Proof]:
        return [p for p in self.coverage if p.unproven]


def verification_dict(result: Verification) -> dict[str, Any]:
    data: dict[str, Any] = {
        "stage": result.stage, "ok": result.ok,
        "tolerance": {"layer": LAYER_TOLERANCE, "stack": STACK_TOLERANCE, "measure": MEASURE},
        "layers": [_check_dict(c) for c in result.layers],
        "stack": _check_dict(result.stack) if result.stack else None,
    }
    if result.stack_note:
        data["stack_note"] = result.stack_note
    if result.read_back:
        data["read_back"] = result.read_back
    if result.stack_probe:
        data["stack_probe"] = result.stack_probe
    if result.localized:
        data["localized"] = [_check_dict(c) for c in result.localized]
    if result.stack_covered:
        data["stack_covered"] = list(result.stack_covered)
    return data


def _check_dict(check: LayerCheck) -> dict[str, Any]:
    return {**asdict(check), "ok": check.ok}


def to_dict(report: Report) -> dict[str, Any]:
    """The JSON record (keys documented in the README)."""
    data = asdict(report)
    if not report.sources:
        del data["sources"]  # present with several sources only
    data["transferred"] = [_row_dict(t) for t in report.transferred]
    data["verification"] = [verification_dict(v) for v in report.verification]
    data["coverage"] = [{**asdict(p), "checks": list(p.checks), "unproven": list(p.unproven), "proven": p.proven}
                        for p in report.coverage]
    data["unproven"] = [p.target for p in report.unproven]
    data["ok"] = report.ok
    return data


# row keys present only where they say something: a band map, the source's name among several,
# the file a layer was read from and its sha256
_OPTIONAL_ROW_KEYS = ("bands", "source_name", "source_file", "source_sha256")


def _row_dict(row: TransferredLayer) -> dict[str, Any]:
    data = {**asdict(row), "notes": list(row.notes)}
    for key in _OPTIONAL_ROW_KEYS:
        if data[key] is None:
            del data[key]
    return data


def to_json(report: Report) -> str:
    return json.dumps(to_dict(report), indent=2) + "\n"


def summary(report: Report) -> str:
    """A few lines a person reads at a glance; the JSON has the full table."""
    if report.verified_only:
        lines = [(f"transfer-weights: checked {len(report.transferred)} layers ({report.params_moved:,} parameters) "
                  f"of {report.target} against {report.source}; nothing was changed or written")]
    else:
        verb = "would move" if report.checked_only else "moved"
        lines = [(f"transfer-weights: {verb} {len(report.transferred)} layers "
                  f"({report.params_moved:,} parameters) from {report.source} into {report.target}")]
    if report.sources:
        lines.append("  from " + "; ".join(
            f"{name}: {info['layers']} layer(s) of {info['file'] or info['description']}"
            + (f" (sha256 {info['sha256'][:12]}...)" if info.get("sha256") else "")
            for name, info in report.sources.items()))
    for declared, label in ((True, "declared in skip"), (False, "NO RULE MATCHED")):
        names = [s.layer for s in report.skipped if s.declared == declared]
        if names:
            lines.append(f"  skipped {len(names)} source layer(s), {label}: {compact(names)}")
    for declared, label in ((True, "declared"), (False, "NOT DECLARED")):
        names = [u.layer for u in report.untouched if u.declared == declared]
        if names:
            lines.append(f"  left {len(names)} target layer(s) at their initial values, {label}: {compact(names)}")
    if report.frozen and not report.verified_only:
        verb = "would freeze" if report.checked_only else "froze"
        lines.append(f"  {verb} {len(report.frozen)} target layer(s): {compact(report.frozen)}")
    adapted = [f"{t.target} {t.adapted['in_channels'][0]}->{t.adapted['in_channels'][1]} ({t.adapted['policy']})"
               for t in report.transferred if t.adapted]
    if adapted:
        lines.append(f"  ADAPTED input channels: {', '.join(adapted)}")
    changed = [f"{t.target} ({t.changed})" for t in report.transferred if t.changed]
    if changed:
        lines.append(f"  CHANGED, not converted (declared in the mapping): {'; '.join(changed)}")
    lines += _band_lines(report)
    inputs = [f"{t.target} ({t.inputs})" for t in report.transferred if t.inputs]
    if inputs:
        lines.append(f"  dense inputs: {'; '.join(inputs[:3])}" + (f"; and {len(inputs) - 3} more" if len(inputs) > 3
                                                                    else ""))
    converted = sorted({t.conversion for t in report.transferred} - {"none (same framework)"})
    if converted:
        lines.append(f"  layouts converted: {'; '.join(converted)}")
    lines += [_verification_line(result, report) for result in report.verification]
    if report.unproven:
        lines.append(f"  UNPROVEN: {len(report.unproven)} moved layer(s) rest on what no check covered:")
        lines += [f"    '{p.target}' (from '{p.source}'): {'; '.join(p.unproven)}" for p in report.unproven[:10]]
        if len(report.unproven) > 10:
            lines.append(f"    and {len(report.unproven) - 10} more (see --report)")
    assumed = [t for t in report.transferred if t.assumptions]
    if assumed and not report.verification and not report.checked_only:
        lines.append("  ASSUMED (no --verify): " + "; ".join(f"'{t.target}': {', '.join(t.assumptions)}"
                                                          for t in assumed[:3])
                     + (f"; and {len(assumed) - 3} more" if len(assumed) > 3 else ""))
    if report.coverage and report.model_coverage:
        lines.append(f"  not covered: {report.model_coverage}")
    lines += [f"  note: {n}" for n in report.notes]
    lines += [f"  WARNING: {w}" for w in report.warnings]
    if report.output:
        lines.append(f"  wrote {report.output}")
    return "\n".join(lines)


def _band_lines(report: Report) -> list[str]:
    """Per band-mapped layer: each target band's origin, and how to feed it where a convention says."""
    lines = []
    for layer, info in report.preprocessing.get("bands", {}).items():
        parts = []
        for row in info["target_bands"]:
            text = f"{row['band']} <- {row['origin']}"
            if row.get("mean") is not None:
                text += f" (fed as '{row['convention']}': mean {row['mean']:.6g}, std {row['std']:.6g})"
            elif row["origin"] == "zero":
                text += " (ignored)"
            parts.append(text)
        lines.append(f"  input bands of '{layer}' (on the raw 0-255 scale): {'; '.join(parts)}")
    for row in report.transferred:
        if row.bands and row.bands.get("border"):
            lines.append(f"  border of '{row.target}' (folded): {row.bands['border']}")
    return lines


def _verification_line(result: Verification, report: Report) -> str:
    """What the checks of one stage showed, counting as verified only the layers proven."""
    if result.read_back:
        same = sum(c.ok for c in result.layers)
        return (f"  written file checked: {same}/{len(result.layers)} layers bit-identical to the model verified "
                f"in memory ({result.read_back})")
    worst = max((c.rel_diff for c in result.layers if c.tolerance > 0), default=0.0)
    stack = (f"; stack at '{result.stack.target}' {result.stack.rel_diff:.2g} ({result.stack_probe} probe)"
             if result.stack
             else f"; {result.stack_note}" if result.stack_note.startswith("no stack check")
             else f"; no stack check: {result.stack_note}")
    unproven = {p.target for p in report.unproven}
    proven = [c for c in result.layers if c.ok and c.target not in unproven]
    held = f"{len(proven)}/{len(result.layers)} layers" + (f" ({len(unproven)} UNPROVEN)" if unproven else "")
    return f"  verified ({result.stage}): {held} within {LAYER_TOLERANCE:g} (worst {worst:.2g}){stack}"


def compact(names: list[str], keep: int = 6) -> str:
    """`a, b, c, ..., y, z` for long lists: enough to recognise the group."""
    if len(names) <= keep:
        return ", ".join(names)
    return ", ".join(names[:3]) + f", ... ({len(names) - 5} more), " + ", ".join(names[-2:])


def error_dict(error: BaseException, exit_code: int) -> dict[str, Any]:
    """The JSON written to --report when a run fails, so CI jobs can read why."""
    return {"ok": False, "exit_code": exit_code, "error_type": type(error).__name__, "error": str(error)}
