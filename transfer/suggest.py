"""`transfer-weights suggest`: a draft mapping from two models, for a person to review.

Weighted layers are aligned in order, by kind and by shape after layout conversion: the
longest order-preserving alignment, preferring equal names. Where two equally good
alignments disagree about a layer, the draft says so in a comment and leaves it unmapped
instead of guessing; pairs matched by order among look-alikes get an "unsure" comment.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from transfer import formats
from transfer.adapter import Weights
from transfer.errors import IncompatibleWeightsError, MappingError
from transfer.kinds import LayerSpec
from transfer.mapping import Mapping, ModelSpec, Rule, is_regex, parse_model_spec
from transfer.plan import Pair, convert_pair, pair_kind


def parse_spec(text: str, role: str) -> ModelSpec:
    """A SPEC: a file (`pkg:PACKAGE/path` for one inside an installed package), `framework:model`,
    or a YAML flow mapping like a mapping's source/target."""
    where = f"--{role}"
    if text.lstrip().startswith("{"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise MappingError(f"{where}: not a valid YAML mapping: {exc}.") from exc
        return parse_model_spec(data, role)
    if text.startswith("pkg:"):  # a file inside an installed package, as in a mapping's weights
        from transfer.sources import package_file

        text = str(package_file(text))
    path = Path(text)
    fmt = formats.detect(path)
    if fmt is not None or path.exists():
        # a folder is a Hugging Face / timm checkpoint: torch's side; a file of no known name, Keras'
        framework = fmt.framework if fmt is not None else "keras"
        if role == "target":
            if fmt is None or not fmt.whole_model:
                raise MappingError(f"{where}: a target file must be a .keras model; for a shipped "
                                   "target write {framework: torch, model: segnet_vgg16, config: {...}}.")
            return ModelSpec(framework="keras", file=str(path.resolve()))
        return ModelSpec(framework="torch" if framework == "torch" else "keras", weights=str(path.resolve()))
    framework, _, model = text.partition(":")
    if framework in ("keras", "torch") and model:
        return ModelSpec(framework="torch" if framework == "torch" else "keras", model=model)
    raise MappingError(f"{where}: expected a file, 'keras:NAME' / 'torch:NAME', or a YAML mapping "
                       f"such as '{{framework: torch, model: vgg16_bn, weights: vgg16_bn.pth}}'; received {text!r}.")


@dataclass
class Draft:
    source: ModelSpec
    target: ModelSpec
    pairs: list[tuple[LayerSpec, LayerSpec, dict[str, Any], str]] = field(default_factory=list)
    undecided: list[tuple[str, list[str]]] = field(default_factory=list)
    skip: list[str] = field(default_factory=list)
    untouched: list[str] = field(default_factory=list)


def _fits(source: LayerSpec, target: LayerSpec) -> dict[str, Any] | None:
    """Rule options under which `source` can go into `target`, or None if it cannot."""
    for options in ({}, {"flatten": None}):
        rule = Rule(source.name, target.name, False, epsilon="rescale", **options)
        try:
            pair = Pair(source, target, rule, pair_kind(source, target, "", rule))
            dummies = [np.broadcast_to(np.zeros((), np.float32), t.shape) for t in source.tensors]
            shapes = [list(a.shape) for a in convert_pair(pair, dummies)]
        except IncompatibleWeightsError:
            continue
        if shapes == target.shapes:
            eps_s, eps_t = source.epsilon, target.epsilon
            needs_rescale = (pair.kind.carries_epsilon and eps_s is not None and eps_t is not None
                             and abs(eps_s - eps_t) > 1e-12 * eps_t)
            return {**options, **({"epsilon": "rescale"} if needs_rescale else {})}
    return None


def _align(sources: list[LayerSpec], targets: list[LayerSpec], fits: dict) -> list[tuple[int, int]]:
    """Longest order-preserving alignment. Ties go to unbroken runs (a pair right after the
    previous pair on both sides), then to equal names, then to the earliest pairs."""
    n, m = len(sources), len(targets)
    # best[c][i][j]: the best score from (i, j) on; c = 1 when (i-1, j-1) was a pair
    best = [[[0.0] * (m + 1) for _ in range(n + 1)] for _ in (0, 1)]

    def gain(i: int, j: int, run: int) -> float:
        return 1.0 + 1e-2 * run + (1e-4 if sources[i].name == targets[j].name else 0.0)

    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            for run in (0, 1):
                take = gain(i, j, run) + best[1][i + 1][j + 1] if (i, j) in fits else -1.0
                best[run][i][j] = max(take, best[0][i + 1][j], best[0][i][j + 1])
    matches, i, j, run = [], 0, 0, 0
    while i < n and j < m:
        if (i, j) in fits and abs(best[run][i][j] - gain(i, j, run) - best[1][i + 1][j + 1]) < 1e-9:
            matches.append((i, j))
            i, j, run = i + 1, j + 1, 1
        elif best[0][i + 1][j] >= best[0][i][j + 1]:
            i, run = i + 1, 0
        else:
            j, run = j + 1, 0
    return matches


def suggest(source: Weights, target: Weights, source_spec: ModelSpec, target_spec: ModelSpec) -> Draft:
    """Align the weighted layers of a source and a target (both opened) into a draft."""
    sources, targets = _use_order(list(source.layers().values())), _use_order(list(target.layers().values()))
    fits = {(i, j): options for i, s in enumerate(sources) for j, t in enumerate(targets)
            if (options := _fits(s, t)) is not None}
    early = _align(sources, targets, fits)
    late = [(n - 1 - i, m - 1 - j) for i, j in _align(sources[::-1], targets[::-1], {
        (len(sources) - 1 - i, len(targets) - 1 - j): o for (i, j), o in fits.items()})] \
        if (n := len(sources)) and (m := len(targets)) else []
    decided = set(early) & set(late)
    draft = Draft(source_spec, target_spec)
    matched_sources, matched_targets = set(), set()
    for i, j in early:
        if (i, j) not in decided:
            candidates = sorted({targets[b].name for a, b in early + late if a == i})
            draft.undecided.append((sources[i].name, candidates))
            matched_sources.add(i)
            continue
        lockstep = (i - 1, j - 1) in decided or (i + 1, j + 1) in decided
        draft.pairs.append((sources[i], targets[j], fits[(i, j)], _doubt(sources, targets, i, j, fits, lockstep)))
        matched_sources.add(i)
        matched_targets.add(j)
    draft.skip = [s.name for i, s in enumerate(sources) if i not in matched_sources]
    draft.untouched = [t.name for j, t in enumerate(targets) if j not in matched_targets]
    return draft


def _use_order(layers: list[LayerSpec]) -> list[LayerSpec]:
    """Layers in the order the network uses them. A torch module's loose variable that the
    module applies after its children (the kind table's `torch_used_after_children`: ConvNeXt's
    layer scale, owned by the block) is listed before them, but used after them, where Keras
    has its LayerScale layer: move it behind its last descendant."""
    ordered = list(layers)
    for spec in [s for s in layers if s.framework == "torch" and s.kind.torch_used_after_children]:
        descendants = [i for i, other in enumerate(ordered) if other.name.startswith(spec.name + ".")]
        if descendants:
            ordered.remove(spec)
            ordered.insert(descendants[-1], spec)  # the removal shifted the last descendant by one
    return ordered


def _doubt(sources: list[LayerSpec], targets: list[LayerSpec], i: int, j: int, fits: dict,
           lockstep: bool) -> str:
    """Why a pair deserves a second look: names differ and it is not part of an unbroken run
    of pairs while other target layers would fit it as well; or an option was needed."""
    source, target = sources[i], targets[j]
    notes = []
    if source.name != target.name and not lockstep:
        alike = [t.name for b, t in enumerate(targets) if (i, b) in fits and b != j]
        if alike:
            notes.append(f"matched by order; {len(alike)} other target layer(s) fit too "
                         f"({', '.join(alike[:3])}{', ...' if len(alike) > 3 else ''})")
    if fits[(i, j)].get("flatten", "auto") is None:
        notes.append("set `flatten: [C, H, W]` if a Flatten feeds this dense layer")
    if fits[(i, j)].get("epsilon"):
        notes.append(f"{source.kind.title} epsilon differs ({source.epsilon:g} -> {target.epsilon:g}): "
                     "gamma rescaled")
    return "unsure: " + "; ".join(notes) if notes else ""


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _key(name: str) -> str:
    return _quote(re.escape(name) if is_regex(name) else name)


def _glob(name: str) -> str:
    return _quote(re.sub(r"([*?\[])", r"[\1]", name))


def _spec_dict(spec: ModelSpec, role: str, folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = {"framework": spec.framework}
    for key in ("model", "weights", "file"):
        value = getattr(spec, key)
        if value and key != "model" and value != "imagenet":
            value = os.path.relpath(value, folder) if Path(value).is_absolute() else value
        if value:
            data[key] = value
    if role == "source":
        if spec.include_top:
            data["include_top"] = True
        if spec.batchnorm_epsilon is not None:
            data["batchnorm_epsilon"] = spec.batchnorm_epsilon
    else:
        if spec.config:
            data["config"] = spec.config
    if spec.preprocessing:
        data["preprocessing"] = spec.preprocessing
    return data


def render(draft: Draft, folder: Path, source_name: str, target_name: str) -> str:
    """The draft as a commented YAML mapping file."""
    unsure = sum(1 for *_, doubt in draft.pairs if doubt)
    lines = [
        f"# Draft mapping written by `transfer-weights suggest`: {source_name} -> {target_name}.",
        (f"# {len(draft.pairs)} pairs ({unsure} unsure), {len(draft.undecided)} undecided, "
        f"{len(draft.skip)} source layers skipped, {len(draft.untouched)} target layers untouched."),
        "# Layers were aligned in order by kind and shape. Review every 'unsure' and 'UNDECIDED' line.",
        "format: 1",
        "source: " + yaml.safe_dump(_spec_dict(draft.source, "source", folder), default_flow_style=True).strip(),
        "target: " + yaml.safe_dump(_spec_dict(draft.target, "target", folder), default_flow_style=True).strip(),
        "layers:" if draft.pairs else "layers: {}   # no pair could be decided",
    ]
    for source, target, options, doubt in draft.pairs:
        value = _quote(target.name)
        if options:
            extra = ", ".join(f"{k}: {'false' if v is None else v}" for k, v in options.items())
            value = f"{{target: {value}, {extra}}}"
        lines.append(f"  {_key(source.name)}: {value}" + (f"   # {doubt}" if doubt else ""))
    for name, candidates in draft.undecided:
        lines.append(f"  # UNDECIDED {name}: one of {', '.join(candidates)} (equally good alignments "
                     "disagree; add the right rule, or list it in skip)")
    lines.append("skip: [" + ", ".join(_glob(n) for n in draft.skip) + "]")
    lines.append("untouched: [" + ", ".join(_glob(n) for n in draft.untouched) + "]")
    return "\n".join(lines) + "\n"


def suggest_mapping(source_text: str, target_text: str, out: str | Path) -> Draft:
    """Open both SPECs, align them, and write the draft to `out` (atomically)."""
    from transfer.output import atomic_write_text
    from transfer.resolve import open_target
    from transfer.sources import open_source

    source_spec, target_spec = parse_spec(source_text, "source"), parse_spec(target_text, "target")
    target = open_target(Mapping(source=source_spec, target=target_spec, rules=())).weights
    with open_source(source_spec, architecture_only=True) as source:  # layers only: nothing downloaded
        draft = suggest(source, target, source_spec, target_spec)
    out = Path(out)
    atomic_write_text(out, render(draft, out.resolve().parent, source.description, target.description))
    return draft
