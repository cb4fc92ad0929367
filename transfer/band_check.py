"""The per-layer proof of a band-mapped (or preprocessing-folded) first layer (issue 21).

The target layer, fed a seeded probe in its own bands, is compared with the **source** layer,
unchanged (its tensors as read from the source), fed the same probe mapped back to the source's
bands: x_source = P x_target + q (`transfer.bands.BandMap.input_map`). The probe ops run with
'valid' padding, so a folded preprocessing is exact here; the zero-padded border is what a
model adds, and the report quantifies it. The check proves the declared change, never equality
with the source: the two models are fed different inputs, so no stack check compares them.

A depthwise conv keeps one group of outputs per band: its reference runs the source's filters
of every source band on the target band's own input (folded per source band), and mixes the
groups as the band map says.
"""

from __future__ import annotations

import numpy as np

from transfer import kinds
from transfer.bands import BandMap
from transfer.plan import Pair
from transfer.report import LAYER_TOLERANCE, LayerCheck
from transfer.verify import relative_difference, run_layer, tolerance


def method(pair: Pair) -> str:
    bands = pair.bands
    assert bands is not None
    folded = f", preprocessing '{bands.fold[0]}' folded into '{bands.fold[1]}'" if bands.fold else ""
    return (f"{pair.kind.name} on a probe, {pair.source.framework} vs {pair.target.framework}: the source's layer "
            f"on the input mapped back to its bands ({bands.describe()}{folded}) against the target's: a declared "
            "change (CHANGED), not equality with the source")


def check_band_pair(pair: Pair, source_arrays: list[np.ndarray], target_arrays: list[np.ndarray],
                    rng: np.random.Generator) -> LayerCheck:
    """The target layer on a probe against the source layer on the probe mapped to its bands."""
    bands = pair.bands
    assert bands is not None
    entry = pair.kind
    probe = rng.normal(size=(2, *_probe_shape(pair, len(bands.target)))).astype(np.float32)
    params_source = kinds.LayerParams(groups=1)
    params_target = kinds.LayerParams(groups=1)
    candidate = run_layer(entry, pair.target.framework, target_arrays, probe, params_target)
    if pair.kind is kinds.DEPTHWISE_CONV2D:
        reference = _depthwise_reference(entry, pair, source_arrays, probe, bands, params_source)
    else:
        mix, offset = bands.input_map()
        mapped = (probe.astype(np.float64) @ mix.T + offset).astype(np.float32)
        reference = run_layer(entry, pair.source.framework, source_arrays, mapped, params_source)
    diff, rel = relative_difference(reference, candidate)
    return LayerCheck(pair.source.name, pair.target.name, method(pair), diff, rel,
                      tolerance(pair, LAYER_TOLERANCE, 4), zero_reference=not np.any(reference))


def _depthwise_reference(entry: kinds.LayerKind, pair: Pair, source_arrays: list[np.ndarray], probe: np.ndarray,
                         bands: BandMap, params: kinds.LayerParams) -> np.ndarray:
    """y_t = sum_s M[t, s] f_s(a_ts x_t + q_ts): every source band's filters on band t's input."""
    matrix = bands.weights()
    scale, offset = bands.fold_terms()
    groups = []
    multiplier = None
    for t in range(len(bands.target)):
        band_input = probe[..., t:t + 1].astype(np.float64)
        mapped = np.concatenate([band_input * scale[t, s] + offset[t, s] for s in range(len(bands.source))], axis=-1)
        outputs = run_layer(entry, pair.source.framework, source_arrays, mapped.astype(np.float32), params)
        multiplier = outputs.shape[-1] // len(bands.source)
        per_band = outputs.reshape(*outputs.shape[:-1], len(bands.source), multiplier).astype(np.float64)
        groups.append(np.tensordot(per_band, matrix[t], axes=([-2], [0])))
    return np.concatenate(groups, axis=-1).astype(np.float32) if multiplier else np.zeros(0, np.float32)


def _probe_shape(pair: Pair, channels: int) -> tuple[int, ...]:
    if pair.kind is kinds.DENSE:
        return (channels,)
    shape = pair.target.tensors[0].shape  # Keras (kh, kw, ...), torch (..., kh, kw)
    kh, kw = (shape[0], shape[1]) if pair.target.framework == "keras" else (shape[2], shape[3])
    return (kh + 3, kw + 4, channels)

