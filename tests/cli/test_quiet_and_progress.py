"""Issue 20: a quiet library, and progress on long steps on a terminal only.

A library transfer leaves stderr free of the frameworks' start-up lines (TensorFlow's absl,
oneDNN and cpu_feature_guard lines) when transfer-weights is the one importing them, unless the
user set those variables. The command line draws progress (rich) on a terminal, and never with
--quiet, in CI or when stderr is not a terminal."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from transfer import _frameworks, progress

STARTUP_LINES = re.compile(r"absl::InitializeLog|oneDNN custom operations|cpu_feature_guard|rebuild TensorFlow")


def environment(**overrides: str) -> dict[str, str]:
    """This environment without the variables that silence TensorFlow (conftest sets them), nor CI."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS", "CI", "TRANSFER_WEIGHTS_PROGRESS")}
    env.update(overrides)
    return env


def test_a_library_transfer_prints_nothing_on_stderr(tmp_path: Path) -> None:
    """It printed five TensorFlow start-up lines; only the CLI silenced them."""
    code = ("import transfer\n"
            "model, report = transfer.transfer_weights('unet_vgg16_hed', verify=True, out='unet.keras')\n"
            "print(report.ok, len(report.transferred))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environment(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "13"]
    assert done.stderr == ""
    assert (tmp_path / "unet.keras").is_file()


def test_a_value_the_user_set_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)  # as before TensorFlow is imported
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    _frameworks.quiet_frameworks()
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1" and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"


def test_a_process_that_imported_tensorflow_first_keeps_its_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", object())
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    _frameworks.quiet_frameworks()
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ


class _Terminal:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("tty, quiet, env, expected", [
    (True, False, {}, True),
    (True, True, {}, False),  # --quiet
    (True, False, {"CI": "true"}, False),
    (True, False, {"CI": "1"}, False),
    (True, False, {"TRANSFER_WEIGHTS_PROGRESS": "0"}, False),
    (True, False, {"TERM": "dumb"}, False),
    (False, False, {}, False),  # stderr is a file or a pipe
])
def test_progress_only_on_a_terminal(tty: bool, quiet: bool, env: dict[str, str], expected: bool,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CI", "TRANSFER_WEIGHTS_PROGRESS", "TERM"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "stderr", _Terminal(tty))
    assert progress.wanted(quiet) is expected
    assert progress.enable(quiet) is expected
    progress.disable()


def test_a_library_call_draws_no_progress() -> None:
    assert not progress.enabled()
    with progress.step("anything", total=3) as advance:  # a no-op when off
        advance()


def run_on_a_terminal(args: list[str], cwd: Path, **env: str) -> tuple[int, str]:
    """Run the command line with stderr on a pseudo-terminal; (exit code, stderr without colours)."""
    main, child = pty.openpty()
    command = [sys.executable, "-c", "from transfer.cli import entry_point; entry_point()", *args]
    process = subprocess.Popen(command, cwd=cwd, env=environment(**env), stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=child)
    os.close(child)
    chunks, deadline = [], time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.2)
        if ready:
            try:
                data = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    os.close(main)
    code = process.wait(timeout=60)
    return code, re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))


def test_progress_is_drawn_on_a_terminal_and_not_with_quiet(tmp_path: Path) -> None:
    code, err = run_on_a_terminal(["--map", "unet_vgg16_hed", "--check"], tmp_path)
    assert code == 0, err
    assert "loading Keras (and its backend)" in err and "building the target unet_vgg16 (keras)" in err
    assert not STARTUP_LINES.search(err)
    code, err = run_on_a_terminal(["--map", "unet_vgg16_hed", "--check", "--quiet"], tmp_path)
    assert code == 0 and err.strip() == ""
