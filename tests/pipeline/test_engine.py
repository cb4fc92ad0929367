"""The pipeline is all or nothing: a failure injected at any step (check, assign, verify,
freeze, write) leaves a live target bit-identical, every tensor (BatchNorm statistics and
counters included) and every trainable flag, and leaves no output file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import transfer
from helpers.checkpoints import tiny_keras as keras_model
from helpers.checkpoints import tiny_torch as torch_model
from transfer import engine
from transfer.errors import TransferWeightsError
from transfer.report import LayerCheck

STEPS = ("check", "assign", "verify", "freeze", "write")
LAYERS = {"c1": "c1", "bn": "bn", "c2": "c2", "fc": "fc"}


def state(framework: str, model: Any) -> list[tuple[str, Any]]:
    """Every tensor and flag of the model, as plain values."""
    if framework == "keras":
        return ([(w.path, w.numpy().copy()) for w in model.weights]
                + [(layer.name, layer.trainable) for layer in model.layers])
    return ([(k, v.detach().clone().numpy()) for k, v in model.state_dict().items()]
            + [(k, p.requires_grad) for k, p in model.named_parameters()])


def same(a: list[tuple[str, Any]], b: list[tuple[str, Any]]) -> bool:
    return len(a) == len(b) and all(ka == kb and np.array_equal(va, vb) for (ka, va), (kb, vb) in zip(a, b))


def mapping(framework: str) -> dict:
    return {"format": 1, "source": {"framework": framework, "model": "live"},
            "target": {"framework": framework, "model": "live"},
            "layers": LAYERS, "freeze": ["c1", "bn"]}


class Injected(RuntimeError):
    pass


def inject(step: str, framework: str, monkeypatch: pytest.MonkeyPatch, source_model: Any) -> None:
    """Make `step` fail part-way, the way a real failure would."""
    adapter = _adapter_class(framework)
    if step == "check":  # a NaN in the last source tensor: found before anything is assigned
        if framework == "keras":
            kernel = source_model.get_layer("fc").kernel
            kernel.assign(np.where(np.arange(kernel.shape[1]) == 0, np.nan, kernel.numpy()))
        else:
            import torch

            with torch.no_grad():
                source_model.fc.weight[0, 0] = float("nan")
    elif step == "assign":  # the first layers are written, then the rest fails
        original = adapter.assign

        def half(self: Any, updates: dict) -> None:
            names = list(updates)
            original(self, {name: updates[name] for name in names[: len(names) // 2]})
            raise Injected("assign")

        monkeypatch.setattr(adapter, "assign", half)
    elif step == "verify":  # every tensor in place, then the check disagrees
        original_verify = engine.verify_transfer

        def failing(*args: Any, **kwargs: Any) -> Any:
            result = original_verify(*args, **kwargs)
            result.layers[-1] = LayerCheck("fc", "fc", "injected", 1.0, 1.0, 0.0)
            return result

        monkeypatch.setattr(engine, "verify_transfer", failing)
    elif step == "freeze":  # one layer frozen, then the rest fails
        original_freeze = adapter.freeze

        def partly(self: Any, names: list[str]) -> None:
            original_freeze(self, names[:1])
            raise Injected("freeze")

        monkeypatch.setattr(adapter, "freeze", partly)
    elif step == "write":  # the file is half written when the disk fills up
        module = f"transfer.{framework}_models"

        def disk_full(path: Path, suffix: str, write: Any, check: Any = None) -> None:
            from transfer.output import atomic_write

            def partial(temporary: Path) -> None:
                temporary.write_bytes(b"\0" * 100)
                raise OSError(28, "No space left on device")

            atomic_write(path, suffix, partial, check)

        monkeypatch.setattr(f"{module}.atomic_write", disk_full)


def _adapter_class(framework: str) -> type:
    if framework == "keras":
        from transfer.keras_models import KerasModelWeights

        return KerasModelWeights
    from transfer.torch_models import TorchModuleWeights

    return TorchModuleWeights


@pytest.mark.parametrize("framework", ["keras", "torch"])
@pytest.mark.parametrize("step", STEPS)
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frozen_before=st.lists(st.sampled_from(list(LAYERS)), max_size=3, unique=True))
def test_a_failure_at_any_step_restores_the_target(step: str, framework: str, frozen_before: list[str],
                                                   tmp_path_factory: pytest.TempPathFactory,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    build = keras_model if framework == "keras" else torch_model
    source, target = build(1), build(2)
    for name in frozen_before:  # the user's own flags, which a restore must keep
        if framework == "keras":
            target.get_layer(name).trainable = False
        else:
            for parameter in getattr(target, name).parameters():
                parameter.requires_grad_(False)
    before = state(framework, target)
    out = tmp_path_factory.mktemp("out") / ("t.weights.h5" if framework == "keras" else "t.pth")
    with monkeypatch.context() as patch:
        inject(step, framework, patch, source)
        with pytest.raises((TransferWeightsError, Injected)):
            transfer.transfer_weights(mapping(framework), source=source, target=target, verify=True, out=out)
    assert same(before, state(framework, target)), f"{step}: the target changed"
    assert list(out.parent.iterdir()) == [], f"{step}: a file was left behind"


@pytest.mark.parametrize("framework", ["keras", "torch"])
def test_without_injection_the_same_run_succeeds(framework: str, tmp_path: Path) -> None:
    """The control: the injected failures above are what made those runs fail."""
    build = keras_model if framework == "keras" else torch_model
    source, target = build(1), build(2)
    out = tmp_path / ("t.weights.h5" if framework == "keras" else "t.pth")
    model, report = transfer.transfer_weights(mapping(framework), source=source, target=target, verify=True, out=out)
    assert report.ok and out.is_file() and model is target
    assert not same(state(framework, build(2)), state(framework, target))


def test_a_failed_torch_verify_restores_the_live_target() -> None:
    """Finding 1: the backup used to share memory with the parameters, so the 'restore'
    wrote the rejected weights back. Source conv unpadded, target padded: the stack differs."""
    import torch

    torch.manual_seed(0)
    source = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    target = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    spec = {"format": 1, "source": {"framework": "torch", "model": "live"},
            "target": {"framework": "torch", "model": "live"}, "layers": {"0": "0"}}
    with pytest.raises(transfer.VerificationError) as caught:
        transfer.transfer_weights(spec, source=source, target=target, verify=True)
    assert caught.value.exit_code == 6
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_a_factory_target_is_restored_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller may keep what its factory returned: a failure restores that model too."""
    made: list = []

    def factory(seed: int = 2) -> object:
        made.append(keras_model(seed))
        return made[-1]

    inject("verify", "keras", monkeypatch, None)
    with pytest.raises(TransferWeightsError):
        transfer.transfer_weights(mapping("keras"), source=keras_model(1), target=factory, verify=True)
    assert same(state("keras", keras_model(2)), state("keras", made[0]))


