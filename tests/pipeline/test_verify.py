"""--verify: every moved layer and the mapped stack compared with the source on a probe, in
memory and on the written file; a planted or corrupted tensor is caught and named."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

import transfer
from conftest import MAPPINGS, mapping_dict
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
    assert stages == ["in memory", "written file"]
    memory, written = data["verification"]
    assert memory["ok"] and len(memory["layers"]) == 13 and memory["tolerance"]["layer"] == 1e-5
    assert memory["stack"]["target"] == "block5_conv3" and memory["stack"]["rel_diff"] <= 1e-4
    # the file: every tensor bit for bit equal to the model verified in memory
    assert written["ok"] and len(written["layers"]) == 13 and written["stack"] is None
    assert written["read_back"] == "tensors read from model.weights.h5 inside the file"  # no model rebuilt
    assert {(c["method"], c["max_abs_diff"]) for c in written["layers"]} == {("tensors compared with the verified model", 0.0)}
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

    def save_and_corrupt(self, path, *args, **kwargs):
        original_save(self, path, *args, **kwargs)
        kernel = self.get_layer("block3_conv2").kernel.numpy()
        with h5py.File(path, "r+") as file:
            def corrupt(name, item):
                if isinstance(item, h5py.Dataset) and item.shape == kernel.shape and np.array_equal(item[()], kernel):
                    item[0, 0, 0, 0] = item[0, 0, 0, 0] + 1.0
            file.visititems(corrupt)

    monkeypatch.setattr(keras.Model, "save_weights", save_and_corrupt)
    out = tmp_path / "unet.weights.h5"
    code = main(["--map", UNET_MAP, "--source-weights", str(notop_h5), "--out", str(out), "--verify"])
    err = capsys.readouterr().err
    assert code == 6
    assert "written file" in err and "first diverging layer 'block3_conv2'" in err
    assert list(tmp_path.iterdir()) == []  # neither the bad file nor a temporary
    monkeypatch.undo()
    assert main(["--map", UNET_MAP, "--source-weights", str(notop_h5), "--out", str(out), "--verify"]) == 0


def test_planted_wrong_kernel_permutation_fails_and_restores_the_target(vgg16_bn_pth: Path, monkeypatch) -> None:
    """The shape-keeping bug: (3, 2, 1, 0) swaps kh and kw of every 3x3 kernel."""
    wrong = dataclasses.replace(kinds.CONV2D,
                                to_keras=lambda arrays, context: [arrays[0].transpose(3, 2, 1, 0), *arrays[1:]])
    monkeypatch.setattr(kinds, "KINDS", tuple(wrong if k is kinds.CONV2D else k for k in kinds.KINDS))
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


def test_stack_failure_names_the_first_diverging_layer(notop_h5: Path) -> None:
    """Finding 6: two same-shape convs of block 3 swapped. Each layer's tensors moved as the
    mapping says (layer checks pass), the stack diverges, and the failure names block 3, not
    the last mapped layer."""
    mapping = mapping_dict("unet_vgg16.yaml", input_shape=[32, 32, 3])
    convs = [f"block{b}_conv{c}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for c in range(1, n + 1)]
    mapping["layers"] = {name: name for name in convs}
    mapping["layers"]["block3_conv2"], mapping["layers"]["block3_conv3"] = "block3_conv3", "block3_conv2"
    with pytest.raises(VerificationError) as caught:
        transfer.transfer_weights(mapping, source_weights=notop_h5, verify=True)
    assert "first diverging layer 'block3_conv3' (from 'block3_conv2', model outputs at the layer)" in str(caught.value)
    result = caught.value.report.verification[0]
    assert all(check.ok for check in result.layers) and not result.stack.ok
    assert [c.target for c in result.localized] == convs[:5] + ["block3_conv3"]


def test_verify_degrades_when_the_file_lacks_layers_of_the_known_model(tv_vgg16_bn, tmp_path: Path) -> None:
    """Finding 4: a vgg16_bn state dict without `classifier.*` made --verify exit 1, though the
    transfer itself worked. The stack check still runs (the classifier is not in the stack)."""
    import torch

    state = {k: v for k, v in tv_vgg16_bn.state_dict().items() if not k.startswith("classifier.")}
    path = tmp_path / "features_only.pth"
    torch.save(state, path)
    report_path = tmp_path / "r.json"
    assert main(["--map", str(MAPPINGS / "segnet_torch_vgg16_bn.yaml"), "--source-weights", str(path),
                 "--verify", "--quiet", "--report", str(report_path)]) == 0
    stage = json.loads(report_path.read_text())["verification"][0]
    assert stage["ok"] and stage["stack"]["target"] == "block5_bn3"
    assert "classifier.0, classifier.3, classifier.6" in stage["stack_note"]


def test_check_and_verify_together_is_a_usage_error(notop_h5: Path, capsys) -> None:
    """Finding 7: --check --verify silently ignored --verify."""
    with pytest.raises(SystemExit) as caught:
        main(["--map", UNET_MAP, "--source-weights", str(notop_h5), "--check", "--verify"])
    assert caught.value.code == 2 and "transfer-weights verify" in capsys.readouterr().err


def test_verify_command_passes_a_good_conversion_and_changes_nothing(vgg16_bn_pth: Path, tmp_path: Path,
                                                                   capsys) -> None:
    from transfer.checksums import file_sha256

    mapping, out = str(MAPPINGS / "segnet_torch_vgg16_bn.yaml"), tmp_path / "segnet.pth"
    assert main(["--map", mapping, "--source-weights", str(vgg16_bn_pth), "--out", str(out), "--quiet"]) == 0
    before = file_sha256(out)
    report_path = tmp_path / "r.json"
    assert main(["verify", "--map", mapping, "--target", str(out), "--source-weights", str(vgg16_bn_pth),
                 "--report", str(report_path)]) == 0
    said = capsys.readouterr().out  # in its own words: nothing moved, frozen or written
    assert "checked 26 layers" in said and "nothing was changed or written" in said
    assert "moved" not in said and "froze" not in said
    assert file_sha256(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "segnet.pth"]
    stage = json.loads(report_path.read_text())["verification"][0]
    assert stage["stage"] == "converted model" and len(stage["layers"]) == 26 and stage["stack"]["ok"]


def hand_zipped(source: Path, out: Path) -> Path:
    """The seed's script: zip the state-dict keys in order, copy where the shapes agree."""
    import torch

    from transfer.targets.torch_segnet import SegNetVGG16

    pretrained = torch.load(source, weights_only=True)
    state = SegNetVGG16(in_channels=3, classes=6, batchnorm=True).state_dict()
    for (_, value), key in zip(pretrained.items(), list(state)):
        if value.shape == state[key].shape:
            state[key] = value
    torch.save(state, out)
    return out


def test_verify_command_names_the_layers_a_hand_zipped_state_dict_shifted(vgg16_bn_legacy_pth: Path,
                                                                          tmp_path: Path, capsys) -> None:
    """Finding 7, the seed's question: "is my converted model right?" The 2017 file has no
    num_batches_tracked keys, so zipping keys in order shifts every pair after the first BN."""
    converted = hand_zipped(vgg16_bn_legacy_pth, tmp_path / "handzipped.pth")
    report_path = tmp_path / "r.json"
    code = main(["verify", "--map", str(MAPPINGS / "segnet_torch_vgg16_bn.yaml"), "--target", str(converted),
                 "--source-weights", str(vgg16_bn_legacy_pth), "--report", str(report_path)])
    err = capsys.readouterr().err
    assert code == 6
    assert "first diverging layer 'block1_conv2' (from 'features.3', tensors compared)" in err
    data = json.loads(report_path.read_text())
    checks = data["report"]["verification"][0]["layers"]
    assert [c["target"] for c in checks if c["ok"]] == ["block1_conv1", "block1_bn1"]
    assert data["exit_code"] == 6 and len(checks) == 26
