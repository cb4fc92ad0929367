"""Input bands by name (issue 21): `source.bands`, `target.bands` and a rule's `bands:` on a first
conv (plain, depthwise, separable) or dense layer, each result compared with a hand computation,
through the library with live models and through the command line with files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import torch

from transfer import transfer_weights
from transfer.cli import main
from transfer.errors import IncompatibleWeightsError, MappingError
from transfer.mapping import ModelSpec, load_mapping
from transfer.plan import source_bands
from transfer.report import summary

RNG = np.random.default_rng(21)


def keras_net(kind: str, channels: int, seed: int, bias: bool = True) -> Any:
    """A first layer of `kind` on `channels` bands, then a 1x1 conv: seeded, every weight random."""
    inputs = keras.Input((9, 10, channels) if kind != "dense" else (channels,))
    if kind == "conv":
        x = keras.layers.Conv2D(5, 3, use_bias=bias, name="first")(inputs)
    elif kind == "depthwise":
        x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="first")(inputs)
    elif kind == "separable":
        x = keras.layers.SeparableConv2D(5, 3, depth_multiplier=2, name="first")(inputs)
    else:
        x = keras.layers.Dense(5, name="first")(inputs)
    x = keras.layers.Dense(2, name="second")(x)
    model = keras.Model(inputs, x)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.weights])
    return model


def mapping(source_bands: list[str] | None, target_bands: list[str] | None, rule_bands: dict | None = None,
            source_framework: str = "keras", target_framework: str = "keras", **source: Any) -> dict:
    rule: dict[str, Any] = {"target": "first", "bands": rule_bands if rule_bands is not None else {}}
    data: dict[str, Any] = {
        "format": 1,
        "source": {"framework": source_framework, "model": "mine", **source},
        "target": {"framework": target_framework, "model": "yours"},
        "layers": {"first": rule, "second": "second"}}
    if source_bands is not None:
        data["source"]["bands"] = source_bands
    if target_bands is not None:
        data["target"]["bands"] = target_bands
    return data


def first_output(model: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(model.get_layer("first")(x))


def weights(model: Any) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_weights()]


def test_a_reorder_is_exact_on_band_permuted_input() -> None:
    """B, G, R into R, G, B: the kernel's input slices are the source's, bit for bit, and the
    target fed R, G, B computes what the source computes fed the same image as B, G, R."""
    source, target = keras_net("conv", 3, 0), keras_net("conv", 3, 1)
    model, report = transfer_weights(mapping(["B", "G", "R"], ["R", "G", "B"]), source=source, target=target,
                                     verify=True)
    got, expected = model.get_layer("first").kernel.numpy(), source.get_layer("first").kernel.numpy()
    assert np.array_equal(got, expected[:, :, ::-1, :])  # exact: no arithmetic
    x_rgb = RNG.normal(size=(2, 9, 10, 3)).astype("float32")
    reference = first_output(source, x_rgb[..., ::-1])
    assert np.max(np.abs(first_output(model, x_rgb) - reference)) <= 1e-6 * np.max(np.abs(reference))
    row = report.transferred[0]
    assert row.bands is not None and row.bands["origin"] == {"R": "R", "G": "G", "B": "B"}  # same-named bands are copied by default
    check = report.verification[0].layers[0]
    assert check.ok and "declared change" in check.method and "not equality" in check.method
    assert "fed different bands, so the stack check cannot compare them" in report.verification[0].stack_note
    assert "CHANGED, not converted (declared in the mapping): first (input bands mapped from [B, G, R] to [R, G, B]" \
        in summary(report)


@pytest.mark.parametrize("policy", ["mean", "zero"])
def test_mean_and_zero_are_exact_against_a_hand_computation(policy: str) -> None:
    """IR-R-G from B, G, R: R and G copied, IR the mean of the three kernels (or zero)."""
    source, target = keras_net("conv", 3, 2), keras_net("conv", 3, 3)
    model, report = transfer_weights(mapping(["B", "G", "R"], ["IR", "R", "G"], {"IR": policy}), source=source,
                                     target=target, verify=True)
    kernel, bias = (w.numpy() for w in source.get_layer("first").weights)
    hand = np.stack([kernel.astype(np.float64).mean(axis=2).astype(np.float32) if policy == "mean"
                     else np.zeros_like(kernel[:, :, 0]), kernel[:, :, 2], kernel[:, :, 1]], axis=2)
    got_kernel, got_bias = (w.numpy() for w in model.get_layer("first").weights)
    assert np.array_equal(got_kernel, hand) and np.array_equal(got_bias, bias)
    x = RNG.normal(size=(2, 9, 10, 3)).astype("float32")
    by_hand = np.asarray(keras.ops.conv(x, hand, padding="valid")) + bias
    assert np.max(np.abs(first_output(model, x) - by_hand)) <= 1e-6 * np.max(np.abs(by_hand))
    # and the meaning: the source layer on B = G = R = IR/3 (mean) or on B = 0 (zero), plus R and G
    x_source = np.stack([np.zeros_like(x[..., 0]), x[..., 2], x[..., 1]], axis=-1)
    if policy == "mean":
        x_source = x_source + x[..., :1] / 3
    reference = first_output(source, x_source)
    assert np.max(np.abs(first_output(model, x) - reference)) <= 1e-5 * np.max(np.abs(reference))
    assert report.ok and report.transferred[0].bands["origin"] == {"IR": policy, "R": "R", "G": "G"}


def test_an_unmapped_band_is_refused_and_the_target_untouched() -> None:
    """IR has no same-named source band and no entry: a mapping error (exit 3), before any
    weight is read (the mapping and the two band lists say it), the target as it was."""
    source, target = keras_net("conv", 3, 4), keras_net("conv", 3, 5)
    before = weights(target)
    with pytest.raises(MappingError, match=r"target band 'IR' has no same-named source band .* never filled "
                                           r"silently") as caught:
        transfer_weights(mapping(["B", "G", "R"], ["IR", "R", "G"]), source=source, target=target)
    assert caught.value.exit_code == 3
    assert all(np.array_equal(a, b) for a, b in zip(before, weights(target)))


def test_a_torch_first_conv_into_keras_with_a_fourth_band_verified_as_a_declared_change() -> None:
    torch.manual_seed(0)
    source = torch.nn.Sequential()
    source.add_module("first", torch.nn.Conv2d(3, 5, 3))
    source.add_module("flat", torch.nn.Flatten(start_dim=2))  # any second weighted layer would do
    source.eval()
    target = keras_net("conv", 4, 6)
    data = mapping(["R", "G", "B"], ["B", "G", "R", "NIR"], {"NIR": "zero"}, source_framework="torch")
    data["layers"] = {"first": data["layers"]["first"]}
    data["untouched"] = ["second"]
    model, report = transfer_weights(data, source=source, target=target, verify=True)
    x = RNG.normal(size=(2, 9, 10, 4)).astype("float32")
    with torch.no_grad():
        reference = source.first(torch.from_numpy(x[..., [2, 1, 0]].transpose(0, 3, 1, 2).copy())).numpy()
    assert np.max(np.abs(first_output(model, x) - reference.transpose(0, 2, 3, 1))) <= 1e-5 * np.abs(reference).max()
    assert report.ok and "declared change" in report.verification[0].layers[0].method


def test_a_live_torch_source_without_bands_is_asked_for_them() -> None:
    """A live model's bands cannot be guessed from a label: declare source.bands."""
    source = torch.nn.Sequential()
    source.add_module("first", torch.nn.Conv2d(3, 5, 3))
    data = mapping(None, ["R", "G", "B"], source_framework="torch")
    data["layers"] = {"first": data["layers"]["first"]}
    data["untouched"] = ["second"]
    with pytest.raises(MappingError, match=r"the source's bands are not known: declare source.bands"):
        transfer_weights(data, source=source, target=keras_net("conv", 3, 7))


