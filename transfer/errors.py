"""Exception hierarchy. Each class carries the CLI exit code documented in docs/cli.md."""

from __future__ import annotations

from typing import Any


class TransferWeightsError(Exception):
    """Base class of every error this package raises on bad input. `report` holds the
    partial report (a `transfer.report.Report`) where one exists, e.g. the failed checks."""

    exit_code: int = 1

    def __init__(self, message: str, *, report: Any = None):
        super().__init__(message)
        self.report = report


class MappingError(TransferWeightsError):
    """The mapping file is malformed or does not fit the models (exit code 3)."""

    exit_code = 3


class IncompatibleWeightsError(TransferWeightsError):
    """A tensor cannot be moved as asked: shape, dtype, value or layer-kind trouble (exit 4)."""

    exit_code = 4


class StrictModeError(IncompatibleWeightsError):
    """`--strict` found an undeclared skip or an undeclared untouched target layer (exit 4)."""


class CheckpointError(TransferWeightsError):
    """A file cannot be read or written, whichever file it is (weights, a mapping, the output):
    missing, corrupt, unsafe, or not downloadable (exit 5)."""

    exit_code = 5


class VerificationError(TransferWeightsError):
    """The numerical verification of a transfer failed (exit 6)."""

    exit_code = 6


class FrameworkError(TransferWeightsError):
    """A deep-learning framework is missing or cannot be imported safely (exit 7)."""

    exit_code = 7


class UserCodeError(TransferWeightsError):
    """Code of the user's raised: a `--target-factory`, a model's `forward`/`call`, a user module
    imported by name (exit 8). Not a bug of transfer-weights; the traceback is shown with
    `--debug` (or TRANSFER_WEIGHTS_DEBUG=1)."""

    exit_code = 8
