"""`transfer-weights suggest`: drafts that the main command accepts, that move exactly what
the shipped mappings move, and that say where they cannot decide."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

import transfer
from conftest import mapping_dict
from transfer.cli import main
from transfer.errors import MappingError
from transfer.report import SkippedLayer
from transfer.suggest import parse_spec
from transfer.targets.keras_unet import build_unet_vgg16


def same_transfer(draft: Path, shipped: dict, weights: Path) -> None:
    """Tensor for tensor, the draft's transfer equals the shipped mapping's."""
    ours_result = transfer.transfer_weights(str(draft), strict=True)
    theirs_result = transfer.transfer_weights(shipped, source_weights=weights)
    assert [(t.source, t.target) for t in ours_result.report.transferred] == \
           [(t.source, t.target) for t in theirs_result.report.transferred]
    for row in ours_result.report.transferred:
        for a, b in zip(ours_result.model.get_layer(row.target).get_weights(),
                        theirs_result.model.get_layer(row.target).get_weights()):
            assert np.array_equal(a, b)


def test_files_as_specs_give_a_draft_the_main_command_accepts(notop_h5: Path, tmp_path: Path, capsys) -> None:
    """Acceptance: suggest --source VGG16_NOTOP.h5 --target UNET.keras, then --map draft.yaml."""
    build_unet_vgg16((64, 64, 3), classes=6).save(tmp_path / "UNET.keras")
    draft = tmp_path / "draft.yaml"
    assert main(["suggest", "--source", str(notop_h5), "--target", str(tmp_path / "UNET.keras"),
                 "--out", str(draft)]) == 0
    assert "13 pairs (0 unsure), 0 undecided" in capsys.readouterr().out
    assert main(["--map", str(draft), "--out", str(tmp_path / "out.keras"), "--strict", "--verify"]) == 0
    same_transfer(draft, mapping_dict("unet_vgg16.yaml", input_shape=[64, 64, 3], classes=6), notop_h5)


def test_keras_vgg16_to_shipped_segnet(notop_h5: Path, tmp_path: Path) -> None:
    target = "{framework: keras, model: segnet_vgg16, config: {input_shape: [64, 64, 3], classes: 6}}"
    draft = tmp_path / "draft.yaml"
    assert main(["suggest", "--source", str(notop_h5), "--target", target, "--out", str(draft)]) == 0
    same_transfer(draft, mapping_dict("segnet_vgg16.yaml", input_shape=[64, 64, 3]), notop_h5)


def test_torchvision_vgg16_bn_to_keras_segnet_with_bn(vgg16_bn_pth: Path, tmp_path: Path) -> None:
    source = f"{{framework: torch, model: vgg16_bn, weights: {vgg16_bn_pth}}}"
    target = ("{framework: keras, model: segnet_vgg16, config: {input_shape: [64, 64, 3], classes: 6, "
              "batchnorm: true, batchnorm_epsilon: 1.0e-5}}")
    draft = tmp_path / "draft.yaml"
    assert main(["suggest", "--source", source, "--target", target, "--out", str(draft)]) == 0
    data = yaml.safe_load(draft.read_text())
    assert data["skip"] == ["classifier.0", "classifier.3", "classifier.6"]
    assert data["source"]["weights"] == "../" + vgg16_bn_pth.parent.name + "/" + vgg16_bn_pth.name \
        or Path(data["source"]["weights"]).name == vgg16_bn_pth.name
    same_transfer(draft, mapping_dict("segnet_vgg16_bn_torchvision.yaml", input_shape=[64, 64, 3]), vgg16_bn_pth)


def test_epsilon_difference_is_proposed_as_rescale_with_a_comment(vgg16_bn_pth: Path, tmp_path: Path) -> None:
    target = "{framework: keras, model: segnet_vgg16, config: {input_shape: [64, 64, 3], batchnorm: true}}"
    draft = tmp_path / "draft.yaml"
    assert main(["suggest", "--source", str(vgg16_bn_pth), "--target", target, "--out", str(draft)]) == 0
    text = draft.read_text()
    assert "'features.1': {target: 'block1_bn1', epsilon: rescale}   # unsure: BatchNorm epsilon differs (1e-05 -> 0.001)" in text
    assert main(["--map", str(draft), "--check"]) == 0


def test_an_undecidable_pair_is_left_out_and_said(tmp_path: Path) -> None:
    """One source conv, two identical target convs in parallel: no order or shape decides."""
    source_model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="stem")])
    source_model.save(tmp_path / "source.keras")
    inputs = keras.Input((8, 8, 3))
    branches = [keras.layers.Conv2D(4, 3, name=n)(inputs) for n in ("left", "right")]
    keras.Model(inputs, keras.layers.Concatenate()(branches)).save(tmp_path / "target.keras")
    draft = tmp_path / "draft.yaml"
    assert main(["suggest", "--source", str(tmp_path / "source.keras"), "--target", str(tmp_path / "target.keras"),
                 "--out", str(draft)]) == 0
    text = draft.read_text()
    assert "# UNDECIDED stem: one of left, right" in text
    result = transfer.transfer_weights(str(draft))  # accepted: the undecided layer is reported as skipped
    assert result.report.skipped == [SkippedLayer("stem", "no rule matched", False)]


def test_spec_forms_and_errors(tmp_path: Path) -> None:
    assert parse_spec("torch:vgg16_bn", "source").model == "vgg16_bn"
    assert parse_spec(str(tmp_path / "w.safetensors"), "source").framework == "torch"
    with pytest.raises(MappingError, match="a target file must be a .keras model"):
        parse_spec(str(tmp_path / "w.pth"), "target")
    with pytest.raises(MappingError, match="source.framework: expected one of keras, torch"):
        parse_spec("{framework: jax}", "source")
    with pytest.raises(MappingError, match="expected a file"):
        parse_spec("vgg16", "source")


def test_suggest_from_a_known_model_downloads_nothing(monkeypatch, tmp_path: Path) -> None:
    """Only the layers are needed: a known model's architecture gives them, offline."""
    import torch

    def refuse(*args, **kwargs):
        raise AssertionError("suggest tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    out = tmp_path / "draft.yaml"
    target = "{framework: torch, model: segnet_vgg16, config: {batchnorm: true}}"
    assert main(["suggest", "--source", "torch:vgg16_bn", "--target", target, "--out", str(out)]) == 0
    draft = yaml.safe_load(out.read_text())
    assert draft["layers"]["features.0"] == "block1_conv1" and draft["layers"]["features.41"] == "block5_bn3"
