"""Nothing claimed that was not proven: a dense layer's flatten order is read from both models
(never assumed), what a check did not reach is reported as unproven and refused by --strict,
subclassed Keras models get their stack check, PReLU moves both ways, and refusals name the
layer's real class."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import transfer
from helpers.checkpoints import max_rel_diff
from transfer.errors import IncompatibleWeightsError, StrictModeError, TransferWeightsError, VerificationError
from transfer.report import summary, to_dict

RNG = np.random.default_rng(19)
LIVE = {"format": 1, "source": {"framework": "torch", "model": "live"},
        "target": {"framework": "keras", "model": "live"}}
BACK = {"format": 1, "source": {"framework": "keras", "model": "live"},
        "target": {"framework": "torch", "model": "live"}}
HEIGHT, WIDTH = 8, 10  # the conv stack maps 8x10 to a 4x6 map: H != W, so a swap cannot hide
# torch permutes of the NCHW map before flattening, and the Keras Permutes of NHWC that match
TORCH_PERMUTES = {"none": None, "whc": (0, 3, 2, 1), "hwc": (0, 2, 3, 1), "cwh": (0, 1, 3, 2)}
KERAS_PERMUTES = {"none": None, "whc": (2, 1, 3), "chw": (3, 1, 2), "wch": (2, 3, 1)}


class PermuteNet(torch.nn.Module):
    """conv -> mid conv -> x.permute(...) -> flatten -> Linear, as face detectors write it."""

    def __init__(self, permute: tuple[int, ...] | None, mid: int = 5):
        super().__init__()
        self.permute = permute
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.mid = torch.nn.Conv2d(4, mid, 3)
        self.fc = torch.nn.Linear(mid * (HEIGHT - 4) * (WIDTH - 4), 7)

    def forward(self, x: Any) -> Any:
        x = self.mid(self.conv(x))
        if self.permute is not None:
            x = x.permute(*self.permute)
        return self.fc(torch.flatten(x, 1))


def keras_net(permute: tuple[int, ...] | None, mid: int = 5) -> Any:
    inputs = keras.Input((HEIGHT, WIDTH, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.Conv2D(mid, 3, name="mid")(x)
    if permute is not None:
        x = keras.layers.Permute(permute)(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(7, name="fc")(x))


def same_mid(torch_net: Any, keras_model: Any) -> None:
    """The layer left out of the mapping holds the same function on both sides, so whole
    outputs can be compared."""
    keras_model.get_layer("mid").set_weights([torch_net.mid.weight.detach().numpy().transpose(2, 3, 1, 0),
                                              torch_net.mid.bias.detach().numpy()])


def outputs(torch_net: Any, keras_model: Any) -> tuple[np.ndarray, np.ndarray]:
    x = RNG.normal(size=(3, HEIGHT, WIDTH, 3)).astype("float32")
    with torch.no_grad():
        return torch_net.eval()(nchw(x)).numpy(), np.asarray(keras_model(x))


def test_a_permute_before_flatten_is_read_not_assumed() -> None:
    """The issue's case: `mid` left out on both sides stops the stack check at `conv`; the dense
    rows must still be right, because both flatten orders are read from the models."""
    torch.manual_seed(0)
    source, target = PermuteNet((0, 3, 2, 1)), keras_net((2, 1, 3))
    same_mid(source, target)
    mapping = {**LIVE, "layers": {"conv": "conv", "fc": "fc"}, "skip": ["mid"], "untouched": ["mid"]}
    result = transfer.transfer_weights(mapping, source=source, target=target, strict=True, verify=True)
    expected, got = outputs(source, target)
    assert max_rel_diff(got, expected) <= 1e-5
    fc = next(t for t in result.report.transferred if t.target == "fc")
    assert "torch.fx trace" in fc.inputs and "permute(0, 3, 2, 1)" in fc.inputs and "Permute(2, 1, 3)" in fc.inputs
    proof = next(p for p in result.report.coverage if p.target == "fc")
    assert proof.proven and "flatten order read from both models" in proof.checks
    assert "stops after 'conv': source layer 'mid' is not mapped" in result.report.model_coverage


@settings(max_examples=14, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(torch_permute=st.sampled_from(sorted(TORCH_PERMUTES)), keras_permute=st.sampled_from(sorted(KERAS_PERMUTES)),
       leave_out_mid=st.booleans(), to_keras=st.booleans())
def test_any_flatten_order_is_exact_or_refused(torch_permute: str, keras_permute: str, leave_out_mid: bool,
                                              to_keras: bool) -> None:
    """Random conv -> (permute) -> flatten -> dense stacks on either side, with or without a
    layer left out between: exact outputs or a refusal, never a success whose outputs differ
    (and here, with both models live and traceable, never a refusal either)."""
    torch.manual_seed(1)
    keras.utils.set_random_seed(1)
    torch_net, keras_model = PermuteNet(TORCH_PERMUTES[torch_permute]), keras_net(KERAS_PERMUTES[keras_permute])
    same_mid(torch_net, keras_model)
    layers = {"conv": "conv", "fc": "fc"} if leave_out_mid else {"conv": "conv", "mid": "mid", "fc": "fc"}
    extra = {"skip": ["mid"], "untouched": ["mid"]} if leave_out_mid else {}
    if to_keras:
        source, target, mapping = torch_net, keras_model, {**LIVE, "layers": layers, **extra}
    else:
        source, target, mapping = keras_model, torch_net, {**BACK, "layers": layers, **extra}
    try:
        transfer.transfer_weights(mapping, source=source, target=target, strict=True, verify=True)
    except TransferWeightsError as exc:  # allowed by the promise; not expected here: both models are readable
        pytest.fail(f"refused although both flatten orders can be read: {exc}")
    expected, got = outputs(torch_net, keras_model)
    assert max_rel_diff(got, expected) <= 1e-5


def test_a_declared_order_is_unproven_until_the_stack_check_reaches_it(tmp_path: Path) -> None:
    """A state dict (no model behind it) cannot tell its flatten order: refused without a hint;
    with `flatten: [C, H, W]` it is declared, reported UNPROVEN and refused by --strict (target
    untouched) unless the stack check reaches the dense layer."""
    torch.manual_seed(2)
    source, target = PermuteNet(None), keras_net(None)
    path = tmp_path / "net.pth"
    torch.save(source.state_dict(), path)
    spec = {"format": 1, "source": {"framework": "torch", "weights": str(path)},
            "target": {"framework": "keras", "model": "live"}}
    with pytest.raises(IncompatibleWeightsError, match="cannot tell how the input of the dense layer 'fc'"):
        transfer.transfer_weights({**spec, "layers": {"conv": "conv", "mid": "mid", "fc": "fc"}}, target=target)
    declared = {"target": "fc", "flatten": [5, HEIGHT - 4, WIDTH - 4]}
    before = [w.copy() for w in target.get_weights()]
    partial = {**spec, "layers": {"conv": "conv", "fc": declared}, "skip": ["mid"], "untouched": ["mid"]}
    with pytest.raises(StrictModeError, match="'fc': source flatten order declared") as refused:
        transfer.transfer_weights(partial, target=target, strict=True, verify=True)
    assert [p.target for p in refused.value.report.unproven] == ["fc"]
    assert all(np.array_equal(a, b) for a, b in zip(before, target.get_weights()))  # untouched
    result = transfer.transfer_weights(partial, target=target, verify=True)  # accepted without --strict
    assert "UNPROVEN: 1 moved layer(s)" in summary(result.report) and to_dict(result.report)["unproven"] == ["fc"]
    # a live model whose forward fx cannot trace: declared too, but the stack check runs it
    untraceable = UntraceableNet()
    untraceable.load_state_dict(source.state_dict())
    full = {**LIVE, "layers": {"conv": "conv", "mid": "mid", "fc": declared}}
    unchecked = transfer.transfer_weights(full, source=untraceable, target=keras_net(None), strict=True)
    assert "ASSUMED (no --verify): 'fc'" in summary(unchecked.report)  # said, never called verified
    result = transfer.transfer_weights(full, source=untraceable, target=keras_net(None), strict=True, verify=True)
    proof = next(p for p in result.report.coverage if p.target == "fc")
    assert proof.proven and any(c.startswith("stack check") for c in proof.checks)


class UntraceableNet(PermuteNet):
    """Control flow on the input's values: torch.fx cannot follow it."""

    def __init__(self) -> None:
        super().__init__(None)

    def forward(self, x: Any) -> Any:
        if float(x.abs().sum()) < 0:  # never true; a traced Proxy cannot be turned into a float
            x = -x
        return super().forward(x)


