"""Keras VGG16 -> Keras U-Net and SegNet: the core acceptance, through the CLI and the library."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

import transfer
from conftest import MAPPINGS, mapping_dict
from helpers.checkpoints import max_rel_diff, randomize_keras
from transfer.cli import main
from transfer.errors import IncompatibleWeightsError, MappingError, StrictModeError
from transfer.report import SkippedLayer
from transfer.targets.keras_unet import build_unet_vgg16

UNET_MAP = str(MAPPINGS / "unet_vgg16.yaml")
VGG_CONVS = [f"block{b}_conv{c}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for c in range(1, n + 1)]


def layer_output(model: Any, layer: str, x: np.ndarray) -> np.ndarray:
    return np.asarray(keras.Model(model.input, model.get_layer(layer).output)(x))


def weights_of(model: Any) -> dict[str, list[np.ndarray]]:
    return {layer.name: [np.array(w) for w in layer.get_weights()] for layer in model.layers if layer.weights}


def test_cli_unet_from_notop_h5(notop_h5: Path, keras_vgg: Any, tmp_path: Path, capsys) -> None:
    """Acceptance: 13 layers moved, block5_conv3 equals VGG16's on the same input."""
    out, report_path = tmp_path / "UNET.keras", tmp_path / "REPORT.json"
    code = main(["--map", UNET_MAP, "--source-weights", str(notop_h5), "--out", str(out),
                 "--report", str(report_path)])
    assert code == 0
    report = json.loads(report_path.read_text())
    assert [t["target"] for t in report["transferred"]] == VGG_CONVS
    assert report["params_moved"] == 14_714_688 and report["ok"] is True
    assert {u["layer"] for u in report["untouched"]} >= {"dec1_conv1", "head"}
    assert report["frozen"] == VGG_CONVS
    unet = keras.saving.load_model(out, compile=False)
    x = np.random.default_rng(0).normal(0, 50, size=(1, 256, 256, 3)).astype("float32")
    assert max_rel_diff(layer_output(unet, "block5_conv3", x), layer_output(keras_vgg, "block5_conv3", x)) <= 1e-5
    assert "moved 13 layers" in capsys.readouterr().out


@pytest.mark.parametrize("fixture", ["notop_h5_keras1", "notop_weights_h5", "notop_keras"])
def test_every_keras_file_format_gives_the_same_weights(fixture: str, request, keras_vgg: Any) -> None:
    """The 2016-style legacy names, Keras 3 `.weights.h5` (restored into VGG16 by name) and
    `.keras` all move exactly the source's tensors."""
    path = request.getfixturevalue(fixture)
    result = transfer.transfer_weights(mapping_dict("unet_vgg16.yaml", input_shape=[64, 64, 3]),
                                       source_weights=path)
    assert len(result.report.transferred) == 13
    for name in VGG_CONVS:
        for got, expected in zip(result.model.get_layer(name).get_weights(), keras_vgg.get_layer(name).get_weights()):
            assert np.array_equal(got, expected)


def test_live_keras_model_as_source(keras_vgg: Any) -> None:
    result = transfer.transfer_weights(mapping_dict("unet_vgg16.yaml", input_shape=[64, 64, 3]), source=keras_vgg)
    assert np.array_equal(result.model.get_layer("block3_conv2").kernel, keras_vgg.get_layer("block3_conv2").kernel)


def test_full_vgg16_file_reports_fc_layers_skipped(top_h5: Path, tmp_path: Path) -> None:
    """Acceptance: fc1, fc2, predictions are skipped with a reason; --strict with an
    undeclared skip fails with exit code 4."""
    result = transfer.transfer_weights(UNET_MAP, source_weights=top_h5)
    assert result.report.skipped == [SkippedLayer(n, "declared in skip", True)
                              for n in ("fc1", "fc2", "predictions")]
    undeclared = tmp_path / "undeclared.yaml"
    undeclared.write_text(Path(UNET_MAP).read_text().replace("skip: [fc1, fc2, predictions]", "skip: [fc1]"))
    assert main(["--map", str(undeclared), "--source-weights", str(top_h5), "--strict", "--check"]) == 4
    assert main(["--map", str(undeclared), "--source-weights", str(top_h5), "--check"]) == 0
    with pytest.raises(StrictModeError, match="source layer 'fc2' skipped: no rule matched"):
        transfer.transfer_weights(str(undeclared), source_weights=top_h5, strict=True)


def test_segnet_mapping_moves_the_13_convs_unchanged(notop_h5: Path, keras_vgg: Any) -> None:
    result = transfer.transfer_weights(str(MAPPINGS / "segnet_vgg16.yaml"), source_weights=notop_h5)
    assert [t.target for t in result.report.transferred] == VGG_CONVS
    for name in VGG_CONVS:
        for got, expected in zip(result.model.get_layer(name).get_weights(), keras_vgg.get_layer(name).get_weights()):
            assert np.array_equal(got, expected)