def test_large_snapshots_spill_to_disk_and_restore_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    from transfer import adapter

    monkeypatch.setattr(adapter, "SPILL_ABOVE_BYTES", 0)
    snapshot = adapter.Snapshot()
    arrays = [np.arange(6, dtype="float32").reshape(2, 3), np.ones(3, "float32")]
    snapshot.put("a", [a.copy() for a in arrays], sum(a.nbytes for a in arrays))
    folder = snapshot.folder
    assert folder is not None and folder.is_dir()
    assert all(np.array_equal(x, y) for x, y in zip(snapshot.get("a"), arrays))
    snapshot.close()
    assert not folder.exists()


def variable_memory(model: Any) -> list[np.ndarray]:
    """The memory each variable's value lives in (DLPack: no copy)."""
    return variable_memory_of(model.weights)


def variable_memory_of(variables: list[Any]) -> list[np.ndarray]:
    return [np.from_dlpack(w.value.read_value()) for w in variables]


def shares_any(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return any(np.shares_memory(x, y) for x in a for y in b)


def test_a_keras_target_keeps_no_memory_of_the_source(tmp_path: Path) -> None:
    """On TensorFlow the target's variables take the transferred arrays over as their memory
    (no copy): only arrays no one else holds. The target shares no memory with a live source,
    two targets read from one file share none with each other, and each changes apart."""
    from helpers.checkpoints import write_legacy_h5

    source, target = keras_model(0), keras_model(1)
    transfer.transfer_weights(mapping("keras"), source=source, target=target)
    assert not shares_any(variable_memory(target), variable_memory(source))
    before = [w.numpy().copy() for w in source.weights]
    for variable in target.weights:
        variable.assign_add(np.ones(variable.shape, variable.dtype))
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, source.weights))
    assert all(np.array_equal(b + 1, w.numpy()) for b, w in zip(before, target.weights))

    path = write_legacy_h5(source, tmp_path / "source.h5")
    file_mapping = {**mapping("keras"), "source": {"framework": "keras", "weights": str(path)}}
    first = transfer.transfer_weights(file_mapping, target=keras_model(2)).model
    second = transfer.transfer_weights(file_mapping, target=keras_model(3)).model
    assert not shares_any(variable_memory(first), variable_memory(second))
    for variable in first.weights:
        variable.assign_add(np.ones(variable.shape, variable.dtype))
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, second.weights))
    assert all(np.array_equal(b + 1, w.numpy()) for b, w in zip(before, first.weights))


