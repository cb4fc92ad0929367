"""Sharded safetensors checkpoints (Hugging Face's index format): read lazily shard by shard,
the same tensors as one file, and a hostile index refused naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import transfer
from helpers.checkpoints import tiny_torch
from transfer.errors import CheckpointError

LAYERS = {"c1": "c1", "bn": "bn", "c2": "c2", "fc": "fc"}


def write_shards(state: dict, folder: Path, shards: int = 2) -> Path:
    """What `huggingface_hub.save_torch_state_dict` writes: model-0000k-of-0000n.safetensors
    and model.safetensors.index.json with a weight_map."""
    from safetensors.torch import save_file

    keys = list(state)
    weight_map, total = {}, 0
    for k in range(shards):
        name = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = {key: state[key].contiguous() for key in keys[k::shards]}
        save_file(part, folder / name)
        weight_map.update(dict.fromkeys(part, name))
        total += sum(t.numel() * t.element_size() for t in part.values())
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return index


def spec(weights: Path) -> dict:
    return {"format": 1, "source": {"framework": "torch", "weights": str(weights)},
            "target": {"framework": "torch", "model": "live"}, "layers": LAYERS}


@pytest.mark.parametrize("as_folder", [False, True])
def test_sharded_checkpoint_gives_the_tensors_of_one_file(as_folder: bool, tmp_path: Path) -> None:
    import torch

    source = tiny_torch(1)
    index = write_shards(source.state_dict(), tmp_path)
    model, report = transfer.transfer_weights(spec(tmp_path if as_folder else index), target=tiny_torch(2),
                                              verify=True, strict=True)
    assert report.ok and len(report.transferred) == 4
    for key, value in source.state_dict().items():
        if not key.endswith("num_batches_tracked"):  # a counter, not a weight: never moved
            assert torch.equal(model.state_dict()[key], value), key


@pytest.mark.parametrize("damage, message", [
    (lambda data: {**data, "weight_map": {**data["weight_map"], "c1.weight": "../escape.safetensors"}},
     "lies outside the index's folder"),
    (lambda data: {**data, "weight_map": {**data["weight_map"], "ghost.weight": "model-00001-of-00002.safetensors"}},
     "tensor 'ghost.weight' is listed in shard"),
    (lambda data: {"metadata": {}}, "not a safetensors shard index"),
])
def test_a_hostile_or_broken_index_is_refused(damage, message: str, tmp_path: Path) -> None:
    index = write_shards(tiny_torch(1).state_dict(), tmp_path)
    index.write_text(json.dumps(damage(json.loads(index.read_text()))))
    with pytest.raises(CheckpointError, match=message) as caught:
        transfer.transfer_weights(spec(index), target=tiny_torch(2))
    assert str(index) in str(caught.value)


def folder_with(tmp_path: Path, config_name: str, config: dict) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tiny_torch(1).state_dict().items()}, tmp_path / "model.safetensors")
    (tmp_path / config_name).write_text(json.dumps(config))
    return tmp_path


@pytest.mark.parametrize("config_name, config, named", [
    ("config.json", {"architecture": "tiny", "pretrained_cfg": {"mean": [0.485, 0.456, 0.406],
                                                                "std": [0.229, 0.224, 0.225], "input_size": [3, 8, 8]}},
     "torch"),  # as timm writes it
    ("preprocessor_config.json", {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "size": 8}, "tf"),
])
def test_a_checkpoint_folder_declares_its_preprocessing(config_name: str, config: dict, named: str,
                                                       tmp_path: Path) -> None:
    folder = folder_with(tmp_path, config_name, config)
    mapping = spec(folder)
    mapping["target"]["preprocessing"] = "caffe"
    _, report = transfer.transfer_weights(mapping, target=tiny_torch(2))
    assert report.preprocessing["source_expects"] == named
    assert report.preprocessing["source_config"]["file"] == config_name
    assert any(f"the source weights expect '{named}' input" in w for w in report.warnings)


def test_an_unnamed_convention_is_recorded_and_warned_about(tmp_path: Path) -> None:
    folder = folder_with(tmp_path, "config.json", {"mean": [0.1, 0.2, 0.3], "std": [1.0, 1.0, 1.0]})
    mapping = spec(folder)
    mapping["target"]["preprocessing"] = "torch"
    _, report = transfer.transfer_weights(mapping, target=tiny_torch(2))
    assert report.preprocessing["source_expects"] is None
    assert report.preprocessing["source_config"]["mean"] == [0.1, 0.2, 0.3]
    assert any("which is none of the named conventions" in w for w in report.warnings)


def test_keras_sharded_weights_give_the_tensors_of_one_file(keras_vgg: object, tmp_path: Path) -> None:
    """Keras 3's own sharding (`save_weights("*.weights.json", max_shard_size=...)`), read
    without the model (class-counter names) and through the known architecture (real names)."""
    import numpy as np

    index = tmp_path / "vgg.weights.json"
    keras_vgg.save_weights(index, max_shard_size=0.01)  # GB: 7 shards, a layer's variables split across two
    assert len(list(tmp_path.glob("vgg_*.weights.h5"))) > 2
    mapping = {"format": 1, "source": {"framework": "keras", "weights": str(index)},
               "target": {"framework": "keras", "model": "unet_vgg16", "config": {"input_shape": [32, 32, 3]}},
               "layers": {"conv2d": "block1_conv1", "conv2d_12": "block5_conv3"}}
    model, report = transfer.transfer_weights(mapping, verify=True)
    assert report.ok and "Keras 3 sharded weights" in report.source
    for target in ("block1_conv1", "block5_conv3"):
        for got, expected in zip(model.get_layer(target).get_weights(), keras_vgg.get_layer(target).get_weights()):
            assert np.array_equal(got, expected)
    mapping["source"]["model"] = "vgg16"
    mapping["layers"] = {r"block(\d)_conv(\d)": r"block\1_conv\2"}
    mapping["untouched"] = ["dec*", "head"]
    model, report = transfer.transfer_weights(mapping, verify=True, strict=True)
    assert len(report.transferred) == 13 and report.verification[0].stack.ok
