"""The mappings shipped with transfer-weights, found by name from any folder.

In a clone of the repository they are the files of the top-level `mappings/` folder; in an
installed wheel the same files are package data, `transfer/mappings/*.yaml` (pyproject.toml maps
the one folder onto the other at build time). `--map unet_vgg16_hed` (or `unet_vgg16_hed.yaml`)
names one; a path that exists always wins over a shipped name.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
SUFFIXES = (".yaml", ".yml")


def shipped_folder() -> Path | None:
    """Where the shipped mappings are: the package's own `mappings/` (a wheel), else the
    repository's `mappings/` beside the package (a clone, editable or not); None if neither."""
    for folder in (_PACKAGE / "mappings", _PACKAGE.parent / "mappings"):
        if folder.is_dir() and any(folder.glob("*.yaml")):
            return folder
    return None


def shipped_names() -> list[str]:
    """The names of the shipped mappings (file names without `.yaml`), sorted."""
    folder = shipped_folder()
    return sorted(path.stem for path in folder.glob("*.yaml")) if folder else []


def bare_name(text: str) -> str:
    """`text` without a `.yaml`/`.yml` suffix."""
    for suffix in SUFFIXES:
        if text.endswith(suffix):
            return text[: -len(suffix)]
    return text


def shipped_path(name: str) -> Path | None:
    """The file of the shipped mapping `name` (`.yaml` optional), or None."""
    folder = shipped_folder()
    if folder is None or "/" in name or "\\" in name:
        return None
    path = folder / f"{bare_name(name)}.yaml"
    return path if path.is_file() else None
