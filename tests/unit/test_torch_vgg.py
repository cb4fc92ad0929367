"""The stack check's stand-in for torchvision's VGG16 (transfer/targets/torch_vgg.py) is
torchvision's own: the same modules under the same names, the same outputs bit for bit."""

from __future__ import annotations

import pytest

import transfer  # noqa: F401  (first: torch before any TensorFlow import)

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from transfer.targets.torch_vgg import BUILDERS  # noqa: E402


@pytest.mark.parametrize("builder", sorted(BUILDERS))
def test_the_replica_is_torchvisions_vgg(builder: str) -> None:
    torch.manual_seed(0)
    reference = getattr(torchvision.models, builder)(weights=None).eval()
    with torch.device("meta"):  # as the stack check builds it: no initialisation, the file's tensors assigned
        replica = BUILDERS[builder]()
    assert [(n, type(m)) for n, m in replica.named_modules() if n] == \
           [(n, type(m)) for n, m in reference.named_modules() if n]
    assert {k: v.shape for k, v in replica.state_dict().items()} == \
           {k: v.shape for k, v in reference.state_dict().items()}
    with torch.no_grad():  # running statistics too, so that BatchNorm's inference path is exercised
        for tensor in reference.state_dict().values():
            if tensor.is_floating_point() and tensor.ndim == 1:
                tensor.copy_(torch.rand_like(tensor) * 0.1 + 0.5)
    replica.load_state_dict({k: v.clone() for k, v in reference.state_dict().items()}, assign=True)
    replica.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(replica(x), reference(x))
        assert torch.equal(replica.features(x), reference.features(x))
