"""--verify: every moved layer and the mapped stack compared with the source on a probe, in
memory and on the written file; a planted or corrupted tensor is caught and named."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

import keras
from conftest import MAPPINGS, mapping_dict
import transfer
from transfer import kinds
from transfer.cli import main
from transfer.errors import VerificationError
from transfer.targets.keras_segnet import build_segnet_vgg16

UNET_MAP = str(MAPPINGS / "unet_vgg16.yaml")


def test_cli_verify_passes_and_reports_both_stages(notop_h5: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "unet.keras", tmp_path / "report.json"
    assert main(["--map", UNET_MAP, "--source-weights", str(notop_h5), "--out", str(out),
                 "--report", str(report), "--verify", "--quiet"]) == 0
    data = json.loads(report.read_text())
    stages = [v["stage"] for v in data["verification"]]
    assert stages == ["in memory", "written file, reloaded"]
    for stage in data["verification"]:
        assert stage["ok"] and len(stage["layers"]) == 13
        assert stage["stack"]["target"] == "block5_conv3" and stage["stack"]["rel_diff"] <= 1e-4
        assert stage["tolerance"]["layer"] == 1e-5
    assert data["source_sha256"] and len(data["tensor_sha256"]) == 30  # every target layer


@pytest.mark.parametrize("fixture", ["vgg16_bn_pth", "vgg16_bn_safetensors"])
def test_cross_framework_verify_uses_probes(fixture: str, request) -> None:
    result = transfer.transfer_weights(mapping_dict("segnet_vgg16_bn_torchvision.yaml", input_shape=[64, 64, 3]),
                                       source_weights=request.getfixturevalue(fixture), verify=True)
    layers = result.report.verification[0].layers
    assert {c.method for c in layers} == {"conv2d on a probe, torch vs keras", "batchnorm on a probe, torch vs keras"}
    assert max(c.rel_diff for c in layers) <= 1e-5
    assert result.report.verification[0].stack.target == "block5_bn3"


def test_corrupted_tensor_in_the_output_is_named_and_not_written(notop_h5: Path, tmp_path: Path, monkeypatch,
                                                                 capsys) -> None:
    original_save = keras.Model.save_weights

    def save_and_corrupt(self, path, *args, **kwargs):  # noqa: ANN001
        original_save(self, path, *args, **kwargs)
        kernel = self.get_layer("block3_conv2").kernel.numpy()
        with h5py.File(path, "r+") as file:
            def corrupt(name, item):  # noqa: ANN001
                if isinstance(item, h5py.Dataset) and item.shape == kernel.shape and np.array_equal(item[()], kernel):
                    item[0, 0, 0, 0] = item[0, 0, 0, 0] + 1.0
            file.visititems(corrupt)

    monkeypatch.setattr(keras.Model, "save_weights", save_and_corrupt)
    out = tmp_path / "unet.weights.h5"
    code = main(["--map", UNET_MAP, "--source-weights", str(notop_h5), "--out", str(out), "--verify"])
    err = capsys.readouterr().err
    assert code == 6
    assert "written file, reloaded" in err and "first diverging layer 'block3_conv2'" in err
    assert list(tmp_path.iterdir()) == []  # neither the bad file nor a temporary
    monkeypatch.undo()
    assert main(["--map", UNET_MAP, "--source-weights", str(notop_h5), "--out", str(out), "--verify"]) == 0


def test_planted_wrong_kernel_permutation_fails_and_restores_the_target(vgg16_bn_pth: Path, monkeypatch) -> None:
    """The shape-keeping bug: (3, 2, 1, 0) swaps kh and kw of every 3x3 kernel."""
    wrong = dataclasses.replace(kinds.BY_NAME["conv2d"],
                                to_keras=lambda arrays, context: [arrays[0].transpose(3, 2, 1, 0), *arrays[1:]])
    monkeypatch.setitem(kinds.BY_NAME, "conv2d", wrong)
    target = build_segnet_vgg16((64, 64, 3), batchnorm=True, batchnorm_epsilon=1e-5)
    before = [w.numpy().copy() for w in target.weights]
    mapping = mapping_dict("segnet_vgg16_bn_torchvision.yaml")
    mapping["freeze"] = ["block1_*"]
    with pytest.raises(VerificationError, match="first diverging layer 'block1_conv1'"):
        transfer.transfer_weights(mapping, source_weights=vgg16_bn_pth, target=target, verify=True)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, target.weights))
    assert all(layer.trainable for layer in target.layers)  # and nothing was frozen
    result = transfer.transfer_weights(mapping, source_weights=vgg16_bn_pth, target=target)  # without --verify
    assert len(result.report.transferred) == 26  # ... the same bug passes silently: why --verify exists


def test_no_stack_check_without_a_runnable_source(notop_weights_h5: Path) -> None:
    mapping = {"format": 1, "source": {"framework": "keras", "weights": str(notop_weights_h5)},
               "target": {"framework": "keras", "model": "unet_vgg16", "config": {"input_shape": [64, 64, 3]}},
               "layers": {"conv2d": "block1_conv1", "conv2d_1": "block1_conv2"}}
    result = transfer.transfer_weights(mapping, verify=True)
    assert result.report.verification[0].stack is None
    assert "no runnable source model" in result.report.verification[0].stack_note


@pytest.mark.parametrize("mapping, fixture, suffix, bytes_equal", [
    ("segnet_torch_vgg16_bn.yaml", "vgg16_bn_pth", ".safetensors", True),
    ("segnet_torch_vgg16_bn.yaml", "vgg16_bn_pth", ".pth", True),
    ("unet_vgg16.yaml", "notop_h5", ".weights.h5", False),
    ("unet_vgg16.yaml", "notop_h5", ".keras", False),
])
def test_same_inputs_give_the_same_output(mapping: str, fixture: str, suffix: str, bytes_equal: bool,
                                          request, tmp_path: Path) -> None:
    """Deterministic output: identical tensor checksums always; identical bytes where the
    format allows (Keras' HDF5 and zip files carry timestamps)."""
    weights = request.getfixturevalue(fixture)
    reports, files = [], []
    for run in (1, 2):
        out, report = tmp_path / f"out{run}{suffix}", tmp_path / f"report{run}.json"
        assert main(["--map", str(MAPPINGS / mapping), "--source-weights", str(weights), "--out", str(out),
                     "--report", str(report), "--quiet"]) == 0
        reports.append(json.loads(report.read_text()))
        files.append(out.read_bytes())
    assert reports[0]["tensor_sha256"] == reports[1]["tensor_sha256"]
    assert reports[0]["source_sha256"] == reports[1]["source_sha256"]
    if bytes_equal:
        assert files[0] == files[1]