class SubclassedNet(keras.Model):
    """A Keras model written as a class: no graph until called, no `input_shape`."""

    def __init__(self) -> None:
        super().__init__(name="subclassed")
        self.conv = keras.layers.Conv2D(4, 3, name="conv")
        self.act = keras.layers.ReLU()
        self.mid = keras.layers.Conv2D(5, 3, name="mid")

    def call(self, x: Any) -> Any:
        return self.mid(self.act(self.conv(x)))


def test_a_subclassed_keras_target_gets_its_stack_check() -> None:
    torch.manual_seed(3)
    source = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 5, 3))
    target = built_subclassed()
    mapping = {**LIVE, "layers": {"0": "conv", "2": "mid"}}
    result = transfer.transfer_weights(mapping, source=source, target=target, strict=True, verify=True)
    stack = result.report.verification[0].stack
    assert stack is not None and stack.target == "mid" and stack.ok
    swapped = {**LIVE, "layers": {"0": "conv", "2": "mid"}}
    with torch.no_grad():  # a wrong function between the layers is caught by the stack check
        source[1] = torch.nn.Tanh()
    with pytest.raises(VerificationError, match="model outputs at the layer"):
        transfer.transfer_weights(swapped, source=source, target=built_subclassed(), verify=True)


def built_subclassed() -> Any:
    model = SubclassedNet()
    model(np.zeros((1, 16, 16, 3), "float32"))
    return model


