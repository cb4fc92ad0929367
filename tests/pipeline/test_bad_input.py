"""Hostile and broken input: each case gives a clear error naming the file and the layer, a
documented exit code, no output file, and a target left exactly as it was."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np
import pytest

import transfer
from conftest import MAPPINGS, mapping_dict
from transfer.cli import main
from transfer.errors import CheckpointError, IncompatibleWeightsError
from transfer.targets.keras_unet import build_unet_vgg16

UNET_MAP = str(MAPPINGS / "unet_vgg16.yaml")
TORCH_MAP = str(MAPPINGS / "segnet_torch_vgg16_bn.yaml")


def run_cli(tmp_path: Path, mapping: str, weights: Path | str, capsys, out_name: str = "out.weights.h5"):
    out, report = tmp_path / out_name, tmp_path / "report.json"
    code = main(["--map", mapping, "--source-weights", str(weights), "--out", str(out), "--report", str(report)])
    err = capsys.readouterr().err
    assert not out.exists(), "a failed run left an output file"
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name], "temporary file left behind"
    data = json.loads(report.read_text())
    assert data["ok"] is False and data["exit_code"] == code
    return code, err


def copy_h5_with(source: Path, path: Path, layer: str, change) -> Path:
    path.write_bytes(source.read_bytes())
    with h5py.File(path, "r+") as file:
        group = file[layer]
        name = group.attrs["weight_names"][0]
        name = name.decode() if isinstance(name, bytes) else name
        data = change(np.array(group[name]))
        del group[name]
        group.create_dataset(name, data=data)
    return path


def test_nan_in_a_source_tensor(notop_h5: Path, tmp_path: Path, capsys) -> None:
    def poison(kernel):
        kernel[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]
        return kernel

    bad = copy_h5_with(notop_h5, tmp_path / "nan.h5", "block3_conv2", poison)
    code, err = run_cli(tmp_path, UNET_MAP, bad, capsys)
    assert code == 4 and str(bad) in err and "'block3_conv2' holds 3 NaN or infinite value(s)" in err


def test_fp16_source_is_converted_and_noted(notop_h5: Path, keras_vgg: Any, tmp_path: Path) -> None:
    half = copy_h5_with(notop_h5, tmp_path / "half.h5", "block2_conv1", lambda k: k.astype("float16"))
    result = transfer.transfer_weights(mapping_dict("unet_vgg16.yaml", input_shape=[64, 64, 3]), source_weights=half)
    row = next(t for t in result.report.transferred if t.target == "block2_conv1")
    assert row.notes == ("cast float16 -> float32",)
    expected = keras_vgg.get_layer("block2_conv1").kernel.numpy().astype("float16").astype("float32")
    assert np.array_equal(result.model.get_layer("block2_conv1").kernel.numpy(), expected)


def test_truncated_h5(notop_h5: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "truncated.h5"
    bad.write_bytes(notop_h5.read_bytes()[: notop_h5.stat().st_size // 2])
    code, err = run_cli(tmp_path, UNET_MAP, bad, capsys)
    assert code == 5 and str(bad) in err and ("truncated or corrupt" in err)


def test_truncated_pth(vgg16_bn_pth: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(vgg16_bn_pth.read_bytes()[: vgg16_bn_pth.stat().st_size // 3])
    code, err = run_cli(tmp_path, TORCH_MAP, bad, capsys, "out.pth")
    assert code == 5 and str(bad) in err and "truncated or corrupt" in err


def test_truncated_safetensors(vgg16_bn_safetensors: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(vgg16_bn_safetensors.read_bytes()[:5000])
    code, err = run_cli(tmp_path, TORCH_MAP, bad, capsys, "out.pth")
    assert code == 5 and str(bad) in err


def test_missing_source_file(tmp_path: Path, capsys) -> None:
    code, err = run_cli(tmp_path, UNET_MAP, tmp_path / "nowhere.h5", capsys)
    assert code == 5 and "nowhere.h5: no such file" in err


def test_not_a_weights_file(tmp_path: Path, capsys) -> None:
    bogus = tmp_path / "bogus.h5"
    bogus.write_text("this is not HDF5")
    code, err = run_cli(tmp_path, UNET_MAP, bogus, capsys)
    assert code == 5 and "not a readable HDF5 file" in err


def test_unknown_output_suffix_and_missing_folder(notop_h5: Path, tmp_path: Path, capsys) -> None:
    assert main(["--map", UNET_MAP, "--source-weights", str(notop_h5), "--out", str(tmp_path / "o.pth")]) == 5
    assert "is written as .weights.h5 or .keras" in capsys.readouterr().err
    assert main(["--map", UNET_MAP, "--source-weights", str(notop_h5),
                 "--out", str(tmp_path / "no" / "dir" / "o.keras")]) == 5
    assert "does not exist" in capsys.readouterr().err


def test_unwritable_output_location(notop_h5: Path, capsys) -> None:
    """/proc accepts no new files, even for root (a chmod would not stop root)."""
    code = main(["--map", UNET_MAP, "--source-weights", str(notop_h5), "--out", "/proc/unet.weights.h5"])
    assert code == 5 and "/proc/unet.weights.h5" in capsys.readouterr().err
    assert not Path("/proc/unet.weights.h5").exists()


UNET_HEAD = ("format: 1\nsource: {framework: keras, model: vgg16}\n"
             "target: {framework: keras, model: unet_vgg16, config: {input_shape: [64, 64, 3]}}\n")


@pytest.mark.parametrize("text, code, layer", [
    ("format: 1\nsource: {framework: keras\n", 3, None),
    (("format: 1\nsource: {framework: keras, model: vgg16}\ntarget: {framework: keras, model: unet}\n"
     "layers: {a: b}\n"), 3, None),
    (UNET_HEAD + "layers:\n  block1_cnv1: block1_conv1\n", 3, "block1_cnv1"),
    (UNET_HEAD + "layers:\n  block1_conv1: block1_conv1\n  'block1_conv(1)': 'block1_conv\\1'\n", 3, "block1_conv1"),
    (UNET_HEAD + "layers:\n  block5_conv3: head\n", 4, "block5_conv3"),
], ids=["yaml", "unknown-builder", "unknown-layer", "two-rules", "shape"])
def test_malformed_mapping_exit_code_and_no_output(text: str, code: int, layer: str | None, notop_h5: Path,
                                                   tmp_path: Path, capsys) -> None:
    mapping = tmp_path / "bad.yaml"
    mapping.write_text(text)
    got, err = run_cli(tmp_path, str(mapping), notop_h5, capsys)
    assert got == code and str(mapping) in err
    assert layer is None or f"'{layer}'" in err


def test_target_untouched_when_a_later_tensor_is_bad(notop_h5: Path, tmp_path: Path) -> None:
    """All or nothing: a NaN in the last layer, read after twelve good ones, changes nothing."""
    def poison(kernel):
        kernel[1, 1, 1, 1] = np.nan
        return kernel

    bad = copy_h5_with(notop_h5, tmp_path / "late-nan.h5", "block5_conv3", poison)
    target = build_unet_vgg16(input_shape=(64, 64, 3))
    before = [w.numpy().copy() for w in target.weights]
    with pytest.raises(IncompatibleWeightsError, match="block5_conv3"):
        transfer.transfer_weights(UNET_MAP, source_weights=bad, target=target)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, target.weights))
    assert target.get_layer("block1_conv1").trainable


def _die_while_writing(tmp_path: Path, how: str) -> subprocess.CompletedProcess:
    code = f"""
