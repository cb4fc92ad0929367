"""`transfer-weights inspect`: the layers of files, models and known architectures, and a
mapping's plan; counts checked against the frameworks' own, nothing downloaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import MAPPINGS
from transfer.cli import main


def inspect(capsys: pytest.CaptureFixture, *argv: str) -> Any:
    assert main(["inspect", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    import keras
    import torch

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("inspect tried to download")

    monkeypatch.setattr(keras.utils, "get_file", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_a_legacy_h5_file_lists_what_the_model_holds(notop_h5: Path, keras_vgg: Any, capsys) -> None:
    found = inspect(capsys, str(notop_h5))
    weighted = [layer for layer in keras_vgg.layers if layer.weights]
    assert [row["name"] for row in found["layers"]] == [layer.name for layer in weighted]
    assert [row["shapes"] for row in found["layers"]] == [[list(w.shape) for w in layer.weights] for layer in weighted]
    assert found["params"] == keras_vgg.count_params() and {row["kind"] for row in found["layers"]} == {"conv2d"}


def test_a_known_architecture_needs_no_download(monkeypatch, capsys) -> None:
    import torchvision

    no_downloads(monkeypatch)
    found = inspect(capsys, "torch:vgg16_bn")
    model = torchvision.models.vgg16_bn(weights=None)
    expected = sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for name, b in model.named_buffers() if not name.endswith("num_batches_tracked"))
    assert found["params"] == expected and len(found["layers"]) == 13 + 13 + 3
    assert found["preprocessing"] == "torch" and found["layers"][1]["kind"] == "batchnorm"


def test_a_shipped_target_and_the_console_table(capsys) -> None:
    assert main(["inspect", "keras:unet_vgg16"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "weighted layers" in out[0] and out[1].split() == ["layer", "kind", "tensors", "params"]
    assert out[2].split()[:3] == ["block1_conv1", "conv2d", "kernel"]


def test_a_mapping_shows_its_plan_without_downloading(monkeypatch, capsys) -> None:
    no_downloads(monkeypatch)
    plan = inspect(capsys, str(MAPPINGS / "segnet_torch_vgg16_bn.yaml"))
    assert plan["checked_only"] and len(plan["transferred"]) == 26
    assert plan["transferred"][1] == {**plan["transferred"][1], "source": "features.1", "target": "block1_bn1"}


def test_an_unknown_name_gets_a_did_you_mean(capsys) -> None:
    assert main(["inspect", "keras:unet"]) == 3
    err = capsys.readouterr().err
    assert "Did you mean" in err and "'unet_vgg16'" in err


def test_inspect_reads_every_source_kind(tmp_path: Path, keras_vgg: Any, capsys) -> None:
    """Sharded checkpoints of both frameworks, ONNX and a checkpoint folder: the same layer
    count as the model they were written from."""

    from test_sharded import write_shards

    from helpers.checkpoints import tiny_torch

    keras_vgg.save_weights(tmp_path / "vgg.weights.json", max_shard_size=0.01)
    assert len(inspect(capsys, str(tmp_path / "vgg.weights.json"))["layers"]) == 13
    folder = tmp_path / "hf"
    folder.mkdir()
    write_shards(tiny_torch(1).state_dict(), folder)
    # safetensors stores keys sorted, so a file cannot give the module order: the set is what counts
    assert sorted(row["name"] for row in inspect(capsys, str(folder))["layers"]) == ["bn", "c1", "c2", "fc"]
    pytest.importorskip("onnx")
    from test_onnx import export

    path = export(tiny_torch(1), tmp_path / "tiny.onnx", fold=True)
    found = inspect(capsys, str(path))
    assert [row["name"] for row in found["layers"]] == ["c1", "c2", "fc"] and "folded" in found["description"]

