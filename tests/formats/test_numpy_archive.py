"""`.npz` (a NumPy archive of a torch state dict), the format added by following the worked
example in docs/development.md: read lazily and never unpickled, transferred and proven like
any state dict, its damaged or hostile copies refused naming the file and the array."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

import transfer
from conftest import MAPPINGS, mapping_dict
from transfer.cli import main
from transfer.errors import CheckpointError
from transfer.formats import NUMPY_ARCHIVE, detect

SEGNET = "segnet_vgg16_bn_torchvision.yaml"


def test_the_suffix_is_the_format() -> None:
    assert detect(Path("weights.npz")) is NUMPY_ARCHIVE


def test_an_archive_moves_what_the_state_dict_moves(vgg16_bn_npz: Path, vgg16_bn_pth: Path) -> None:
    data = mapping_dict(SEGNET, input_shape=[32, 32, 3])
    from_archive = transfer.transfer_weights(data, source_weights=vgg16_bn_npz, verify=True)
    from_pth = transfer.transfer_weights(data, source_weights=vgg16_bn_pth)
    assert from_archive.report.ok and from_archive.report.verification[0].stack.ok
    for layer in from_pth.model.layers:
        for a, b in zip(layer.get_weights(), from_archive.model.get_layer(layer.name).get_weights()):
            assert np.array_equal(a, b)


def test_an_object_array_is_refused_unread(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An object array needs unpickling, which runs code: refused by name, exit 5, nothing written."""
    path, out = tmp_path / "hostile.npz", tmp_path / "out.keras"
    np.savez(path, **{"features.0.weight": np.array([{"x": 1}], dtype=object)})
    assert main(["--map", str(MAPPINGS / SEGNET), "--source-weights", str(path), "--out", str(out)]) == 5
    err = capsys.readouterr().err
    assert str(path) in err and "'features.0.weight' holds Python objects" in err
    assert not out.exists()


def test_a_truncated_archive_is_refused(vgg16_bn_npz: Path, tmp_path: Path) -> None:
    path = tmp_path / "cut.npz"
    path.write_bytes(vgg16_bn_npz.read_bytes()[: 1 << 20])
    with pytest.raises(CheckpointError, match=str(path)):
        transfer.transfer_weights(mapping_dict(SEGNET, input_shape=[32, 32, 3]), source_weights=path)


def test_a_damaged_member_names_its_array(vgg16_bn_npz: Path, tmp_path: Path) -> None:
    """A member whose `.npy` header is garbage: refused when the file is opened, naming the array."""
    path = tmp_path / "damaged.npz"
    with zipfile.ZipFile(vgg16_bn_npz) as source, zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            payload = source.read(item.filename)
            target.writestr(item, b"not a header" + payload[12:] if item.filename == "features.0.weight.npy"
                            else payload)
    with pytest.raises(CheckpointError, match=r"member 'features.0.weight' has no readable array header"):
        transfer.transfer_weights(mapping_dict(SEGNET, input_shape=[32, 32, 3]), source_weights=path)
