"""PyTorch <-> Keras: every shipped cross-framework mapping, proven numerically against the
source model on the same input (activations, not shapes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import torch

import transfer
from conftest import MAPPINGS, mapping_dict
from helpers.checkpoints import max_rel_diff, randomize_keras
from transfer.cli import main
from transfer.errors import CheckpointError, IncompatibleWeightsError
from transfer.targets.keras_segnet import build_segnet_vgg16
from transfer.targets.torch_segnet import SegNetVGG16

RNG = np.random.default_rng(11)


def nchw(x: np.ndarray) -> Any:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def nhwc(t: Any) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


def keras_at(model: Any, layer: str, x: np.ndarray) -> np.ndarray:
    return np.asarray(keras.Model(model.input, model.get_layer(layer).output)(x, training=False))


# each VGG16 mapping from the command line once, and each torch file format once: a format is
# read the same whatever the mapping (the formats tier proves each reader), so the full product
# of the two would repeat those proofs. vgg16_torchvision_to_keras (138M parameters) runs in the
# CI conversion job, verified.
SHIPPED = [
    ("unet_vgg16_torchvision.yaml", "vgg16_pth"),
    ("segnet_vgg16_bn_torchvision.yaml", "vgg16_bn_safetensors"),
    ("segnet_vgg16_bn_torchvision.yaml", "vgg16_bn_legacy_pth"),
    ("segnet_torch_vgg16_bn.yaml", "vgg16_bn_pth"),
    ("segnet_torch_keras_vgg16.yaml", "notop_h5"),
]


@pytest.mark.parametrize("mapping, fixture", SHIPPED, ids=[f"{m[:-5]}<-{f}" for m, f in SHIPPED])
def test_every_shipped_mapping_runs_from_the_cli(mapping: str, fixture: str, request, tmp_path: Path) -> None:
    weights = request.getfixturevalue(fixture)
    framework = "keras" if "to_keras" in mapping or "torchvision" in mapping else "torch"
    out = tmp_path / ("out.weights.h5" if framework == "keras" else "out.safetensors")
    report = tmp_path / "report.json"
    code = main(["--map", str(MAPPINGS / mapping), "--source-weights", str(weights), "--out", str(out),
                 "--report", str(report), "--strict", "--quiet"])
    assert code == 0 and out.is_file()
    data = json.loads(report.read_text())
    assert data["ok"] and data["params_moved"] > 14_000_000


def test_vgg16_bn_into_keras_segnet_matches_torchvision(tv_vgg16_bn: Any, vgg16_bn_pth: Path) -> None:
    """Acceptance: features[:42] (through the last BN) vs the SegNet's block5_bn3."""
    result = transfer.transfer_weights(mapping_dict("segnet_vgg16_bn_torchvision.yaml", input_shape=[64, 64, 3]),
                                       source_weights=vgg16_bn_pth)
    x = RNG.normal(size=(2, 64, 64, 3)).astype("float32")
    with torch.no_grad():
        expected = nhwc(tv_vgg16_bn.features[:42](nchw(x)))
    assert max_rel_diff(keras_at(result.model, "block5_bn3", x), expected) <= 1e-4


def test_keras_default_epsilon_would_have_diverged(tv_vgg16_bn: Any, vgg16_bn_pth: Path) -> None:
    """The pitfall the mapping avoids: the same weights in a SegNet with Keras' epsilon 1e-3."""
    mapping = mapping_dict("segnet_vgg16_bn_torchvision.yaml", input_shape=[64, 64, 3], batchnorm_epsilon=1e-3)
    with pytest.raises(IncompatibleWeightsError, match="BatchNorm epsilon differs: source 1e-05"):
        transfer.transfer_weights(mapping, source_weights=vgg16_bn_pth)
    mapping["layers"] = {k: {"target": v, "epsilon": "rescale"} for k, v in mapping["layers"].items()}
    result = transfer.transfer_weights(mapping, source_weights=vgg16_bn_pth)
    x = RNG.normal(size=(1, 64, 64, 3)).astype("float32")
    with torch.no_grad():
        expected = nhwc(tv_vgg16_bn.features[:42](nchw(x)))
    assert max_rel_diff(keras_at(result.model, "block5_bn3", x), expected) <= 1e-4


def test_vgg16_into_keras_unet_matches_torchvision(tv_vgg16: Any, vgg16_safetensors: Path) -> None:
    result = transfer.transfer_weights(mapping_dict("unet_vgg16_torchvision.yaml", input_shape=[64, 64, 3]),
                                       source_weights=vgg16_safetensors)
    x = RNG.normal(size=(2, 64, 64, 3)).astype("float32")
    with torch.no_grad():
        expected = nhwc(tv_vgg16.features[:30](nchw(x)))  # through block5_conv3's ReLU
    assert max_rel_diff(keras_at(result.model, "block5_conv3", x), expected) <= 1e-4