def test_check_reads_no_tensor_and_changes_nothing(notop_h5: Path, monkeypatch) -> None:
    from transfer.sources.keras_files import LegacyH5Source

    def refuse(self, name):
        raise AssertionError(f"--check read the tensors of {name}")

    monkeypatch.setattr(LegacyH5Source, "read", refuse)
    target = build_unet_vgg16(input_shape=(64, 64, 3), classes=6)
    before = weights_of(target)
    result = transfer.transfer_weights(UNET_MAP, source_weights=notop_h5, target=target, check=True)
    assert result.report.checked_only and len(result.report.transferred) == 13
    after = weights_of(target)
    assert all(np.array_equal(a, b) for k in before for a, b in zip(before[k], after[k]))
    assert target.get_layer("block1_conv1").trainable  # not frozen either


def test_a_shape_mismatch_leaves_the_live_target_untouched(notop_h5: Path) -> None:
    target = build_unet_vgg16(input_shape=(64, 64, 3), classes=6)
    before = weights_of(target)
    mapping = mapping_dict("unet_vgg16.yaml")
    mapping["layers"] = {"block([1-4])_conv(\\d)": "block\\1_conv\\2", "block5_conv([12])": "block5_conv\\1",
                         "block5_conv3": "head"}
    with pytest.raises(IncompatibleWeightsError, match="shape mismatch: source layer 'block5_conv3'"):
        transfer.transfer_weights(mapping, source_weights=notop_h5, target=target)
    after = weights_of(target)
    assert all(np.array_equal(a, b) for k in before for a, b in zip(before[k], after[k]))
    mapping["layers"]["block5_conv3"] = "dec4_conv1"  # no bias there: counted, not dropped
    with pytest.raises(IncompatibleWeightsError, match="has 2 tensors \\(kernel, bias\\) and the target layer 1"):
        transfer.transfer_weights(mapping, source_weights=notop_h5, target=target)


@pytest.mark.parametrize("layers, message", [
    ({"block1_conv1": "block1_conv1", "block1_cnv2": "block1_conv2"},
     "has no weighted layer 'block1_cnv2'. Did you mean 'block1_conv2'"),
    ({"block1_conv1": "block1_conv9"}, "maps to 'block1_conv9', which is not a weighted layer"),
    ({"block1_conv1": "block1_conv1", "block1_conv(\\d)": "block1_conv\\1"}, "is matched by two rules"),
    ({"block1_conv1": "block1_conv1", "block1_conv2": "block1_conv1"}, "are both sent to target layer 'block1_conv1'"),
    ({"block9_(.*)": "\\1"}, "matches no weighted layer"),
])
def test_mapping_that_does_not_fit_the_models(notop_h5: Path, layers: dict, message: str) -> None:
    mapping = mapping_dict("unet_vgg16.yaml", input_shape=[64, 64, 3])
    mapping["layers"] = layers
    with pytest.raises(MappingError, match=__import__("re").escape(message)):
        transfer.transfer_weights(mapping, source_weights=notop_h5)


def test_freeze_pattern_that_matches_nothing_is_an_error(notop_h5: Path) -> None:
    mapping = mapping_dict("unet_vgg16.yaml", input_shape=[64, 64, 3])
    mapping["freeze"] = ["encoder_*"]
    with pytest.raises(MappingError, match="freeze pattern 'encoder_\\*' matches no weighted target layer"):
        transfer.transfer_weights(mapping, source_weights=notop_h5)


def test_keras_by_position_misloads_where_the_mapping_does_not(keras_vgg: Any, notop_weights_h5: Path,
                                                               tmp_path: Path) -> None:
    """NOTES' failure case: one extra Conv2D in front of the encoder shifts Keras 3's
    positional `.weights.h5` loading; the name-based mapping moves every kernel right."""
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(3, 1, name="stem")(inputs)
    for layer in keras_vgg.layers[1:]:
        x = layer.__class__.from_config(layer.get_config())(x)
    shifted = keras.Model(inputs, x)
    with warnings.catch_warnings(record=True) as caught:  # Keras says some were skipped, not which landed wrong
        warnings.simplefilter("always")
        shifted.load_weights(notop_weights_h5, skip_mismatch=True)
    assert any("could not be loaded" in str(w.message) for w in caught)
    misplaced = [n for n in VGG_CONVS if not np.array_equal(shifted.get_layer(n).kernel, keras_vgg.get_layer(n).kernel)]
    assert misplaced  # Keras' positional loading got these wrong without an error

    randomize_keras(shifted, seed=99)
    mapping = {"format": 1, "source": {"framework": "keras", "model": "vgg16", "weights": "imagenet"},
               "target": {"framework": "keras", "file": "unused.keras"},
               "layers": {"block(\\d)_conv(\\d)": "block\\1_conv\\2"}, "untouched": ["stem"]}
    result = transfer.transfer_weights(mapping, source_weights=notop_weights_h5, target=shifted, strict=True)
    assert len(result.report.transferred) == 13
    assert all(np.array_equal(shifted.get_layer(n).kernel, keras_vgg.get_layer(n).kernel) for n in VGG_CONVS)


