"""sha256 of files and tensors, for reports that CI jobs compare run to run."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


def file_sha256(path: str | Path | None, chunk: int = 1 << 22) -> str | None:
    if path is None or not Path(path).is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def tensor_sha256(array: np.ndarray) -> str:
    """Hash of dtype, shape and C-order bytes: equal tensors, equal hashes, on any machine."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()