def test_vgg16_bn_into_torch_segnet_matches_torchvision(tv_vgg16_bn: Any, vgg16_bn_legacy_pth: Path) -> None:
    """The notebook's case, from a 2017-style file without num_batches_tracked."""
    result = transfer.transfer_weights(str(MAPPINGS / "segnet_torch_vgg16_bn.yaml"), source_weights=vgg16_bn_legacy_pth)
    segnet = result.model.eval()
    x = torch.from_numpy(RNG.normal(size=(2, 3, 64, 64)).astype("float32"))
    with torch.no_grad():
        assert max_rel_diff(segnet.encode(x)[0], tv_vgg16_bn.features(x)) <= 1e-4


def test_keras_vgg16_into_torch_segnet_matches_keras(keras_vgg: Any, notop_h5: Path) -> None:
    result = transfer.transfer_weights(str(MAPPINGS / "segnet_torch_keras_vgg16.yaml"), source_weights=notop_h5)
    x = RNG.normal(size=(2, 64, 64, 3)).astype("float32")
    with torch.no_grad():
        ours = nhwc(result.model.eval().encode(nchw(x))[0])
    assert max_rel_diff(ours, keras_at(keras_vgg, "block5_pool", x)) <= 1e-4


def test_classifier_logits_and_top1_agree() -> None:
    """The Flatten trap, torch -> Keras: torch's Linear reads a CHW-flattened map, Keras' Dense
    an HWC one; the Keras model's Flatten tells the tool to permute the rows. A conv, Flatten
    and dense on a 6x6x8 map stand in for VGG16's classifier (the CI job converts the real
    138M-parameter one with `--verify --strict`)."""
    torch.manual_seed(4)
    source = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                 torch.nn.Linear(8 * 6 * 6, 10)).eval()
    keras.utils.set_random_seed(4)
    target = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
                               keras.layers.Flatten(), keras.layers.Dense(10, name="fc")])
    mapping = {"format": 1, "source": {"framework": "torch", "model": "live"},
               "target": {"framework": "keras", "model": "live"}, "layers": {"0": "conv", "3": "fc"}}
    result = transfer.transfer_weights(mapping, source=source, target=target, verify=True)
    fc = next(t for t in result.report.transferred if t.target == "fc")
    assert fc.shapes == {"source": [[10, 288], [10]], "target": [[288, 10], [10]]}
    x = RNG.normal(size=(20, 8, 8, 3)).astype("float32")
    got = np.asarray(target(x))
    with torch.no_grad():
        expected = source(nchw(x)).numpy()
    assert max_rel_diff(got, expected) <= 1e-5
    assert np.array_equal(got.argmax(1), expected.argmax(1))


def test_explicit_flatten_needed_when_nothing_tells(tmp_path: Path) -> None:
    """Keras -> torch from a weights file: no graph says what the dense layer read; the rule
    must say it. A 7x7x8 map stands in for VGG16's 7x7x512: the permutation is the same."""
    keras.utils.set_random_seed(3)
    flatten_dense = keras.Sequential([keras.Input((7, 7, 8)), keras.layers.Flatten(), keras.layers.Dense(16)])
    path = tmp_path / "dense.weights.h5"
    flatten_dense.save_weights(path)
    mapping = {"format": 1, "source": {"framework": "keras", "weights": str(path)},
               "target": {"framework": "torch", "model": "live"}, "layers": {"dense": "1"}}
    target = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(7 * 7 * 8, 16))
    with pytest.raises(IncompatibleWeightsError, match="Add `flatten: \\[channels, height, width\\]`"):
        transfer.transfer_weights(mapping, target=target)
    mapping["layers"] = {"dense": {"target": "1", "flatten": [8, 7, 7]}}
    transfer.transfer_weights(mapping, target=target)
    x = RNG.normal(size=(2, 7, 7, 8)).astype("float32")
    with torch.no_grad():
        assert max_rel_diff(target(nchw(x)), flatten_dense(x)) <= 1e-5
    mapping["layers"] = {"dense": {"target": "1", "flatten": False}}  # the trap: right shape, wrong rows
    transfer.transfer_weights(mapping, target=target)
    with torch.no_grad():
        assert max_rel_diff(target(nchw(x)), flatten_dense(x)) > 0.1


