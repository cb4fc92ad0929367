"""A Vision Transformer in Keras computing exactly what torchvision's `VisionTransformer`
computes, with layers named after torchvision's modules (issue 22).

torchvision's ViT: a conv whose stride is its kernel cuts the image into patches (`conv_proj`),
the patches are flattened row by row into tokens, a class token is prepended (`class_token`)
and a position embedding added (`encoder.pos_embedding`); then `num_layers` pre-norm encoder
blocks (LayerNorm, self-attention, residual; LayerNorm, Linear, exact GELU, Linear, residual),
a final LayerNorm (`encoder.ln`) and a Linear head on the class token (`heads.head`). LayerNorm
epsilon 1e-6; dropout is off at inference. Keras names: `conv_proj`, `class_token`,
`encoder_pos_embedding`, `encoder_layer_{i}_ln_1`, `encoder_layer_{i}_self_attention` (a
`MultiHeadAttention`), `encoder_layer_{i}_ln_2`, `encoder_layer_{i}_mlp_0`, `encoder_layer_{i}_mlp_3`,
`encoder_ln`, `heads_head`.

The class token and the position embedding are two small layers of one variable each
(`ClassToken`, `PositionEmbedding`), and the head reads token 0 through `ClassTokenOutput`
(torchvision's `x[:, 0]`); the three are registered with Keras under the package
"transfer_weights" so that a saved `.keras` file loads again once this module is imported.
"""

from __future__ import annotations

from typing import Any

from transfer import _frameworks
from transfer.targets._checks import check_vit_arguments

keras = _frameworks.keras()
ops = keras.ops
Layer: Any = keras.layers.Layer  # a runtime class: the type checker sees Any

LAYERNORM_EPSILON = 1e-6  # torchvision's ViT: partial(nn.LayerNorm, eps=1e-6)


@keras.saving.register_keras_serializable(package="transfer_weights")
class ClassToken(Layer):
    """Prepends a learned token (1, 1, d) to a (batch, tokens, d) sequence."""

    def build(self, input_shape: Any) -> None:
        self.token = self.add_weight(shape=(1, 1, int(input_shape[-1])), initializer="zeros", name="class_token")

    def call(self, inputs: Any) -> Any:
        batch = ops.shape(inputs)[0]
        token = ops.broadcast_to(ops.cast(self.token, inputs.dtype), (batch, 1, ops.shape(inputs)[-1]))
        return ops.concatenate([token, inputs], axis=1)

    def compute_output_shape(self, input_shape: Any) -> Any:
        tokens = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], tokens, input_shape[2])


@keras.saving.register_keras_serializable(package="transfer_weights")
class PositionEmbedding(Layer):
    """Adds a learned (1, tokens, d) embedding to a (batch, tokens, d) sequence."""

    def build(self, input_shape: Any) -> None:
        if input_shape[1] is None:
            raise ValueError("PositionEmbedding needs a known number of tokens.")
        self.embedding = self.add_weight(shape=(1, int(input_shape[1]), int(input_shape[2])),
                                         initializer=keras.initializers.RandomNormal(stddev=0.02),
                                         name="pos_embedding")

    def call(self, inputs: Any) -> Any:
        return inputs + ops.cast(self.embedding, inputs.dtype)


@keras.saving.register_keras_serializable(package="transfer_weights")
class ClassTokenOutput(Layer):
    """The class token's output: token 0 of a (batch, tokens, d) sequence, as a (batch, d) vector
    (torchvision's `x[:, 0]`)."""

    def call(self, inputs: Any) -> Any:
        return inputs[:, 0]

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (input_shape[0], input_shape[2])


CUSTOM_OBJECTS = {"ClassToken": ClassToken, "PositionEmbedding": PositionEmbedding,
                  "ClassTokenOutput": ClassTokenOutput}


def build_vit(image_size: int = 224, patch_size: int = 16, num_layers: int = 12, num_heads: int = 12,
              hidden_dim: int = 768, mlp_dim: int = 3072, num_classes: int = 1000, include_top: bool = True,
              name: str = "vit") -> Any:
    """torchvision's `VisionTransformer(image_size, patch_size, num_layers, num_heads,
    hidden_dim, mlp_dim, num_classes=num_classes)` in Keras; the defaults are ViT-B/16's
    (`torchvision.models.vit_b_16`).

    Args:
        image_size: height and width of the (square, RGB, channels-last) input; a multiple of
            `patch_size`.
        patch_size: side of a patch (the patch embedding's kernel and stride).
        num_layers: encoder blocks.
        num_heads: attention heads; `hidden_dim` must be a multiple of it.
        hidden_dim: token width.
        mlp_dim: width of each block's MLP.
        num_classes: outputs of the head (logits, as torchvision's: no softmax).
        include_top: the head on the class token; without it the model returns every token
            after `encoder_ln`, (batch, 1 + (image_size / patch_size)^2, hidden_dim).
        name: model name.
    """
    builder = "build_vit"
    check_vit_arguments(builder, image_size, patch_size, num_layers, num_heads, hidden_dim, mlp_dim, num_classes)
    if not isinstance(include_top, bool):
        raise TypeError(f"{builder}: include_top must be true or false; received {include_top!r}.")
    layers = keras.layers
    grid = image_size // patch_size
    inputs = layers.Input(shape=(image_size, image_size, 3), name="input")
    x = layers.Conv2D(hidden_dim, patch_size, strides=patch_size, padding="valid", name="conv_proj")(inputs)
    x = layers.Reshape((grid * grid, hidden_dim), name="patches")(x)  # row by row, as torch's reshape
    x = ClassToken(name="class_token")(x)
    x = PositionEmbedding(name="encoder_pos_embedding")(x)
    for index in range(num_layers):
        label = f"encoder_layer_{index}"
        y = layers.LayerNormalization(epsilon=LAYERNORM_EPSILON, name=f"{label}_ln_1")(x)
        y = layers.MultiHeadAttention(num_heads, key_dim=hidden_dim // num_heads,
                                      name=f"{label}_self_attention")(y, y)
        x = layers.Add(name=f"{label}_add_1")([x, y])
        y = layers.LayerNormalization(epsilon=LAYERNORM_EPSILON, name=f"{label}_ln_2")(x)
        y = layers.Dense(mlp_dim, name=f"{label}_mlp_0")(y)
        y = layers.Activation("gelu", name=f"{label}_mlp_1")(y)  # exact (erf), as torch's nn.GELU()
        y = layers.Dense(hidden_dim, name=f"{label}_mlp_3")(y)
        x = layers.Add(name=f"{label}_add_2")([x, y])
    x = layers.LayerNormalization(epsilon=LAYERNORM_EPSILON, name="encoder_ln")(x)
    if include_top:
        x = ClassTokenOutput(name="class_token_output")(x)
        x = layers.Dense(num_classes, name="heads_head")(x)
    return keras.Model(inputs, x, name=name)
