"""TensorFlow and torch in one process. Here, triton's native extension (which torchvision
loads through torch._dynamo) segfaults when it is loaded after TensorFlow. We decided:
`import transfer` loads triton first; if TensorFlow came first anyway, torchvision is
refused with an explanation (exit code 7), and everything that needs only torch still works.
Each case runs in a fresh interpreter, since the order is per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MAPPINGS

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def python(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=ENV)


def test_the_hazard_exists_here() -> None:
    """The canary: if this stops crashing, the guard is harmless but no longer needed."""
    result = python("import tensorflow, torchvision")
    if result.returncode == 0:
        pytest.skip("tensorflow-then-torchvision no longer crashes in this environment")
    assert result.returncode < 0  # killed by a signal, no Python error


def test_transfer_first_makes_any_later_order_safe() -> None:
    result = python("import transfer, tensorflow, torchvision; print('alive')")
    assert result.returncode == 0 and "alive" in result.stdout, result.stderr[-2000:]


def test_tensorflow_first_refuses_torchvision_and_still_converts_torch_files(vgg16_pth: Path) -> None:
    """TensorFlow imported before us: what needs torchvision is refused (exit code 7, not a
    crash); torch alone (no torchvision) is safe, so state-dict sources still work."""
    code = (
        "import tensorflow\n"
        "import transfer\n"
        "try:\n"
        f"    transfer.transfer_weights({str(MAPPINGS / 'segnet_torch_vgg16_bn.yaml')!r}, check=True)\n"
        "except transfer.FrameworkError as exc:\n"
        "    print('refused:', exc.exit_code, exc)\n"
        f"r = transfer.transfer_weights({str(MAPPINGS / 'unet_vgg16_torchvision.yaml')!r}, "
        f"source_weights={str(vgg16_pth)!r})\n"
        "print('moved', len(r.report.transferred))\n"
    )
    result = python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused: 7 TensorFlow was imported before torchvision" in result.stdout
    assert result.stdout.strip().endswith("moved 13")


def test_console_script_end_to_end(notop_h5: Path, tmp_path: Path) -> None:
    """The installed `transfer-weights` command, as a user runs it: with --quiet, nothing at
    all on stderr (TensorFlow's start-up lines included) and nothing on stdout."""
    out, report = tmp_path / "UNET.keras", tmp_path / "REPORT.json"
    command = [str(Path(sys.executable).with_name("transfer-weights")), "--map", str(MAPPINGS / "unet_vgg16.yaml"),
               "--source-weights", str(notop_h5), "--out", str(out), "--report", str(report), "--quiet"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == "" and result.stdout == ""
    assert out.is_file() and len(json.loads(report.read_text())["transferred"]) == 13


def loaded_after(code: str) -> set[str]:
    result = python(code + "\nimport sys; print(sorted(m for m in ('tensorflow', 'keras', 'torch', 'torchvision') "
                           "if m in sys.modules))")
    assert result.returncode == 0, result.stderr[-2000:]
    return set(eval(result.stdout.strip().splitlines()[-1]))


def test_import_transfer_loads_no_framework() -> None:
    assert loaded_after("import transfer, transfer.layout, transfer.kinds, transfer.mapping") == set()


def test_torch_to_torch_never_imports_tensorflow_or_keras(vgg16_bn_pth: Path, tmp_path: Path) -> None:
    mapping = str(MAPPINGS / "segnet_torch_vgg16_bn.yaml")
    library = (f"import transfer\ntransfer.transfer_weights({mapping!r}, source_weights={str(vgg16_bn_pth)!r}, "
               f"verify=True, out={str(tmp_path / 'a.safetensors')!r})")
    cli = (f"from transfer.cli import main\nassert main(['--map', {mapping!r}, '--source-weights', "
           f"{str(vgg16_bn_pth)!r}, '--verify', '--quiet', '--out', {str(tmp_path / 'b.pth')!r}]) == 0")
    # both in one interpreter: neither may load them
    # nor torchvision: the runnable VGG16-BN source is transfer/targets/torch_vgg.py (issue 24)
    assert loaded_after(library + "\n" + cli) == {"torch"}


def test_keras_to_keras_never_imports_torch(notop_h5: Path) -> None:
    code = (f"from transfer.cli import main\nassert main(['--map', {str(MAPPINGS / 'unet_vgg16.yaml')!r}, "
            f"'--source-weights', {str(notop_h5)!r}, '--verify', '--quiet']) == 0")
    assert loaded_after(code) == {"tensorflow", "keras"}