import os, signal, sys
from pathlib import Path
from transfer.cli import exit_on_sigterm
from transfer.output import atomic_write
exit_on_sigterm()
def write(temporary):
    temporary.write_bytes(b"x" * 1_000_000)  # half-written
    os.kill(os.getpid(), signal.{how})
atomic_write(Path(sys.argv[1]), ".keras", write)
"""
    return subprocess.run([sys.executable, "-c", code, str(tmp_path / "model.keras")], timeout=120)


def test_killed_while_writing_leaves_no_output(tmp_path: Path) -> None:
    result = _die_while_writing(tmp_path, "SIGKILL")
    assert result.returncode == -signal.SIGKILL
    assert not (tmp_path / "model.keras").exists()  # only a hidden .partial- file may remain


def test_terminated_while_writing_cleans_up(tmp_path: Path) -> None:
    result = _die_while_writing(tmp_path, "SIGTERM")
    assert result.returncode == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []


def test_offline_imagenet_download_says_how_to_pass_a_file(monkeypatch, capsys) -> None:
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3]")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    assert main(["--map", UNET_MAP, "--quiet"]) == 5
    err = capsys.readouterr().err
    assert "could not download https://storage.googleapis.com/tensorflow/keras-applications/vgg16/" in err
    assert "(md5 6d6bbae143d832006294945121d1f1fc)" in err and "--source-weights PATH" in err
    assert "Copy vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 from a machine with a network" in err
    assert "mappings/unet_vgg16_hed.yaml" in err  # the offline route that works


def test_check_never_downloads(monkeypatch, capsys) -> None:
    """--check reads no tensor, so a known model's layers come from its architecture."""
    def no_network(*args, **kwargs):
        raise AssertionError("--check tried to download")

    monkeypatch.setattr(keras.utils, "get_file", no_network)
    assert main(["--map", UNET_MAP, "--check"]) == 0
    out = capsys.readouterr().out
    assert "would move 13 layers" in out and "keras.applications.VGG16 architecture" in out
    assert main(["--map", str(MAPPINGS / "segnet_torch_vgg16_bn.yaml"), "--check", "--quiet"]) == 0


