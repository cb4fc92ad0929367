"""Issue 22: transformer encoders. Multi-head attention (torch's fused in_proj with its out_proj
<-> Keras' MultiHeadAttention), the class token and position embedding as loose variables, the
patch embedding as an ordinary conv, the shipped Keras ViT both ways on a small ViT, and the
position-embedding resampling against torch's F.interpolate. ViT-B/16 itself is proven by
`scripts/prove_architectures.py` (20 inputs of 224x224, both ways)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import torch
import yaml

import transfer
from conftest import MAPPINGS
from helpers.checkpoints import max_rel_diff, randomize_keras, randomize_torch
from transfer import kinds
from transfer.errors import IncompatibleWeightsError
from transfer.keras_models import KerasModelWeights
from transfer.kinds import LayerSpec
from transfer.layers import TensorSpec
from transfer.mapping import Rule
from transfer.resample import interpolation_matrix, resample_position_embedding
from transfer.torch_models import TorchModuleWeights
from transfer.verify import run_layer

RNG = np.random.default_rng(22)
SMALL = {"image_size": 32, "patch_size": 8, "num_layers": 2, "num_heads": 2, "hidden_dim": 16, "mlp_dim": 32,
         "num_classes": 10}
MHA = kinds.MULTI_HEAD_ATTENTION


def nchw(x: np.ndarray) -> Any:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def torch_attention(d: int, heads: int, bias: bool = True) -> Any:
    torch.manual_seed(1)
    module = torch.nn.MultiheadAttention(d, heads, bias=bias, batch_first=True)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape) * 0.3)
    return module.eval()


def keras_attention(d: int, heads: int, bias: bool = True, seed: int = 2) -> Any:
    layer = keras.layers.MultiHeadAttention(heads, key_dim=d // heads, use_bias=bias)
    x = np.zeros((1, 3, d), "float32")
    layer(x, x)
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in layer.weights])
    return layer


def specs(torch_module: Any, keras_layer: Any) -> tuple[LayerSpec, LayerSpec]:
    import keras as k

    torch_spec = TorchModuleWeights(torch.nn.Sequential(torch_module)).layers()["0"]
    keras_spec = LayerSpec("mha", "keras", kinds.keras_layer_kind(keras_layer, k),
                           tuple(TensorSpec(w.name, tuple(w.shape), "float32") for w in keras_layer.weights),
                           groups=int(keras_layer.num_heads))
    return torch_spec, keras_spec


def torch_read(module: Any) -> list[np.ndarray]:
    return TorchModuleWeights(torch.nn.Sequential(module)).read("0")


# ---- multi-head attention ------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_attention_torch_to_keras_computes_the_same_and_round_trips_bit_identically(bias: bool) -> None:
    module, layer = torch_attention(8, 2, bias), keras_attention(8, 2, bias)
    torch_spec, keras_spec = specs(module, layer)
    assert (torch_spec.kind, keras_spec.kind, torch_spec.groups) == (MHA, MHA, 2)
    assert [t.name for t in torch_spec.tensors] == (["in_proj_bias", "in_proj_weight", "out_proj.bias", "out_proj.weight"]
                                                    if bias else ["in_proj_weight", "out_proj.weight"])
    original = torch_read(module)
    converted = MHA.convert(original, kinds.PairContext(torch_spec, keras_spec))
    layer.set_weights(converted)
    q, k, v = (RNG.normal(size=(2, n, 8)).astype("float32") for n in (5, 7, 7))
    with torch.no_grad():
        expected = module(*(torch.from_numpy(a) for a in (q, k, v)), need_weights=False)[0].numpy()
    got = np.asarray(layer(q, v, key=k))
    assert max_rel_diff(got, expected) <= 1e-5
    back = MHA.convert(converted, kinds.PairContext(keras_spec, torch_spec))
    assert all(np.array_equal(a, b) for a, b in zip(original, back))


@pytest.mark.parametrize("bias", [True, False])
def test_attention_keras_to_torch_computes_the_same_and_round_trips_bit_identically(bias: bool) -> None:
    module, layer = torch_attention(12, 3, bias), keras_attention(12, 3, bias, seed=5)
    torch_spec, keras_spec = specs(module, layer)
    original = [np.asarray(w) for w in layer.get_weights()]
    converted = MHA.convert(original, kinds.PairContext(keras_spec, torch_spec))
    TorchModuleWeights(torch.nn.Sequential(module)).assign({"0": converted})
    q, k, v = (RNG.normal(size=(3, n, 12)).astype("float32") for n in (4, 6, 6))
    with torch.no_grad():
        got = module(*(torch.from_numpy(a) for a in (q, k, v)), need_weights=False)[0].numpy()
    assert max_rel_diff(got, np.asarray(layer(q, v, key=k))) <= 1e-5
    back = MHA.convert(converted, kinds.PairContext(torch_spec, keras_spec))
    assert all(np.array_equal(a, b) for a, b in zip(original, back))


def test_the_probe_ops_agree_and_catch_a_query_key_swap() -> None:
    """The kind's probe ops (what `verify` runs): torch's op on the torch tensors equals Keras'
    op on the converted ones, on distinct query, key and value inputs; and Keras' op equals the
    real layer. A converter that swaps the query and key kernels keeps every shape and fails."""
    module, layer = torch_attention(8, 2), keras_attention(8, 2)
    torch_spec, keras_spec = specs(module, layer)
    context = kinds.PairContext(torch_spec, keras_spec)
    weights = torch_read(module)
    converted = MHA.convert(weights, context)
    probe = RNG.normal(size=(2, *MHA.probe_shape(context))).astype("float32")
    params = kinds.LayerParams(groups=2)
    reference = run_layer(MHA, "torch", weights, probe, params)
    assert max_rel_diff(run_layer(MHA, "keras", converted, probe, params), reference) <= 1e-5
    layer.set_weights(converted)
    q, k, v = probe[:, :4], probe[:, 4:8], probe[:, 8:]
    assert max_rel_diff(np.asarray(layer(q, v, key=k)), reference) <= 1e-5
    swapped = [converted[2], converted[3], converted[0], converted[1], *converted[4:]]
    assert max_rel_diff(run_layer(MHA, "keras", swapped, probe, params), reference) > 0.01


def test_a_head_count_mismatch_is_refused() -> None:
    """Same tensor count, other heads: the plan compares the two layers' heads; a converter
    checks a weights file's (which does not store them) against the other side's."""
    from transfer.plan import pair_kind

    module, layer = torch_attention(8, 2), keras_attention(8, 4)
    torch_spec, keras_spec = specs(module, layer)
    with pytest.raises(IncompatibleWeightsError, match="2 group.*4"):
        pair_kind(torch_spec, keras_spec, "m.yaml", Rule("a", "b", False))
    with pytest.raises(IncompatibleWeightsError, match="2 heads and the Keras one 4"):
        MHA.convert(torch_read(module), kinds.PairContext(torch_spec, keras_spec))
    from_file = LayerSpec("mha", "keras", MHA, keras_spec.tensors, kind_from_file=True)
    with pytest.raises(IncompatibleWeightsError, match="2 heads and the Keras one 4"):
        MHA.convert(layer.get_weights(), kinds.PairContext(from_file, torch_spec))


def test_biases_on_one_side_only() -> None:
    """No bias is a zero bias, exactly; a non-zero bias into a layer without one is refused."""
    unbiased, biased = torch_attention(8, 2, bias=False), keras_attention(8, 2, bias=True)
    torch_spec, keras_spec = specs(unbiased, biased)
    converted = MHA.convert(torch_read(unbiased), kinds.PairContext(torch_spec, keras_spec))
    assert len(converted) == 8 and not any(np.any(a) for a in converted[1:6:2] + converted[7:])
    with pytest.raises(IncompatibleWeightsError, match="non-zero query/key/value biases and the torch attention none"):
        MHA.convert(biased.get_weights(), kinds.PairContext(keras_spec, torch_spec))


def test_attention_layers_are_recognised_and_nothing_is_stolen() -> None:
    """The new recognisers come after the old ones: a PReLU's (1, 1, C) alpha and a layer
    scale's (C,) stay what they were; attention variants Keras cannot compute are `other`."""
    nn = torch.nn
    assert kinds.torch_module_kind(nn.MultiheadAttention(8, 2), torch).name == "multi_head_attention"
    assert kinds.torch_module_kind(nn.MultiheadAttention(8, 2, add_bias_kv=True), torch).name == "other"
    assert kinds.torch_module_kind(nn.MultiheadAttention(8, 2, kdim=4, vdim=4), torch).name == "other"
    assert kinds.torch_module_kind(nn.MultiheadAttention(8, 2, add_zero_attn=True), torch).name == "other"
    assert kinds.keras_layer_kind(keras_attention(8, 2), keras).name == "multi_head_attention"
    image_attention = keras.layers.MultiHeadAttention(2, 4, attention_axes=(1, 2))
    image = np.zeros((1, 3, 3, 8), "float32")
    image_attention(image, image)
    assert kinds.keras_layer_kind(image_attention, keras).name == "other"
    narrowed = keras.layers.MultiHeadAttention(2, 4, output_shape=(4,))
    narrowed(np.zeros((1, 3, 8), "float32"), np.zeros((1, 3, 8), "float32"))
    assert kinds.keras_layer_kind(narrowed, keras).name == "other"
    prelu = keras.layers.PReLU(shared_axes=[1, 2])
    prelu.build((None, 3, 3, 4))
    assert kinds.keras_layer_kind(prelu, keras).name == "prelu"
    assert kinds.keras_file_kind(["alpha"], [(1, 1, 4)]).name == "prelu"
    pointwise_1d = keras.layers.Conv1D(4, 1, use_bias=False)  # its one (1, in, out) kernel is no embedding
    pointwise_1d.build((None, 5, 3))
    assert kinds.keras_layer_kind(pointwise_1d, keras).name == "other"
    assert kinds.keras_file_kind(["kernel"], [(1, 3, 4)]).name == "other"
    assert kinds.keras_file_kind(["vars/0"], [(4,)]).name == "layernorm"
    assert kinds.torch_file_kind({"layer_scale": (4, 1, 1)}).name == "channel_scale"
    assert kinds.torch_file_kind({"class_token": (1, 1, 8)}).name == "token_embedding"
    assert kinds.torch_file_kind({"pos_embedding": (1, 17, 8)}).name == "token_embedding"
    assert kinds.keras_file_kind(["pos_embedding"], [(1, 17, 8)]).name == "token_embedding"
    assert kinds.torch_file_kind({"in_proj_weight": (24, 8), "in_proj_bias": (24,), "out_proj.weight": (8, 8),
                                  "out_proj.bias": (8,)}).name == "multi_head_attention"
    assert kinds.keras_file_kind(["kernel", "bias"] * 4, [(8, 2, 4), (2, 4)] * 3 + [(2, 4, 8), (8,)]) \
        is MHA


