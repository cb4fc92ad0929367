"""Max pooling that returns argmax indices, and unpooling with them, on public `keras.ops`,
so SegNet runs on every Keras backend.

Indices follow `tf.nn.max_pool_with_argmax(include_batch_in_index=False)`: the flat position
`(y * width + x) * channels + c` of each maximum inside its own image. Ties go to the first
position in row-major window order, as in TensorFlow. Windows do not overlap
(`strides == pool_size`) and padding is "valid", which is what SegNet uses.
"""

from __future__ import annotations

from typing import Any

from transfer import _frameworks

keras = _frameworks.keras()
ops = keras.ops
Layer: Any = keras.layers.Layer  # a runtime class: the type checker sees Any


def _index_dtype() -> str:
    """int64, as TensorFlow's; JAX without x64 mode has no int64 (it would truncate, with a
    warning on every call): int32 there, enough below 2**31 elements per image."""
    if keras.backend.backend() == "jax":
        import jax

        return "int64" if jax.config.read("jax_enable_x64") else "int32"
    return "int64"


def _pair(value: Any, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of them; received {value!r}.")
    return (pair[0], pair[1])


def max_pool_with_argmax(inputs: Any, pool_size: tuple[int, int] = (2, 2)) -> tuple[Any, Any]:
    """(pooled, indices) of a channels-last batch, non-overlapping windows, valid padding."""
    ph, pw = pool_size
    shape = ops.shape(inputs)
    height, width, channels = shape[1], shape[2], shape[3]
    out_h, out_w = height // ph, width // pw
    cropped = inputs[:, : out_h * ph, : out_w * pw, :]
    windows = ops.reshape(cropped, (-1, out_h, ph, out_w, pw, channels))
    windows = ops.reshape(ops.transpose(windows, (0, 1, 3, 5, 2, 4)), (-1, out_h, out_w, channels, ph * pw))
    position = ops.argmax(windows, axis=-1)  # first maximum on ties
    # take_along_axis, not max: the gradient of max is split between tied values.
    pooled = ops.squeeze(ops.take_along_axis(windows, ops.expand_dims(position, -1), axis=-1), -1)
    index = _index_dtype()
    position = ops.cast(position, index)
    rows = ops.reshape(ops.arange(out_h, dtype=index) * ph, (1, -1, 1, 1)) + position // pw
    cols = ops.reshape(ops.arange(out_w, dtype=index) * pw, (1, 1, -1, 1)) + position % pw
    chans = ops.reshape(ops.arange(channels, dtype=index), (1, 1, 1, -1))
    indices = (rows * ops.cast(width, index) + cols) * ops.cast(channels, index) + chans
    return pooled, indices


def max_unpool(values: Any, indices: Any, output_hw: tuple[Any, Any],
               pool_size: tuple[int, int] = (2, 2)) -> Any:
    """Place each value at its argmax position in a zero map of spatial size `output_hw`."""
    ph, pw = pool_size
    shape = ops.shape(values)
    out_h, out_w, channels = shape[1], shape[2], shape[3]
    height, width = output_hw
    index = _index_dtype()
    flat = ops.cast(indices, index) // ops.cast(channels, index)
    rows, cols = flat // ops.cast(width, index), flat % ops.cast(width, index)
    position = (rows % ph) * pw + cols % pw
    onehot = ops.one_hot(position, ph * pw, dtype=values.dtype) * ops.expand_dims(values, -1)
    windows = ops.reshape(onehot, (-1, out_h, out_w, channels, ph, pw))
    unpooled = ops.reshape(ops.transpose(windows, (0, 1, 4, 2, 5, 3)), (-1, out_h * ph, out_w * pw, channels))
    return ops.pad(unpooled, ((0, 0), (0, height - out_h * ph), (0, width - out_w * pw), (0, 0)))


@keras.saving.register_keras_serializable(package="transfer_weights")
class MaxPoolingWithArgmax2D(Layer):
    """Max pooling returning `[pooled, indices]` (int64, TensorFlow's flat index convention;
    int32 on JAX unless its x64 mode is on)."""

    def __init__(self, pool_size: int | tuple[int, int] = 2, **kwargs: Any):
        super().__init__(**kwargs)
        self.pool_size = _pair(pool_size, "pool_size")

    def call(self, inputs: Any) -> list[Any]:
        return list(max_pool_with_argmax(inputs, self.pool_size))

    def compute_output_shape(self, input_shape: tuple) -> list[tuple]:
        def down(size: int | None, pool: int) -> int | None:
            return None if size is None else size // pool

        shape = (input_shape[0], down(input_shape[1], self.pool_size[0]),
                 down(input_shape[2], self.pool_size[1]), input_shape[3])
        return [shape, shape]

    def compute_output_spec(self, inputs: Any) -> list[Any]:
        shape = self.compute_output_shape(inputs.shape)
        return [keras.KerasTensor(shape[0], dtype=inputs.dtype), keras.KerasTensor(shape[1], dtype=_index_dtype())]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "pool_size": self.pool_size}


@keras.saving.register_keras_serializable(package="transfer_weights")
class MaxUnpooling2D(Layer):
    """Inverse of `MaxPoolingWithArgmax2D`: inputs `[values, indices, like]`, where `like`
    is the tensor that was pooled (it gives the output's height and width, odd ones too)."""

    def __init__(self, pool_size: int | tuple[int, int] = 2, **kwargs: Any):
        super().__init__(**kwargs)
        self.pool_size = _pair(pool_size, "pool_size")

    def call(self, inputs: list[Any]) -> Any:
        values, indices, like = inputs
        shape = ops.shape(like)
        return max_unpool(values, indices, (shape[1], shape[2]), self.pool_size)

    def compute_output_shape(self, input_shape: list[tuple]) -> tuple:
        values, _, like = input_shape
        return (values[0], like[1], like[2], values[3])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "pool_size": self.pool_size}


CUSTOM_OBJECTS = {"MaxPoolingWithArgmax2D": MaxPoolingWithArgmax2D, "MaxUnpooling2D": MaxUnpooling2D}
