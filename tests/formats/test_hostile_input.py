"""Hostile input is bounded and refused cleanly: alias bombs and deep nesting in mappings,
patterns that backtrack, archives that would escape or explode, and damaged files of every
supported format (truncated at many offsets, bytes flipped) give exit 5 naming the file, or a
clean result when the damage misses the data used; never a traceback."""

from __future__ import annotations

import io
import resource
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import transfer
from helpers.bounds import no_hang
from helpers.checkpoints import tiny_keras, tiny_torch, write_legacy_h5
from transfer.cli import main
from transfer.errors import CheckpointError, MappingError, TransferWeightsError
from transfer.mapping import load_mapping

BASE = "format: 1\nsource: {framework: keras, model: vgg16}\ntarget: {framework: keras, model: unet_vgg16}\n"


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    lines = [BASE + "layers: {}", 'a0: &a0 ["lol"]']
    for level in range(1, levels + 1):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * width) + "]")
    return "\n".join(lines) + f"\nskip: *a{levels}\n"


def test_alias_bomb_is_refused_fast_and_small() -> None:
    """Finding 2: nine levels of nine aliases used to expand past 1 GiB in about 5 s."""
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with no_hang("refusing an alias bomb"), pytest.raises(MappingError, match="expands to more than 100,000 values"):
        load_mapping(billion_laughs())
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 100_000  # KiB


def test_few_aliases_are_still_fine() -> None:
    text = BASE + "layers: {}\nshared: &s ['dec*', head]\nuntouched: *s\n"
    with pytest.raises(MappingError, match="shared: unknown key"):  # validated, not refused for size
        load_mapping(text)


def test_deep_nesting_and_huge_documents_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="nested deeper than 32 levels"):
        load_mapping(BASE + "layers: {}\nskip: " + "[" * 40 + "]" * 40 + "\n")
    huge = tmp_path / "huge.yaml"
    huge.write_text(BASE + "layers: {}\n#" + "x" * (1 << 20) + "\n")
    with pytest.raises(MappingError, match=f"{huge}: .* at most 1,048,576"):
        load_mapping(huge)


@pytest.mark.parametrize("pattern", [r"(a+)+", r"(\w*)*x", r"(block|b+){2,}", r"((\d+)_)+conv"])
def test_patterns_that_can_backtrack_exponentially_are_refused(pattern: str) -> None:
    text = BASE + f"layers: {{'{pattern}': 'x'}}\n"
    with pytest.raises(MappingError, match="repeats a group that repeats itself"):
        load_mapping(text)


@pytest.mark.parametrize("pattern", [r"block(\d)_conv(\d)", r"features\.(\d+)", r"(\w+)_(\d+)", r"(ab)+"])
def test_ordinary_patterns_are_accepted(pattern: str) -> None:
    assert load_mapping(BASE + f"layers: {{'{pattern}': 'x'}}\n").rules[0].is_pattern


# --- archives ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_dot_keras(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keras") / "tiny.keras"
    tiny_keras(1).save(path)
    return path


def with_member(original: Path, path: Path, name: str, data: bytes = b"x", symlink: bool = False,
                declared_size: int | None = None) -> Path:
    shutil.copy(original, path)
    with zipfile.ZipFile(path, "a") as archive:
        info = zipfile.ZipInfo(name)
        if symlink:
            info.external_attr = (0o120777 << 16)
        archive.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    return path


@pytest.mark.parametrize("name, symlink, message", [
    ("../escape.txt", False, "climbs out of the extraction folder"),
    ("/abs/escape.txt", False, "has an absolute path"),
    ("link", True, "is a symbolic link"),
])
def test_unsafe_keras_archives_are_refused_before_extraction(name: str, symlink: bool, message: str,
                                                             tiny_dot_keras: Path, tmp_path: Path, capsys) -> None:
    """Finding 5: such archives used to be accepted (exit 0, zipfile warnings)."""
    bad = with_member(tiny_dot_keras, tmp_path / "bad.keras", name, symlink=symlink)
    spec = {"format": 1, "source": {"framework": "keras", "weights": str(bad)},
            "target": {"framework": "keras", "model": "live"}, "layers": {"c1": "c1"}}
    with pytest.raises(CheckpointError, match=f"{bad}: refused before extraction: member '{name}' {message}"):
        transfer.transfer_weights(spec, target=tiny_keras(2))
    assert not (tmp_path.parent / "escape.txt").exists()


def test_decompression_bomb_is_refused(tiny_dot_keras: Path, tmp_path: Path) -> None:
    bomb = with_member(tiny_dot_keras, tmp_path / "bomb.keras", "assets/zeros.bin", data=b"\0" * (8 << 20))
    spec = {"format": 1, "source": {"framework": "keras", "weights": str(bomb)},
            "target": {"framework": "keras", "model": "live"}, "layers": {"c1": "c1"}}
    with pytest.raises(CheckpointError, match="decompression bomb"):
        transfer.transfer_weights(spec, target=tiny_keras(2))


# --- damaged files of every format --------------------------------------------------------