def test_a_state_dict_groups_out_proj_with_its_attention(tmp_path: Path) -> None:
    """A state dict's layers are the live module's: the attention with its out_proj is one layer
    (its tensors in the same order), and out_proj is no layer of its own."""
    from transfer.sources.torch_files import StateDictSource, load_torch_file

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch_attention(8, 2))
    torch.save(model.state_dict(), tmp_path / "m.pth")
    from_file = StateDictSource(tmp_path / "m.pth", load_torch_file(tmp_path / "m.pth"), 1e-5, "test").layers()
    live = TorchModuleWeights(model).layers()
    assert list(from_file) == list(live) == ["0", "1"]
    assert [t.name for t in from_file["1"].tensors] == [t.name for t in live["1"].tensors]
    assert from_file["1"].kind is live["1"].kind is MHA



class TimmAttention(torch.nn.Module):
    """timm's `Attention` (timm/layers/attention.py), written out: timm is not installed here."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = torch.nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm, self.k_norm = torch.nn.Identity(), torch.nn.Identity()
        self.attn_drop = torch.nn.Dropout(0.0)
        self.proj = torch.nn.Linear(dim, dim)
        self.proj_drop = torch.nn.Dropout(0.0)

    def forward(self, x: Any) -> Any:
        batch, tokens, channels = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = torch.nn.functional.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(batch, tokens, channels)))


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_a_timm_fused_qkv_attention_is_one_attention_layer_both_ways(qkv_bias: bool, tmp_path: Path) -> None:
    """timm's attention (a fused `qkv` Linear and a `proj` Linear, no tensors of its own) is one
    multi_head_attention layer, live and in a state dict; it moves into Keras' layer and back."""
    from transfer.sources.torch_files import StateDictSource, load_torch_file

    torch.manual_seed(3)
    model = torch.nn.Sequential(TimmAttention(8, 2, qkv_bias)).eval()
    live = TorchModuleWeights(model).layers()
    torch.save(model.state_dict(), tmp_path / "timm.pth")
    from_file = StateDictSource(tmp_path / "timm.pth", load_torch_file(tmp_path / "timm.pth"), 1e-6, "t").layers()
    names = ["proj.bias", "proj.weight", *(["qkv.bias"] if qkv_bias else []), "qkv.weight"]
    assert list(live) == list(from_file) == ["0"]
    assert [t.name for t in live["0"].tensors] == [t.name for t in from_file["0"].tensors] == names
    assert live["0"].kind is from_file["0"].kind is MHA and live["0"].groups == 2
    layer = keras_attention(8, 2)
    _, keras_spec = specs(torch_attention(8, 2), layer)
    original = TorchModuleWeights(model).read("0")
    layer.set_weights(MHA.convert(original, kinds.PairContext(live["0"], keras_spec)))
    x = RNG.normal(size=(2, 5, 8)).astype("float32")
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert max_rel_diff(np.asarray(layer(x, x)), expected) <= 1e-5
    back = MHA.convert([np.asarray(w) for w in layer.get_weights()], kinds.PairContext(keras_spec, live["0"]))
    assert all(np.array_equal(a, b) for a, b in zip(original, back))
    assert kinds.torch_module_kind(TimmAttention(8, 4, True), torch).name == "multi_head_attention"
    normalised = TimmAttention(8, 2, True)
    normalised.q_norm = torch.nn.LayerNorm(4)  # qk_norm=True: another function
    assert kinds.torch_module_kind(normalised, torch).name == "other"


