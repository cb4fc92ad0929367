"""Resampling a position embedding onto a grid of another size (issue 22): a ViT pretrained at
224x224 (a 14x14 grid of 16-pixel patches) run at 448x448 needs a 28x28 grid of positions.

This is a change of the tensor, not a layout conversion: the target then holds an interpolation
of the source's embedding, which no check can call equal to the source. It is done only where a
mapping rule declares it (`resample: bicubic`), and reported as a change.

The interpolation is torch's `F.interpolate(grid, size=..., mode=..., align_corners=False)`
(antialias off), which is what timm's `resample_abs_pos_embed` does when enlarging a grid (timm
passes `antialias=True`, which only matters when shrinking one). The prefix tokens (a class
token, distillation or register tokens) are kept as they are. Pure numpy: a separable matrix per
axis, computed in float64, with torch's coordinate rule and its cubic coefficients (A = -0.75).
"""

from __future__ import annotations

import math

import numpy as np

from transfer.errors import IncompatibleWeightsError

MODES = ("bicubic", "bilinear")
_CUBIC_A = -0.75  # torch's (and OpenCV's) cubic convolution coefficient


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """The four taps (at offsets -1, 0, 1, 2) for fractional positions t, as torch computes them."""
    a = _CUBIC_A

    def near(x: np.ndarray) -> np.ndarray:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: np.ndarray) -> np.ndarray:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def interpolation_matrix(source: int, target: int, mode: str) -> np.ndarray:
    """(target, source) matrix M with M @ v == torch's 1-D resampling of v (align_corners=False):
    the source coordinate of output i is (i + 0.5) * source / target - 0.5, read with clamped
    (replicated) borders."""
    if mode not in MODES:
        raise IncompatibleWeightsError(f"unknown resampling mode {mode!r}; known: {', '.join(MODES)}.")
    scale = source / target
    position = (np.arange(target, dtype=np.float64) + 0.5) * scale - 0.5
    matrix = np.zeros((target, source), np.float64)
    rows = np.arange(target)
    if mode == "bilinear":
        position = np.maximum(position, 0.0)  # torch clamps the coordinate for linear modes, not for cubic
        low = np.floor(position).astype(np.int64)
        low = np.minimum(low, source - 1)
        high = np.minimum(low + 1, source - 1)
        frac = position - low
        np.add.at(matrix, (rows, low), 1.0 - frac)
        np.add.at(matrix, (rows, high), frac)
        return matrix
    low = np.floor(position).astype(np.int64)
    weights = _cubic_weights(position - low)
    for tap in range(4):
        np.add.at(matrix, (rows, np.clip(low - 1 + tap, 0, source - 1)), weights[:, tap])
    return matrix


def _square_side(tokens: int, what: str) -> int:
    side = math.isqrt(tokens) if tokens > 0 else 0
    if side * side != tokens:
        raise IncompatibleWeightsError(f"{what} has {tokens} grid tokens, not a square grid: give the grid "
                                       "size explicitly.")
    return side


def resample_position_embedding(array: np.ndarray, target_shape: tuple[int, ...], mode: str = "bicubic",
                                prefix_tokens: int = 1, source_grid: tuple[int, int] | None = None,
                                target_grid: tuple[int, int] | None = None) -> np.ndarray:
    """A position embedding (1, prefix + H*W, d) resampled onto the grid of `target_shape`
    (1, prefix + H'*W', d): the first `prefix_tokens` rows kept, the H x W grid (row-major, as a
    ViT flattens its patches) interpolated to H' x W'. Grids are square unless given.

    Equal to torch's `F.interpolate(grid_as_(1, d, H, W), size=(H', W'), mode=mode,
    align_corners=False)` on the grid part, and the prefix concatenated back (timm's
    `resample_abs_pos_embed`). Computed in float64; returned in the input's dtype."""
    if array.ndim != 3 or array.shape[0] != 1:
        raise IncompatibleWeightsError(f"a position embedding is (1, tokens, features); received {array.shape}.")
    target = tuple(int(d) for d in target_shape)
    if len(target) != 3 or target[0] != 1 or target[2] != array.shape[2]:
        raise IncompatibleWeightsError(f"the target position embedding must be (1, tokens, {array.shape[2]}); "
                                       f"received {target}.")
    if isinstance(prefix_tokens, bool) or not isinstance(prefix_tokens, int) or not 0 <= prefix_tokens < min(
            array.shape[1], target[1]):
        raise IncompatibleWeightsError(f"prefix_tokens must be an int from 0 to fewer than the tokens; received "
                                       f"{prefix_tokens!r} for {array.shape[1]} and {target[1]} tokens.")
    tokens, new_tokens = array.shape[1] - prefix_tokens, target[1] - prefix_tokens
    height, width = source_grid or (_square_side(tokens, "the source position embedding"),) * 2
    new_height, new_width = target_grid or (_square_side(new_tokens, "the target position embedding"),) * 2
    if height * width != tokens or new_height * new_width != new_tokens:
        raise IncompatibleWeightsError(f"grids {height}x{width} -> {new_height}x{new_width} do not fit {tokens} "
                                       f"-> {new_tokens} grid tokens.")
    features = array.shape[2]
    grid = array[0, prefix_tokens:].astype(np.float64).reshape(height, width, features)
    rows = interpolation_matrix(height, new_height, mode)
    cols = interpolation_matrix(width, new_width, mode)
    resampled = np.einsum("ih,hwc,jw->ijc", rows, grid, cols).reshape(1, new_tokens, features)
    return np.concatenate([array[:, :prefix_tokens].astype(np.float64), resampled], axis=1).astype(array.dtype)


def prefix_tokens_between(source_tokens: int, target_tokens: int, most: int = 8) -> int:
    """The fewest prefix tokens (0 .. `most`) that leave a square grid on both sides: 1 for a
    ViT's class token (197 = 1 + 14*14 -> 785 = 1 + 28*28)."""
    for prefix in range(most + 1):
        sides = [math.isqrt(n - prefix) for n in (source_tokens, target_tokens) if n - prefix > 0]
        if len(sides) == 2 and all(s * s == n - prefix for s, n in zip(sides, (source_tokens, target_tokens))):
            return prefix
    raise IncompatibleWeightsError(f"no count of prefix tokens up to {most} leaves square grids in {source_tokens} "
                                   f"and {target_tokens} tokens: give `prefix_tokens` (and non-square grids) "
                                   "explicitly.")
