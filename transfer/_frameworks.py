"""The one place that imports the deep-learning frameworks, in a safe order.

Seen on x86_64 with tensorflow-cpu 2.21 and torch 2.14: loading triton's native extension
(`triton._C.libtriton`) after TensorFlow's shared libraries segfaults the process. torch imports
triton lazily, through `torch._dynamo`, which `import torchvision` pulls in. Importing triton
*before* TensorFlow is safe, and costs about 0.1 s, so `keras()` does that first. If the
caller imported TensorFlow before us and triton is not loaded yet, `torchvision()` refuses
with an explanation instead of letting the interpreter crash.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from types import ModuleType

from transfer import progress
from transfer.errors import FrameworkError

# TensorFlow's start-up lines (absl's "All log messages before absl::InitializeLog()",
# oneDNN's "custom operations are on", cpu_feature_guard's "rebuild TensorFlow"): printed on
# stderr whatever TF_CPP_MIN_LOG_LEVEL says, unless oneDNN's custom ops are off too.
QUIET_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"}


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def quiet_frameworks() -> None:
    """Silence TensorFlow's start-up lines: set before TensorFlow is imported, each variable
    only where the user has not set it (a value the user set wins). With oneDNN's custom ops off
    TensorFlow's CPU kernels round in the same order every run; the moved tensors are not
    computed, so the transfer's results are the same either way. Called whenever this package
    is the one importing Keras (so TensorFlow); a process that imported TensorFlow first keeps
    its own settings."""
    if "tensorflow" in sys.modules:
        return
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


_LOADING = {"keras": "loading Keras (and its backend)", "torch": "loading PyTorch",
            "torchvision": "loading torchvision", "onnx": "loading onnx", "onnxruntime": "loading onnxruntime"}


def _import(name: str, purpose: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    if not _installed(name):
        raise FrameworkError(
            f"{purpose} needs the Python package '{name}', which is not installed. "
            "Install transfer-weights with its dependencies (see README, 'Install')."
        )
    with progress.step(_LOADING.get(name, f"loading {name}")):
        return importlib.import_module(name)


def preload_triton() -> None:
    """Load triton before TensorFlow can be loaded (no-op when too late or not installed)."""
    if "tensorflow" not in sys.modules and _installed("triton"):
        importlib.import_module("triton")


def register_keras_layers_when_keras_loads(register: Callable[[ModuleType], None]) -> None:
    """Call `register(keras)` the moment Keras is imported, or now if it already is: this
    package's Keras layers (SegNet's pooling, the ViT's embeddings) must be in Keras' registry
    for `keras.saving.load_model` (it never imports a non-Keras module named in a file), and
    `import transfer` must not import Keras for torch-only users. A post-import hook (wrapt's,
    the one TensorFlow itself depends on) gives both. The caller (`transfer/__init__`) names
    the layers' modules, so this module depends on no target."""
    if not _installed("keras"):
        return
    import wrapt

    wrapt.register_post_import_hook(register, "keras")


def triton_crash_risk() -> bool:
    """True when importing triton now would load it after TensorFlow (and crash)."""
    return "tensorflow" in sys.modules and "triton" not in sys.modules and _installed("triton")


def keras() -> ModuleType:
    """Import Keras 3 (and, first, triton, so that torch can be imported safely later)."""
    preload_triton()
    if "keras" not in sys.modules:
        quiet_frameworks()
    module = _import("keras", "Keras models and weight files")
    if not module.__version__.startswith("3."):
        raise FrameworkError(f"transfer-weights needs Keras 3; found keras {module.__version__}.")
    return module


def framework_of(obj: object) -> str | None:
    """"keras" for a `keras.Model`, "torch" for a `torch.nn.Module`, else None. Keras first: on
    Keras' torch backend a Keras model is also a `torch.nn.Module`. Only frameworks already
    imported are asked (an object of a framework that was never imported cannot exist)."""
    keras_module = sys.modules.get("keras")
    if keras_module is not None and isinstance(obj, keras_module.Model):
        return "keras"
    torch_module = sys.modules.get("torch")
    if torch_module is not None and isinstance(obj, torch_module.nn.Module):
        return "torch"
    return None


def torch() -> ModuleType:
    """Import torch. Plain torch does not load triton, so it is safe in any order."""
    preload_triton()
    return _import("torch", "PyTorch models and checkpoints")


def torchvision() -> ModuleType:
    """Import torchvision, refusing (instead of crashing) when the import order is unsafe."""
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"]
    if triton_crash_risk():
        raise FrameworkError(
            "TensorFlow was imported before torchvision. In this environment that order "
            "crashes the Python process (triton's native extension segfaults when it is loaded "
            "after TensorFlow). Import transfer, torch or torchvision before tensorflow/keras "
            "(for example `import transfer` at the top of your script), or run the "
            "transfer-weights command line tool, which imports them in a safe order."
        )
    torch()
    return _import("torchvision", "torchvision models")