# ---- the patch embedding, the class token and the position embedding -----------------------


def test_the_patch_embedding_is_an_ordinary_conv2d() -> None:
    """A conv whose stride is its kernel: the conv2d kind moves it; the patches agree."""
    conv = torch.nn.Conv2d(3, 6, 4, stride=4)
    keras_conv = keras.layers.Conv2D(6, 4, strides=4)
    x = RNG.normal(size=(2, 8, 12, 3)).astype("float32")
    keras_conv(x)
    torch_spec = TorchModuleWeights(torch.nn.Sequential(conv)).layers()["0"]
    keras_spec = KerasModelWeights(keras.Sequential([keras.Input((8, 12, 3)), keras_conv])).layers()[keras_conv.name]
    assert torch_spec.kind is keras_spec.kind is kinds.CONV2D
    keras_conv.set_weights(kinds.BY_NAME["conv2d"].convert(torch_read(conv), kinds.PairContext(torch_spec, keras_spec)))
    with torch.no_grad():
        expected = conv(nchw(x)).numpy().transpose(0, 2, 3, 1)
    assert max_rel_diff(np.asarray(keras_conv(x)), expected) <= 1e-5


def test_token_embeddings_move_as_they_are_and_another_grid_is_refused() -> None:
    entry = kinds.BY_NAME["token_embedding"]
    array = RNG.normal(size=(1, 17, 8)).astype("float32")
    torch_side = LayerSpec("encoder", "torch", kinds.TOKEN_EMBEDDING, (TensorSpec("pos_embedding", (1, 17, 8), "float32"),))
    keras_side = LayerSpec("pos", "keras", kinds.TOKEN_EMBEDDING, (TensorSpec("pos_embedding", (1, 17, 8), "float32"),))
    (moved,) = entry.convert([array], kinds.PairContext(torch_side, keras_side))
    assert np.array_equal(moved, array)
    probe = RNG.normal(size=(2, *entry.probe_shape(kinds.PairContext(torch_side, keras_side)))).astype("float32")
    assert np.array_equal(run_layer(entry, "torch", [array], probe), run_layer(entry, "keras", [moved], probe))
    bigger = LayerSpec("pos", "keras", kinds.TOKEN_EMBEDDING, (TensorSpec("pos_embedding", (1, 37, 8), "float32"),))
    with pytest.raises(IncompatibleWeightsError, match="resample: bicubic"):
        entry.convert([array], kinds.PairContext(torch_side, bigger))


