"""`.npz` (a NumPy archive of a torch state dict), the format added by following the worked
example in docs/development.md: read lazily and never unpickled, transferred and proven like
any state dict, its damaged or hostile copies refused naming the file and the array."""

from __future__ import annotations

import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

import transfer
from transfer.errors import CheckpointError
from transfer.formats import NUMPY_ARCHIVE, detect

torch = pytest.importorskip("torch")


def torch_net() -> torch.nn.Module:
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4))
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
        net[1].weight.uniform_(0.5, 2)
    return net.eval()


def keras_net() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    return keras.Model(inputs, keras.layers.BatchNormalization(epsilon=1e-5, name="bn")(x))


def mapping(path: Path) -> dict:
    return {"format": 1, "source": {"framework": "torch", "weights": str(path)},
            "target": {"framework": "keras", "model": "live"}, "layers": {"0": "conv", "1": "bn"}}


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    path = tmp_path / "net.npz"
    np.savez(path, **{k: v.numpy() for k, v in torch_net().state_dict().items()})
    return path


def test_the_suffix_is_the_format() -> None:
    assert detect(Path("weights.npz")) is NUMPY_ARCHIVE


def test_an_archive_moves_what_the_state_dict_moves(archive: Path, tmp_path: Path) -> None:
    pth = tmp_path / "net.pth"
    torch.save(torch_net().state_dict(), pth)
    from_archive = transfer.transfer_weights(mapping(archive), target=keras_net(), verify=True)
    from_pth = transfer.transfer_weights(mapping(pth), target=keras_net())
    checks = from_archive.report.verification[0].layers
    assert [c.method for c in checks] == ["conv2d on a probe, torch vs keras", "batchnorm on a probe, torch vs keras"]
    assert all(c.ok for c in checks)
    for name in ("conv", "bn"):
        for a, b in zip(from_pth.model.get_layer(name).get_weights(), from_archive.model.get_layer(name).get_weights()):
            assert np.array_equal(a, b)


def test_an_object_array_is_refused_unread(tmp_path: Path) -> None:
    """An object array needs unpickling, which runs code: refused by name, exit 5, nothing written."""
    path, out = tmp_path / "hostile.npz", tmp_path / "out.keras"
    np.savez(path, **{"0.weight": np.array([{"x": 1}], dtype=object)})
    target = keras_net()
    before = [w.copy() for w in target.get_weights()]
    with pytest.raises(CheckpointError, match=r"'0.weight' holds Python objects") as caught:
        transfer.transfer_weights(mapping(path), target=target, out=out)
    assert caught.value.exit_code == 5 and str(path) in str(caught.value)
    assert not out.exists() and all(np.array_equal(a, b) for a, b in zip(before, target.get_weights()))


def test_a_truncated_archive_is_refused(archive: Path, tmp_path: Path) -> None:
    path = tmp_path / "cut.npz"
    path.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=str(path)):
        transfer.transfer_weights(mapping(path), target=keras_net())


def test_a_damaged_member_names_its_array(archive: Path, tmp_path: Path) -> None:
    """A member whose `.npy` header is garbage: refused when the file is opened, naming the array."""
    path = tmp_path / "damaged.npz"
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            payload = source.read(item.filename)
            target.writestr(item, b"not a header" + payload[12:] if item.filename == "0.weight.npy" else payload)
    with pytest.raises(CheckpointError, match=r"member '0.weight' has no readable array header"):
        transfer.transfer_weights(mapping(path), target=keras_net())
