"""Input bands by name, for a model's first layer (issue 21): where each target band's weights
come from, and a preprocessing convention folded into the layer. Pure numpy.

A band map says, for every target band in order, its origin: a source band (its weights are
copied), `mean` (the mean of the source bands' weights) or `zero` (zero weights: the layer
ignores the band). Same-named bands are copied by default; a target band with neither a
same-named source band nor an entry is refused, never filled.

Everything reduces to one affine map of the input, per pixel: the target layer fed `x_t`
(its bands) computes what the source layer computes on

    x_s = P @ x_t + q          (P: source bands x target bands, q: one value per source band)

without folding, `P = M.T` (M[t, s] = 1 for a copy of s, 1/C_s for `mean`, 0 for `zero`) and
q = 0. With `fold_preprocessing`, each target band is fed its own convention, x_t = (raw_t -
m'_t) / s'_t, and the source expected x_s = (raw - m_s) / s_s, so P[s, t] = M[t, s] s'_t / s_s
and q_s = sum_t M[t, s] (m'_t - m_s) / s_s (all on the raw 0-255 scale). A linear layer (a conv,
a dense layer) absorbs the map exactly: W'_t = sum_s W_s P[s, t], b' = b + sum over taps and
source bands of W_s q_s.

Exact everywhere for a dense layer and for a conv with `valid` padding. With zero padding the
target's padded pixels are x_t = 0, which the source would have seen as x_s = q, not 0: at
output pixels whose window reaches the padding the target differs from the source by the sum,
over the padded taps, of W_s q_s (`border_offset` computes it; `border_bound` bounds it). That
is the raw value m'_t padded where the source padded m_s. Without folding q = 0: exact at the
border too.

A depthwise conv keeps one group of output channels per band: its band map moves each group
with its band (the layer after it reads them in the target's band order), and a folded band is
y_t = sum_s M[t, s] f_s(a x_t + q) for each source band's own filters f_s. A separable conv
(depthwise then 1x1) is linear in its input: copies and zeros are exact, with the pointwise
rows moved with their band; `mean` has no separable form (the mean of several bands' kernels
needs more depthwise filters than the layer has) and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transfer.errors import IncompatibleWeightsError, MappingError
from transfer.kinds import CONV2D, DENSE, DEPTHWISE_CONV2D, SEPARABLE_CONV2D, LayerKind
from transfer.sources.known_models import CONVENTION_ANY_BAND, CONVENTION_BANDS, CONVENTION_STATS

MEAN, ZERO = "mean", "zero"
RESERVED = (MEAN, ZERO)
KINDS = (CONV2D, DEPTHWISE_CONV2D, SEPARABLE_CONV2D, DENSE)  # what a band map can apply to
SCALE = "raw 0-255 scale: the layer is fed (raw - mean) / std"


def convention_bands(convention: str | None) -> tuple[str, ...] | None:
    """The bands a preprocessing convention feeds, in order, or None ('none', unknown)."""
    return CONVENTION_BANDS.get(convention or "")


def band_stats(convention: str | None, band: str) -> tuple[float, float] | None:
    """(mean, std) of `band` under `convention` on the raw 0-255 scale, or None where the
    convention does not say (torch has no statistics for an infrared band)."""
    if convention in CONVENTION_ANY_BAND:
        return CONVENTION_ANY_BAND[convention]
    return CONVENTION_STATS.get(convention or "", {}).get(band)


@dataclass(frozen=True)
class BandMap:
    """Where each target band's first-layer weights come from, and an optional fold of one
    preprocessing convention into another (source convention, target convention)."""

    source: tuple[str, ...]
    target: tuple[str, ...]
    origins: tuple[str, ...]  # per target band: a source band, MEAN or ZERO
    fold: tuple[str, str] | None = None

    @property
    def identity(self) -> bool:
        """The target reads the source's bands, in the source's order, nothing folded: no change."""
        return self.fold is None and self.target == self.source and self.origins == self.source

    def describe(self) -> str:
        """`R<-R, G<-G, IR<-mean`."""
        return ", ".join(f"{band}<-{origin}" for band, origin in zip(self.target, self.origins))

    def changed(self) -> str:
        """The declared change as the report states it."""
        text = f"input bands mapped from [{', '.join(self.source)}] to [{', '.join(self.target)}]: {self.describe()}"
        if self.fold:
            text += (f"; preprocessing '{self.fold[0]}' folded into the layer, so the target is fed "
                     f"'{self.fold[1]}' (exact away from zero-padded borders)")
        return text

    def weights(self) -> np.ndarray:
        """M (target bands x source bands): row t says how band t's weights mix the source's."""
        matrix = np.zeros((len(self.target), len(self.source)))
        for t, origin in enumerate(self.origins):
            if origin == MEAN:
                matrix[t] = 1.0 / len(self.source)
            elif origin != ZERO:
                matrix[t, self.source.index(origin)] = 1.0
        return matrix

    def input_map(self) -> tuple[np.ndarray, np.ndarray]:
        """(P, q), float64: the target layer on x_t computes the source layer on P @ x_t + q."""
        matrix = self.weights()
        if self.fold is None:
            return matrix.T.copy(), np.zeros(len(self.source))
        scale, offset = self.fold_terms()
        return (matrix * scale).T.copy(), (matrix * offset).sum(axis=0)

    def fold_terms(self) -> tuple[np.ndarray, np.ndarray]:
        """Per (target band t, source band s): s'_t / s_s and (m'_t - m_s) / s_s (zeros without a fold)."""
        shape = (len(self.target), len(self.source))
        scale, offset = np.ones(shape), np.zeros(shape)
        if self.fold is None:
            return scale, offset
        source_convention, target_convention = self.fold
        for t, band in enumerate(self.target):
            target_stats = band_stats(target_convention, band)
            for s, source_band in enumerate(self.source):
                source_stats = band_stats(source_convention, source_band)
                if target_stats is None or source_stats is None:
                    continue  # only where M[t, s] is zero (checked when the map is made)
                scale[t, s] = target_stats[1] / source_stats[1]
                offset[t, s] = (target_stats[0] - source_stats[0]) / source_stats[1]
        return scale, offset

    def target_contract(self) -> list[dict[str, object]]:
        """Per target band: its origin and how to feed it (mean and std on the raw 0-255 scale)
        where a convention says: a band copied from R is fed as R is (without a fold), or as the
        target's convention says (with one)."""
        rows: list[dict[str, object]] = []
        for band, origin in zip(self.target, self.origins):
            row: dict[str, object] = {"band": band, "origin": origin}
            if origin == ZERO:
                row["note"] = "ignored by the layer (zero weights): feed anything"
            elif self.fold is not None:
                stats = band_stats(self.fold[1], band)
                row.update(convention=self.fold[1], mean=stats[0] if stats else None, std=stats[1] if stats else None)
            elif origin == MEAN:
                row["note"] = ("weights are the mean of the source bands' weights: no convention gives this band's "
                               "statistics; normalise it like the others (its own dataset mean, the same scale)")
            else:
                row["origin_note"] = f"normalise as the source's band {origin}"
            rows.append(row)
        return rows