# ---- the shipped ViT, both ways ------------------------------------------------------------


def small_mapping(name: str, source: dict[str, Any] | None = None) -> dict[str, Any]:
    data = yaml.safe_load((MAPPINGS / f"{name}.yaml").read_text())
    data["target"]["config"] = dict(SMALL)
    if source is not None:
        data["source"] = source
    return data


def small_torch_vit() -> Any:
    from transfer.targets.torch_vit import build_torch_vit

    torch.manual_seed(0)
    model = randomize_torch(build_torch_vit(**SMALL), seed=3)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # He-scaled in_proj (randomize_torch leaves it at uniform(0.5, 1.5))
        for module in model.modules():
            if isinstance(module, torch.nn.MultiheadAttention):
                module.in_proj_weight.copy_(torch.randn(module.in_proj_weight.shape, generator=generator) * 0.35)
    return model


def test_small_vit_torchvision_to_keras(tmp_path: Path) -> None:
    """The torch model is the source itself (runnable: the stack check runs to the head)."""
    source = small_torch_vit()
    result = transfer.transfer_weights(small_mapping("vit_torchvision_to_keras"), source=source,
                                       strict=True, verify=True)
    rows = result.report.transferred
    assert len(rows) == 3 + 5 * SMALL["num_layers"] + 2
    assert {row.kind for row in rows} == {"token_embedding", "conv2d", "layernorm", "multi_head_attention", "dense"}
    verification = result.report.verification[0]
    assert verification.ok and verification.stack is not None and verification.stack.target == "heads_head"
    x = RNG.normal(size=(4, 32, 32, 3)).astype("float32")
    with torch.no_grad():
        expected = source(nchw(x)).numpy()
    got = np.asarray(result.model(x))
    assert max_rel_diff(got, expected) <= 1e-5 and np.array_equal(got.argmax(1), expected.argmax(1))