def test_depthwise_groups_follow_their_bands() -> None:
    """A depthwise conv keeps one group of outputs per band: R's group is the source's R group."""
    source, target = keras_net("depthwise", 3, 8), keras_net("depthwise", 3, 9)
    model, report = transfer_weights(mapping(["B", "G", "R"], ["R", "G", "B"]), source=source, target=target,
                                     verify=True)
    x = RNG.normal(size=(2, 9, 10, 3)).astype("float32")
    expected = first_output(source, x[..., ::-1]).reshape(2, 7, 8, 3, 2)[..., ::-1, :].reshape(2, 7, 8, 6)
    assert np.max(np.abs(first_output(model, x) - expected)) <= 1e-6 * np.abs(expected).max()
    assert report.ok


def test_a_torch_depthwise_conv_into_keras_with_its_bands_reordered() -> None:
    torch.manual_seed(1)
    source = torch.nn.Sequential()
    source.add_module("first", torch.nn.Conv2d(3, 6, 3, groups=3))
    source.eval()
    data = mapping(["R", "G", "B"], ["B", "G", "R"], source_framework="torch")
    data["layers"] = {"first": data["layers"]["first"]}
    data["untouched"] = ["second"]
    model, report = transfer_weights(data, source=source, target=keras_net("depthwise", 3, 10), verify=True)
    x = RNG.normal(size=(2, 9, 10, 3)).astype("float32")
    with torch.no_grad():
        y = source(torch.from_numpy(x[..., ::-1].transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
    expected = y.reshape(2, 7, 8, 3, 2)[..., ::-1, :].reshape(2, 7, 8, 6)
    assert np.max(np.abs(first_output(model, x) - expected)) <= 1e-5 * np.abs(expected).max()
    assert report.ok and report.verification[0].layers[0].ok


def test_a_separable_conv_copies_and_zeroes_bands_and_refuses_mean() -> None:
    source = keras_net("separable", 3, 11)
    model, report = transfer_weights(mapping(["B", "G", "R"], ["R", "G", "B", "IR"], {"IR": "zero"}), source=source,
                                     target=keras_net("separable", 4, 12), verify=True)
    x = RNG.normal(size=(2, 9, 10, 4)).astype("float32")
    reference = first_output(source, x[..., [2, 1, 0]])  # IR is ignored
    assert np.max(np.abs(first_output(model, x) - reference)) <= 1e-5 * np.abs(reference).max()
    assert report.ok
    target = keras_net("separable", 4, 13)
    before = weights(target)
    with pytest.raises(IncompatibleWeightsError, match="a separable conv's band can be copied or zeroed, not `mean`"):
        transfer_weights(mapping(["B", "G", "R"], ["R", "G", "B", "IR"], {"IR": "mean"}), source=source,
                         target=target)
    assert all(np.array_equal(a, b) for a, b in zip(before, weights(target)))


def test_a_first_dense_layer_across_frameworks() -> None:
    """A per-pixel spectral MLP: torch Linear on R, G, B into a Keras Dense on B, G, R, NIR (mean)."""
    torch.manual_seed(2)
    source = torch.nn.Sequential()
    source.add_module("first", torch.nn.Linear(3, 5))
    source.eval()
    data = mapping(["R", "G", "B"], ["B", "G", "R", "NIR"], {"NIR": "mean"}, source_framework="torch")
    data["layers"] = {"first": data["layers"]["first"]}
    data["untouched"] = ["second"]
    model, report = transfer_weights(data, source=source, target=keras_net("dense", 4, 14), verify=True)
    x = RNG.normal(size=(6, 4)).astype("float32")
    x_source = x[:, [2, 1, 0]] + x[:, 3:] / 3
    with torch.no_grad():
        reference = source(torch.from_numpy(x_source)).numpy()
    assert np.max(np.abs(first_output(model, x) - reference)) <= 1e-5 * np.abs(reference).max()
    assert report.ok and report.transferred[0].bands["origin"]["NIR"] == "mean"


def test_the_contract_gives_each_band_its_origin_and_statistics() -> None:
    """A band copied from R is fed as R is: caffe's R mean (123.68, std 1 on 0-255)."""
    source = keras_net("conv", 3, 15)
    _, report = transfer_weights(mapping(None, ["IR", "R", "G"], {"IR": "R"}, preprocessing="caffe"),
                                 source=source, target=keras_net("conv", 3, 16))
    rows = {row["band"]: row for row in report.preprocessing["bands"]["first"]["target_bands"]}
    assert rows["IR"]["origin"] == "R" and rows["IR"]["mean"] == 123.68 and rows["IR"]["std"] == 1.0
    assert rows["G"]["mean"] == 116.779 and rows["R"]["convention"] == "caffe"
    assert "IR <- R (fed as 'caffe': mean 123.68, std 1)" in summary(report)


def test_declared_target_bands_without_a_band_rule_are_refused() -> None:
    data = mapping(["B", "G", "R"], ["R", "G", "B"])
    data["layers"]["first"] = "first"
    with pytest.raises(MappingError, match=r"target.bands \[R, G, B\] differ from the source's \[B, G, R\]"):
        transfer_weights(data, source=keras_net("conv", 3, 17), target=keras_net("conv", 3, 18))


def test_a_band_count_that_does_not_fit_the_layer_is_exit_4() -> None:
    with pytest.raises(IncompatibleWeightsError, match=r"reads 3 input channel\(s\), but the source's bands are 4"):
        transfer_weights(mapping(["B", "G", "R", "N"], ["R", "G", "B"]), source=keras_net("conv", 3, 19),
                         target=keras_net("conv", 3, 20))


def test_band_lists_and_entries_are_validated_when_the_mapping_loads() -> None:
    with pytest.raises(MappingError, match=r"'mean' cannot name a band"):
        load_mapping(mapping(["B", "G", "mean"], ["R", "G", "B"]))
    with pytest.raises(MappingError, match=r"the band 'G' is listed twice"):
        load_mapping(mapping(["B", "G", "G"], ["R", "G", "B"]))
    with pytest.raises(MappingError, match=r"'NIR' is not one of target.bands \(IR, R, G\).*Did you mean 'IR'"):
        load_mapping(mapping(["B", "G", "R"], ["IR", "R", "G"], {"NIR": "mean"}))
    with pytest.raises(MappingError, match=r"'avg' is neither a source band \(B, G, R\) nor mean or zero"):
        load_mapping(mapping(["B", "G", "R"], ["IR", "R", "G"], {"IR": "avg"}))
    data = mapping(["B", "G", "R"], ["R", "G", "B"])
    data["layers"]["first"]["adapt"] = "in_channels"
    with pytest.raises(MappingError, match=r"maps its input bands by name \(`bands:`\) or adapts"):
        load_mapping(data)


def test_known_models_declare_their_bands() -> None:
    class Adapter:
        preprocessing = None

    assert source_bands(ModelSpec("keras", model="vgg16"), Adapter()) == ("B", "G", "R")  # type: ignore[arg-type]
    assert source_bands(ModelSpec("keras", model="resnet50"), Adapter()) == ("B", "G", "R")  # type: ignore[arg-type]
    assert source_bands(ModelSpec("torch", model="vgg16"), Adapter()) == ("R", "G", "B")  # type: ignore[arg-type]
    assert source_bands(ModelSpec("keras", model="efficientnet_b0"), Adapter()) == ("R", "G", "B")  # type: ignore[arg-type]
    # HED's VGG16 is caffe-style (the shipped mapping says `preprocessing: caffe`)
    hed = load_mapping("unet_vgg16_hed").source
    assert source_bands(hed, Adapter()) == ("B", "G", "R")  # type: ignore[arg-type]


def test_the_command_line_with_files(tmp_path: Path) -> None:
    """Source and target as .keras files, the mapping as YAML: exit 0 with the band map in the
    JSON report; an unmapped band is exit 3 and no output appears."""
    source, target = keras_net("conv", 3, 22), keras_net("conv", 3, 23)
    source.save(tmp_path / "source.keras")
    target.save(tmp_path / "target.keras")
    text = """
format: 1
source: {framework: keras, weights: source.keras, bands: [B, G, R]}
target: {framework: keras, file: target.keras, bands: [IR, R, G]}
layers:
  first: {target: first, bands: {IR: mean}}
  second: second
"""
    (tmp_path / "m.yaml").write_text(text)
    out, report = tmp_path / "out.keras", tmp_path / "report.json"
    assert main(["--map", str(tmp_path / "m.yaml"), "--out", str(out), "--verify", "--report", str(report),
                 "--quiet"]) == 0
    written = keras.saving.load_model(out)
    kernel = source.get_layer("first").kernel.numpy()
    assert np.array_equal(written.get_layer("first").kernel.numpy()[:, :, 1], kernel[:, :, 2])
    data = json.loads(report.read_text())
    assert data["transferred"][0]["bands"]["origin"] == {"IR": "mean", "R": "R", "G": "G"}
    assert data["transferred"][0]["source_file"].endswith("source.keras")
    # `verify` checks the converted file against the declared band map, and names a layer that breaks it
    assert main(["verify", "--map", str(tmp_path / "m.yaml"), "--target", str(out), "--quiet"]) == 0
    broken = keras.saving.load_model(out)
    kernel, bias = broken.get_layer("first").get_weights()
    broken.get_layer("first").set_weights([kernel[:, :, [0, 2, 1]], bias])  # R and G swapped: the same shape
    broken.save(tmp_path / "broken.keras")
    assert main(["verify", "--map", str(tmp_path / "m.yaml"), "--target", str(tmp_path / "broken.keras"),
                 "--quiet"]) == 6
    (tmp_path / "bad.yaml").write_text(text.replace("{IR: mean}", "{}"))
    assert main(["--map", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "bad.keras"), "--quiet"]) == 3
    assert not (tmp_path / "bad.keras").exists()


def test_an_identity_band_map_changes_nothing_and_keeps_the_stack_check() -> None:
    source = keras_net("conv", 3, 24)
    model, report = transfer_weights(mapping(["R", "G", "B"], ["R", "G", "B"]), source=source,
                                     target=keras_net("conv", 3, 25), verify=True)
    assert np.array_equal(model.get_layer("first").kernel.numpy(), source.get_layer("first").kernel.numpy())
    assert report.transferred[0].changed is None and report.transferred[0].bands["origin"] == {"R": "R", "G": "G",
                                                                                                 "B": "B"}
    assert report.verification[0].stack is not None and report.verification[0].stack.ok
