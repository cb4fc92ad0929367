"""Several sources in one mapping (issue 21): `sources: {NAME: ...}`, rule keys and skip entries
prefixed `NAME:`, `source={NAME: ...}` in the library and `--source-weights NAME=PATH` on the
command line; every row names its source and file (sha256); conflicts refused, all or nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from transfer import transfer_weights
from transfer.cli import main
from transfer.errors import IncompatibleWeightsError, MappingError
from transfer.mapping import load_mapping
from transfer.report import summary, to_dict

MAPPING = """
format: 1
sources:
  encoder: {framework: keras, model: my_encoder}
  decoder: {framework: keras, weights: saved_unet.keras}
target: {framework: keras, model: my_unet}
layers:
  'encoder:conv_(a|b)': 'conv_\\1'
  'decoder:(dec_conv|head)': '\\1'
skip: ['decoder:conv_*']
"""


def randomized(model: Any, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.weights])
    return model


def encoder(seed: int) -> Any:
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv_a")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv_b")(x)
    return randomized(keras.Model(inputs, x, name="encoder"), seed)


def unet(seed: int) -> Any:
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv_a")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv_b")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", name="dec_conv")(x)
    x = keras.layers.Conv2D(2, 1, name="head")(x)
    return randomized(keras.Model(inputs, x, name="unet"), seed)


def weights(model: Any) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_weights()]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    unet(1).save(tmp_path / "saved_unet.keras")
    (tmp_path / "composed.yaml").write_text(MAPPING)
    return tmp_path


def test_a_composed_transfer_names_each_layers_source(folder: Path) -> None:
    enc, target = encoder(0), unet(2)
    saved = keras.saving.load_model(folder / "saved_unet.keras")
    model, report = transfer_weights(folder / "composed.yaml", source={"encoder": enc}, target=target, verify=True,
                                     strict=True)
    for name in ("conv_a", "conv_b"):
        assert all(np.array_equal(a, b) for a, b in zip(model.get_layer(name).get_weights(),
                                                        enc.get_layer(name).get_weights()))
    for name in ("dec_conv", "head"):
        assert all(np.array_equal(a, b) for a, b in zip(model.get_layer(name).get_weights(),
                                                        saved.get_layer(name).get_weights()))
    rows = {row.target: row for row in report.transferred}
    digest = hashlib.sha256((folder / "saved_unet.keras").read_bytes()).hexdigest()
    assert (rows["conv_a"].source, rows["conv_a"].source_name, rows["conv_a"].source_file) == \
        ("encoder:conv_a", "encoder", None)  # a live model: no file
    assert (rows["head"].source_name, rows["head"].source_sha256) == ("decoder", digest)
    assert rows["head"].source_file == str((folder / "saved_unet.keras").resolve())
    assert report.sources["decoder"]["layers"] == 2 and report.sources["encoder"]["sha256"] is None
    assert report.ok and "2 sources (encoder, decoder): no one source model runs" in report.verification[0].stack_note
    assert "from encoder: 2 layer(s) of " in summary(report) and f"(sha256 {digest[:12]}...)" in summary(report)
    data = to_dict(report)
    assert data["transferred"][-1]["source_name"] == "decoder" and data["sources"]["decoder"]["sha256"] == digest


def test_two_rules_into_one_target_layer_are_refused_and_the_target_untouched(folder: Path) -> None:
    text = MAPPING.replace("'decoder:(dec_conv|head)'", "'decoder:(conv_b|dec_conv|head)'")
    assert text != MAPPING
    text = text.replace("skip: ['decoder:conv_*']", "skip: ['decoder:conv_a']")
    (folder / "conflict.yaml").write_text(text)
    target = unet(3)
    before = weights(target)
    with pytest.raises(MappingError, match=r"source layers 'encoder:conv_b' and 'decoder:conv_b' are both sent to "
                                           r"target layer 'conv_b'") as caught:
        transfer_weights(folder / "conflict.yaml", source={"encoder": encoder(0)}, target=target)
    assert caught.value.exit_code == 3
    assert all(np.array_equal(a, b) for a, b in zip(before, weights(target)))


def test_a_bad_tensor_in_one_source_leaves_the_target_untouched(folder: Path) -> None:
    """All or nothing across sources: a NaN in the decoder's file, after the encoder's layers
    were read and checked, changes nothing."""
    broken = unet(4)
    kernel, bias = broken.get_layer("head").get_weights()
    kernel[0, 0, 0, 0] = np.nan
    broken.get_layer("head").set_weights([kernel, bias])
    broken.save(folder / "broken.keras")
    target = unet(5)
    before = weights(target)
    with pytest.raises(IncompatibleWeightsError, match="NaN or infinite"):
        transfer_weights(folder / "composed.yaml", source={"encoder": encoder(0), "decoder": folder / "broken.keras"},
                         target=target)
    assert all(np.array_equal(a, b) for a, b in zip(before, weights(target)))


def test_the_command_line_takes_one_source_weights_per_name(folder: Path) -> None:
    encoder(6).save(folder / "encoder.keras")
    unet(7).save(folder / "target.keras")
    text = MAPPING.replace("{framework: keras, model: my_encoder}", "{framework: keras, weights: missing.keras}")
    text = text.replace("{framework: keras, model: my_unet}", "{framework: keras, file: target.keras}")
    (folder / "files.yaml").write_text(text)
    out, report = folder / "out.keras", folder / "report.json"
    assert main(["--map", str(folder / "files.yaml"), "--source-weights", f"encoder={folder / 'encoder.keras'}",
                 "--out", str(out), "--report", str(report), "--verify", "--strict", "--quiet"]) == 0
    data = json.loads(report.read_text())
    assert [row["source_name"] for row in data["transferred"]] == ["encoder", "encoder", "decoder", "decoder"]
    assert all(len(row["source_sha256"]) == 64 for row in data["transferred"])
    assert data["transferred"][0]["source_file"].endswith("encoder.keras")
    written = keras.saving.load_model(out)
    assert np.array_equal(written.get_layer("conv_a").kernel.numpy(),
                          keras.saving.load_model(folder / "encoder.keras").get_layer("conv_a").kernel.numpy())
    # an unknown name, and a bare path where a name is needed: mapping errors (exit 3)
    assert main(["--map", str(folder / "files.yaml"), "--source-weights", f"encodr={folder / 'encoder.keras'}",
                 "--check", "--quiet"]) == 3
    assert main(["--map", str(folder / "files.yaml"), "--source-weights", str(folder / "encoder.keras"),
                 "--check", "--quiet"]) == 3
    # the encoder's own file (missing.keras) does not exist: exit 5, as for one source
    assert main(["--map", str(folder / "files.yaml"), "--check", "--quiet"]) == 5


def test_rule_keys_and_skip_entries_start_with_a_source_name() -> None:
    with pytest.raises(MappingError, match=r"with several sources, a rule's key starts with the source's name: "
                                           r"NAME:layer \(one of encoder, decoder\)"):
        load_mapping(MAPPING.replace("'encoder:conv_(a|b)'", "'conv_(a|b)'"))
    with pytest.raises(MappingError, match=r"Did you mean 'encoder'"):
        load_mapping(MAPPING.replace("'encoder:conv_(a|b)'", "'encodr:conv_(a|b)'"))
    with pytest.raises(MappingError, match=r"skip entry starts with the source's name"):
        load_mapping(MAPPING.replace("skip: ['decoder:conv_*']", "skip: ['conv_*']"))
    with pytest.raises(MappingError, match=r"either `source:` \(one source\) or `sources:`"):
        load_mapping(MAPPING.replace("sources:", "source: {framework: keras, model: x}\nsources:"))
    mapping = load_mapping(MAPPING)
    assert mapping.composed and list(mapping.sources) == ["encoder", "decoder"] and mapping.source.model == "my_encoder"
    assert mapping.rules[0].target_for("encoder:conv_b") == "conv_b" and mapping.rules[0].target_for("decoder:conv_b") \
        is None


def test_a_pattern_of_one_source_that_matches_nothing_is_named(folder: Path) -> None:
    (folder / "nothing.yaml").write_text(MAPPING.replace("'encoder:conv_(a|b)'", "'encoder:block_(a|b)'"))
    with pytest.raises(MappingError, match=r"the pattern 'encoder:block_\(a\|b\)' matches no weighted layer"):
        transfer_weights(folder / "nothing.yaml", source={"encoder": encoder(0)}, target=unet(8))
