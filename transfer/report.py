"""The transfer report: a short console summary and the full record as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transfer.output import atomic_write_text


@dataclass
class Report:
    """What a transfer did (or, with `checked_only`, would do). `to_dict()` is the JSON."""

    mapping: str
    source: str
    target: str
    transferred: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    untouched: list[dict[str, Any]] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    params_moved: int = 0
    preprocessing: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checked_only: bool = False
    output: str | None = None
    mapping_sha256: str | None = None
    source_sha256: str | None = None
    tensor_sha256: dict[str, list[str]] = field(default_factory=dict)
    verification: list[dict[str, Any]] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    model: Any = field(default=None, repr=False, compare=False)  # the target, not serialised

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("model")
        data["ok"] = True
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def write(self, path: str | Path) -> None:
        atomic_write_text(Path(path), self.to_json())

    def summary(self) -> str:
        """A few lines a person reads at a glance; the JSON has the full table."""
        verb = "would move" if self.checked_only else "moved"
        lines = [f"transfer-weights: {verb} {len(self.transferred)} layers "
                 f"({self.params_moved:,} parameters) from {self.source} into {self.target}"]
        for declared, label in ((True, "declared in skip"), (False, "NO RULE MATCHED")):
            names = [s["layer"] for s in self.skipped if s["declared"] == declared]
            if names:
                lines.append(f"  skipped {len(names)} source layer(s), {label}: {compact(names)}")
        for declared, label in ((True, "declared"), (False, "NOT DECLARED")):
            names = [u["layer"] for u in self.untouched if u["declared"] == declared]
            if names:
                lines.append(f"  left {len(names)} target layer(s) at their initial values, "
                             f"{label}: {compact(names)}")
        if self.frozen:
            lines.append(f"  froze {len(self.frozen)} target layer(s): {compact(self.frozen)}")
        adapted = [f"{t['target']} {t['adapted']['in_channels'][0]}->{t['adapted']['in_channels'][1]} "
                   f"({t['adapted']['policy']})" for t in self.transferred if t.get("adapted")]
        if adapted:
            lines.append(f"  ADAPTED input channels: {', '.join(adapted)}")
        converted = sorted({t["conversion"] for t in self.transferred} - {"none (same framework)"})
        if converted:
            lines.append(f"  layouts converted: {'; '.join(converted)}")
        for result in self.verification:
            layers = result["layers"]
            worst = max((c["rel_diff"] for c in layers if c["tolerance"] > 0), default=0.0)
            stack = result["stack"]
            lines.append(f"  verified ({result['stage']}): {sum(c['ok'] for c in layers)}/{len(layers)} layers"
                         f" within {result['tolerance']['layer']:g} (worst {worst:.2g})"
                         + (f"; stack at '{stack['target']}' {stack['rel_diff']:.2g}" if stack
                            else f"; no stack check: {result.get('stack_note', '')}"))
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  WARNING: {w}" for w in self.warnings]
        if self.output:
            lines.append(f"  wrote {self.output}")
        return "\n".join(lines)


def compact(names: list[str], keep: int = 6) -> str:
    """`a, b, c, ..., y, z` for long lists: enough to recognise the group."""
    if len(names) <= keep:
        return ", ".join(names)
    return ", ".join(names[:3]) + f", ... ({len(names) - 5} more), " + ", ".join(names[-2:])


def error_report(error: Exception, exit_code: int) -> str:
    """The JSON written to --report when a run fails, so CI jobs can read why."""
    return json.dumps({"ok": False, "exit_code": exit_code, "error_type": type(error).__name__,
                       "error": str(error)}, indent=2) + "\n"