def test_missing_source_file_is_said_before_the_target_is_built(tmp_path: Path, capsys, monkeypatch) -> None:
    from transfer import api

    def no_build(*args, **kwargs):
        raise AssertionError("the target was built first")

    monkeypatch.setattr(api, "open_target", no_build)
    assert main(["--map", UNET_MAP, "--source-weights", str(tmp_path / "absent.h5")]) == 5
    assert f"{tmp_path / 'absent.h5'}: no such file" in capsys.readouterr().err


def test_imagenet_download_uses_the_published_hashes(monkeypatch, notop_h5: Path, top_h5: Path) -> None:
    calls = []

    def fake_get_file(fname, origin, cache_subdir, file_hash):
        calls.append((fname, origin, cache_subdir, file_hash))
        return str(top_h5 if "notop" not in fname else notop_h5)

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    result = transfer.transfer_weights(mapping_dict("unet_vgg16.yaml", input_shape=[64, 64, 3]))
    assert len(result.report.transferred) == 13
    assert calls == [("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                      ("https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
                      "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"), "models",
                      "6d6bbae143d832006294945121d1f1fc")]


def test_torchvision_cache_with_a_wrong_hash_is_refused(monkeypatch, tmp_path: Path, vgg16_bn_pth: Path) -> None:
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    cached = tmp_path / "checkpoints" / "vgg16_bn-6c64b313.pth"
    cached.parent.mkdir()
    cached.write_bytes(vgg16_bn_pth.read_bytes())  # right format, not the published bytes
    with pytest.raises(CheckpointError, match="does not start with the published 6c64b313"):
        transfer.transfer_weights(TORCH_MAP)
    cached.unlink()

    def offline(url, dst, hash_prefix, progress):
        assert url.endswith("vgg16_bn-6c64b313.pth") and hash_prefix == "6c64b313"
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(CheckpointError, match="could not download .*vgg16_bn-6c64b313.pth.*--source-weights PATH"):
        transfer.transfer_weights(TORCH_MAP)


def test_streamed_mode_is_all_or_nothing_too(notop_h5: Path, tmp_path: Path, monkeypatch) -> None:
    """Above the staging limit, tensors are checked in a first pass: a NaN in the last layer
    still leaves the target untouched, and good input gives the staged result."""
    from transfer import engine

    def poison(kernel):
        kernel[0, 0, 0, 0] = np.nan
        return kernel

    bad = copy_h5_with(notop_h5, tmp_path / "late-nan.h5", "block5_conv3", poison)
    mapping = mapping_dict("unet_vgg16.yaml", input_shape=[64, 64, 3])
    staged = transfer.transfer_weights(mapping, source_weights=notop_h5).model
    monkeypatch.setattr(engine, "STAGE_LIMIT_BYTES", 0)
    target = build_unet_vgg16((64, 64, 3), classes=6)
    before = [w.numpy().copy() for w in target.weights]
    with pytest.raises(IncompatibleWeightsError, match="block5_conv3"):
        transfer.transfer_weights(mapping, source_weights=bad, target=target)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, target.weights))
    streamed = transfer.transfer_weights(mapping, source_weights=notop_h5, target=target).model
    for layer in staged.layers:
        if layer.name.startswith("block"):
            for a, b in zip(layer.get_weights(), streamed.get_layer(layer.name).get_weights()):
                assert np.array_equal(a, b)
