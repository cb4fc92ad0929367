"""The format registry: every path's format by its name, the longest suffix first, folders as
checkpoint folders; a target's output suffix checked, with the allowed ones named."""

from __future__ import annotations

from pathlib import Path

import pytest

from transfer import formats
from transfer.errors import CheckpointError


@pytest.mark.parametrize("name, expected", [
    ("unet.keras", formats.KERAS_MODEL), ("model.weights.h5", formats.KERAS_WEIGHTS),
    ("vgg16_notop.h5", formats.KERAS_H5), ("model.weights.json", formats.KERAS_SHARDED),
    ("model.safetensors.index.json", formats.SAFETENSORS_INDEX), ("model.safetensors", formats.SAFETENSORS),
    ("vgg16.pth", formats.TORCH_PICKLE), ("pytorch_model.bin", formats.TORCH_PICKLE), ("net.onnx", formats.ONNX),
    ("notes.txt", None), (".keras", None),  # a bare suffix is no file name
])
def test_detect_by_the_longest_suffix(name: str, expected: formats.Format | None, tmp_path: Path) -> None:
    assert formats.detect(tmp_path / name) is expected


def test_a_folder_is_a_checkpoint_folder(tmp_path: Path) -> None:
    assert formats.detect(tmp_path) is formats.FOLDER and not formats.known_suffix(tmp_path)


def test_output_formats_and_the_refusal_names_the_allowed_suffixes() -> None:
    assert formats.output_format(Path("u.weights.h5"), "keras") == (formats.KERAS_WEIGHTS, ".weights.h5")
    assert formats.output_format(Path("u.keras"), "keras") == (formats.KERAS_MODEL, ".keras")
    assert formats.output_format(Path("s.pt"), "torch") == (formats.TORCH_PICKLE, ".pt")
    with pytest.raises(CheckpointError, match=r"a keras target is written as \.weights\.h5 or \.keras; received 'u\.h5'"):
        formats.output_format(Path("u.h5"), "keras")
    with pytest.raises(CheckpointError, match=r"written as \.pth or \.pt or \.safetensors"):
        formats.output_format(Path("s.onnx"), "torch")


def test_every_suffix_belongs_to_one_format() -> None:
    suffixes = [s for f in formats.FORMATS for s in f.suffixes]
    assert len(suffixes) == len(set(suffixes))
    assert all(s in f.suffixes for f in formats.FORMATS for s in f.writes)
    assert formats.is_whole_model("x.keras") and not formats.is_whole_model("x.weights.h5")