@pytest.mark.parametrize("streamed", [False, True], ids=["staged", "streamed"])
def test_a_keras_target_keeps_what_was_read_into_its_memory_and_trains_on_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, streamed: bool) -> None:
    """On TensorFlow a file is read straight into new tensors' memory, which the variables
    then keep with no copy (`transfer.keras_memory`), staged or streamed one layer at a time.
    TensorFlow's kernels assume 64-byte aligned memory (a model that kept NumPy's 16-byte
    aligned arrays once aborted in a fused matmul when it trained): a training step runs on
    that memory and changes every trainable weight."""
    import keras

    from helpers.checkpoints import write_legacy_h5
    from transfer.keras_memory import TensorFlowMemory

    handed: list[np.ndarray] = []
    empty = TensorFlowMemory.empty

    def recorded(self: TensorFlowMemory, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        view = empty(self, shape, dtype)
        handed.append(view)
        return view

    monkeypatch.setattr(TensorFlowMemory, "empty", recorded)
    if streamed:
        monkeypatch.setattr(engine, "STAGE_LIMIT_BYTES", 0)
    path = write_legacy_h5(keras_model(0), tmp_path / "source.h5")
    file_mapping = {**mapping("keras"), "source": {"framework": "keras", "weights": str(path)}, "freeze": []}
    target = transfer.transfer_weights(file_mapping, target=keras_model(1)).model
    moved = [w for name in LAYERS for w in target.get_layer(name).weights]
    # every moved variable lives in the memory its tensor was read into, aligned
    assert [m.ctypes.data for m in variable_memory_of(moved)] == [a.ctypes.data for a in handed]
    assert all(a.ctypes.data % 64 == 0 for a in handed)
    source = keras_model(0)
    assert all(np.array_equal(w.numpy(), source.get_layer(name).get_weights()[i])
               for name in LAYERS for i, w in enumerate(target.get_layer(name).weights))
    del handed[:]  # the views die: nothing of them is held any longer
    before = [w.numpy().copy() for w in target.trainable_weights]
    target.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    rng = np.random.default_rng(0)
    target.fit(rng.normal(size=(4, 8, 8, 3)).astype("float32"), rng.normal(size=(4, 3)).astype("float32"),
               epochs=1, batch_size=4, verbose=0)
    assert all(not np.array_equal(b, w.numpy()) for b, w in zip(before, target.trainable_weights))
    assert np.isfinite(target.predict(np.ones((1, 8, 8, 3), "float32"), verbose=0)).all()