def band_map(source: tuple[str, ...], target: tuple[str, ...], declared: dict[str, str],
             fold: tuple[str, str] | None, where: str) -> BandMap:
    """The band map of one rule, checked: every target band has an origin (a same-named source
    band, or an entry), every entry names a target band and a source band (or mean, zero), and a
    fold has statistics for every band it mixes. Raises MappingError (exit 3): all of it is said
    by the mapping and the two sides' band lists, before any weight is read."""
    for band, value in declared.items():
        if band not in target:
            raise MappingError(f"{where}: bands: '{band}' is not a target band (target bands: "
                               f"{', '.join(target)}).")
        if value not in source and value not in RESERVED:
            raise MappingError(f"{where}: bands: {band}: '{value}' is neither a source band ({', '.join(source)}) "
                               f"nor {' or '.join(RESERVED)}.")
    origins = []
    for band in target:
        origin = declared.get(band, band if band in source else None)
        if origin is None:
            raise MappingError(
                f"{where}: target band '{band}' has no same-named source band (source bands: {', '.join(source)}) "
                f"and no entry in the rule's `bands:`; it is never filled silently. Say where its weights come "
                f"from: `bands: {{{band}: SOURCE_BAND}}`, `{{{band}: mean}}` or `{{{band}: zero}}`.")
        origins.append(origin)
    result = BandMap(tuple(source), tuple(target), tuple(origins), fold)
    if fold is not None:
        matrix = result.weights()
        for t, band in enumerate(target):
            if not matrix[t].any():
                continue
            if band_stats(fold[1], band) is None:
                raise MappingError(f"{where}: fold_preprocessing: the target's convention '{fold[1]}' gives no mean "
                                   f"and std for band '{band}'; fold only bands the convention names (or map "
                                   f"'{band}' to zero).")
            for s in np.flatnonzero(matrix[t]):
                if band_stats(fold[0], source[s]) is None:
                    raise MappingError(f"{where}: fold_preprocessing: the source's convention '{fold[0]}' gives "
                                       f"no mean and std for its band '{source[s]}'.")
    return result


