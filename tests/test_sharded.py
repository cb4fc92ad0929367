"""Sharded safetensors checkpoints (Hugging Face's index format): read lazily shard by shard,
the same tensors as one file, and a hostile index refused naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import transfer
from checkpoints import tiny_torch
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