def test_small_vit_keras_to_torchvision_from_a_keras_file(tmp_path: Path) -> None:
    """The Keras model saved as a `.keras` file (its three small layers load back), moved into
    torchvision's VisionTransformer; the written state dict reloads and is checked bit for bit."""
    from transfer.targets.keras_vit import build_vit

    source = randomize_keras(build_vit(**SMALL), seed=4)
    source.save(tmp_path / "vit.keras")
    data = small_mapping("vit_keras_to_torchvision")
    data["source"]["weights"] = str(tmp_path / "vit.keras")
    result = transfer.transfer_weights(data, strict=True, verify=True, out=tmp_path / "vit.pth")
    assert result.report.ok and [v.stage for v in result.report.verification] == ["in memory",
                                                                                  "written file"]
    assert result.report.verification[0].stack.target == "heads.head"
    x = RNG.normal(size=(4, 32, 32, 3)).astype("float32")
    with torch.no_grad():
        got = result.model(nchw(x)).numpy()
    expected = np.asarray(source(x))
    assert max_rel_diff(got, expected) <= 1e-5 and np.array_equal(got.argmax(1), expected.argmax(1))


def test_a_vit_with_other_heads_is_refused_by_the_plan() -> None:
    data = small_mapping("vit_torchvision_to_keras")
    data["target"]["config"]["num_heads"] = 4
    with pytest.raises(IncompatibleWeightsError, match="self_attention' has 2 group.*4"):
        transfer.transfer_weights(data, source=small_torch_vit(), check=True)


def test_the_vit_builders_check_their_arguments() -> None:
    from transfer.targets.keras_vit import build_vit
    from transfer.targets.torch_vit import build_torch_vit

    for builder in (build_vit, build_torch_vit):
        with pytest.raises(ValueError, match="multiple of patch_size"):
            builder(**{**SMALL, "image_size": 30})
        with pytest.raises(ValueError, match="multiple of num_heads"):
            builder(**{**SMALL, "num_heads": 3})
        with pytest.raises(ValueError, match="num_layers must be a positive int"):
            builder(**{**SMALL, "num_layers": 0})
    model = build_vit(**SMALL, include_top=False)
    assert model.output.shape == (None, 17, 16)
    assert [s.kind.name for s in KerasModelWeights(model).layers().values()][:3] == ["conv2d", "token_embedding",
                                                                                 "token_embedding"]


# ---- resampling a position embedding -------------------------------------------------------


def torch_resampled(array: np.ndarray, grid: tuple[int, int], size: tuple[int, int], mode: str, prefix: int) -> np.ndarray:
    """timm's resample_abs_pos_embed, without antialias (torch's F.interpolate default)."""
    tokens = torch.from_numpy(array)
    spatial = tokens[:, prefix:].reshape(1, *grid, -1).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(spatial, size=size, mode=mode, align_corners=False)
    return torch.cat([tokens[:, :prefix], resized.permute(0, 2, 3, 1).reshape(1, size[0] * size[1], -1)], 1).numpy()


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
@pytest.mark.parametrize(("grid", "size", "prefix"), [((14, 14), (28, 28), 1), ((14, 14), (10, 10), 1),
                                                      ((4, 6), (7, 3), 2), ((3, 3), (3, 3), 0)])