# --- applying a band map to one layer's tensors, in one framework's layout ------------------


def in_channels(kind: LayerKind, framework: str, shapes: list[tuple[int, ...]],
                groups: int | None = None) -> int | None:
    """Input channels of a first layer from its tensor shapes (None where the shapes cannot say:
    a torch depthwise weight (C*m, 1, kh, kw) without its groups)."""
    first = shapes[0]
    if kind is DENSE:
        return first[1] if framework == "torch" else first[0]
    if kind is CONV2D:
        return (first[1] if framework == "torch" else first[2]) * (groups or 1)
    if framework == "keras":  # depthwise (kh, kw, C, m); separable's depthwise part likewise
        return first[2]
    return groups if groups and groups > 1 else None


def apply(kind: LayerKind, framework: str, arrays: list[np.ndarray], bands: BandMap) -> list[np.ndarray]:
    """One layer's tensors (its framework's order and layout) with the band map applied: the
    result reads the target's bands. Copies and zeros are exact (no arithmetic); `mean` and a
    fold are computed in float64 and rounded once."""
    if kind in (CONV2D, DENSE):
        return _linear(kind, framework, arrays, bands)
    if kind is DEPTHWISE_CONV2D:
        return _depthwise(framework, arrays, bands)
    if kind is SEPARABLE_CONV2D:
        return _separable(framework, arrays, bands)
    raise IncompatibleWeightsError(f"`bands` and `fold_preprocessing` apply to a first "
                                   f"{', '.join(k.name for k in KINDS[:-1])} or dense layer, not {kind.name}.")


def _combine(parts: np.ndarray, bands: BandMap, scale: np.ndarray) -> list[np.ndarray]:
    """Per target band, its slice made from the source bands' slices (`parts` on axis 0): a copy
    (exact), a mean, zeros, or (folded) the scaled sum of the slices it mixes."""
    matrix = bands.weights()
    out = []
    for t, origin in enumerate(bands.origins):
        if origin == ZERO:
            out.append(np.zeros_like(parts[0]))
        elif bands.fold is None and origin != MEAN:
            out.append(parts[bands.source.index(origin)])
        elif bands.fold is None:
            out.append(parts.astype(np.float64).mean(axis=0).astype(parts.dtype))
        else:
            mixed = sum(parts[s].astype(np.float64) * (matrix[t, s] * scale[t, s]) for s in np.flatnonzero(matrix[t]))
            out.append(np.asarray(mixed).astype(parts.dtype))
    return out


def _linear(kind: LayerKind, framework: str, arrays: list[np.ndarray], bands: BandMap) -> list[np.ndarray]:
    kernel = arrays[0]
    axis = {(CONV2D, "keras"): 2, (CONV2D, "torch"): 1, (DENSE, "keras"): 0, (DENSE, "torch"): 1}[(kind, framework)]
    _expect_channels(kernel.shape[axis], bands, kind.name)
    scale, _ = bands.fold_terms()
    parts = np.moveaxis(kernel, axis, 0)
    new = np.moveaxis(np.stack(_combine(parts, bands, scale)), 0, axis)
    rest = list(arrays[1:])
    _, offset = bands.input_map()
    if offset.any():  # b' = b + sum over taps and source bands of W_s q_s
        spelled = {(CONV2D, "keras"): "hwio,i->o", (CONV2D, "torch"): "oihw,i->o",
                   (DENSE, "keras"): "io,i->o", (DENSE, "torch"): "oi,i->o"}[(kind, framework)]
        rest = [_with_correction(rest, np.einsum(spelled, kernel.astype(np.float64), offset)),
                *rest[1:]]
    return [np.ascontiguousarray(new), *rest]