def prelu_pair() -> tuple[Any, Any]:
    """torch PReLU(C) after a conv and after a Linear; Keras PReLU(shared_axes=[1, 2]) and PReLU()."""
    torch.manual_seed(4)
    torch_net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.PReLU(4), torch.nn.Conv2d(4, 5, 3),
                                    torch.nn.Flatten(), torch.nn.Linear(5 * 4 * 6, 6), torch.nn.PReLU(6))
    with torch.no_grad():
        for module in torch_net:
            if isinstance(module, torch.nn.PReLU):
                module.weight.uniform_(-1.0, 1.0)
    inputs = keras.Input((HEIGHT, WIDTH, 3))
    x = keras.layers.Conv2D(4, 3, name="c1")(inputs)
    x = keras.layers.PReLU(shared_axes=[1, 2], name="p1")(x)
    x = keras.layers.Flatten()(keras.layers.Conv2D(5, 3, name="c2")(x))
    outputs_ = keras.layers.PReLU(name="p2")(keras.layers.Dense(6, name="fc")(x))
    return torch_net, keras.Model(inputs, outputs_)


@pytest.mark.parametrize("to_keras", [True, False], ids=["torch->keras", "keras->torch"])
def test_prelu_moves_both_ways_with_equal_outputs(to_keras: bool) -> None:
    torch_net, keras_model = prelu_pair()
    names = {"0": "c1", "1": "p1", "2": "c2", "4": "fc", "5": "p2"}
    if to_keras:
        result = transfer.transfer_weights({**LIVE, "layers": names}, source=torch_net, target=keras_model,
                                           strict=True, verify=True)
    else:
        keras_model.get_layer("p1").set_weights([RNG.uniform(-1, 1, (1, 1, 4)).astype("float32")])
        result = transfer.transfer_weights({**BACK, "layers": {v: k for k, v in names.items()}}, source=keras_model,
                                           target=torch_net, strict=True, verify=True)
    assert {t.kind for t in result.report.transferred} >= {"prelu"}
    assert result.report.verification[0].stack.target in ("p2", "5")
    expected, got = outputs(torch_net, keras_model)
    assert max_rel_diff(got, expected) <= 1e-5


def test_refusals_name_the_real_class() -> None:
    """A per-position PReLU has no torch counterpart; a layer of no known kind is named by its
    class (never "other"), and a PReLU after a dense layer is called a PReLU."""
    torch_net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.PReLU(4))
    inputs = keras.Input((HEIGHT, WIDTH, 3))
    per_position = keras.Model(inputs, keras.layers.PReLU(name="p")(keras.layers.Conv2D(4, 3, name="c")(inputs)))
    with pytest.raises(IncompatibleWeightsError, match=r"one slope per position \(6, 8, 4\)"):
        transfer.transfer_weights({**LIVE, "layers": {"0": "c", "1": "p"}}, source=torch_net, target=per_position)
    embedding = torch.nn.Sequential(torch.nn.Embedding(10, 4))
    vocab = keras.Sequential([keras.Input((3,), dtype="int32"), keras.layers.Embedding(10, 4, name="emb")])
    with pytest.raises(IncompatibleWeightsError, match=r"'0' \(a Embedding layer, of no known kind\) and 'emb'"):
        transfer.transfer_weights({**LIVE, "layers": {"0": "emb"}}, source=embedding, target=vocab)
    dense_prelu = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="d"), keras.layers.PReLU(name="p")])
    conv = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(4, 3, name="c")])
    same = {"format": 1, "source": {"framework": "keras", "model": "live"},
            "target": {"framework": "keras", "model": "live"}}
    with pytest.raises(IncompatibleWeightsError, match=r"is a prelu layer \(PReLU\)"):
        transfer.transfer_weights({**same, "layers": {"p": "c"}}, source=dense_prelu, target=conv)


def nchw(x: np.ndarray) -> Any:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


class RaisingNet(PermuteNet):
    """A forward that fails on the probe of the stack check (a user's bug, not ours)."""

    def __init__(self) -> None:
        super().__init__(None)

    def forward(self, x: Any) -> Any:
        raise RuntimeError("my model is broken")


def test_a_model_that_raises_in_the_stack_check_is_said_never_verified() -> None:
    torch.manual_seed(5)
    source, target = RaisingNet(), keras_net(None)
    source.load_state_dict(PermuteNet(None).state_dict())
    mapping = {**LIVE, "layers": {"conv": "conv", "mid": "mid"}, "skip": ["fc"], "untouched": ["fc"]}
    result = transfer.transfer_weights(mapping, source=source, target=target, verify=True)
    memory = result.report.verification[0]
    assert memory.stack is None and "the model RaisingNet raised" in memory.stack_note
    assert "my model is broken" in memory.stack_note and "how the layers are connected" in result.report.model_coverage