def test_raw_weights_h5_without_a_model_uses_file_paths(notop_weights_h5: Path, keras_vgg: Any) -> None:
    """Without `model:`, a Keras 3 weights file's layers are its own paths (conv2d, conv2d_1, ...)."""
    mapping = {"format": 1, "source": {"framework": "keras", "weights": str(notop_weights_h5)},
               "target": {"framework": "keras", "model": "unet_vgg16", "config": {"input_shape": [64, 64, 3]}},
               "layers": {"conv2d": "block1_conv1", "conv2d_1": "block1_conv2"}}
    result = transfer.transfer_weights(mapping)
    assert [s.layer for s in result.report.skipped][:2] == ["conv2d_2", "conv2d_3"]
    assert np.array_equal(result.model.get_layer("block1_conv2").kernel, keras_vgg.get_layer("block1_conv2").kernel)


def test_user_target_file_and_factory(notop_h5: Path, tmp_path: Path) -> None:
    build_unet_vgg16(input_shape=(64, 64, 3), classes=2).save(tmp_path / "mine.keras")
    mapping = mapping_dict("unet_vgg16.yaml")
    mapping["target"] = {"framework": "keras", "file": str(tmp_path / "mine.keras")}
    assert len(transfer.transfer_weights(mapping, source_weights=notop_h5).report.transferred) == 13
    mapping["target"] = {"framework": "keras", "model": "ignored", "config": {"input_shape": [32, 32, 3]}}
    result = transfer.transfer_weights(mapping, source_weights=notop_h5,
                                       target="transfer.targets.keras_unet:build_unet_vgg16")
    assert result.model.input_shape == (None, 32, 32, 3)


@pytest.fixture(scope="module")
def nested_h5(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A Keras 2-style full-model file: VGG16 (no top) nested as a layer, then Flatten, Dense."""
    from helpers.checkpoints import keras_vgg16

    inner = keras_vgg16(include_top=False, seed=7, input_shape=(32, 32, 3))
    model = keras.Sequential([keras.Input((32, 32, 3)), inner, keras.layers.Flatten(name="flat"),
                              keras.layers.Dense(10, name="cls")])
    path = tmp_path_factory.mktemp("nested") / "classifier.h5"
    model.save(path)
    return path, inner


def test_nested_keras2_file_addresses_inner_layers(nested_h5: tuple[Path, Any]) -> None:
    path, inner = nested_h5
    mapping = mapping_dict("unet_vgg16.yaml", input_shape=[32, 32, 3])
    mapping["source"] = {"framework": "keras", "weights": str(path)}
    mapping["layers"] = {r"vgg16/(block\d_conv\d)": r"\1"}
    mapping["skip"] = ["cls"]
    model, report = transfer.transfer_weights(mapping, strict=True, verify=True)
    assert [t.source for t in report.transferred][:2] == ["vgg16/block1_conv1", "vgg16/block1_conv2"]
    for layer in inner.layers:
        if layer.weights:
            for got, expected in zip(model.get_layer(layer.name).get_weights(), layer.get_weights()):
                assert np.array_equal(got, expected)


def test_suggest_sees_the_inner_layers_of_a_nested_file(nested_h5: tuple[Path, Any], tmp_path: Path) -> None:
    out = tmp_path / "draft.yaml"
    target = "{framework: keras, model: unet_vgg16, config: {input_shape: [32, 32, 3]}}"
    assert main(["suggest", "--source", str(nested_h5[0]), "--target", target, "--out", str(out)]) == 0
    import yaml

    layers = yaml.safe_load(out.read_text())["layers"]
    assert layers["vgg16/block1_conv1"] == "block1_conv1" and layers["vgg16/block5_conv3"] == "block5_conv3"


def test_split_nested_keeps_plain_layers_whole() -> None:
    from transfer.sources.keras_files import split_nested

    assert split_nested("block1_conv1", ["block1_conv1/kernel:0", "block1_conv1/bias:0"]) == \
        [("block1_conv1", ["block1_conv1/kernel:0", "block1_conv1/bias:0"])]
    assert split_nested("block1_conv1", ["block1_conv1_W_1:0", "block1_conv1_b_1:0"])[0][0] == "block1_conv1"
    assert split_nested("cls", ["dense_3/kernel:0", "dense_3/bias:0"])[0][0] == "cls"  # a renamed layer
    assert [n for n, _ in split_nested("m", ["a/kernel", "a/bias", "b/kernel"])] == ["m/a", "m/b"]
