"""A streamed transfer's check pass looks at a Keras HDF5 file's tensors through its mapped
pages (`Weights.view`): the same values as `read`, and a file cut short is refused, naming it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.checkpoints import tiny_keras, write_legacy_h5
from transfer.errors import CheckpointError
from transfer.sources.keras_files import LegacyH5Source


def test_the_view_maps_the_file_and_equals_the_read(tmp_path: Path) -> None:
    path = write_legacy_h5(tiny_keras(0), tmp_path / "tiny.h5")
    with LegacyH5Source(path) as source:
        for name in source.layers():
            viewed, read = source.view(name), source.read(name)
            assert all(isinstance(v, np.memmap) and not v.flags.writeable for v in viewed)
            assert all(np.array_equal(v, r) and v.dtype == r.dtype for v, r in zip(viewed, read))


def test_a_file_cut_short_is_refused_by_the_view_naming_it(tmp_path: Path) -> None:
    path = write_legacy_h5(tiny_keras(0), tmp_path / "tiny.h5")
    with LegacyH5Source(path) as source:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])  # the file shrinks under the open source
        with pytest.raises(CheckpointError, match=r"tiny\.h5: dataset '.*' reaches byte"):
            for name in source.layers():
                source.view(name)


def test_other_byte_orders_and_chunked_storage_are_read_as_native_values(tmp_path: Path) -> None:
    """A big-endian tensor and a chunked, compressed one: `read` (h5py's low-level read into
    new memory) and `view` (not mappable: read) give this machine's byte order and the values
    stored."""
    import h5py

    rng = np.random.default_rng(0)
    kernel, bias = rng.standard_normal((3, 3, 2, 4)).astype("float32"), rng.standard_normal(4).astype("float32")
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as file:
        file.attrs["layer_names"] = [b"conv"]
        group = file.create_group("conv")
        group.create_dataset("conv/kernel:0", data=kernel.astype(">f4"))
        group.create_dataset("conv/bias:0", data=bias, chunks=(2,), compression="gzip")
        group.attrs["weight_names"] = [b"conv/kernel:0", b"conv/bias:0"]
    with LegacyH5Source(path) as source:
        for arrays in (source.read("conv"), source.view("conv")):
            assert [a.dtype.isnative for a in arrays] == [True, True]
            assert np.array_equal(arrays[0], kernel) and np.array_equal(arrays[1], bias)