def _with_correction(rest: list[np.ndarray], correction: np.ndarray) -> np.ndarray:
    if not rest:
        raise IncompatibleWeightsError("folding the preprocessing changes the layer's bias, and this layer has none "
                                       "(use_bias=False / bias=False): build the target's first layer with a bias.")
    return (rest[0].astype(np.float64) + correction).astype(rest[0].dtype)


def _expect_channels(found: int, bands: BandMap, kind: str) -> None:
    if found != len(bands.source):
        raise IncompatibleWeightsError(f"the {kind} layer reads {found} input channels, but the source's bands are "
                                       f"{len(bands.source)} ({', '.join(bands.source)}).")


def _depthwise_groups(framework: str, kernel: np.ndarray, bands: BandMap) -> np.ndarray:
    """Per source band, its filters: (C, kh, kw, m) from Keras (kh, kw, C, m), (C, m, 1, kh, kw)
    from torch (C*m, 1, kh, kw)."""
    if framework == "keras":
        _expect_channels(kernel.shape[2], bands, "depthwise")
        return np.moveaxis(kernel, 2, 0)
    if kernel.shape[0] % len(bands.source):
        raise IncompatibleWeightsError(f"the depthwise weight {kernel.shape} is not one group of filters per "
                                       f"source band ({len(bands.source)}).")
    return kernel.reshape(len(bands.source), kernel.shape[0] // len(bands.source), *kernel.shape[1:])


def _depthwise_ungroup(framework: str, groups: list[np.ndarray]) -> np.ndarray:
    stacked = np.stack(groups)
    if framework == "keras":
        return np.ascontiguousarray(np.moveaxis(stacked, 0, 2))
    return np.ascontiguousarray(stacked.reshape(-1, *stacked.shape[2:]))


def _group_sums(framework: str, groups: np.ndarray) -> np.ndarray:
    """Per source band and multiplier j: the sum of the filter's taps, (C, m), float64."""
    if framework == "keras":  # (C, kh, kw, m)
        return groups.astype(np.float64).sum(axis=(1, 2))
    return groups.astype(np.float64).sum(axis=(2, 3, 4))  # (C, m, 1, kh, kw)


def _depthwise(framework: str, arrays: list[np.ndarray], bands: BandMap) -> list[np.ndarray]:
    """Each band's group of filters (and biases) moves with its band: y_t = sum_s M[t, s] f_s(a x_t + q)."""
    groups = _depthwise_groups(framework, arrays[0], bands)
    multiplier = groups.shape[-1] if framework == "keras" else groups.shape[1]
    scale, offset = bands.fold_terms()
    new = _combine(groups, bands, scale)
    if len(arrays) < 2:
        if bands.fold is not None and offset.any():
            _with_correction([], np.zeros(1))
        return [_depthwise_ungroup(framework, new)]
    bias = arrays[1].reshape(len(bands.source), multiplier)
    if bands.fold is None:
        new_bias = _combine(bias, bands, scale)
    else:
        sums, matrix = _group_sums(framework, groups), bands.weights()
        new_bias = []
        for t in range(len(bands.target)):
            mixed = np.zeros(multiplier)
            for s in np.flatnonzero(matrix[t]):
                mixed += matrix[t, s] * (bias[s].astype(np.float64) + offset[t, s] * sums[s])
            new_bias.append(mixed.astype(bias.dtype))
    return [_depthwise_ungroup(framework, new), np.concatenate(new_bias).astype(arrays[1].dtype)]


def _separable(framework: str, arrays: list[np.ndarray], bands: BandMap) -> list[np.ndarray]:
    """Depthwise filters and the pointwise rows that read them move with their band; any
    constant (a folded offset, a torch depthwise bias) goes into the one output bias."""
    if MEAN in bands.origins:
        raise IncompatibleWeightsError("a separable conv's band can be copied or zeroed, not `mean`: the mean of "
                                       "several bands' kernels has no separable form with the same depthwise "
                                       "filters (map the band to a source band or to zero).")
    matrix = bands.weights()
    scale, _ = bands.fold_terms()
    _, offset = bands.input_map()
    if framework == "keras":
        depthwise, pointwise = arrays[0], arrays[1]
        bias = arrays[2] if len(arrays) > 2 else None
        depthwise_bias = None
        groups = _depthwise_groups("keras", depthwise, bands)  # (C, kh, kw, m)
        multiplier = groups.shape[-1]
        rows = pointwise.reshape(pointwise.shape[2], pointwise.shape[3])  # (C*m, O)
    else:
        weights = [i for i, a in enumerate(arrays) if a.ndim == 4]
        dw_i, pw_i = weights
        depthwise, pointwise = arrays[dw_i], arrays[pw_i]
        depthwise_bias = arrays[dw_i + 1] if dw_i + 1 < pw_i else None
        bias = arrays[pw_i + 1] if pw_i + 1 < len(arrays) else None
        groups = _depthwise_groups("torch", depthwise, bands)  # (C, m, 1, kh, kw)
        multiplier = groups.shape[1]
        rows = pointwise[:, :, 0, 0].T  # (C*m, O)
    row_groups = rows.reshape(len(bands.source), multiplier, rows.shape[-1])
    new_groups, new_rows = [], []
    for t, origin in enumerate(bands.origins):
        if origin == ZERO:
            new_groups.append(np.zeros_like(groups[0]))
            new_rows.append(np.zeros_like(row_groups[0]))
            continue
        s = bands.source.index(origin)
        if bands.fold is None:
            new_groups.append(groups[s])
        else:
            new_groups.append((groups[s].astype(np.float64) * (matrix[t, s] * scale[t, s])).astype(groups.dtype))
        new_rows.append(row_groups[s])
    # the constant every output gets: W_pw @ (depthwise bias) + the folded offset through each band's kernel
    constant = np.zeros(rows.shape[-1])
    if depthwise_bias is not None:
        constant += rows.astype(np.float64).T @ depthwise_bias.astype(np.float64)
    if offset.any():
        sums = _group_sums(framework, groups)  # (C, m)
        constant += np.einsum("smo,sm,s->o", row_groups.astype(np.float64), sums, offset)
    if bias is not None:
        new_bias: np.ndarray | None = (bias.astype(np.float64) + constant).astype(bias.dtype)
    elif constant.any():
        raise IncompatibleWeightsError("the band map leaves a constant on every output (a depthwise bias, or a "
                                       "folded offset), and the separable conv has no output bias to hold it.")
    else:
        new_bias = None
    new_rows_flat = np.concatenate(new_rows).astype(rows.dtype)  # (C_t*m, O)
    if framework == "keras":
        out = [_depthwise_ungroup("keras", new_groups), np.ascontiguousarray(new_rows_flat[None, None])]
        return out + ([new_bias] if new_bias is not None else [])
    torch_out = [_depthwise_ungroup("torch", new_groups)]
    if depthwise_bias is not None:
        torch_out.append(np.zeros(len(bands.target) * multiplier, depthwise_bias.dtype))
    torch_out.append(np.ascontiguousarray(new_rows_flat.T[:, :, None, None]))
    if new_bias is not None:
        torch_out.append(new_bias)
    return torch_out


# --- the border, quantified -------------------------------------------------------------------


def border_offset(kernel_hwio: np.ndarray, offset: np.ndarray, height: int, width: int) -> np.ndarray:
    """What a folded conv with 'same' zero padding adds at each output pixel compared with the
    source on its own input: the sum, over the taps that fall on the padding, of W_s q_s.
    `kernel_hwio` is the source kernel (kh, kw, C_s, O) (stride 1, odd kernel); (H, W, O), zero in
    the interior."""
    kh, kw, _, out = kernel_hwio.shape
    per_tap = np.tensordot(kernel_hwio.astype(np.float64), offset, axes=([2], [0]))  # (kh, kw, O)
    inside = np.zeros((height + kh - 1, width + kw - 1))
    inside[kh // 2: kh // 2 + height, kw // 2: kw // 2 + width] = 1.0
    result = np.zeros((height, width, out))
    for i in range(kh):
        for j in range(kw):
            padded = 1.0 - inside[i: i + height, j: j + width]  # 1 where this tap reads the padding
            result += padded[:, :, None] * per_tap[i, j]
    return result


def border_bound(kernel_hwio: np.ndarray, offset: np.ndarray) -> float:
    """The largest difference the zero padding can make at any border pixel: over outputs, the
    sum of |W_s q_s| over every tap but the centre one (a window's centre is never padded)."""
    per_tap = np.abs(np.tensordot(kernel_hwio.astype(np.float64), offset, axes=([2], [0])))
    kh, kw = per_tap.shape[:2]
    per_tap[kh // 2, kw // 2] = 0.0
    return float(per_tap.sum(axis=(0, 1)).max()) if per_tap.size else 0.0