def test_resampling_equals_torch_interpolate(mode: str, grid: tuple[int, int], size: tuple[int, int],
                                             prefix: int) -> None:
    array = RNG.normal(size=(1, prefix + grid[0] * grid[1], 6)).astype("float32")
    target_shape = (1, prefix + size[0] * size[1], 6)
    got = resample_position_embedding(array, target_shape, mode, prefix, grid, size)
    expected = torch_resampled(array, grid, size, mode, prefix)
    assert got.dtype == np.float32 and got.shape == target_shape
    assert max_rel_diff(got, expected) <= 1e-5
    assert np.array_equal(got[:, :prefix], array[:, :prefix])  # the class token kept, bit for bit


def test_resampling_the_same_grid_changes_nothing() -> None:
    for mode in ("bicubic", "bilinear"):
        assert np.allclose(interpolation_matrix(5, 5, mode), np.eye(5), atol=1e-12)


def test_the_kind_hook_resamples_onto_the_target_grid() -> None:
    """`LayerKind.resample` (a rule's `resample: bicubic`): a 4x4 grid onto 6x6, the class token
    kept; the prefix is found from the two shapes (the fewest tokens leaving square grids)."""
    entry = kinds.BY_NAME["token_embedding"]
    assert entry.resample is not None and MHA.resample is None
    array = RNG.normal(size=(1, 17, 8)).astype("float32")
    source = LayerSpec("encoder", "torch", kinds.TOKEN_EMBEDDING, (TensorSpec("pos_embedding", (1, 17, 8), "float32"),))
    target = LayerSpec("pos", "keras", kinds.TOKEN_EMBEDDING, (TensorSpec("pos_embedding", (1, 37, 8), "float32"),))
    (got,) = entry.resample([array], kinds.PairContext(source, target), "bicubic", None)
    assert max_rel_diff(got, torch_resampled(array, (4, 4), (6, 6), "bicubic", 1)) <= 1e-5
    with pytest.raises(IncompatibleWeightsError, match="unknown resampling mode 'nearest'"):
        entry.resample([array], kinds.PairContext(source, target), "nearest", 1)
    with pytest.raises(IncompatibleWeightsError, match="not a square grid"):
        resample_position_embedding(array, (1, 20, 8), "bicubic", 1)


@pytest.mark.skipif(not hasattr(Rule, "resample"), reason="the rule option `resample:` is not wired into "
                                                           "transfer/mapping.py yet")
def test_a_resampled_position_embedding_is_reported_as_changed_and_never_proven_equal() -> None:
    """A small ViT into a Keras ViT at 1.5x its size (a 4x4 grid onto 6x6): the rule declares
    `resample: bicubic`; the target holds torch's interpolation, the class token kept; the report
    calls the layer CHANGED, its check compares with the declared change (not with the source),
    and no stack check runs (the models take inputs of different sizes)."""
    from transfer.report import summary

    source = small_torch_vit()
    data = small_mapping("vit_torchvision_to_keras")
    data["target"]["config"]["image_size"] = 48
    data["layers"]["encoder"] = {"target": "encoder_pos_embedding", "resample": "bicubic"}
    result = transfer.transfer_weights(data, source=source, strict=True, verify=True)
    embedding = result.model.get_layer("encoder_pos_embedding").get_weights()[0]
    expected = torch_resampled(source.encoder.pos_embedding.detach().numpy(), (4, 4), (6, 6), "bicubic", 1)
    assert max_rel_diff(embedding, expected) <= 1e-5
    assert np.array_equal(embedding[:, :1], source.encoder.pos_embedding.detach().numpy()[:, :1])
    (row,) = [t for t in result.report.transferred if t.target == "encoder_pos_embedding"]
    assert row.conversion.startswith("CHANGED: resampled (bicubic)")
    verification = result.report.verification[0]
    (check,) = [c for c in verification.layers if c.target == "encoder_pos_embedding"]
    assert "CHANGED" in check.method and "not equal to the source" in check.method
    assert verification.stack is None and "resampled" in verification.stack_note
    assert "CHANGED, not converted" in summary(result.report)
