"""`transfer-weights inspect`: what a file, a model or a mapping holds, as a table.

A mapping is written from exactly this: each weighted layer's name, kind, tensor shapes and
parameter count, and the preprocessing the weights expect. Nothing is downloaded and no tensor
is read: weights files are read for their headers, known models are built without weights.
For a mapping file, the plan (`--check`) is shown as a table instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from transfer.adapter import Weights
from transfer.errors import MappingError
from transfer.mapping import Mapping, did_you_mean
from transfer.report import Report, compact
from transfer.sources.known_models import KERAS_APPLICATIONS, PREPROCESSING_HELP, TORCHVISION_MODELS


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    tensors: list[str]  # "kernel 3x3x3x64"
    shapes: list[list[int]]
    params: int


@dataclass
class Inspection:
    description: str
    framework: str
    preprocessing: str | None
    layers: list[LayerRow] = field(default_factory=list)
    preprocessing_detail: dict[str, Any] | None = None  # what a checkpoint folder's config says

    @property
    def params(self) -> int:
        return sum(row.params for row in self.layers)


def inspect_weights(weights: Weights) -> Inspection:
    def described(spec: Any) -> list[str]:
        return [f"{t.name} {'x'.join(map(str, t.shape)) or 'scalar'}" for t in spec.tensors]

    rows = [LayerRow(spec.name, spec.kind.name, described(spec), spec.shapes, spec.params)
            for spec in weights.layers().values()]
    return Inspection(weights.description, weights.framework, weights.preprocessing, rows,
                      weights.preprocessing_detail)


def inspect_spec(text: str) -> Inspection:
    """A SPEC as `suggest` takes it: a weights or `.keras` file, `keras:NAME` / `torch:NAME`
    (a known model or a shipped builder), or a YAML mapping like a mapping's source/target."""
    from transfer.resolve import open_target
    from transfer.sources import open_source
    from transfer.suggest import parse_spec
    from transfer.targets import BUILDERS

    spec = parse_spec(text, "source")
    known = KERAS_APPLICATIONS if spec.framework == "keras" else TORCHVISION_MODELS
    if spec.model and not spec.weights and spec.model not in known:
        shipped = [name for framework, name in BUILDERS if framework == spec.framework]
        if spec.model not in shipped:
            names = sorted(set(known) | set(shipped))
            raise MappingError(f"{text}: no known {spec.framework} model or shipped target named {spec.model!r}; "
                               f"known: {', '.join(names)}.{did_you_mean(spec.model, names)}")
        target = parse_spec(text, "target")
        return inspect_weights(open_target(Mapping(source=target, target=target, rules=())).weights)
    with open_source(spec, architecture_only=True) as source:
        return inspect_weights(source)


def inspection_dict(inspection: Inspection) -> dict[str, Any]:
    return {"description": inspection.description, "framework": inspection.framework,
            "preprocessing": inspection.preprocessing,
            "preprocessing_help": PREPROCESSING_HELP.get(inspection.preprocessing or "", "unknown"),
            "preprocessing_detail": inspection.preprocessing_detail,
            "params": inspection.params, "layers": [asdict(row) for row in inspection.layers]}


def render_inspection(inspection: Inspection) -> str:
    expects = (f"expects '{inspection.preprocessing}' input ({PREPROCESSING_HELP[inspection.preprocessing]})"
               if inspection.preprocessing in PREPROCESSING_HELP else "preprocessing unknown")
    detail = inspection.preprocessing_detail
    if detail:
        expects += f" ({detail['file']}: mean {detail['mean']}, std {detail['std']}, input {detail['input_size']})"
    lines = [(f"{inspection.description}: {len(inspection.layers)} weighted layers, {inspection.params:,} "
              f"parameters ({inspection.framework}); {expects}")]
    rows = [(row.name, row.kind, ", ".join(row.tensors), f"{row.params:,}") for row in inspection.layers]
    lines += _table(("layer", "kind", "tensors", "params"), rows)
    return "\n".join(lines)


def render_plan(report: Report) -> str:
    """The plan of a mapping (`--check`) as a table: each pair, then what is left out."""
    lines = [f"{report.mapping}: {report.source} -> {report.target}"]
    rows = [(t.source, t.target, t.kind, t.conversion, f"{t.params:,}") for t in report.transferred]
    lines += _table(("source layer", "target layer", "kind", "conversion", "params"), rows)
    for label, names in (("skipped source layers", [s.layer for s in report.skipped]),
                         ("untouched target layers", [u.layer for u in report.untouched]),
                         ("frozen after the transfer", report.frozen)):
        if names:
            lines.append(f"{label} ({len(names)}): {compact(names, keep=12)}")
    lines += [f"note: {n}" for n in report.notes] + [f"WARNING: {w}" for w in report.warnings]
    return "\n".join(lines)


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max([len(header[i])] + [len(r[i]) for r in rows]) for i in range(len(header))]
    # the last column (counts) is right-aligned, the others left
    def line(cells: tuple[str, ...]) -> str:
        parts = [c.ljust(w) for c, w in zip(cells[:-1], widths[:-1])] + [cells[-1].rjust(widths[-1])]
        return "  " + "  ".join(parts)

    return [line(header), *(line(r) for r in rows)]
