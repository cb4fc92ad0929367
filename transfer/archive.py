"""Zip archives (`.keras`, zip `.pth`) are checked before any library opens them: member names
that could escape an extraction folder, symbolic links, and compression ratios that only a
decompression bomb has are refused, naming the file and the member."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath

from transfer.errors import CheckpointError

# Keras and torch store members uncompressed; DEFLATE cannot exceed about 1032:1. A member
# above the floor that expands more than MAX_RATIO-fold is a bomb, not a checkpoint.
MAX_RATIO = 100
RATIO_FLOOR_BYTES = 1 << 20
MAX_TOTAL_BYTES = 64 << 30  # 64 GiB unpacked in all
MAX_MEMBERS = 100_000


def check_zip(path: Path) -> None:
    """Raise `CheckpointError` if the zip file at `path` is unsafe to extract or unreadable."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise CheckpointError(f"{path}: not a readable zip archive (truncated or corrupt?): {exc}.") from exc
    if len(members) > MAX_MEMBERS:
        raise CheckpointError(f"{path}: refused: {len(members)} archive members (at most {MAX_MEMBERS}).")
    total = 0
    for member in members:
        problem = _member_problem(member)
        if problem:
            raise CheckpointError(f"{path}: refused before extraction: member '{member.filename}' {problem}.")
        total += member.file_size
    if total > MAX_TOTAL_BYTES:
        raise CheckpointError(f"{path}: refused: the archive unpacks to {total:,} bytes "
                              f"(at most {MAX_TOTAL_BYTES:,}).")


def _member_problem(member: zipfile.ZipInfo) -> str:
    name = member.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    if ".." in parts:
        return "climbs out of the extraction folder ('..')"
    if stat.S_ISLNK(member.external_attr >> 16):
        return "is a symbolic link"
    if member.file_size > RATIO_FLOOR_BYTES and member.file_size > MAX_RATIO * member.compress_size:
        return (f"declares {member.file_size:,} bytes from {member.compress_size:,} stored "
                f"(more than {MAX_RATIO}-fold): a decompression bomb")
    return ""
