"""Keras targets on Keras' torch backend. There a Keras model is also a `torch.nn.Module`; the
tool must ask Keras first, and its snapshot must copy (torch variables are updated in place,
unlike TensorFlow's). SegNet's pooling with argmax must match TensorFlow's there too. One
fresh interpreter for all of it (a backend is chosen once per process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import MAPPINGS

CODE = """
import numpy as np, transfer, keras
assert keras.backend.backend() == "torch"
from transfer.targets.keras_pooling import max_pool_with_argmax, max_unpool
x = np.random.default_rng(0).integers(0, 3, size=(2, 5, 7, 3)).astype("float32")  # ties on purpose
p, i = max_pool_with_argmax(x)
u = max_unpool(p, i, (5, 7))
print("POOL", repr(np.asarray(p.cpu()).tolist()), repr(np.asarray(i.cpu()).tolist()), float(u.sum()))
from transfer.targets.keras_segnet import build_segnet_vgg16
target = build_segnet_vgg16((32, 32, 3), classes=3)
model, report = transfer.transfer_weights({mapping!r}, source_weights={weights!r}, target=target, verify=True)
assert report.ok and len(report.transferred) == 13 and report.verification[0].stack.rel_diff <= 1e-4
before = [np.array(w.numpy()) for w in target.weights]
import yaml
spec = yaml.safe_load(open({mapping!r}))
spec["layers"] = {{f"block{{b}}_conv{{c}}": f"block{{b}}_conv{{c}}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
                   for c in range(1, n + 1)}}
spec["layers"]["block3_conv2"], spec["layers"]["block3_conv3"] = "block3_conv3", "block3_conv2"
try:
    transfer.transfer_weights(spec, source_weights={weights!r}, target=target, verify=True)
except transfer.VerificationError as exc:
    assert "first diverging layer 'block3_conv3'" in str(exc), exc
else:
    raise SystemExit("the swapped mapping passed")
assert all(np.array_equal(a, np.array(w.numpy())) for a, w in zip(before, target.weights)), "not restored"
print("ok")
"""


def test_keras_target_on_the_torch_backend_transfers_verifies_and_restores(notop_h5: Path) -> None:
    code = CODE.format(mapping=str(MAPPINGS / "segnet_vgg16.yaml"), weights=str(notop_h5))
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
    import numpy as np
    import tensorflow as tf

    x = np.random.default_rng(0).integers(0, 3, size=(2, 5, 7, 3)).astype("float32")
    ref_p, ref_i = tf.nn.max_pool_with_argmax(x, 2, 2, "VALID")
    pool = next(line for line in result.stdout.splitlines() if line.startswith("POOL "))
    assert repr(ref_p.numpy().tolist()) in pool and repr(ref_i.numpy().tolist()) in pool
    assert float(pool.rsplit(" ", 1)[1]) == float(ref_p.numpy().sum())