def test_keras_to_torch_to_keras_is_bit_identical() -> None:
    """Every tensor of a Keras SegNet (BatchNorm included) survives a round trip exactly."""
    original = randomize_keras(build_segnet_vgg16((64, 64, 3), classes=4, batchnorm=True, batchnorm_epsilon=1e-5), 21)
    names = {layer.name: layer.name for layer in original.layers if layer.weights}
    to_torch = {"format": 1, "source": {"framework": "keras", "model": "x"},
                "target": {"framework": "torch", "model": "segnet_vgg16"}, "layers": names}
    middle = SegNetVGG16(classes=4, batchnorm=True)
    transfer.transfer_weights(to_torch, source=original, target=middle, strict=True)
    back = build_segnet_vgg16((64, 64, 3), classes=4, batchnorm=True, batchnorm_epsilon=1e-5)
    to_keras = {"format": 1, "source": {"framework": "torch", "model": "x"},
                "target": {"framework": "keras", "model": "segnet_vgg16"}, "layers": names}
    transfer.transfer_weights(to_keras, source=middle, target=back, strict=True)
    for layer in original.layers:
        for a, b in zip(layer.get_weights(), back.get_layer(layer.name).get_weights()):
            assert a.dtype == b.dtype and np.array_equal(a, b)
    # And the torch SegNet computes what the Keras one does: the encoder to float32 rounding;
    # the logits where no pooling window held a near-tie (rounding may flip such an argmax,
    # and unpooling then puts that value elsewhere, in either framework).
    x = np.random.default_rng(5).normal(size=(1, 64, 64, 3)).astype("float32")
    original.get_layer("head").activation = keras.activations.linear
    with torch.no_grad():
        encoded = middle.eval().encode(nchw(x))[0]
        logits = nhwc(middle(nchw(x)))
    pooled = keras.Model(original.input, original.get_layer("block5_pool").output[0])(x, training=False)
    assert max_rel_diff(nhwc(encoded), pooled) <= 1e-4
    expected = np.asarray(original(x, training=False))
    close = np.abs(logits - expected) <= 1e-4 * np.abs(expected).max()
    assert close.mean() >= 0.99


class _Payload:
    def __reduce__(self):
        import os
        return (os.system, (f"touch {_Payload.marker}",))


def test_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    _Payload.marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3), "hook": _Payload()}, evil)
    mapping = str(MAPPINGS / "segnet_torch_vgg16_bn.yaml")
    assert main(["--map", mapping, "--source-weights", str(evil), "--out", str(tmp_path / "o.pth")]) == 5
    assert not _Payload.marker.exists() and not (tmp_path / "o.pth").exists()
    with pytest.raises(CheckpointError, match="refused: the checkpoint's pickle"):
        transfer.transfer_weights(mapping, source_weights=evil)


def test_preprocessing_contract_is_reported_and_mismatch_warned(vgg16_pth: Path) -> None:
    mapping = mapping_dict("unet_vgg16_torchvision.yaml", input_shape=[64, 64, 3])
    result = transfer.transfer_weights(mapping, source_weights=vgg16_pth, check=True)
    assert result.report.preprocessing["source_expects"] == "torch" and not result.report.warnings
    mapping["target"]["preprocessing"] = "caffe"
    result = transfer.transfer_weights(mapping, source_weights=vgg16_pth, check=True)
    assert "expect 'torch' input" in result.report.warnings[0]


def test_num_batches_tracked_never_shifts_the_pairs(vgg16_bn_pth: Path, vgg16_bn_legacy_pth: Path) -> None:
    """With and without the counters, the same tensors land in the same places."""
    result_a = transfer.transfer_weights(str(MAPPINGS / "segnet_torch_vgg16_bn.yaml"), source_weights=vgg16_bn_pth)
    result_b = transfer.transfer_weights(str(MAPPINGS / "segnet_torch_vgg16_bn.yaml"), source_weights=vgg16_bn_legacy_pth)
    sa, sb = result_a.model.state_dict(), result_b.model.state_dict()
    moved = {f"{t.target}.{n}" for t in result_a.report.transferred for n in ("weight", "bias", "running_mean", "running_var")}
    assert all(torch.equal(sa[k], sb[k]) for k in moved if k in sa)


def test_freeze_makes_exactly_the_named_layers_non_trainable(vgg16_bn_pth: Path, notop_h5: Path) -> None:
    mapping = mapping_dict("segnet_torch_vgg16_bn.yaml")
    mapping["freeze"] = ["block1_*", "block2_conv1"]
    result = transfer.transfer_weights(mapping, source_weights=vgg16_bn_pth)
    expected = {"block1_conv1", "block1_bn1", "block1_conv2", "block1_bn2", "block2_conv1"}
    assert set(result.report.frozen) == expected
    frozen = {name for name, module in result.model.named_modules()
              if any(not p.requires_grad for p in module.parameters(recurse=False))}
    assert frozen == expected
    assert all(p.requires_grad for name, m in result.model.named_modules() if name not in expected
               for p in m.parameters(recurse=False))
    keras_report_result = transfer.transfer_weights(mapping_dict("unet_vgg16.yaml", input_shape=[64, 64, 3]),
                                             source_weights=notop_h5)
    assert {layer.name for layer in keras_report_result.model.layers if layer.weights and not layer.trainable} \
        == set(keras_report_result.report.frozen) == {f"block{b}_conv{c}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
                                        for c in range(1, n + 1)}
