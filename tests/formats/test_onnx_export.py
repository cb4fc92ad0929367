"""ONNX as current torch writes it: the default (dynamo) exporter, its weights in an external
`NAME.onnx.data` file, BatchNorm folded (optimize on) or kept (optimize off). The data file is
found beside the graph from any working directory; a location outside the graph's folder is
refused before anything is read."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import transfer
from helpers.checkpoints import tiny_torch
from transfer.errors import CheckpointError

onnx = pytest.importorskip("onnx", reason="pip install onnx (in the test extra)")
pytest.importorskip("onnxscript", reason="torch's default ONNX exporter needs onnxscript (in the test extra)")


def default_export(model: Any, path: Path, optimize: bool) -> Path:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros(1, 3, 8, 8),), str(path), optimize=optimize,
                          external_data=True, verbose=False)
    assert (path.parent / f"{path.name}.data").is_file()  # what the users meet
    return path


@pytest.mark.parametrize("optimize", [False, True], ids=["batchnorm-kept", "batchnorm-folded"])
def test_default_export_with_external_data_from_another_folder(tmp_path: Path, optimize: bool,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    source = tiny_torch(1)
    (tmp_path / "export").mkdir()
    path = default_export(source, tmp_path / "export" / "tiny.onnx", optimize)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the data file is not relative to the working directory
    if optimize:  # folded: the conv carries the BatchNorm; a folded conv's bias must not be lost
        layers = {"c1": "c1", "c2": "c2", "fc": "fc"}
        target = tiny_torch(2)
        target.bn = torch.nn.Identity()
    else:
        layers, target = {"c1": "c1", "bn": "bn", "c2": "c2", "fc": "fc"}, tiny_torch(2)
    mapping = {"format": 1, "source": {"framework": "torch", "weights": str(path)},
               "target": {"framework": "torch", "model": "live"}, "layers": layers}
    model, report = transfer.transfer_weights(mapping, target=target, strict=True, verify=True)
    assert report.ok and report.verification[0].stack is not None  # onnxruntime ran the graph
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert np.max(np.abs(model(x).numpy() - source.eval()(x).numpy())) <= 1e-5


def _retarget_external(path: Path, location: str) -> None:
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(model, str(path))


@pytest.mark.parametrize("where", ["parent", "absolute", "symlink"])
def test_external_data_outside_the_graphs_folder_is_refused(tmp_path: Path, where: str) -> None:
    folder = tmp_path / "graph"
    folder.mkdir()
    path = default_export(tiny_torch(1), folder / "tiny.onnx", optimize=False)
    data = folder / "tiny.onnx.data"
    outside = tmp_path / "secret.data"
    os.replace(data, outside)
    if where == "parent":
        _retarget_external(path, "../secret.data")
    elif where == "absolute":
        _retarget_external(path, str(outside))
    else:
        (folder / "tiny.onnx.data").symlink_to(outside)
    mapping = {"format": 1, "source": {"framework": "torch", "weights": str(path)},
               "target": {"framework": "torch", "model": "live"}, "layers": {"c1": "c1"}}
    target = tiny_torch(2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError, match="outside the graph's folder"):
        transfer.transfer_weights(mapping, target=target)
    assert all((before[k] == v).all() for k, v in target.state_dict().items())


def test_a_missing_data_file_is_named(tmp_path: Path) -> None:
    path = default_export(tiny_torch(1), tmp_path / "tiny.onnx", optimize=False)
    (tmp_path / "tiny.onnx.data").unlink()
    mapping = {"format": 1, "source": {"framework": "torch", "weights": str(path)},
               "target": {"framework": "torch", "model": "live"}, "layers": {"c1": "c1"}}
    with pytest.raises(CheckpointError, match=r"tiny.onnx.data', which is not a file beside the graph"):
        transfer.transfer_weights(mapping, target=tiny_torch(2))