def _write(fmt: str, folder: Path) -> Path:
    import torch

    if fmt == "legacy.h5":
        return write_legacy_h5(tiny_keras(1), folder / "tiny.h5")
    if fmt == "weights.h5":
        tiny_keras(1).save_weights(folder / "tiny.weights.h5")
        return folder / "tiny.weights.h5"
    if fmt == "keras":
        tiny_keras(1).save(folder / "tiny.keras")
        return folder / "tiny.keras"
    state = tiny_torch(1).state_dict()
    if fmt == "zip.pth":
        torch.save(state, folder / "tiny.pth")
        return folder / "tiny.pth"
    if fmt == "legacy.pth":
        torch.save(state, folder / "tiny_legacy.pth", _use_new_zipfile_serialization=False)
        return folder / "tiny_legacy.pth"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, folder / "tiny.safetensors")
    return folder / "tiny.safetensors"


FORMATS = ["legacy.h5", "weights.h5", "keras", "zip.pth", "legacy.pth", "safetensors"]


def _transfer(fmt: str, path: Path) -> Callable[[], Any]:
    framework = "torch" if fmt.endswith(("pth", "safetensors")) else "keras"
    layers = {"c1": "c1", "bn": "bn", "c2": "c2", "fc": "fc"}
    if fmt == "weights.h5":  # no model: Keras 3 names the layers by class counters
        layers = {"conv2d": "c1", "batch_normalization": "bn", "conv2d_1": "c2", "dense": "fc"}
    spec = {"format": 1, "source": {"framework": framework, "weights": str(path)},
            "target": {"framework": framework, "model": "live"}, "layers": layers}
    target = tiny_keras(2) if framework == "keras" else tiny_torch(2)
    return lambda: transfer.transfer_weights(spec, target=target)


def damaged_versions(data: bytes, seed: int) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    cuts = sorted({0, 5, 30, 300, 900, 2000, *rng.integers(1, len(data), 8).tolist(), len(data) - 1})
    versions = [(f"cut at {cut}", data[:cut]) for cut in cuts if cut < len(data)]
    for position in rng.integers(0, len(data), 10).tolist():
        flipped = bytearray(data)
        flipped[position] ^= 0xFF
        versions.append((f"byte {position} flipped", bytes(flipped)))
    return versions


@pytest.mark.parametrize("fmt", FORMATS)
def test_damaged_files_fail_cleanly_naming_the_file(fmt: str, tmp_path: Path) -> None:
    """Finding 3 and the fuzz: every damaged version ends in success, exit 5 naming the file,
    or exit 4 for a flip that made a value NaN; never another exception."""
    good = _write(fmt, tmp_path)
    _transfer(fmt, good)()  # the undamaged file transfers
    outcomes: dict[str, int] = {}
    for label, data in damaged_versions(good.read_bytes(), seed=len(fmt)):
        bad = tmp_path / f"bad{good.name[4:]}"
        bad.write_bytes(data)
        try:
            _transfer(fmt, bad)()
            outcomes[label] = 0
        except TransferWeightsError as exc:
            assert str(bad) in str(exc), f"{label}: the message does not name the file: {exc}"
            assert exc.exit_code == 5 or (exc.exit_code == 4 and "NaN or infinite" in str(exc)), f"{label}: {exc}"
            outcomes[label] = exc.exit_code
    assert all(outcomes[label] == 5 for label in outcomes if label.startswith("cut at ")), outcomes


def test_truncated_legacy_pickle_exits_5_on_the_command_line(tmp_path: Path, capsys) -> None:
    """Finding 3 as the user met it: exit 1 and a traceback for cuts at 5 and 30 bytes."""
    import torch

    buffer = io.BytesIO()
    torch.save(tiny_torch(1).state_dict(), buffer, _use_new_zipfile_serialization=False)
    mapping = tmp_path / "m.yaml"
    mapping.write_text("format: 1\nsource: {framework: torch, weights: x.pth}\n"
                       "target: {framework: torch, model: segnet_vgg16}\nlayers: {c1: block1_conv1}\n")
    for cut in (5, 30, 300, 900, 2000):
        bad = tmp_path / f"cut{cut}.pth"
        bad.write_bytes(buffer.getvalue()[:cut])
        assert main(["--map", str(mapping), "--source-weights", str(bad), "--quiet"]) == 5
        err = capsys.readouterr().err
        assert str(bad) in err and "Traceback" not in err


class _Payload:
    def __reduce__(self) -> tuple:
        return (print, ("pwned",))


def test_refused_pickle_does_not_advise_turning_safety_off(tmp_path: Path) -> None:
    """Finding 8: the message quoted torch's advice to rerun with weights_only=False."""
    import torch

    evil = tmp_path / "evil.pth"
    torch.save({"c1.weight": torch.zeros(4, 3, 3, 3), "hook": _Payload()}, evil)
    spec = {"format": 1, "source": {"framework": "torch", "weights": str(evil)},
            "target": {"framework": "torch", "model": "live"}, "layers": {"c1": "c1"}}
    with pytest.raises(CheckpointError) as caught:
        transfer.transfer_weights(spec, target=tiny_torch(2))
    message = str(caught.value)
    assert "refused: the checkpoint's pickle asks for the Python object 'print'" in message
    assert "weights_only" not in message and "False" not in message
